"""For `--check SERVER_NAME`: the Oracle Cloud instance's lifecycle state, when this machine's state
folder for that server says the deployment runs there.

These are notes beside the federation test, never a verdict: a check without an OCI config, or with
Oracle Cloud out of reach, still runs and reports the federation test alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from installer.cloud.api import CloudError, short
from installer.cloud.config import check_oci_config

if TYPE_CHECKING:
    from installer.options import RunOptions

Note = tuple[str, str]
"""(kind, line) for StageContext.log: "cloud" for a call, "log" for what it found."""


@dataclass(frozen=True)
class OciDeployment:
    instance_id: str
    oci_config: str
    oci_profile: str


def oci_deployment(server_name: str, options: RunOptions) -> tuple[OciDeployment | None, str | None]:
    """The deployment's instance and OCI profile from its state folder (and the answers saved beside it),
    or None when the state does not say it is on Oracle Cloud; with a note when the state is unreadable."""
    from installer.answers import Answers, AnswersError, load_answers
    from installer.discovery import ANSWERS_FILE
    from installer.state import RunState, StateError

    try:
        state = RunState.load(options.state_root, server_name)
    except StateError as exc:
        return None, f"Oracle Cloud: the instance's state is not known: {exc}"
    instance_id = state.facts.get("cloud.instance_id")
    if not instance_id or state.folder is None:
        return None, None
    try:
        answers = load_answers(state.folder / ANSWERS_FILE)
    except (AnswersError, OSError):
        answers = Answers()  # no usable saved answers: the default profile, as an install would use
    if answers.cloud.provider != "oci":
        return None, None
    return OciDeployment(str(instance_id), answers.cloud.oci_config, answers.cloud.oci_profile), None


async def instance_state_notes(server_name: str, options: RunOptions) -> list[Note]:
    """What Oracle Cloud says about the deployment's instance, as notes; [] when it is not on Oracle Cloud."""
    deployment, problem = oci_deployment(server_name, options)
    if problem:
        return [("log", problem)]
    if deployment is None:
        return []
    call = f"compute.get_instance({deployment.instance_id})"
    if options.dry_run:
        return [("cloud", call)]
    if problems := check_oci_config(deployment.oci_config, deployment.oci_profile):
        return [("log", f"Oracle Cloud: the state of instance {short(deployment.instance_id)} is not known: {problems[0]}")]
    return await _ask(deployment, call)


async def _ask(deployment: OciDeployment, call: str) -> list[Note]:
    from installer.cloud.api import OciCloud

    notes: list[Note] = []
    try:
        cloud = await OciCloud.open(deployment.oci_config, deployment.oci_profile, lambda line: notes.append(("cloud", line)))
        instance = await cloud.get_instance(deployment.instance_id, retry=False)
    except CloudError as exc:
        if exc.not_found:
            return [*notes, ("log", f"Oracle Cloud does not know instance {short(deployment.instance_id)}: it was terminated "
                                    f"long ago, or profile [{deployment.oci_profile}] points at another tenancy or region")]
        why = exc.message if exc.status == 0 else f"{exc.status} {exc.code}: {exc.message}".strip()
        return [*notes, ("log", f"Oracle Cloud could not be asked about instance {short(deployment.instance_id)} ({why}); "
                                "its state is not known")]
    state = instance.lifecycle_state
    notes.append(("log", f"Oracle Cloud instance {instance.display_name} ({short(deployment.instance_id)}): {state}"))
    if state in ("STOPPED", "STOPPING"):
        notes.append(("log", "it is not running: Oracle stops Always Free instances that stay idle for 7 days; start it "
                             "(console: Compute > Instances > Start), then run the check again"))
    elif state in ("TERMINATED", "TERMINATING"):
        notes.append(("log", "it was terminated: the server is gone; an install launches a new one once cloud.instance_id "
                             "is removed from the state"))
    return notes
