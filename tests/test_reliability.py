"""Publishing is a transaction: real signals, a really full disk, two runs at once.

Every test starts from an output folder holding a complete publication ("old") and
interrupts a publish that would replace it ("new": the same layers under another
SOURCE_DATE_EPOCH, so every archive differs).  Afterwards the folder must hold exactly
the old or exactly the new publication, and ``verify`` must pass.

A publish is stopped at a chosen moment with the tool's test pause points
(``VENVSTACKS_DOCKER_TEST_PAUSE=<point>:<file>``, see ``venvstacks_docker._testhooks``):
``publish-staged`` (every new archive is staged, nothing committed) and
``publish-commit`` (the journal is written and the first file renamed into place).
The small application layers are published, so each run takes a second or two.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _helpers import Published, cli

pytestmark = [pytest.mark.slow, pytest.mark.runtime]

OLD_EPOCH, NEW_EPOCH = "1700000000", "1700000100"


def state(out: Path) -> dict[str, str]:
    """Every file of the publication (not the tool's hidden folder), by sha256."""
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*"))
            if p.is_file() and ".venvstacks-docker" not in p.relative_to(out).parts}


def leftovers(out: Path) -> list[str]:
    hidden = out / ".venvstacks-docker"
    return sorted(p.name for p in hidden.iterdir() if p.name not in ("lock", "lock.owner")) \
        if hidden.is_dir() else []


def env_with(epoch: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "SOURCE_DATE_EPOCH": epoch, **extra}


def publish_args(pub: Published, out: Path, *extra: str) -> list[str]:
    return ["publish", "--native", "--include", "app-*", "--build-dir", str(pub.build_dir),
            "--output-dir", str(out), *extra, str(pub.spec)]


def publish(pub: Published, out: Path, epoch: str, *extra: str, check: bool = True):  # type: ignore[no-untyped-def]
    return cli(*publish_args(pub, out, *extra), env=env_with(epoch), check=check)


def start_paused(pub: Published, out: Path, point: str, flag: Path) -> subprocess.Popen[str]:
    """Start a NEW publish that stops at ``point``; returns once it is there."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "venvstacks_docker", *publish_args(pub, out)],
        env=env_with(NEW_EPOCH, VENVSTACKS_DOCKER_TEST_PAUSE=f"{point}:{flag}"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not flag.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the publish never reached its pause point"
        time.sleep(0.05)
    return proc


@pytest.fixture(scope="module")
def versions(published_sample: Published, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """The complete old and new publications, made once without interruptions."""
    out = tmp_path_factory.mktemp("reference") / "out"
    publish(published_sample, out, OLD_EPOCH)
    old = state(out)
    publish(published_sample, out, NEW_EPOCH)  # as over the old one: archive_build 2
    new = state(out)
    assert old.keys() == new.keys() and old != new
    return {"old": old, "new": new}


@pytest.fixture
def old_out(published_sample: Published, tmp_path: Path) -> Iterator[Path]:
    out = tmp_path / "out"
    publish(published_sample, out, OLD_EPOCH)
    yield out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_interrupted_before_the_commit_keeps_the_old_publication(
    published_sample: Published, versions, old_out: Path, tmp_path: Path, sig: signal.Signals  # type: ignore[no-untyped-def]
) -> None:
    flag = tmp_path / "paused"
    proc = start_paused(published_sample, old_out, "publish-staged", flag)
    assert leftovers(old_out)  # the new archives are staged...
    assert state(old_out) == versions["old"]  # ...and invisible
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == (130 if sig != signal.SIGKILL else -signal.SIGKILL)
    if sig != signal.SIGKILL:
        # one line saying what was kept, no traceback, nothing left behind
        assert "still holds its previous publication (nothing of this run was kept)" in stderr
        assert "Traceback" not in stderr
        assert leftovers(old_out) == []
    assert state(old_out) == versions["old"]
    assert cli("verify", old_out).returncode == 0
    # the next run clears what a killed one left and publishes normally
    publish(published_sample, old_out, NEW_EPOCH)
    assert leftovers(old_out) == []
    assert state(old_out) == versions["new"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_the_commit_waits_for_it(
    published_sample: Published, versions, old_out: Path, tmp_path: Path, sig: signal.Signals  # type: ignore[no-untyped-def]
) -> None:
    flag = tmp_path / "paused"
    proc = start_paused(published_sample, old_out, "publish-commit", flag)
    proc.send_signal(sig)
    time.sleep(0.5)
    assert proc.poll() is None  # held back: Ctrl-C never lands between two renames
    flag.unlink()
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted just after publishing finished" in stderr
    assert state(old_out) == versions["new"]
    assert leftovers(old_out) == []
    assert cli("verify", old_out).returncode == 0


def test_sigkill_during_the_commit_is_rolled_forward_by_the_next_reader(
    published_sample: Published, versions, old_out: Path, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    flag = tmp_path / "paused"
    proc = start_paused(published_sample, old_out, "publish-commit", flag)
    proc.kill()
    proc.communicate(timeout=60)
    flag.unlink()
    assert "journal.json" in leftovers(old_out)
    on_disk = state(old_out)
    assert on_disk not in (versions["old"], versions["new"])  # really mixed on disk
    result = cli("verify", old_out)
    assert "finished an interrupted publication" in result.stderr
    assert state(old_out) == versions["new"]
    assert leftovers(old_out) == []


def test_reuse_needs_the_bytes_to_match(published_sample: Published, versions, old_out: Path) -> None:  # type: ignore[no-untyped-def]
    victim = old_out / "app-report-demo.tar.xz"
    data = bytearray(victim.read_bytes())
    data[200] ^= 0xFF  # same size, one flipped byte
    victim.write_bytes(bytes(data))
    result = publish(published_sample, old_out, OLD_EPOCH)
    assert "rebuilding app-report-demo: app-report-demo.tar.xz has sha256" in " ".join(result.stderr.split())
    assert "app-report-demo.tar.xz" in result.stdout and "built" in result.stdout
    assert state(old_out) == versions["old"]
    # an untouched republish reuses everything and changes nothing
    before = {p: p.stat().st_mtime_ns for p in old_out.rglob("*.json")}
    result = publish(published_sample, old_out, OLD_EPOCH)
    assert "built" not in result.stdout
    assert before == {p: p.stat().st_mtime_ns for p in old_out.rglob("*.json")}


def test_two_publishes_at_once_never_interleave(
    published_sample: Published, versions, old_out: Path, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    flag = tmp_path / "paused"
    first = start_paused(published_sample, old_out, "publish-staged", flag)
    # a second run with a mistyped --include fails on its own, touching nothing
    typo = cli(*publish_args(published_sample, old_out, "--include", "app-no-such-*"), check=False,
               env=env_with(NEW_EPOCH))
    assert typo.returncode == 2 and "matches no layer" in typo.stderr
    assert leftovers(old_out)  # the first run's staged archives are still there
    # a real second run waits for the first one, saying so
    second = subprocess.Popen([sys.executable, "-m", "venvstacks_docker",
                               *publish_args(published_sample, old_out, "--force")],
                              env=env_with(NEW_EPOCH), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    assert second.poll() is None
    flag.unlink()
    first.communicate(timeout=120)
    assert first.returncode == 0
    _, stderr = second.communicate(timeout=120)
    assert second.returncode == 0, stderr
    assert "waiting for pid" in stderr and "which is using the build folder" in " ".join(stderr.split())
    # the folder holds the second run's publication, whole: the new archives (rebuilt
    # to the same bytes, so they keep the first run's archive_build 2) with their metadata
    assert state(old_out) == versions["new"]
    assert leftovers(old_out) == []
    assert cli("verify", old_out).returncode == 0


# --- a full disk (a small tmpfs; mounting one needs root) -------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB file system of its own, so writes really fail with ENOSPC."""
    if os.geteuid() != 0:
        pytest.skip("NOT ROOT: cannot mount a small tmpfs, so a full disk (ENOSPC) is NOT tested")
    mount_point = tmp_path / "small disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"CANNOT MOUNT A TMPFS ({mounted.stderr.strip()}): a full disk (ENOSPC) is NOT tested")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_disk_full_while_archiving_keeps_the_old_publication(
    published_sample: Published, small_disk: Path  # type: ignore[no-untyped-def]
) -> None:
    out = small_disk / "out"
    publish(published_sample, out, OLD_EPOCH)
    old = state(out)
    # the runtime layer's archive (about 20 MB) cannot fit
    result = cli("publish", "--native", "--include", "cpython-3.11", "--include", "app-*",
                 "--build-dir", published_sample.build_dir, "--output-dir", out, published_sample.spec,
                 env=env_with(NEW_EPOCH), check=False)
    message = " ".join(result.stderr.split())
    assert result.returncode == 5, message
    assert "No space left on device" in message and "Traceback" not in message
    assert f"{out} still holds its previous publication" in message
    assert state(out) == old
    assert leftovers(out) == []
    assert cli("verify", out).returncode == 0


