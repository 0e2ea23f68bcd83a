"""Deterministic layer archives: writing them fast, and unpacking them safely.

A layer archive unpacks as a single top folder named after the layer's deployed name,
so unpacking every archive of a stack into one folder gives peer layer folders.

Determinism contract (``write_archive``): the archive bytes depend only on the file
*contents*, names, owner-exec bits and symlink targets of the tree, on ``root_name``,
``mtime``, the format, the chunk size and the compressor library (liblzma / zlib)
version.  They do not depend on the umask, file mtimes, owners, directory listing
order, locale, time zone or the number of compression threads.

xz output is a sequence of independently compressed xz streams, one per fixed-size
chunk of the tar stream.  Concatenated xz streams are a valid ``.xz`` file (xz file
format spec 1.0.4, section 2): ``xz -d``, ``tar -xJf`` and ``tarfile.open()`` read them.
One caveat: tarfile's *streaming* read mode (``mode="r|xz"``) stops after the first
stream; use ``tarfile.open(path)`` / ``"r:xz"`` (which go through ``lzma.LZMAFile``).
"""

from __future__ import annotations

import calendar
import collections
import concurrent.futures
import hashlib
import lzma
import os
import shutil
import stat
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from venvstacks_docker.errors import Interrupted, PublishError, VenvstacksDockerError, VerifyError

ArchiveFormat = Literal["tar.xz", "zip"]

# Chunk size for parallel xz: every XZ_CHUNK_SIZE bytes of tar stream become one
# independent xz stream.  The trade-off:
# * Each chunk restarts the LZMA2 dictionary (8 MiB at preset 6), so matches cannot
#   reach back across a chunk boundary, and each stream adds ~60 bytes of
#   header/index/footer.  The bigger the chunk, the smaller that penalty (xz itself
#   uses 3 x dictionary size = 24 MiB blocks in threaded mode).  Measured on the
#   CPython 3.11 stdlib without site-packages/__pycache__ (99.5 MiB of tar, single
#   xz stream 21.06 MB): 8 MiB chunks +1.9 %, 16 MiB +0.93 %, 24 MiB +0.60 %,
#   32 MiB +0.54 %, 48 MiB +0.24 %, 64 MiB +0.20 %.  Text-heavy trees like that
#   one are the worst case; the penalty is under 1 % from 16 MiB up.
# * The smaller the chunk, the more parallelism mid-sized layers get: a layer of N
#   MiB of tar can keep at most ceil(N / chunk) threads busy.  App layers are tiny
#   (one chunk either way), a runtime is ~100 MiB (4 chunks at 32 MiB: both cores
#   of a 2-core runner stay busy) and ML frameworks are hundreds of MiB to GiB,
#   which is where the time goes.  32 MiB keeps the size penalty around 0.5 % and
#   still splits a runtime layer four ways.
# Memory: up to (threads + 1) chunks in flight plus ~94 MiB of encoder state per
# busy thread at preset 6.
# Changing this value changes archive bytes: it is part of the determinism contract.
XZ_CHUNK_SIZE = 32 * 1024 * 1024
XZ_PRESET = 6  # what venvstacks (tarfile "w:xz" default) uses
# For x86-64 targets the chain starts with the x86 branch/call/jump (BCJ) filter, which
# turns relative call addresses in machine code into absolute ones that LZMA2 matches
# far better, and LZMA2's nice_len drops from 64 (preset 6) to 24.  Measured on the
# sample project's framework and runtime layers (32 MiB slices): 1-2.5 % smaller than
# plain preset 6 and 12-33 % less CPU time.  Any xz decoder reads it (the BCJ filters
# are part of the .xz format).  No BCJ filter for other architectures: Python's lzma
# module has none for arm64.
XZ_X86_NICE_LEN = 24


def xz_filters(arch: str | None = None) -> list[dict[str, int]]:
    """The xz filter chain for a target architecture (``"x86_64"``, ``"aarch64"``...)."""
    if arch == "x86_64":
        return [
            {"id": lzma.FILTER_X86},
            {"id": lzma.FILTER_LZMA2, "preset": XZ_PRESET, "nice_len": XZ_X86_NICE_LEN},
        ]
    return [{"id": lzma.FILTER_LZMA2, "preset": XZ_PRESET}]


