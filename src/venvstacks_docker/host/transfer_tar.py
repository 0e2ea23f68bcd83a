"""The tar streams that carry files to and from a remote engine (Engine API archive calls).

Going in, :func:`tar_stream` writes members one at a time, straight from the files
(never a whole file in memory): names sorted, the builder container's user as owner,
permission bits kept (exec bits matter), mtimes kept, PAX headers.  The same files
always give the same bytes.

Coming back, :class:`TarReader` reads the engine's stream as it arrives, and
:func:`members` yields only what a publication or lock folder may hold (folders and
regular files, with plain relative names); anything else (a link, a device, ``..``, an
absolute name) is refused with the member's name, since what comes back was written by
package code running in the builder container.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Final

from venvstacks_docker.errors import ContainerError

_CHUNK: Final = 1 << 20
_BLOCK: Final = tarfile.BLOCKSIZE


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One member of a tar going to the engine."""

    name: str
    """Its path in the container, without the leading ``/``."""
    kind: str
    """``dir``, ``file`` or ``symlink``."""
    source: Path | None = None
    """The host file whose bytes it carries (``file`` without ``data``)."""
    data: bytes | None = None
    """Or the bytes themselves."""
    target: str = ""
    """A symlink's target."""
    mode: int = 0o755
    mtime: float = 0.0


def tree_entries(root: Path) -> list[Entry]:
    """``root`` (a file or folder) and everything below it, as :class:`Entry` items.

    Symbolic links are carried as links (as a bind mount would show them); anything
    that is neither a folder, a file nor a link is left out.
    """
    found: list[Entry] = []

    def add(path: Path) -> None:
        info = path.lstat()
        name = str(path.absolute()).lstrip("/")
        mtime = info.st_mtime_ns / 1e9
        if stat.S_ISLNK(info.st_mode):
            found.append(Entry(name=name, kind="symlink", target=str(path.readlink()), mode=0o777, mtime=mtime))
        elif stat.S_ISDIR(info.st_mode):
            found.append(Entry(name=name, kind="dir", mode=_mode(info.st_mode), mtime=mtime))
            for child in sorted(path.iterdir(), key=lambda p: p.name):
                add(child)
        elif stat.S_ISREG(info.st_mode):
            found.append(Entry(name=name, kind="file", source=path, mode=_mode(info.st_mode), mtime=mtime))

    add(root)
    return found


def _mode(st_mode: int) -> int:
    """Permission bits as a builder container should see them: readable, exec bits kept."""
    if stat.S_ISDIR(st_mode) or st_mode & 0o111:
        return 0o755
    return 0o644


def _header(entry: Entry, size: int, uid: int, gid: int) -> bytes:
    info = tarfile.TarInfo(entry.name + ("/" if entry.kind == "dir" else ""))
    info.type = {"dir": tarfile.DIRTYPE, "file": tarfile.REGTYPE, "symlink": tarfile.SYMTYPE}[entry.kind]
    info.mode, info.uid, info.gid, info.uname, info.gname = entry.mode, uid, gid, "", ""
    info.mtime, info.size, info.linkname = entry.mtime, size, entry.target
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape")


def tar_stream(entries: Iterable[Entry], *, uid: int, gid: int) -> Iterator[bytes]:
    """A tar of ``entries`` (sorted by name, later duplicates dropped), chunk by chunk.

    :raises ContainerError: when a file changes size while it is sent.
    """
    unique: dict[str, Entry] = {}
    for entry in entries:
        unique.setdefault(entry.name, entry)
    for name in sorted(unique):
        entry = unique[name]
        if entry.kind != "file":
            yield _header(entry, 0, uid, gid)
            continue
        if entry.data is not None:
            yield _header(entry, len(entry.data), uid, gid) + entry.data + _padding(len(entry.data))
            continue
        assert entry.source is not None
        yield from _file_member(entry, entry.source, uid, gid)
    yield b"\0" * (2 * _BLOCK)


def _file_member(entry: Entry, source: Path, uid: int, gid: int) -> Iterator[bytes]:
    with source.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        yield _header(entry, size, uid, gid)
        sent = 0
        while sent < size:
            chunk = handle.read(min(_CHUNK, size - sent))
            if not chunk:
                break
            sent += len(chunk)
            yield chunk
    if sent != size:
        raise ContainerError(f"{source} changed size while it was copied to the engine",
                             hint="run the command again once nothing is writing it")
    yield _padding(size)


def _padding(size: int) -> bytes:
    rest = size % _BLOCK
    return b"\0" * (_BLOCK - rest) if rest else b""


class TarReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks (the engine's ``get_archive``)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def readable(self) -> bool:
        """Always: this is a reader."""
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        """Fill ``target`` from the chunks; 0 at the end of the stream."""
        while not self._buffer:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._buffer = chunk
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size


def members(chunks: Iterator[bytes], what: str) -> Iterator[tuple[PurePosixPath, IO[bytes] | None]]:
    """``(name, file object or None for a folder)`` of each member of a tar stream.

    The engine names members after the requested path's last component; ``name`` is
    relative to it (``PurePosixPath('.')`` for the top folder itself).

    :raises ContainerError: for a member that is not a plain folder or file, or has an
        unsafe name; for a damaged stream.
    """
    reader = io.BufferedReader(TarReader(chunks), buffer_size=_CHUNK)
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                rel = PurePosixPath(*parts[1:]) if len(parts) > 1 else PurePosixPath(".")
                if member.name.startswith("/") or ".." in parts or "\0" in member.name:
                    raise ContainerError(f"refusing {what}: the engine sent a member named {member.name!r}")
                if member.isdir():
                    yield rel, None
                elif member.isfile():
                    yield rel, tar.extractfile(member)
                else:
                    raise ContainerError(f"refusing {what}: {member.name} is not a plain file or folder",
                                         hint="an output folder holds only archives and metadata files")
    except tarfile.TarError as exc:
        raise ContainerError(f"the engine sent a damaged tar stream for {what}: {exc}",
                             hint="run the command again") from None


__all__ = ["Entry", "TarReader", "members", "tar_stream", "tree_entries"]
