"""Handing writable folders to the sandbox user and back (host side only, no engine).

These chown to other uids, so they need root: as anyone else they skip, loudly.  The
round trip through a real container is in test_sandbox.py.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest

from venvstacks_docker.errors import ContainerError
from venvstacks_docker.host.ownership import (
    DEFAULT_SANDBOX_USER,
    SANDBOX_UID_ENV,
    give_back,
    hand_over,
    readable_by_sandbox,
    sandbox_ownership,
    sandbox_user,
)

needs_root = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="NOT ROOT: these tests chown files to the sandbox uid, which only root may do "
    "(CI runs them as root)",
)
SANDBOX = DEFAULT_SANDBOX_USER


def _owners(root: Path) -> dict[str, tuple[int, int]]:
    """lstat owner of root and every entry below it, never following symlinks."""
    found = {".": (os.lstat(root).st_uid, os.lstat(root).st_gid)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = os.lstat(path)
            found[str(path.relative_to(root))] = (st.st_uid, st.st_gid)
    return found


def _tree(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A root-owned folder with files, subfolders and symlinks pointing outside it."""
    outside_file = tmp_path / "outside.txt"
    outside_file.write_text("outside\n")
    outside_dir = tmp_path / "outside-dir"
    outside_dir.mkdir()
    (outside_dir / "secret").write_text("s\n")
    work = tmp_path / "work"
    (work / "sub" / "deeper").mkdir(parents=True)
    (work / "file.txt").write_text("old\n")
    (work / "sub" / "deeper" / "leaf").write_text("leaf\n")
    (work / "link-to-file").symlink_to(outside_file)
    (work / "sub" / "link-to-dir").symlink_to(outside_dir)
    (work / "dangling").symlink_to(tmp_path / "missing")
    return work, outside_file, outside_dir


