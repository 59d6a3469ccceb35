"""How the lab names and prunes its images (no Docker needed): tags carry a hash of what the
image is built from, so checkouts sharing this machine's engine never replace each other's
images, and only what no session used for days is pruned."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from . import lab as _lab


@pytest.fixture
def other_checkout(tmp_path):
    """The lab's build files copied elsewhere, as another checkout has them."""
    here = tmp_path / "lab"
    shutil.copytree(_lab.HERE, here, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    for name in ("synapse-start.py",):
        shutil.copy(_lab.HERE / name, here / name)
    return here


def test_tags_follow_the_build_inputs(other_checkout, monkeypatch):
    ours = (_lab.host_image_tag(), _lab.synapse_image_tag(), _lab.synapse_image_tag(broken=True),
            _lab.postgres_image_tag())
    assert ours[1].startswith(f"{_lab.SYNAPSE_REPO}:{_lab.SYNAPSE_VERSION}-")
    assert ours[2] == ours[1] + "-broken"
    assert ours[3].startswith(f"{_lab.POSTGRES_REPO}:17-")
    assert _lab.synapse_image_tag("1.163.1") != ours[1]

    # The same files elsewhere: the same tags (the cache is shared, not duplicated).
    monkeypatch.setattr(_lab, "HERE", other_checkout)
    assert (_lab.host_image_tag(), _lab.synapse_image_tag(), _lab.synapse_image_tag(broken=True),
            _lab.postgres_image_tag()) == ours

    # Another checkout's Synapse start script: another Synapse tag, the rest unchanged.
    (other_checkout / "synapse-start.py").write_text((other_checkout / "synapse-start.py").read_text() + "\n# changed\n")
    assert _lab.synapse_image_tag() != ours[1] and _lab.postgres_image_tag() == ours[3]
    # Another base: both stand-ins change (they are built on it); the host does not.
    (other_checkout / "build-base.sh").write_text((other_checkout / "build-base.sh").read_text() + "\n# changed\n")
    assert _lab.postgres_image_tag() != ours[3] and _lab.host_image_tag() == ours[0]
    # Another Postgres entrypoint: another Postgres tag.
    before = _lab.postgres_image_tag()
    (other_checkout / "postgres-entrypoint.sh").write_text(
        (other_checkout / "postgres-entrypoint.sh").read_text() + "\n# changed\n")
    assert _lab.postgres_image_tag() != before


def test_pruning_keeps_whatever_a_session_used_within_the_keep_window(tmp_path, monkeypatch):
    monkeypatch.setattr(_lab, "CACHE_DIR", tmp_path)
    monkeypatch.setattr(_lab, "USED_DIR", tmp_path / "used")
    removed: list[str] = []
    present = {"lab/old:1", "lab/fresh:1", "lab/busy:1"}
    monkeypatch.setattr(_lab, "image_exists", lambda tag: tag in present)

    def fake_docker(*args, **kw):
        assert args[:2] == ("image", "rm")
        tag = args[2]
        ok = tag != "lab/busy:1"  # a container still uses it
        if ok:
            removed.append(tag)
        return type("P", (), {"returncode": 0 if ok else 1, "stdout": "", "stderr": ""})()

    monkeypatch.setattr(_lab, "docker", fake_docker)
    for name in ("old.tar", "shared-base.tar", "fresh.tar", "busy.tar", "unrecorded.tar"):
        (tmp_path / name).write_text(name)
    # Another checkout used "fresh" today; "old" and "busy" were last used 10 days ago. Both
    # "old" and "fresh" are built on the shared base.
    _lab._mark_used("lab/old:1", "old.tar", "shared-base.tar")
    _lab._mark_used("lab/busy:1", "busy.tar")
    _lab._mark_used("lab/fresh:1", "fresh.tar", "shared-base.tar")
    ten_days_ago = time.time() - 10 * 86400
    for stamp in ("lab_old_1.json", "lab_busy_1.json"):
        os.utime(tmp_path / "used" / stamp, (ten_days_ago, ten_days_ago))
    for name in ("old.tar", "busy.tar", "unrecorded.tar"):
        os.utime(tmp_path / name, (ten_days_ago, ten_days_ago))

    assert _lab.prune_unused(days=0) == []  # 0: never
    gone = _lab.prune_unused(days=3)
    assert removed == ["lab/old:1"] and set(gone) == {"lab/old:1", "old.tar"}
    # The base "fresh" still uses stays; what no stamp records (older lab code's) stays; the
    # image a container uses stays, with its record.
    assert {p.name for p in tmp_path.glob("*.tar")} == {"shared-base.tar", "fresh.tar", "busy.tar", "unrecorded.tar"}
    assert {p.name for p in (tmp_path / "used").iterdir()} == {"lab_fresh_1.json", "lab_busy_1.json"}
    assert json.loads((tmp_path / "used" / "lab_fresh_1.json").read_text()) == {
        "tag": "lab/fresh:1", "files": ["fresh.tar", "shared-base.tar"]}
