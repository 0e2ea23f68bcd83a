"""Reading archive members once, in order: tar (``.tar.xz``, ``.tar.gz``, ``.tar``) and zip.

A tar stream is decompressed on a thread of its own (:class:`ReadAhead`), a megabyte
ahead of the reader, so two archives compared side by side decompress on two cores
while the comparison runs; the decompressed stream is hashed on the way
(``tar_sha256``, as ``archive_tar_sha256`` in the metadata).  Members come out as
:class:`Member` (the header fields a comparison looks at) with a file object for their
content, valid until the next member is asked for.
"""

from __future__ import annotations

import calendar
import contextlib
import gzip
import hashlib
import io
import lzma
import queue
import shutil
import stat
import tarfile
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from venvstacks_docker.errors import VerifyError

#: Errors that mean "this archive is corrupt or truncated".
CORRUPT = (tarfile.TarError, zipfile.BadZipFile, lzma.LZMAError, zlib.error, EOFError, gzip.BadGzipFile)
_BLOCK = 1 << 20
# PAX records that the Member fields already carry
_PAX_KNOWN = frozenset({"path", "linkpath", "size", "uid", "gid", "uname", "gname", "mtime"})


@dataclass(frozen=True)
class Member:
    """One archive member: what a comparison looks at besides the content."""

    name: str
    """The member name without a trailing slash."""
    kind: str
    """``file``, ``dir``, ``symlink``, ``hardlink`` or ``other``."""
    mode: int = 0
    size: int = 0
    mtime: float = 0
    uid: int = 0
    gid: int = 0
    uname: str = ""
    gname: str = ""
    linkname: str = ""
    extra: dict[str, str] = field(default_factory=dict, compare=False)
    """Other header fields: PAX records (tar); system, flags, extra, comment (zip)."""
    zip_time: tuple[int, ...] | None = None
    compress: str | None = None
    """zip: ``stored``, ``deflated``... for this member."""
    compress_size: int | None = None


def detect_format(path: Path) -> str:
    """``tar.xz``, ``tar.gz``, ``tar`` or ``zip``, from the file's first bytes."""
    try:
        with path.open("rb") as f:
            head = f.read(512)
    except OSError as exc:
        raise VerifyError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if head.startswith(b"\xfd7zXZ\x00"):
        return "tar.xz"
    if head.startswith(b"\x1f\x8b"):
        return "tar.gz"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if len(head) == 512 and head[257:262] == b"ustar":
        return "tar"
    raise VerifyError(f"{path} is not a tar.xz, tar.gz, tar or zip archive",
                      hint="diff compares layer archives, publish output folders or metadata files")


