"""Who owns the files in the folders a builder container writes to.

A builder container never runs as root.  When the caller is an ordinary user it runs as
the caller's uid:gid, so what it writes into the bind-mounted folders already belongs to
the caller and nothing here does anything.  When the caller is root it runs as a
dedicated unprivileged *sandbox* user (:func:`sandbox_user`, ``65532:65532`` unless
``VENVSTACKS_DOCKER_SANDBOX_UID`` says otherwise), which must be able to write the
mounted folders during the run, while afterwards everything in them must belong to root
again, as if root had run the command natively.  So:

- :func:`hand_over` lchowns every entry of the writable folders to the sandbox user
  before the run;
- :func:`give_back` lchowns every entry the sandbox user owns back to the caller after
  it (and repairs what a SIGKILLed host never gave back);
- :func:`sandbox_ownership` wraps both for one run and serialises them with other runs
  sharing a folder (a cache, say): a shared ``flock`` on each folder for the whole run,
  an exclusive one for giving back, so a run never takes files away from another run's
  live container;
- :func:`readable_by_sandbox` gives a private copy of a read-only file (a credentials
  file with mode 0600, say) that the sandbox user can read, leaving the original alone.

The walks never follow symlinks (every step is an ``O_NOFOLLOW`` open relative to the
parent directory's descriptor, and symlinks themselves are lchowned), never leave the
given folders (no crossing into other file systems mounted inside them) and chown only
entries that need it, so a second hand-over of an unchanged tree costs one ``lstat`` per
entry.  The sandbox uid must not belong to anyone on the host: giving back turns every
entry it owns into the caller's.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from venvstacks_docker.errors import ContainerError

#: ``uid`` or ``uid:gid`` of the unprivileged user builder containers run as for root.
SANDBOX_UID_ENV: Final = "VENVSTACKS_DOCKER_SANDBOX_UID"
#: The default sandbox user, the "nonroot" user of distroless images, which no
#: distribution hands out to real accounts.
DEFAULT_SANDBOX_USER: Final = (65532, 65532)

# (getattr: the module must import anywhere; it only ever acts on POSIX hosts)
_DIR_FLAGS: Final = (
    os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
)
#: Errors meaning "this entry vanished or was swapped for something else meanwhile".
_GONE: Final = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)
_SETID: Final = stat.S_ISUID | stat.S_ISGID


def _caller() -> tuple[int, int]:
    return os.geteuid(), os.getegid()


def sandbox_user() -> tuple[int, int]:
    """The uid:gid builder containers run as: the caller's, or the sandbox user's for root.

    :raises ContainerError: when ``VENVSTACKS_DOCKER_SANDBOX_UID`` is not ``uid`` or
        ``uid:gid`` with non-zero numbers.
    """
    uid, gid = _caller()
    if uid != 0:
        return uid, gid
    raw = os.environ.get(SANDBOX_UID_ENV, "").strip()
    if not raw:
        return DEFAULT_SANDBOX_USER
    parts = raw.split(":")
    ids = [int(p) for p in parts if p.isdigit()]
    if len(parts) > 2 or len(ids) != len(parts) or 0 in ids:
        raise ContainerError(
            f"{SANDBOX_UID_ENV}={raw!r} is not a non-root `uid` or `uid:gid`",
            hint=f"use numbers other than 0, e.g. {SANDBOX_UID_ENV}=65532 or 65532:65532, "
            "of a user that owns nothing on this machine",
        )
    return ids[0], ids[-1]


def is_sandboxed() -> bool:
    """Whether containers run as a user other than the caller (the caller is root)."""
    return sandbox_user()[0] != _caller()[0]


# -- the walk -------------------------------------------------------------------------


def _open_dir(name: str | Path, parent_fd: int | None, expected: os.stat_result) -> int | None:
    """Open a directory without following symlinks; ``None`` if it changed meanwhile."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in _GONE:
            return None
        raise
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (expected.st_dev, expected.st_ino):
        os.close(fd)
        return None
    return fd


def _chown_one(name: str | Path, parent_fd: int | None, st: os.stat_result, owner: tuple[int, int]) -> None:
    """lchown one entry; a regular file also loses any setuid/setgid bit.

    The kernel already clears those bits on chown; checking again costs nothing (only
    such files are reopened), and it is what guarantees that a file the sandbox user
    made setuid never becomes a setuid-root file when it is given back.
    """
    os.chown(name, *owner, dir_fd=parent_fd, follow_symlinks=False)
    if not (stat.S_ISREG(st.st_mode) and st.st_mode & _SETID):
        return
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent_fd)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode) and mode & _SETID:
            os.fchmod(fd, stat.S_IMODE(mode) & ~_SETID)
    finally:
        os.close(fd)


