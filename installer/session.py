"""Opening a run's session, the same way for both front-ends: the state loaded (a copy that is
never written, and the recording back-end, in a dry run), the answers kept beside the state so
that resume and upgrade find the deployment, and last-run.log listening."""

from __future__ import annotations

from installer.answers import Answers, save_answers
from installer.discovery import ANSWERS_FILE
from installer.engine import Session
from installer.options import RunOptions
from installer.remote import RecordingRemote
from installer.report import RunLog
from installer.state import RunState


def open_session(answers: Answers, options: RunOptions) -> Session:
    """Raises StateError (unreadable or unsafe state) or OSError (a state folder that cannot be
    written). A dry run reads the state and writes nothing, so its folder is neither made nor tightened."""
    if options.mode == "check":
        return Session(answers, RunState(None), options)
    if options.dry_run:
        state = RunState.load(options.state_root, answers.domain.server_name)
        session = Session(answers, RunState.in_memory(state), options)
        session.remote = RecordingRemote()
        return session
    state = RunState.open(options.state_root, answers.domain.server_name)
    session = Session(answers, state, options)
    if state.folder is not None:
        save_answers(answers, state.folder / ANSWERS_FILE)
        session.run_log = RunLog(state.folder / "last-run.log")
        session.listeners.append(session.run_log)
    return session