class ReadAhead(io.RawIOBase):
    """The decompressed tar stream of an archive, decompressed on a thread ahead of the reader."""

    def __init__(self, path: Path, fmt: str, progress: Callable[[int], None] | None = None) -> None:
        super().__init__()
        # closed by close(), once the thread has stopped
        self._raw = path.open("rb")
        self._stream: IO[bytes] | lzma.LZMAFile | gzip.GzipFile
        if fmt == "tar.xz":
            self._stream = lzma.LZMAFile(self._raw)  # noqa: SIM115 - closed by close()
        elif fmt == "tar.gz":
            self._stream = gzip.GzipFile(fileobj=self._raw)
        else:
            self._stream = self._raw
        self.tar_sha256 = hashlib.sha256()
        self._progress = progress
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=8)
        self._stop = threading.Event()
        self._buf = b""
        self._pos = 0
        self._eof = False
        self._thread = threading.Thread(target=self._run, name=f"diff-read-{path.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                block = self._stream.read(_BLOCK)
                if not block:
                    break
                self.tar_sha256.update(block)
                self._put(block)
                if self._progress is not None:
                    self._progress(self._raw.tell())
            self._put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread, which raises it
            self._put(exc)

    def _put(self, item: bytes | BaseException | None) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def readable(self) -> bool:
        """Always: this is a read-only stream."""
        return True

    def _fill(self) -> bool:
        if self._eof:
            return False
        item = self._queue.get()
        if item is None:
            self._eof = True
            return False
        if isinstance(item, BaseException):
            self._eof = True
            raise item
        self._buf, self._pos = item, 0
        return True

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all the rest for ``-1``/``None``); ``b""`` at the end."""
        if size is None or size < 0:
            parts = [self._buf[self._pos:]]
            self._buf, self._pos = b"", 0
            while self._fill():
                parts.append(self._buf)
                self._buf = b""
            return b"".join(parts)
        while self._pos >= len(self._buf):
            if not self._fill():
                return b""
        chunk = self._buf[self._pos:self._pos + size]
        self._pos += len(chunk)
        return chunk

    def readinto(self, buffer: Any) -> int:
        """:meth:`read` into ``buffer``."""
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def drain(self) -> None:
        """Read to the end, so that ``tar_sha256`` covers the whole stream."""
        while self._fill():
            self._buf = b""

    def close(self) -> None:
        """Stop the thread and close the files."""
        if self.closed:
            return
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        self._thread.join()
        with contextlib.suppress(OSError, *CORRUPT):
            self._stream.close()
        self._raw.close()
        super().close()


def tar_member(info: tarfile.TarInfo) -> Member:
    """The :class:`Member` for a tar header."""
    if info.isreg():
        kind = "file"
    elif info.isdir():
        kind = "dir"
    elif info.issym():
        kind = "symlink"
    elif info.islnk():
        kind = "hardlink"
    else:
        kind = "other"
    extra = {k: v for k, v in info.pax_headers.items() if k not in _PAX_KNOWN}
    return Member(name=info.name.rstrip("/"), kind=kind, mode=info.mode, size=info.size if kind == "file" else 0,
                  mtime=info.mtime, uid=info.uid, gid=info.gid, uname=info.uname, gname=info.gname,
                  linkname=info.linkname, extra=extra)


def _zip_member(info: zipfile.ZipInfo, zf: zipfile.ZipFile) -> Member:
    mode = info.external_attr >> 16
    kind = "dir" if info.is_dir() else "symlink" if stat.S_ISLNK(mode) else "file"
    linkname = zf.read(info).decode("utf-8", "surrogateescape") if kind == "symlink" else ""
    extra = {"create_system": str(info.create_system), "flag_bits": hex(info.flag_bits),
             "extra": info.extra.hex(), "comment": info.comment.decode("utf-8", "replace"),
             "create_version": str(info.create_version), "extract_version": str(info.extract_version)}
    mtime = calendar.timegm((*info.date_time, 0, 0, 0))
    compress = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated", zipfile.ZIP_BZIP2: "bzip2",
                zipfile.ZIP_LZMA: "lzma"}.get(info.compress_type, str(info.compress_type))
    return Member(name=info.filename.rstrip("/"), kind=kind, mode=stat.S_IMODE(mode),
                  size=info.file_size if kind == "file" else 0, mtime=mtime, linkname=linkname, extra=extra,
                  zip_time=tuple(info.date_time), compress=compress, compress_size=info.compress_size)


class Members:
    """An archive's members in stored order, each with a reader for its content.

    Use as a context manager; iterate once.  ``tar_sha256`` (hex) is set after the
    iteration for tar archives (``None`` for zip).
    """

    def __init__(self, path: Path, fmt: str | None = None,
                 progress: Callable[[int], None] | None = None) -> None:
        self.path = path
        self.fmt = fmt or detect_format(path)
        self.progress = progress
        self.tar_sha256: str | None = None
        self.count = 0
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Members:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def __iter__(self) -> Iterator[tuple[Member, IO[bytes] | None]]:
        try:
            if self.fmt == "zip":
                yield from self._zip()
            else:
                yield from self._tar()
        except CORRUPT as exc:
            raise VerifyError(f"cannot read {self.path}: {exc}",
                              hint="the archive is corrupt or truncated") from exc

    def _tar(self) -> Iterator[tuple[Member, IO[bytes] | None]]:
        reader = self._stack.enter_context(ReadAhead(self.path, self.fmt, self.progress))
        tar = self._stack.enter_context(tarfile.open(fileobj=reader, mode="r|", bufsize=_BLOCK))  # noqa: SIM115
        for info in tar:
            self.count += 1
            yield tar_member(info), tar.extractfile(info) if info.isreg() else None
        reader.drain()
        self.tar_sha256 = reader.tar_sha256.hexdigest()

    def _zip(self) -> Iterator[tuple[Member, IO[bytes] | None]]:
        zf = self._stack.enter_context(zipfile.ZipFile(self.path))
        total = 0
        for info in zf.infolist():
            self.count += 1
            member = _zip_member(info, zf)
            if member.kind != "file":
                yield member, None
                continue
            with zf.open(info) as content:
                yield member, content
            total += info.compress_size
            if self.progress is not None:
                self.progress(total)


def fetch(path: Path, names: set[str], dest: Path, fmt: str | None = None) -> dict[str, Path]:
    """Copy the content of the named file members into files under ``dest`` (a second pass).

    For members too big to keep in memory during the first pass.  Returns the files
    by member name.
    """
    found: dict[str, Path] = {}
    dest.mkdir(parents=True, exist_ok=True)
    with Members(path, fmt) as members:
        for member, content in members:
            if member.name in names and content is not None and member.name not in found:
                target = dest / f"{len(found)}.bin"
                with target.open("wb") as out:
                    shutil.copyfileobj(content, out, _BLOCK)
                found[member.name] = target
                if len(found) == len(names):
                    break
    return found