def xz_description(arch: str | None = None) -> str:
    """Human-readable compressor settings, recorded in publish metadata."""
    chain = "x86 BCJ + " if arch == "x86_64" else ""
    nice = f", nice_len {XZ_X86_NICE_LEN}" if arch == "x86_64" else ""
    return f"xz {chain}LZMA2 preset {XZ_PRESET}{nice}, {XZ_CHUNK_SIZE >> 20} MiB streams, liblzma"
ZIP_LEVEL = 6
# Input is fed to each chunk's compressor in slices of this size so that a worker
# notices cancellation (error or Ctrl-C in the main thread) quickly.  liblzma's
# output does not depend on how the input is sliced.
_FEED_SIZE = 1024 * 1024
_COPY_BUFSIZE = 1024 * 1024
_DOS_EPOCH = 315532800  # 1980-01-01T00:00:00Z, the earliest ZIP timestamp
_DOS_MAX = 4354819198  # 2107-12-31T23:59:58Z, the latest ZIP timestamp
_USTAR_MAX_MTIME = 8**11 - 1  # larger values would need a pax header

ARCHIVE_SUFFIXES = (".tar.xz", ".tar.gz", ".tgz", ".tar", ".zip")
"""File name endings that ``safe_extract`` (and ``verify``) treat as layer archives."""


@dataclass(frozen=True, kw_only=True)
class ArchiveResult:
    """The written archive: final path, size in bytes and SHA-256 (hex, no prefix)."""

    path: Path
    size: int
    sha256: str
    tar_sha256: str | None = None
    """SHA-256 of the uncompressed tar stream (tar.xz only): a contract that does not
    depend on the compressor version."""


def archive_suffix(fmt: str) -> str:
    """File name suffix (with the leading dot) for an archive format."""
    if fmt == "tar.xz":
        return ".tar.xz"
    if fmt == "zip":
        return ".zip"
    raise PublishError(f"unknown archive format {fmt!r}", hint="use 'tar.xz' or 'zip'")


# ---------------------------------------------------------------------------------
# Walking the source tree
# ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    rel: str  # POSIX relative path below src_dir, "" for src_dir itself
    path: str  # filesystem path
    kind: Literal["dir", "file", "symlink"]
    mode: int  # normalised permission bits
    size: int = 0
    linkname: str = ""


def _walk(src_dir: Path, *, allow_symlinks: bool) -> Iterator[_Entry]:
    """Yield the tree in sorted walk order, each directory before its contents."""
    root = os.fspath(src_dir)
    yield _Entry("", root, "dir", 0o755)
    yield from _walk_dir(root, "", allow_symlinks=allow_symlinks)


def _walk_dir(dir_path: str, rel_dir: str, *, allow_symlinks: bool) -> Iterator[_Entry]:
    try:
        with os.scandir(dir_path) as it:
            names = sorted(entry.name for entry in it)
    except OSError as exc:
        raise PublishError(f"cannot list {dir_path}: {exc.strerror or exc}") from exc
    for name in names:
        path = os.path.join(dir_path, name)
        rel = f"{rel_dir}/{name}" if rel_dir else name
        try:
            st = os.lstat(path)
        except OSError as exc:
            raise PublishError(f"cannot read {path}: {exc.strerror or exc}") from exc
        if stat.S_ISDIR(st.st_mode):
            yield _Entry(rel, path, "dir", 0o755)
            yield from _walk_dir(path, rel, allow_symlinks=allow_symlinks)
        elif stat.S_ISREG(st.st_mode):
            mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644
            yield _Entry(rel, path, "file", mode, size=st.st_size)
        elif stat.S_ISLNK(st.st_mode):
            if not allow_symlinks:
                raise PublishError(
                    f"cannot put symlink {path} into a zip archive",
                    hint="zip archives are for Windows targets, where extractors do not "
                    "restore symlinks; replace the link with a copy of its target",
                )
            target = os.readlink(path)
            if os.path.isabs(target) or target.startswith(("/", "\\")):
                raise PublishError(
                    f"symlink {path} points to the absolute path {target}",
                    hint="layer archives may only contain relative symlinks; "
                    "make the link relative before publishing",
                )
            yield _Entry(rel, path, "symlink", 0o777, linkname=target)
        else:
            raise PublishError(
                f"cannot archive {path}: it is a {_kind_name(st.st_mode)}, "
                "not a file, folder or symlink",
                hint="remove it from the layer before publishing",
            )