def _chown_entries(
    fd: int, wants: Callable[[os.stat_result], bool], owner: tuple[int, int], device: int
) -> tuple[int, list[tuple[str, os.stat_result]]]:
    """Chown the wanted entries of one open directory; return the count and its subfolders."""
    changed = 0
    subdirs: list[tuple[str, os.stat_result]] = []
    with os.scandir(fd) as entries:
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
                if wants(st):
                    _chown_one(entry.name, fd, st, owner)
                    changed += 1
            except OSError as exc:
                if exc.errno in _GONE:
                    continue
                raise
            if stat.S_ISDIR(st.st_mode) and st.st_dev == device:
                subdirs.append((entry.name, st))
    return changed, subdirs


def _chown_tree(root: Path, wants: Callable[[os.stat_result], bool], owner: tuple[int, int]) -> int:
    """lchown ``owner`` onto ``root`` and every entry below it for which ``wants(lstat)``.

    Depth first, holding one directory descriptor per level (not per pending folder),
    so a folder with a hundred thousand subfolders does not run out of descriptors.
    """
    root_st = os.lstat(root)
    changed = 0
    if wants(root_st):
        _chown_one(root, None, root_st, owner)
        changed += 1
    if not stat.S_ISDIR(root_st.st_mode):
        return changed
    pending = _open_dir(root, None, root_st)
    stack: list[tuple[int, list[tuple[str, os.stat_result]]]] = []
    try:
        while pending is not None or stack:
            if pending is not None:
                count, subdirs = _chown_entries(pending, wants, owner, root_st.st_dev)
                changed += count
                stack.append((pending, subdirs))
                pending = None
            fd, subdirs = stack[-1]
            if not subdirs:
                os.close(fd)
                stack.pop()
                continue
            name, st = subdirs.pop()
            pending = _open_dir(name, fd, st)
    finally:
        for fd, _subdirs in stack:
            os.close(fd)
    return changed


def _checked(action: str, path: Path, wants: Callable[[os.stat_result], bool], owner: tuple[int, int]) -> int:
    """:func:`_chown_tree`, with file system errors turned into a message for the user."""
    try:
        return _chown_tree(path, wants, owner)
    except OSError as exc:
        raise ContainerError(
            f"cannot {action} {path}: {exc.strerror or exc}",
            hint="the folder must be on a writable file system that root may chown",
        ) from None


def hand_over(folders: Iterable[Path | str]) -> int:
    """Give every entry of ``folders`` (themselves included) to the sandbox user.

    Entries it already owns are left alone; symlinks are lchowned, never followed.  A
    no-op unless the caller is root.  Not serialised with other runs: prefer
    :func:`sandbox_ownership`.

    :returns: how many entries changed owner.
    """
    if not is_sandboxed():
        return 0
    owner = sandbox_user()

    def wants(st: os.stat_result) -> bool:
        return (st.st_uid, st.st_gid) != owner

    return sum(_checked("hand over", Path(f), wants, owner) for f in folders)


def give_back(folders: Iterable[Path | str]) -> int:
    """Give every entry of ``folders`` that the sandbox user owns back to the caller.

    Safe to repeat, and to run at the start of a later run to repair what a SIGKILLed
    host never gave back, provided no live container of another run is using the
    folders (:func:`sandbox_ownership` makes sure of that).  A no-op unless the caller
    is root.

    :returns: how many entries changed owner.
    """
    if not is_sandboxed():
        return 0
    sandbox_uid = sandbox_user()[0]
    owner = _caller()

    def wants(st: os.stat_result) -> bool:
        return st.st_uid == sandbox_uid

    return sum(_checked("give back", Path(f), wants, owner) for f in folders)


# -- one run ----------------------------------------------------------------------------


def _outermost(folders: Iterable[Path | str]) -> list[Path]:
    """Resolved folders, without those inside another one (walked once, locked once)."""
    resolved = sorted({Path(f).resolve() for f in folders})
    kept: list[Path] = []
    for folder in resolved:
        if not any(folder == k or k in folder.parents for k in kept):
            kept.append(folder)
    return kept


def _acquire(folder: Path) -> int:
    """Lock ``folder`` shared for a run, handing it over (and repairing it) on the way.

    Alone (exclusive lock granted at once): first give back what a dead run left, then
    hand over, then downgrade to shared.  With other runs present (they hold it shared):
    wait for a shared lock and hand over what is not handed over yet (files the host
    wrote since), which takes nothing away from them.  No exclusive lock is ever held
    while waiting for another one, so runs sharing several folders cannot deadlock.
    """
    import fcntl

    fd = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            give_back([folder])
        except BlockingIOError:
            fcntl.flock(fd, fcntl.LOCK_SH)
        hand_over([folder])
        fcntl.flock(fd, fcntl.LOCK_SH)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _release(fd: int, folder: Path) -> None:
    """Give ``folder`` back if no other run holds it, then unlock it.

    The conversion to an exclusive lock drops ours first; if another run holds the
    folder, the last one to finish gives it back.
    """
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pass
    else:
        give_back([folder])
    finally:
        os.close(fd)