def test_disk_full_while_writing_metadata_keeps_the_old_publication(
    published_sample: Published, versions, small_disk: Path, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    out = small_disk / "out"
    publish(published_sample, out, OLD_EPOCH)
    flag = tmp_path / "paused"
    proc = start_paused(published_sample, out, "publish-staged", flag)
    filler = small_disk / "filler"
    with filler.open("wb") as f, pytest.raises(OSError, match="No space left"):
        while True:  # fill the disk to the last block
            f.write(b"\0" * 65536)
            f.flush()
    flag.unlink()
    _, stderr = proc.communicate(timeout=120)
    message = " ".join(stderr.split())
    assert proc.returncode == 5, message
    assert "cannot write into the output folder" in message and "No space left on device" in message
    assert "still holds its previous publication" in message and "Traceback" not in message
    assert state(out) == versions["old"]
    assert leftovers(out) == []
    filler.unlink()
    assert cli("verify", out).returncode == 0
    publish(published_sample, out, NEW_EPOCH)
    assert state(out) == versions["new"]


@pytest.mark.parametrize("tagged", [False, True])
def test_a_forced_rebuild_with_the_same_bytes_keeps_its_build_number(
    published_sample: Published, tmp_path: Path, tagged: bool
) -> None:
    out = tmp_path / "out"
    extra = ("--tag-outputs",) if tagged else ()
    publish(published_sample, out, OLD_EPOCH, *extra)
    before = state(out)
    result = publish(published_sample, out, OLD_EPOCH, "--force", *extra)
    assert "built" in result.stdout  # really rebuilt...
    assert state(out) == before  # ...to the same bytes: same names, same archive_build, same metadata
    assert leftovers(out) == []
    # new bytes do get a new number (and, tagged, a new name beside the old archive)
    publish(published_sample, out, NEW_EPOCH, *extra)
    manifest = (out / "__venvstacks__" / ("venvstacks-linux_x86_64.json" if tagged else "venvstacks.json")).read_text()
    assert manifest.count('"archive_build": 2') == 3
