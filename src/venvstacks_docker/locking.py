"""One writer per folder: advisory file locks around lock, build, publish and export.

Every command that writes into a build folder, an output folder or a ``requirements/``
tree holds that folder's lock for its whole run, so two runs never interleave their
writes.  A second run *waits* (printing once who holds the lock), like cargo does on
a busy target folder; Ctrl-C stops the wait.

The locks are ``flock`` locks (through :mod:`filelock`) on a file of the guarded folder,
so they work across processes, across builder containers that bind-mount the folder,
and vanish when the holder dies, SIGKILL included: a lock is never stale.

When the host runs a command in a builder container, the host process takes the locks
and the command inside the container is told so (:data:`HELD_ENV`); it must not wait
for its own parent.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from venvstacks_docker.errors import FilesystemError

#: JSON list of lock files the parent process (the host side of a container run) holds.
HELD_ENV: Final = "VENVSTACKS_DOCKER_HELD_LOCKS"
#: Hidden folder the tool keeps in folders it writes (lock file, publish staging).
STATE_DIR: Final = ".venvstacks-docker"

#: A unique id for this process's run: names its temporary files and staging folders.
RUN_ID: Final = uuid.uuid4().hex[:16]

# Lock files this process holds, with a count: ``hold`` is re-entrant, so a stage
# function can take the locks it needs even when the command around it already has.
_HELD_HERE: dict[str, int] = {}


@dataclass(frozen=True, kw_only=True)
class FolderLock:
    """The lock guarding one folder."""

    lock_file: Path
    what: str
    """How messages name the guarded folder, e.g. ``"the output folder /x/_artifacts"``."""


def folder_lock(folder: Path, what: str) -> FolderLock:
    """The lock of a build, output or export folder (a file inside it)."""
    folder = Path(folder).absolute()
    return FolderLock(lock_file=folder / STATE_DIR / "lock", what=f"{what} {folder}")


def requirements_lock(requirements_dir: Path) -> FolderLock:
    """The lock of a spec's ``requirements/`` tree.

    Kept in the cache, not next to the committed lock files, so it never shows up in
    the user's version control.
    """
    from venvstacks_docker.runtimes import cache_root

    key = hashlib.sha256(os.fsencode(Path(requirements_dir).absolute())).hexdigest()[:24]
    return FolderLock(lock_file=cache_root() / "locks" / f"requirements-{key}.lock",
                      what=f"the lock files in {Path(requirements_dir).absolute()}")


def work_locks(*, requirements_dir: Path | None = None, build_dir: Path | None = None,
               output_dir: Path | None = None, output_what: str = "the output folder") -> list[FolderLock]:
    """The locks a command needs, in the one order every command takes them.

    (requirements, then build, then output: a fixed order means two runs can never
    each hold one lock the other waits for.)
    """
    locks = []
    if requirements_dir is not None:
        locks.append(requirements_lock(requirements_dir))
    if build_dir is not None:
        locks.append(folder_lock(build_dir, "the build folder"))
    if output_dir is not None:
        locks.append(folder_lock(output_dir, output_what))
    return locks


def held_by_parent() -> set[str]:
    """Lock files the host side holds for this (in-container) process."""
    raw = os.environ.get(HELD_ENV)
    if not raw:
        return set()
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return set()
    return {str(v) for v in value} if isinstance(value, list) else set()


def _owner_text(command: str) -> str:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "run_id": RUN_ID,
                       "command": command, "since": time.strftime("%H:%M:%S")})


def _describe_owner(owner_file: Path) -> str:
    try:
        data = json.loads(owner_file.read_text(encoding="utf-8"))
        return (f"pid {data['pid']} on {data['host']}, `venvstacks-docker {data['command']}` "
                f"since {data['since']}")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def hold(locks: Sequence[FolderLock], *, command: str, say: Callable[[str], None]) -> Iterator[None]:
    """Hold every lock in ``locks`` (in the order given) for the ``with`` block.

    Waits for a busy lock, telling ``say`` once who holds it.  Locks the parent process
    already holds (:data:`HELD_ENV`) are skipped.

    :raises FilesystemError: when a lock file cannot be created (read-only folder,
        permissions, disk full).
    """
    from filelock import FileLock, Timeout

    held = held_by_parent()
    with contextlib.ExitStack() as stack:
        for lock in locks:
            key = str(lock.lock_file)
            if key in held:
                continue
            if key in _HELD_HERE:
                _HELD_HERE[key] += 1
                stack.callback(_forget, key)
                continue
            try:
                lock.lock_file.parent.mkdir(parents=True, exist_ok=True)
                flock = FileLock(lock.lock_file)
                try:
                    flock.acquire(timeout=0)
                except Timeout:
                    owner = _describe_owner(lock.lock_file.with_name(lock.lock_file.name + ".owner"))
                    say(f"waiting for {owner}, which is using {lock.what} (Ctrl-C to stop waiting)")
                    flock.acquire()
                stack.callback(flock.release)
                _HELD_HERE[key] = 1
                stack.callback(_forget, key)
                owner_file = lock.lock_file.with_name(lock.lock_file.name + ".owner")
                owner_file.write_text(_owner_text(command), encoding="utf-8")
            except OSError as exc:
                raise FilesystemError(
                    f"cannot lock {lock.what}: {exc.strerror or exc}",
                    hint="the folder must be writable (and the disk not full)",
                ) from exc
        yield


def _forget(key: str) -> None:
    _HELD_HERE[key] -= 1
    if not _HELD_HERE[key]:
        del _HELD_HERE[key]


def holds(lock: FolderLock) -> bool:
    """Whether this process (or, for a container run, its host) holds ``lock``."""
    key = str(lock.lock_file)
    return key in _HELD_HERE or key in held_by_parent()


@contextlib.contextmanager
def exclusive(lock_file: Path) -> Iterator[bool]:
    """Hold an exclusive lock on ``lock_file`` for the ``with`` block; yield whether it
    had to wait for another holder first.

    For the tool's own shared state (a runtime build folder, a builder image being
    built, a file being downloaded), where the second process simply waits, silently
    and as long as it takes, and then re-checks whether the first one already did the
    work.  An ``flock`` through :mod:`filelock`, like :func:`hold`'s locks: it vanishes
    with its holder, SIGKILL included.  Not re-entrant: a second ``exclusive`` on the
    same file waits even in the same process (so threads exclude each other too).
    """
    from filelock import FileLock, Timeout

    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_file)
    try:
        lock.acquire(timeout=0)
        waited = False
    except Timeout:
        lock.acquire()
        waited = True
    try:
        yield waited
    finally:
        lock.release()


def cache_lock(name: str) -> contextlib.AbstractContextManager[bool]:
    """:func:`exclusive` on ``<cache>/locks/<name>.lock``, the folder of the tool's own locks."""
    from venvstacks_docker.runtimes import cache_root

    return exclusive(cache_root() / "locks" / f"{name}.lock")


def held_env(locks: Sequence[FolderLock]) -> dict[str, str]:
    """The environment telling an in-container command which locks its host holds."""
    return {HELD_ENV: json.dumps(sorted(str(lock.lock_file) for lock in locks))}


__all__ = ["HELD_ENV", "RUN_ID", "STATE_DIR", "FolderLock", "cache_lock", "exclusive", "folder_lock",
           "held_by_parent", "held_env", "hold", "holds", "requirements_lock", "work_locks"]