@pytest.fixture()
def sandbox_env(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.delenv(SANDBOX_UID_ENV, raising=False)
    return monkeypatch


@needs_root
def test_sandbox_user_for_root(sandbox_env) -> None:  # type: ignore[no-untyped-def]
    assert sandbox_user() == (65532, 65532)
    sandbox_env.setenv(SANDBOX_UID_ENV, "4242")
    assert sandbox_user() == (4242, 4242)
    sandbox_env.setenv(SANDBOX_UID_ENV, "4242:4343")
    assert sandbox_user() == (4242, 4343)
    for bad in ("0", "0:5", "5:0", "root", "1:2:3", "-1", "65532:"):
        sandbox_env.setenv(SANDBOX_UID_ENV, bad)
        with pytest.raises(ContainerError, match=SANDBOX_UID_ENV):
            sandbox_user()


def _as_non_root_caller(check: Callable[[], None]) -> None:
    """Run ``check`` as the test process itself, or, when that is root, in a forked child
    that has dropped to nobody (65534) for good: a real non-root caller either way."""
    if os.geteuid() != 0:
        check()
        return
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            check()
            code = 0
        except BaseException as exc:  # noqa: BLE001 - report, then leave the child without cleanup
            print(f"non-root check failed: {exc!r}", file=sys.stderr)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the check failed as a non-root caller (see stderr)"


def test_sandbox_user_is_the_caller_when_not_root(sandbox_env) -> None:  # type: ignore[no-untyped-def]
    sandbox_env.setenv(SANDBOX_UID_ENV, "4242")
    folder = Path(tempfile.mkdtemp(prefix="vsd-nonroot-"))
    (folder / "f").write_text("x")
    if os.geteuid() == 0:
        for path in (folder, folder / "f"):
            os.chown(path, 65534, 65534)

    def check() -> None:
        assert sandbox_user() == (os.geteuid(), os.getegid()) != (0, 0)
        assert hand_over([folder]) == 0
        assert give_back([folder]) == 0

    try:
        _as_non_root_caller(check)
        assert (folder / "f").read_text() == "x"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@needs_root
def test_hand_over_and_give_back_never_follow_symlinks(sandbox_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    work, outside_file, outside_dir = _tree(tmp_path)
    entries = len(_owners(work))
    assert hand_over([work]) == entries
    assert set(_owners(work).values()) == {SANDBOX}
    # the targets of the symlinks, outside the folder, were not touched
    for path in (outside_file, outside_dir, outside_dir / "secret"):
        assert (os.lstat(path).st_uid, os.lstat(path).st_gid) == (0, 0), path
    # nothing left to do: only what needs it is chowned
    assert hand_over([work]) == 0
    # the container would write here as the sandbox user; a root file appears meanwhile
    (work / "new-by-root").write_text("r\n")
    assert give_back([work]) == entries
    assert set(_owners(work).values()) == {(0, 0)}
    assert give_back([work]) == 0


@needs_root
def test_a_setuid_file_made_in_the_sandbox_never_comes_back_setuid_root(sandbox_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    work = tmp_path / "work"
    work.mkdir()
    hand_over([work])
    for name, mode in (("suid", 0o4755), ("sgid", 0o2755), ("both", 0o6711)):
        made = work / name
        made.write_text("#!/bin/sh\n")
        os.chown(made, *SANDBOX)  # as the container would have made it
        made.chmod(mode)
        assert stat.S_IMODE(made.stat().st_mode) == mode
    (work / "setgid-dir").mkdir()
    os.chown(work / "setgid-dir", *SANDBOX)
    (work / "setgid-dir").chmod(0o2755)
    give_back([work])
    for name, mode in (("suid", 0o755), ("sgid", 0o755), ("both", 0o711)):
        st = (work / name).stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, mode), name
    # folders keep setgid (it only makes new entries inherit the group)
    assert stat.S_IMODE((work / "setgid-dir").stat().st_mode) == 0o2755


@needs_root
def test_walk_stays_on_the_folders_file_system(sandbox_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    work = tmp_path / "work"
    inner = work / "mounted"
    inner.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(inner)]).returncode:
        pytest.skip("CANNOT MOUNT a tmpfs here to check that the walk stays on one file system")
    try:
        (inner / "on-another-fs").write_text("x")
        hand_over([work])
        # the mount point is an entry of the folder; what is mounted there is not walked
        assert os.lstat(inner / "on-another-fs").st_uid == 0
    finally:
        subprocess.run(["umount", str(inner)], check=True)
    give_back([work])


@needs_root
def test_runs_sharing_a_folder_give_it_back_once_the_last_one_ends(sandbox_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    work, _outside, _dir = _tree(tmp_path)
    with ExitStack() as first:
        assert first.enter_context(sandbox_ownership([work])) == SANDBOX
        with sandbox_ownership([work, work / "sub"]):
            (work / "written-by-second").write_text("x")
            os.chown(work / "written-by-second", *SANDBOX)
        # the second run ended, but the first one's container may still be writing
        assert set(_owners(work).values()) == {SANDBOX}
    assert set(_owners(work).values()) == {(0, 0)}


_KILLED_HOLDER = textwrap.dedent(
    """
    import os, signal, sys, time
    from venvstacks_docker.host.ownership import sandbox_ownership
    with sandbox_ownership([sys.argv[1]]):
        if sys.argv[2] == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        print("holding", flush=True)
        time.sleep(300)
    """
)


@needs_root
def test_a_later_run_repairs_what_a_sigkilled_run_never_gave_back(sandbox_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    work, _outside, _dir = _tree(tmp_path)
    died = subprocess.run([sys.executable, "-c", _KILLED_HOLDER, str(work), "die"])
    assert died.returncode == -9
    assert set(_owners(work).values()) == {SANDBOX}
    # a live run holding the folder is not robbed by the repair of another run ...
    holder = subprocess.Popen([sys.executable, "-c", _KILLED_HOLDER, str(work), "hold"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        with sandbox_ownership([work]):
            pass
        assert set(_owners(work).values()) == {SANDBOX}
    finally:
        holder.kill()
        holder.communicate()  # reaps it and closes its pipe
    # ... and once nobody holds it, the next run gives everything back
    with sandbox_ownership([work]):
        assert set(_owners(work).values()) == {SANDBOX}
    assert set(_owners(work).values()) == {(0, 0)}


@needs_root
def test_tens_of_thousands_of_files_are_cheap(sandbox_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    work = tmp_path / "many"
    for d in range(200):
        folder = work / f"d{d:03}"
        folder.mkdir(parents=True)
        for f in range(100):
            (folder / f"f{f:03}").touch()
    timings = {}
    for step, call, expected in (
        ("hand over", hand_over, 20_201),
        ("hand over again", hand_over, 0),
        ("give back", give_back, 20_201),
        ("give back again", give_back, 0),
    ):
        start = time.perf_counter()
        assert call([work]) == expected, step
        timings[step] = time.perf_counter() - start
    print(f"20,201 entries: {', '.join(f'{k} {v:.2f}s' for k, v in timings.items())}")
    # generous bounds for a shared 2-core machine; typically well under a second each
    assert timings["hand over again"] < 10 and timings["give back"] < 20, timings


@needs_root
def test_readable_by_sandbox_copies_only_what_it_cannot_read(sandbox_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    secret = tmp_path / "credentials"
    secret.write_text("token\n")
    secret.chmod(0o600)
    public = tmp_path / "public"
    public.write_text("ca\n")
    public.chmod(0o644)
    with readable_by_sandbox(public) as same:
        assert same == public
    with readable_by_sandbox(secret) as copy:
        assert copy != secret and copy.read_text() == "token\n"
        st = copy.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (*SANDBOX, 0o400)
    assert not copy.exists() and not copy.parent.exists()
    st = secret.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o600)
