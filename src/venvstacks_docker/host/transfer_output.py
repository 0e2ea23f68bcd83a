"""The output folder in copy mode: its mirror on the engine, and the publication coming back.

**The mirror.**  The builder container publishes into a per-project volume that mirrors
the host's output folder, so a publish there reuses unchanged archives and numbers
builds exactly as it would here.  The volume carries a record,
``.venvstacks-docker/transfer.json``: the sha256 of every file of the publication it
holds, and whether a run is using it (``busy``).  Before a run, the record is compared
with the host's folder: equal and not busy, the volume is reused as it is; anything
else (first use, a native publish since, a run that died) and the volume is made anew
from the host's publication.  The record is marked busy before the container starts and
clean only once the host holds the same publication.

**Coming back.**  The host's output folder changes only as a publish changes it,
through :class:`~venvstacks_docker.txn.OutputTransaction`: the metadata files that
differ are staged, then each archive their metadata names, unless the host already has
those very bytes; every archive is checked against its metadata's size and sha256 as it
arrives; then the whole folder-to-be (the host's files with the staged ones over them,
hard-linked into a preview) is checked with :func:`~venvstacks_docker.verify.verify_output_dir`;
only then is the transaction committed.  An engine that disappears, a Ctrl-C, a full
disk or a damaged archive before that leave the host's folder as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO, Any, Final

from venvstacks_docker import _testhooks
from venvstacks_docker.errors import ContainerError, Interrupted
from venvstacks_docker.host.transfer_tar import Entry, members, tree_entries
from venvstacks_docker.host.volumes import Porter
from venvstacks_docker.locking import RUN_ID, STATE_DIR
from venvstacks_docker.metadata import LAYER_METADATA_DIR, METADATA_DIR, sha256_file
from venvstacks_docker.txn import OutputTransaction

RECORD: Final = f"{STATE_DIR}/transfer.json"
RECORD_VERSION: Final = 1


class PublicationInterrupted(Interrupted):
    """Ctrl-C (or SIGTERM) while the publication came back: the message says what was kept."""


def host_listing(out: Path) -> dict[str, str]:
    """``relative path -> sha256`` of the publication files in ``out`` (not the tool's state)."""
    found: dict[str, str] = {}
    if not out.is_dir():
        return found
    for folder, dirs, files in os.walk(out):
        rel_folder = Path(folder).relative_to(out)
        if rel_folder == Path():
            dirs[:] = [d for d in dirs if d != STATE_DIR]
        dirs.sort()
        for name in sorted(files):
            path = Path(folder, name)
            if path.is_file() and not path.is_symlink():
                found[(rel_folder / name).as_posix()] = sha256_file(path)
    return found


def record_entries(out: Path, files: dict[str, str], *, busy: bool) -> list[Entry]:
    """The record of the mirror in the volume (and its folder, the builder's to write), as tar members."""
    text = json.dumps({"version": RECORD_VERSION, "state": "busy" if busy else "clean", "files": files},
                      indent=1, sort_keys=True) + "\n"
    return [Entry(name=str(out / STATE_DIR).lstrip("/"), kind="dir"),
            Entry(name=str(out / RECORD).lstrip("/"), kind="file", data=text.encode("utf-8"), mode=0o644)]


def mirror_is_current(porter: Porter, out: Path, listing: dict[str, str]) -> bool:
    """Whether the volume at ``out`` holds exactly the host's publication ``listing``."""
    path = str(out / RECORD)
    if porter.size(path) is None:
        return False
    data = b"".join(handle.read() for _rel, handle in members(porter.get(path, "reading the output mirror's "
                                                                           "record"), "the mirror record")
                    if handle is not None)
    try:
        record = json.loads(data)
    except ValueError:
        return False
    return isinstance(record, dict) and record.get("version") == RECORD_VERSION and \
        record.get("state") == "clean" and record.get("files") == listing


def publication_entries(out: Path) -> list[Entry]:
    """The host's publication in ``out`` (everything but the tool's state), as tar members."""
    if not out.is_dir():
        return []
    entries: list[Entry] = []
    for child in sorted(out.iterdir(), key=lambda p: p.name):
        if child.name != STATE_DIR:
            entries.extend(tree_entries(child))
    return entries


def _same_file(path: Path, size: int, sha256: str) -> bool:
    return path.is_file() and path.stat().st_size == size and sha256_file(path) == sha256


def _stage_stream(handle: IO[bytes], target: Path) -> tuple[int, str]:
    """Copy a member into ``target`` (fsynced); its size and sha256."""
    digest = hashlib.sha256()
    size = 0
    with target.open("wb") as f:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
            f.write(chunk)
            _testhooks.pause("transfer-download")
        f.flush()
        os.fsync(f.fileno())
    target.chmod(0o644)
    return size, digest.hexdigest()


def _fetch_metadata(porter: Porter, out: Path, txn: OutputTransaction) -> list[dict[str, Any]]:
    """Stage the metadata files that changed; the per-layer metadata of those."""
    changed: list[dict[str, Any]] = []
    stream = porter.get(str(out / METADATA_DIR), "copying the publication's metadata back")
    for rel, handle in members(stream, f"the metadata of {out}"):
        if handle is None:
            continue
        name = f"{METADATA_DIR}/{rel.as_posix()}"
        data = handle.read()
        current = out / name
        if current.is_file() and current.read_bytes() == data:
            continue
        txn.path_for(name).write_bytes(data)
        (txn.staging / name).chmod(0o644)
        if rel.parts[:1] == (LAYER_METADATA_DIR,) and name.endswith(".json"):
            with contextlib.suppress(ValueError):
                entry = json.loads(data)
                if isinstance(entry, dict) and entry.get("archive_name"):
                    changed.append(entry)
    return changed


def _fetch_archive(porter: Porter, out: Path, txn: OutputTransaction, entry: dict[str, Any],
                   say: Callable[[str], None], hashes: dict[str, str]) -> None:
    name = str(entry["archive_name"])
    size = int(entry.get("archive_size", -1))
    sha = str((entry.get("archive_hashes") or {}).get("sha256", ""))
    if PurePosixPath(name).name != name or name in {".", ".."}:
        raise ContainerError(f"refusing the publication: its metadata names the archive {name!r}")
    if _same_file(out / name, size, sha):
        return  # already here, these very bytes
    say(f"copying {name} back from the engine")
    for _rel, handle in members(porter.get(str(out / name), f"copying {name} back"), name):
        if handle is None:
            continue
        got_size, got_sha = _stage_stream(handle, txn.path_for(name))
        if (got_size, got_sha) != (size, sha):
            raise ContainerError(f"{name} arrived from the engine with {got_size} bytes and sha256 {got_sha}; "
                                 f"its metadata says {size} bytes and {sha}",
                                 hint="run the command again; if it persists, the engine's volume is damaged: "
                                 "remove it with `docker volume rm` (it is made anew)")
        hashes[name] = got_sha
        return
    raise ContainerError(f"the engine sent nothing for {name}")


def _preview(out: Path, txn: OutputTransaction) -> Path:
    """The folder as the commit will leave it, hard-linked (no bytes copied)."""
    preview = out / STATE_DIR / f"staging-{RUN_ID}.preview"
    shutil.rmtree(preview, ignore_errors=True)
    sources = {rel: out / rel for rel in host_listing_names(out)}
    sources.update({rel: txn.staging / rel for rel in txn.staged})
    for rel, source in sources.items():
        target = preview / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:
            target.symlink_to(source)
    return preview


def host_listing_names(out: Path) -> list[str]:
    """The publication files of ``out`` (relative paths), without hashing them."""
    names: list[str] = []
    if out.is_dir():
        for folder, dirs, files in os.walk(out):
            if Path(folder) == out:
                dirs[:] = [d for d in dirs if d != STATE_DIR]
            names.extend((Path(folder).relative_to(out) / f).as_posix() for f in files)
    return sorted(names)


def _verify(out: Path, txn: OutputTransaction) -> None:
    from venvstacks_docker.verify import verify_output_dir

    preview = _preview(out, txn)
    try:
        report = verify_output_dir(preview)
    finally:
        shutil.rmtree(preview, ignore_errors=True)
    if not report.ok:
        raise ContainerError(f"the publication copied back from the engine does not verify:\n{report.render_text()}",
                             hint="run the command again")


def bring_back_publication(porter: Porter, out: Path, say: Callable[[str], None],
                           listing: dict[str, str]) -> dict[str, str]:
    """Commit the volume's publication into the host's ``out``.

    :param listing: :func:`host_listing` of ``out`` before the run (the caller held its
        lock since).
    :returns: the listing of ``out`` now (no file hashed twice).

    :raises ContainerError: for an engine that fails meanwhile, or bytes that do not
        match their metadata (``out`` unchanged).
    :raises PublicationInterrupted: on Ctrl-C, saying what ``out`` holds.
    """
    txn = OutputTransaction(out)
    hashes: dict[str, str] = {}  # of the archives, checked as they arrived
    try:
        changed = _fetch_metadata(porter, out, txn)
        for entry in changed:
            _fetch_archive(porter, out, txn, entry, say, hashes)
        if not txn.staged:
            txn.abort()
            return listing
        _verify(out, txn)
        staged = {rel: hashes.get(rel) or sha256_file(txn.staging / rel) for rel in txn.staged}
        txn.commit()
    except KeyboardInterrupt:
        if txn.committed:
            raise PublicationInterrupted(f"interrupted just after publishing finished: {out} holds the new "
                                         "publication") from None
        txn.abort()
        raise PublicationInterrupted(f"publishing was interrupted while the publication was copied back from the "
                                     f"engine: {out} still holds its previous publication (nothing of this run "
                                     "was kept)") from None
    except BaseException as exc:
        txn.abort()
        if isinstance(exc, ContainerError) and not txn.committed:
            kept = f"{out} still holds its previous publication"
            exc.hint = f"{exc.hint}; {kept}" if exc.hint else kept
        raise
    return {**listing, **staged}


__all__ = ["RECORD", "PublicationInterrupted", "bring_back_publication", "host_listing", "mirror_is_current",
           "publication_entries", "record_entries"]