@contextmanager
def sandbox_ownership(folders: Iterable[Path | str]) -> Iterator[tuple[int, int]]:
    """Hand ``folders`` to the sandbox user for the ``with`` block, then give them back.

    Yields the uid:gid the container must run as.  Leave the block only once the
    container is gone (removed, or at least stopped): giving back while it still writes
    leaves its newest files with the sandbox user until the next run repairs them.
    Every exit (exception, Ctrl-C) gives back; a SIGKILL releases the locks, and the
    next run on the same folder gives back first.  A no-op unless the caller is root.
    """
    user = sandbox_user()
    if not is_sandboxed():
        yield user
        return
    held: list[tuple[int, Path]] = []
    try:
        for folder in _outermost(folders):
            held.append((_acquire(folder), folder))
        yield user
    finally:
        errors: list[BaseException] = []
        for fd, folder in reversed(held):
            try:
                _release(fd, folder)
            except BaseException as exc:  # noqa: BLE001 - give back the others anyway
                errors.append(exc)
        if errors:
            raise errors[0]


def _sandbox_can_read(st: os.stat_result, user: tuple[int, int]) -> bool:
    if st.st_uid == user[0]:
        return bool(st.st_mode & stat.S_IRUSR)
    if st.st_gid == user[1]:
        return bool(st.st_mode & stat.S_IRGRP)
    return bool(st.st_mode & stat.S_IROTH)


@contextmanager
def readable_by_sandbox(path: Path | str) -> Iterator[Path]:
    """Yield a file with ``path``'s content that the container's user can read.

    That is ``path`` itself when it already can (always, unless the caller is root);
    otherwise a private copy owned by the sandbox user with mode 0400, in a fresh 0700
    folder, removed when the block ends.  The original is never modified, so a
    credentials file keeps its owner and mode.  Meant for files mounted read-only.
    """
    path = Path(path)
    user = sandbox_user()
    if not is_sandboxed() or _sandbox_can_read(os.stat(path), user):
        yield path
        return
    folder = Path(tempfile.mkdtemp(prefix="venvstacks-docker-ro-"))
    try:
        copy = folder / path.name
        created = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o400)
        with open(path, "rb") as source, open(created, "wb") as target:
            shutil.copyfileobj(source, target)
        os.chown(copy, *user)
        yield copy
    finally:
        shutil.rmtree(folder, ignore_errors=True)


#: Image folders only root may enter (``/root`` is 0700 in Debian images).  A same-path
#: mount below one (root's cache is ``/root/.cache``) would be out of the sandbox
#: user's reach.  (Mounting a 0755 tmpfs there does not help: runc gives a tmpfs the
#: mode of the folder it covers.)
CLOSED_IMAGE_FOLDERS: Final = ("/root",)


@contextmanager
def mount_point_skeletons(points: Iterable[tuple[str, bool]]) -> Iterator[dict[str, Path]]:
    """Host folders to bind read-only over closed image folders, so mounts below are reachable.

    :param points: ``(container path, is a folder)`` of every mount of the container.
    :returns: for each of :data:`CLOSED_IMAGE_FOLDERS` that has mount points below it,
        a fresh host folder (removed when the block ends) holding only those mount
        points (folders, or empty files for file mounts), made 0755/0644 whatever our
        umask, so the container's user can walk to them.  The engine sorts mounts by
        depth, so the skeleton goes first and the real mounts land on its mount points.
    """
    made: dict[str, Path] = {}
    try:
        for folder in CLOSED_IMAGE_FOLDERS:
            below = [(path, is_dir) for path, is_dir in points if path.startswith(folder + "/")]
            if not below:
                continue
            skeleton = made[folder] = Path(tempfile.mkdtemp(prefix="venvstacks-docker-skeleton-"))
            skeleton.chmod(0o755)
            for path, is_dir in below:
                parts = Path(path).relative_to(folder).parts
                for depth in range(1, len(parts) + 1):
                    point = skeleton.joinpath(*parts[:depth])
                    if depth == len(parts) and not is_dir:
                        point.touch(exist_ok=True)
                        point.chmod(0o644)
                    else:
                        point.mkdir(exist_ok=True)
                        point.chmod(0o755)
        yield made
    finally:
        for skeleton in made.values():
            shutil.rmtree(skeleton, ignore_errors=True)


__all__ = [
    "CLOSED_IMAGE_FOLDERS",
    "DEFAULT_SANDBOX_USER",
    "SANDBOX_UID_ENV",
    "give_back",
    "hand_over",
    "is_sandboxed",
    "mount_point_skeletons",
    "readable_by_sandbox",
    "sandbox_ownership",
    "sandbox_user",
]