def _kind_name(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    return "special file"


# ---------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------


def _check_args(src_dir: Path, archive_path: Path, root_name: str, mtime: int) -> None:
    if not root_name or root_name in (".", "..") or "/" in root_name or "\\" in root_name:
        raise PublishError(f"invalid archive root folder name {root_name!r}")
    if isinstance(mtime, bool) or not isinstance(mtime, int):
        raise PublishError(f"archive mtime must be an integer, got {mtime!r}")
    if not 0 <= mtime <= _USTAR_MAX_MTIME:
        raise PublishError(f"archive mtime {mtime} is out of range (0..{_USTAR_MAX_MTIME})")
    if not src_dir.is_dir():
        raise PublishError(f"cannot archive {src_dir}: not a folder")
    src_real = src_dir.resolve()
    out_real = archive_path.parent.resolve()
    if out_real == src_real or src_real in out_real.parents:
        raise PublishError(
            f"archive {archive_path} would be written inside the folder it archives ({src_dir})"
        )


def write_archive(
    src_dir: Path,
    archive_path: Path,
    *,
    root_name: str,
    mtime: int,
    fmt: ArchiveFormat = "tar.xz",
    threads: int | None = None,
    chunk_size: int = XZ_CHUNK_SIZE,
    progress: Callable[[int], None] | None = None,
    cancel: threading.Event | None = None,
    arch: str | None = None,
) -> ArchiveResult:
    """Pack ``src_dir`` into ``archive_path`` so that it unpacks as ``root_name/``.

    ``mtime`` (an integer, e.g. ``SOURCE_DATE_EPOCH``) is stored for every member.
    ``threads`` (default ``os.cpu_count()``) only affects speed, never the bytes.
    ``chunk_size`` is the tar.xz chunk size (see ``XZ_CHUNK_SIZE``; changing it
    changes the bytes).  ``progress``, if given, is called with the number of
    uncompressed bytes processed so far.  ``cancel``, if given, lets another thread
    abort the write (raising :class:`Interrupted`), e.g. when the user presses Ctrl-C
    while archives are written on worker threads.

    Refused with ``PublishError``: absolute symlinks, FIFOs/sockets/devices, and for
    ``zip`` (Windows targets) any symlink, because Windows extractors would turn a
    link entry into a small text file.  Hard links are stored as regular files.

    The archive is written to a temporary file next to ``archive_path`` and renamed
    into place only when complete; on any error or interrupt the temporary file is
    removed and ``archive_path`` is left untouched.
    """
    src_dir = Path(src_dir)
    archive_path = Path(archive_path)
    _check_args(src_dir, archive_path, root_name, mtime)
    if fmt not in ("tar.xz", "zip"):
        archive_suffix(fmt)  # raises
    if threads is None:
        threads = os.cpu_count() or 1
    threads = max(1, int(threads))
    if chunk_size < 64 * 1024:
        raise PublishError(f"xz chunk size {chunk_size} is too small (minimum 64 KiB)")

    try:
        archive_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PublishError(
            f"cannot create output folder {archive_path.parent}: {exc.strerror or exc}"
        ) from exc
    tmp_path = archive_path.with_name(f".{archive_path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp_path, "wb") as f:
            if fmt == "tar.xz":
                size, sha256, tar_sha256 = _write_tar_xz(
                    src_dir, f, root_name, mtime, threads, chunk_size, progress, cancel,
                    xz_filters(arch),
                )
            else:
                _write_zip(src_dir, f, root_name, mtime, progress, cancel)
                size, sha256, tar_sha256 = f.tell(), None, None
            f.flush()
            os.fsync(f.fileno())
        if sha256 is None:
            with open(tmp_path, "rb") as f:
                sha256 = hashlib.file_digest(f, "sha256").hexdigest()
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, archive_path)
    except BaseException as exc:
        try:
            tmp_path.unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise PublishError(
                f"cannot write archive {archive_path}: {exc.strerror or exc}"
                + (f" ({exc.filename})" if exc.filename else "")
            ) from exc
        if isinstance(exc, (tarfile.TarError, zipfile.LargeZipFile, ValueError)):
            raise PublishError(f"cannot write archive {archive_path}: {exc}") from exc
        raise
    _fsync_dir(archive_path.parent)
    return ArchiveResult(path=archive_path, size=size, sha256=sha256, tar_sha256=tar_sha256)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _Stop:
    """Why chunk workers should stop: this writer failed, or the caller cancelled."""

    def __init__(self, external: threading.Event | None) -> None:
        self.failed = threading.Event()
        self.external = external

    def is_set(self) -> bool:
        return self.failed.is_set() or (self.external is not None and self.external.is_set())


def _xz_compress(chunk: bytearray, cancel: _Stop, filters: list[dict[str, int]]) -> bytes | None:
    """Compress one chunk into one complete xz stream (runs in a worker thread).

    Returns None if told to stop before finishing."""
    comp = lzma.LZMACompressor(format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, filters=filters)
    out = []
    view = memoryview(chunk)
    for start in range(0, len(view), _FEED_SIZE):
        if cancel.is_set():
            return None
        out.append(comp.compress(view[start : start + _FEED_SIZE]))
    out.append(comp.flush())
    return b"".join(out)


class _ChunkedXzWriter:
    """A write-only file object that tarfile writes into.

    Bytes are cut into chunks of exactly ``chunk_size`` (the last one may be
    shorter); each chunk is compressed on the thread pool and the results are
    written to ``out`` strictly in order.  At most ``max_in_flight`` chunks are
    held in memory at any time.
    """

    def __init__(
        self,
        out: IO[bytes],
        pool: concurrent.futures.ThreadPoolExecutor,
        cancel: _Stop,
        *,
        chunk_size: int,
        max_in_flight: int,
        progress: Callable[[int], None] | None,
        filters: list[dict[str, int]],
    ) -> None:
        self._filters = filters
        self._out = out
        self._pool = pool
        self._cancel = cancel
        self._chunk_size = chunk_size
        self._max_in_flight = max_in_flight
        self._progress = progress
        self._buf = bytearray()
        self._pending: collections.deque[tuple[concurrent.futures.Future[bytes | None], int]]
        self._pending = collections.deque()
        self._pos = 0  # uncompressed bytes received
        self._done = 0  # uncompressed bytes compressed and written
        self.size = 0  # compressed bytes written
        self.sha256 = hashlib.sha256()
        self.tar_sha256 = hashlib.sha256()

    def tell(self) -> int:
        return self._pos

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        n = len(view)
        self.tar_sha256.update(view)
        self._pos += n
        while view:
            room = self._chunk_size - len(self._buf)
            self._buf += view[:room]
            view = view[room:]
            if len(self._buf) == self._chunk_size:
                self._submit()
        return n

    def _submit(self) -> None:
        _check_cancel(self._cancel.external)
        while len(self._pending) >= self._max_in_flight:
            self._write_oldest()
        chunk, self._buf = self._buf, bytearray()
        future = self._pool.submit(_xz_compress, chunk, self._cancel, self._filters)
        self._pending.append((future, len(chunk)))

    def _write_oldest(self) -> None:
        future, n = self._pending.popleft()
        data = future.result()
        if data is None:  # the worker saw the caller's cancel event
            raise Interrupted("archive writing was cancelled")
        self._out.write(data)
        self.sha256.update(data)
        self.size += len(data)
        self._done += n
        if self._progress is not None:
            self._progress(self._done)

    def finish(self) -> None:
        if self._buf:
            self._submit()
        while self._pending:
            self._write_oldest()


def _write_tar_xz(
    src_dir: Path,
    out: IO[bytes],
    root_name: str,
    mtime: int,
    threads: int,
    chunk_size: int,
    progress: Callable[[int], None] | None,
    cancel: threading.Event | None = None,
    filters: list[dict[str, int]] | None = None,
) -> tuple[int, str, str]:
    stop = _Stop(cancel)
    pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=threads, thread_name_prefix="xz-chunk"
    )
    try:
        sink = _ChunkedXzWriter(
            out,
            pool,
            stop,
            chunk_size=chunk_size,
            max_in_flight=threads + 1,
            progress=progress,
            filters=filters or xz_filters(),
        )
        tar = tarfile.TarFile(
            fileobj=sink,  # type: ignore[arg-type]
            mode="w",
            format=tarfile.PAX_FORMAT,
            encoding="utf-8",
            errors="surrogateescape",
            copybufsize=_COPY_BUFSIZE,
        )
        for entry in _walk(src_dir, allow_symlinks=True):
            _check_cancel(cancel)
            info = tarfile.TarInfo(f"{root_name}/{entry.rel}" if entry.rel else root_name)
            info.mtime = mtime
            info.mode = entry.mode
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if entry.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif entry.kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = entry.linkname
                tar.addfile(info)
            else:
                info.type = tarfile.REGTYPE
                info.size = entry.size
                with open(entry.path, "rb") as f:
                    try:
                        tar.addfile(info, f)
                    except OSError as exc:
                        if exc.errno is None:  # tarfile: "unexpected end of data"
                            raise PublishError(
                                f"{entry.path} changed size while it was being archived"
                            ) from exc
                        raise
        tar.close()  # end-of-archive blocks and record padding; sink stays open
        sink.finish()
        _check_cancel(cancel)
    except BaseException:
        stop.failed.set()  # only our own workers: the caller's event is theirs to set
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return sink.size, sink.sha256.hexdigest(), sink.tar_sha256.hexdigest()


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Interrupted("archive writing was cancelled")


