"""Publishing into an output folder as one transaction.

A publish must never leave an output folder whose archives disagree with its metadata,
whatever happens to the run (Ctrl-C, SIGTERM, SIGKILL, a killed container, a full
disk).  So a run never writes a final file directly:

1. **stage**: every new archive and metadata file is written, complete and fsynced,
   under ``<out>/.venvstacks-docker/staging-<run id>/`` at the path it will have;
2. **journal**: the list of staged files is written atomically to
   ``<out>/.venvstacks-docker/journal.json``: from this moment the publication counts
   as committed;
3. **apply**: each staged file is renamed over its final path (same file system, so
   each rename is atomic), then the journal and the staging folder are removed.

A run that dies before step 2 leaves only a staging folder, which readers ignore and
the next run removes: the folder still holds the previous publication.  A run that dies
during step 3 leaves a journal, and whoever opens the folder next (``publish``,
``verify``, ``deploy``, or the host after a killed container) rolls it forward first:
the folder then holds the complete new publication.

Everything here assumes the caller holds the output folder's lock
(:func:`venvstacks_docker.locking.hold`), which is also what makes it safe to delete
another run's staging folder: only the lock holder writes, so any other staging folder
was left by a run that is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from venvstacks_docker import _testhooks
from venvstacks_docker.errors import FilesystemError, PublishError
from venvstacks_docker.locking import RUN_ID, STATE_DIR

JOURNAL_VERSION: Final = 1
_STAGING_PREFIX: Final = "staging-"


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _journal_path(out: Path) -> Path:
    return out / STATE_DIR / "journal.json"


def pending_journal(out: Path) -> bool:
    """Whether an interrupted commit waits to be rolled forward in ``out``."""
    return _journal_path(Path(out)).is_file()


def _roll_forward(out: Path, journal: Path) -> int:
    try:
        data = json.loads(journal.read_text(encoding="utf-8"))
        staging = out / STATE_DIR / (_STAGING_PREFIX + str(data["run_id"]))
        moves = [str(rel) for rel in data["moves"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PublishError(
            f"cannot read the publish journal {journal}: {exc}",
            hint="the journal is only written complete; if it was edited by hand, remove "
            "the .venvstacks-docker folder and publish again",
        ) from exc
    done = _apply(out, staging, moves)
    journal.unlink()
    _fsync_dir(journal.parent)
    shutil.rmtree(staging, ignore_errors=True)
    return done


def _apply(out: Path, staging: Path, moves: list[str]) -> int:
    """Rename staged files over their final paths; already-moved ones are skipped."""
    done = 0
    parents: set[Path] = set()
    for rel in moves:
        source, target = staging / rel, out / rel
        if not source.exists():
            continue  # moved before the interruption
        target.parent.mkdir(parents=True, exist_ok=True)
        source.replace(target)
        parents.add(target.parent)
        done += 1
        _testhooks.pause("publish-commit")
    for parent in sorted(parents):
        _fsync_dir(parent)
    return done


def _legacy_temporary(name: str) -> bool:
    # ``.NAME.tmp-<pid>`` and ``.NAME.<random>.tmp`` files of tool versions before 0.2
    return name.startswith(".") and (".tmp-" in name or name.endswith(".tmp"))


def recover(out: Path) -> list[str]:
    """Bring ``out`` to a settled state; returns what was done, for the log.

    Rolls a committed publication forward, then removes staging folders and temporary
    files that runs which are gone left behind.  The caller holds the folder's lock.
    """
    out = Path(out)
    notes: list[str] = []
    state = out / STATE_DIR
    try:
        journal = _journal_path(out)
        if journal.is_file():
            n = _roll_forward(out, journal)
            notes.append(f"finished an interrupted publication in {out} ({n} file(s) moved into place)")
        if state.is_dir():
            for item in sorted(state.iterdir()):
                if item.name.startswith(_STAGING_PREFIX) and item.name != _STAGING_PREFIX + RUN_ID:
                    shutil.rmtree(item, ignore_errors=True)
                    notes.append(f"removed {item.name}, left by an interrupted run")
        for folder in (out, out / "__venvstacks__", out / "__venvstacks__" / "env_metadata"):
            if folder.is_dir():
                for item in folder.iterdir():
                    if item.is_file() and _legacy_temporary(item.name):
                        item.unlink(missing_ok=True)
    except OSError as exc:
        raise FilesystemError(f"cannot tidy up the output folder {out}: {exc.strerror or exc}",
                              hint="check the folder's permissions and free space") from exc
    return notes


@contextlib.contextmanager
def settled(out: Path, *, command: str, say: Callable[[str], None]) -> Iterator[None]:
    """Read ``out`` while no publish writes it, with any interrupted commit finished.

    For readers (``verify``, ``deploy``): holds the output folder's lock when this tool
    has published there and the folder is writable, rolling a pending journal forward
    first.  A read-only folder (a mounted release medium) is read without the lock,
    unless it holds an unfinished commit, which only a writer can finish.
    """
    from venvstacks_docker.locking import folder_lock, hold

    out = Path(out)
    if not (out / STATE_DIR).is_dir():
        yield  # never published into by this tool (or not a folder): nothing to wait for
        return
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(hold([folder_lock(out, "the output folder")], command=command, say=say))
    except FilesystemError:
        if pending_journal(out):
            raise
        yield  # read-only: nobody can be writing it through us
        return
    with stack:
        for note in recover(out):
            say(note)
        yield


class OutputTransaction:
    """The files one run publishes into ``out``, staged until :meth:`commit`."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.staging = self.out / STATE_DIR / (_STAGING_PREFIX + RUN_ID)
        self._staged: list[str] = []
        self.committed = False
        """True once the journal is written: the new publication is then the folder's."""

    def path_for(self, rel: str) -> Path:
        """Where to write the file that will become ``out/rel`` (parents created)."""
        target = self.staging / rel
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _write_error(self.out, exc) from exc
        if rel not in self._staged:
            self._staged.append(rel)
        return target

    def stage_text(self, rel: str, text: str) -> None:
        """Stage a (metadata) text file, complete and fsynced."""
        path = self.path_for(rel)
        try:
            with path.open("w", encoding="utf-8", newline="\n") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            path.chmod(0o644)
        except OSError as exc:
            raise _write_error(self.out, exc) from exc

    def forget(self, rel: str) -> None:
        """Unstage ``rel`` (its final file already holds the same bytes)."""
        (self.staging / rel).unlink(missing_ok=True)
        if rel in self._staged:
            self._staged.remove(rel)

    def rename(self, rel: str, new_rel: str) -> None:
        """Stage the file staged as ``rel`` under the final path ``new_rel`` instead."""
        target = self.path_for(new_rel)
        (self.staging / rel).replace(target)
        if rel in self._staged:
            self._staged.remove(rel)

    @property
    def staged(self) -> tuple[str, ...]:
        """The staged files, relative to the output folder, in staging order."""
        return tuple(self._staged)

    def abort(self) -> None:
        """Forget everything staged; ``out`` is left exactly as it was."""
        shutil.rmtree(self.staging, ignore_errors=True)

    def commit(self) -> None:
        """Make every staged file final, all or (after a crash, eventually) nothing."""
        if not self._staged:
            self.abort()
            return
        journal = _journal_path(self.out)
        text = json.dumps({"journal_version": JOURNAL_VERSION, "run_id": RUN_ID,
                           "moves": self._staged}, indent=2) + "\n"
        tmp = journal.with_name(f".journal.{RUN_ID}.tmp")
        with _signals_deferred():
            try:
                _fsync_dir(self.staging)
                with tmp.open("w", encoding="utf-8") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
                tmp.replace(journal)
                _fsync_dir(journal.parent)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                self.abort()
                raise _write_error(self.out, exc) from exc
            # committed: from here on a crash is rolled forward by the next reader
            self.committed = True
            _roll_forward(self.out, journal)


def _write_error(out: Path, exc: OSError) -> PublishError:
    where = f" ({exc.filename})" if exc.filename else ""
    return PublishError(
        f"cannot write into the output folder {out}: {exc.strerror or exc}{where}",
        hint="free some space or fix the folder's permissions, then publish again",
    )


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold back SIGINT and SIGTERM for the few milliseconds a commit takes.

    A signal that arrives meanwhile is delivered as soon as the commit is done, so
    Ctrl-C never lands between two renames (SIGKILL can; the journal covers that).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def remember(signum: int, frame: Any) -> None:
        pending.append(signum)

    previous = {sig: signal.signal(sig, remember) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in pending[:1]:
            signal.raise_signal(signum)


__all__ = ["JOURNAL_VERSION", "OutputTransaction", "pending_journal", "recover", "settled"]