def _zip_info(name: str, mtime: int) -> zipfile.ZipInfo:
    clamped = min(max(mtime, _DOS_EPOCH), _DOS_MAX)
    info = zipfile.ZipInfo(name, date_time=time.gmtime(clamped)[:6])
    info.create_system = 3  # Unix: external_attr carries the mode, on every host
    return info


def _set_zip_level(info: zipfile.ZipInfo, level: int) -> None:
    if isinstance(getattr(zipfile.ZipInfo, "compress_level", None), property):
        info.compress_level = level  # type: ignore[attr-defined]  # Python >= 3.13
    else:
        info._compresslevel = level  # type: ignore[attr-defined]


def _write_zip(
    src_dir: Path,
    out: IO[bytes],
    root_name: str,
    mtime: int,
    progress: Callable[[int], None] | None,
    cancel: threading.Event | None = None,
) -> None:
    # Symlinks are refused (PublishError) rather than stored as 0o120777 link entries:
    # zip archives are for Windows targets, whose extractors (Explorer, zipfile,
    # Expand-Archive) would silently turn a link entry into a small text file.
    done = 0
    with zipfile.ZipFile(out, "w", allowZip64=True) as zf:
        for entry in _walk(src_dir, allow_symlinks=False):
            _check_cancel(cancel)
            name = f"{root_name}/{entry.rel}" if entry.rel else root_name
            if entry.kind == "dir":
                info = _zip_info(name + "/", mtime)
                info.external_attr = ((stat.S_IFDIR | 0o755) << 16) | 0x10  # MS-DOS dir flag
                info.compress_type = zipfile.ZIP_STORED
                zf.writestr(info, b"")
                continue
            info = _zip_info(name, mtime)
            info.external_attr = (stat.S_IFREG | entry.mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            _set_zip_level(info, ZIP_LEVEL)
            info.file_size = entry.size  # decides zip64 up front, deterministically
            with open(entry.path, "rb") as src, zf.open(info, "w", force_zip64=False) as dst:
                copied = _copy(src, dst, cancel)
            if copied != entry.size:
                raise PublishError(f"{entry.path} changed size while it was being archived")
            done += copied
            if progress is not None:
                progress(done)


def _copy(src: IO[bytes], dst: IO[bytes], cancel: threading.Event | None = None) -> int:
    n = 0
    while block := src.read(_COPY_BUFSIZE):
        _check_cancel(cancel)
        dst.write(block)
        n += len(block)
    return n


# ---------------------------------------------------------------------------------
# Safe extraction
# ---------------------------------------------------------------------------------


def _bad(archive_path: Path, member: str, why: str) -> VerifyError:
    return VerifyError(
        f"refusing to extract {archive_path.name}: member {member!r} {why}",
        hint="the archive is corrupt or was not written by a trusted publisher",
    )


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class _MemberChecker:
    """Checks shared by tar and zip extraction; remembers the single top folder."""

    def __init__(self, archive_path: Path, dest_root: str) -> None:
        self.archive_path = archive_path
        self.dest = dest_root  # realpath of the extraction folder
        self.top: str | None = None
        self.created_top = False

    def check_name(self, name: str, *, is_dir: bool) -> list[str]:
        """Validate a member name; return its normalised path components."""
        if not name:
            raise _bad(self.archive_path, name, "has an empty name")
        if name.startswith(("/", "\\")) or os.path.isabs(name) or (len(name) > 1 and name[1] == ":"):
            raise _bad(self.archive_path, name, "has an absolute path")
        if "\0" in name:
            raise _bad(self.archive_path, name, "has a NUL byte in its name")
        raw_parts = name.replace("\\", "/").split("/") if os.sep == "\\" else name.split("/")
        if ".." in raw_parts:
            raise _bad(self.archive_path, name, "has a '..' path component")
        parts = [p for p in raw_parts if p not in ("", ".")]
        if not parts:
            raise _bad(self.archive_path, name, "is not inside a top folder")
        if self.top is None:
            if len(parts) > 1 or not is_dir:
                raise _bad(
                    self.archive_path,
                    name,
                    "comes before its top folder: layer archives must start with "
                    "the entry of their single top folder",
                )
            self.top = parts[0]
            top_path = os.path.join(self.dest, self.top)
            if os.path.lexists(top_path):
                raise VerifyError(
                    f"cannot extract {self.archive_path.name}: {top_path} already exists",
                    hint="extract into a folder that does not contain this layer yet",
                )
            self.created_top = True
        elif parts[0] != self.top:
            raise _bad(
                self.archive_path,
                name,
                f"is outside the archive's single top folder {self.top!r}",
            )
        elif len(parts) == 1 and not is_dir:
            raise _bad(self.archive_path, name, "replaces the top folder with a non-folder")
        # Catch writes through symlinks extracted earlier (e.g. top/lnk -> ../x, then
        # top/lnk/file): the real location must stay inside the top folder.
        real = os.path.realpath(os.path.join(self.dest, *parts))
        if not _within(real, os.path.join(self.dest, self.top)):
            raise _bad(
                self.archive_path, name, f"would be written outside {self.top!r} (to {real})"
            )
        return parts

    def check_link(self, name: str, parts: list[str], linkname: str, *, hard: bool) -> None:
        kind = "hard link" if hard else "symlink"
        if not linkname:
            raise _bad(self.archive_path, name, f"is a {kind} with an empty target")
        if os.path.isabs(linkname) or linkname.startswith(("/", "\\")):
            raise _bad(self.archive_path, name, f"is a {kind} to the absolute path {linkname!r}")
        base = self.dest if hard else os.path.join(self.dest, *parts[:-1])
        real = os.path.realpath(os.path.join(base, linkname))
        if not _within(real, self.dest):
            raise _bad(
                self.archive_path,
                name,
                f"is a {kind} to {linkname!r}, which resolves outside {self.dest}",
            )


def safe_extract(archive_path: Path, dest_root: Path) -> Path:
    """Extract a ``.tar.xz``/``.tar.gz``/``.tar``/``.zip`` layer archive into ``dest_root``.

    The archive must contain a single top folder that does not exist yet in
    ``dest_root``; returns ``dest_root/<top folder>``.  Refuses (``VerifyError``,
    naming the member) absolute names, ``..`` components, members outside the top
    folder, device files/FIFOs, and links whose target resolves outside
    ``dest_root`` (relative links into sibling layer folders are fine).  Exec bits
    are kept; ownership is not restored.  On failure, the partly extracted top
    folder is removed.
    """
    archive_path = Path(archive_path)
    dest_root = Path(dest_root)
    name = archive_path.name.lower()
    if not archive_path.is_file():
        raise VerifyError(f"archive {archive_path} does not exist")
    try:
        dest_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VerifyError(f"cannot create {dest_root}: {exc.strerror or exc}") from exc
    checker = _MemberChecker(archive_path, os.path.realpath(dest_root))
    try:
        if name.endswith(".zip"):
            _extract_zip(archive_path, checker)
        elif name.endswith((".tar.xz", ".tar.gz", ".tgz", ".tar")):
            _extract_tar(archive_path, checker)
        else:
            raise VerifyError(
                f"cannot extract {archive_path.name}: unknown archive type",
                hint="expected a .tar.xz, .tar.gz, .tar or .zip file",
            )
        if checker.top is None:
            raise VerifyError(f"archive {archive_path.name} is empty")
    except BaseException as exc:
        if checker.created_top and checker.top is not None:
            shutil.rmtree(os.path.join(checker.dest, checker.top), ignore_errors=True)
        if isinstance(exc, VenvstacksDockerError):
            raise
        if isinstance(exc, (tarfile.TarError, zipfile.BadZipFile, lzma.LZMAError, EOFError)):
            raise VerifyError(f"archive {archive_path.name} is corrupt: {exc}") from exc
        if isinstance(exc, OSError):
            raise VerifyError(
                f"cannot extract {archive_path.name}: {exc.strerror or exc}"
                + (f" ({exc.filename})" if exc.filename else "")
            ) from exc
        raise
    return dest_root / checker.top


def _extract_tar(archive_path: Path, checker: _MemberChecker) -> None:
    if not hasattr(tarfile, "data_filter"):  # pragma: no cover - Python < 3.11.4
        raise VerifyError("safe extraction needs Python 3.11.4 or newer (tarfile filters)")

    def member_filter(member: tarfile.TarInfo, dest_path: str) -> tarfile.TarInfo:
        if not (member.isdir() or member.isreg() or member.issym() or member.islnk()):
            raise _bad(archive_path, member.name, "is a device, FIFO or other special file")
        parts = checker.check_name(member.name, is_dir=member.isdir())
        if member.issym() or member.islnk():
            checker.check_link(member.name, parts, member.linkname, hard=member.islnk())
        # The stdlib 'data' filter re-checks all of this and also drops ownership,
        # setuid/setgid/sticky and group/other write bits while keeping exec bits.
        return tarfile.data_filter(member, dest_path)

    with tarfile.open(archive_path, "r:*", errorlevel=2) as tar:
        tar.extractall(checker.dest, filter=member_filter)


def _extract_zip(archive_path: Path, checker: _MemberChecker) -> None:
    with zipfile.ZipFile(archive_path) as zf:
        infos = zf.infolist()
        directories: list[tuple[str, int]] = []
        for info in infos:
            unix_mode = info.external_attr >> 16
            ftype = stat.S_IFMT(unix_mode)
            is_dir = info.is_dir() or ftype == stat.S_IFDIR
            is_link = ftype == stat.S_IFLNK
            if ftype not in (0, stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK):
                raise _bad(archive_path, info.filename, "is a device, FIFO or other special file")
            parts = checker.check_name(info.filename, is_dir=is_dir)
            target = os.path.join(checker.dest, *parts)
            if is_dir:
                os.makedirs(target, exist_ok=True)
                directories.append((target, _zip_mtime(info)))
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if is_link:
                linkname = zf.read(info).decode("utf-8", "surrogateescape")
                checker.check_link(info.filename, parts, linkname, hard=False)
                if os.path.lexists(target):
                    os.unlink(target)
                os.symlink(linkname, target)
                continue
            if os.path.lexists(target):
                os.unlink(target)  # never write through an existing link
            with zf.open(info) as src, open(target, "xb") as dst:
                _copy(src, dst)
            os.chmod(target, 0o755 if unix_mode & stat.S_IXUSR else 0o644)
            ts = _zip_mtime(info)
            os.utime(target, (ts, ts))
        for path, ts in reversed(directories):
            os.utime(path, (ts, ts))


def _zip_mtime(info: zipfile.ZipInfo) -> int:
    """The entry's DOS timestamp, read as UTC (as ``write_archive`` stores it)."""
    return calendar.timegm((*info.date_time, 0, 0, 0))
