"""Deterministic layer archives: writing them fast (unpacking: :mod:`venvstacks_docker.extract`).

A layer archive unpacks as a single top folder named after the layer's deployed name,
so unpacking every archive of a stack into one folder gives peer layer folders.

Determinism contract (``write_archive``): the archive bytes depend only on the file
*contents*, names, owner-exec bits and symlink targets of the tree, on ``root_name``,
``mtime``, the format, the chunk size and the compressor library (liblzma / zlib)
version.  They do not depend on the umask, file mtimes, owners, directory listing
order, locale, time zone or the number of compression threads.

The tar stream itself comes from :mod:`venvstacks_docker._tar`, the one deterministic
tar writer (also behind the runtime archive and the builder images); this module adds
the rules of layer archives (one top folder, relative symlinks only, none in zips, only
names Windows can create in zips), the zip format and the parallel xz compression.

xz output is a sequence of independently compressed xz streams, one per fixed-size
chunk of the tar stream.  Concatenated xz streams are a valid ``.xz`` file (xz file
format spec 1.0.4, section 2): ``xz -d``, ``tar -xJf`` and ``tarfile.open()`` read them.
One caveat: tarfile's *streaming* read mode (``mode="r|xz"``) stops after the first
stream; use ``tarfile.open(path)`` / ``"r:xz"`` (which go through ``lzma.LZMAFile``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import lzma
import os
import stat
import tarfile
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from venvstacks_docker import _tar
from venvstacks_docker._xz import _check_cancel, _ChunkedXzWriter, _Stop
from venvstacks_docker.errors import PublishError
from venvstacks_docker.extract import safe_extract
from venvstacks_docker.oslayout import case_clash, windows_path_problem
from venvstacks_docker.platforms import usable_cpus

__all__ = [
    "XZ_CHUNK_SIZE",
    "ArchiveFormat",
    "ArchiveResult",
    "archive_suffix",
    "safe_extract",
    "write_archive",
    "xz_description",
    "xz_filters",
]

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
_COPY_BUFSIZE = 1024 * 1024
_DOS_EPOCH = 315532800  # 1980-01-01T00:00:00Z, the earliest ZIP timestamp
_DOS_MAX = 4354819198  # 2107-12-31T23:59:58Z, the latest ZIP timestamp
_USTAR_MAX_MTIME = 8**11 - 1  # larger values would need a pax header

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


def _walk(src_dir: Path, root_name: str, *, allow_symlinks: bool,
          cancel: threading.Event | None) -> Iterator[_tar.Member]:
    """The layer's members in tree order (see :mod:`venvstacks_docker._tar`), with the
    rules of layer archives on top: symlinks must be relative, and zip archives (for
    Windows targets) take none at all.  Checks ``cancel`` before each member."""
    for member in _tar.walk(src_dir, top=root_name, order="tree", error=PublishError):
        _check_cancel(cancel)
        if member.kind == "symlink":
            _check_symlink(member, allow_symlinks)
        yield member


def _check_windows_name(member: _tar.Member, seen: dict[str, str]) -> None:
    """Zip archives are for Windows targets: every name must be one Windows can create,
    and no two may differ only in case (on NTFS one would replace the other)."""
    why = windows_path_problem(member.name)
    if why:
        raise PublishError(f"cannot put {member.path} into a zip archive: it {why}",
                           hint="Windows could not unpack it; rename or remove it before publishing")
    earlier = case_clash(seen, member.name)
    if earlier is not None:
        raise PublishError(
            f"cannot put both {earlier} and {member.name} into a zip archive: their names differ only in case",
            hint="on Windows one would replace the other; remove one of them before publishing")


def _check_symlink(member: _tar.Member, allow_symlinks: bool) -> None:
    if not allow_symlinks:
        raise PublishError(
            f"cannot put symlink {member.path} into a zip archive",
            hint="zip archives are for Windows targets, where extractors do not "
            "restore symlinks; replace the link with a copy of its target",
        )
    target = member.linkname
    if os.path.isabs(target) or target.startswith(("/", "\\")):  # noqa: PTH117 - the link text, not a path here
        raise PublishError(
            f"symlink {member.path} points to the absolute path {target}",
            hint="layer archives may only contain relative symlinks; "
            "make the link relative before publishing",
        )


# ---------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------


def _check_args(
    src_dir: Path, archive_path: Path, root_name: str, mtime: int, fmt: str, chunk_size: int
) -> None:
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
    if fmt not in ("tar.xz", "zip"):
        archive_suffix(fmt)  # raises
    if chunk_size < 64 * 1024:
        raise PublishError(f"xz chunk size {chunk_size} is too small (minimum 64 KiB)")


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
    ``threads`` (default: the CPUs this process may use) only affects speed, never the bytes.
    ``chunk_size`` is the tar.xz chunk size (see ``XZ_CHUNK_SIZE``; changing it
    changes the bytes).  ``progress``, if given, is called with the number of
    uncompressed bytes processed so far.  ``cancel``, if given, lets another thread
    abort the write (raising :class:`Interrupted`), e.g. when the user presses Ctrl-C
    while archives are written on worker threads.

    Refused with ``PublishError``: absolute symlinks, FIFOs/sockets/devices, and for
    ``zip`` (Windows targets) any symlink, because Windows extractors would turn a
    link entry into a small text file, any name Windows cannot create and any two names
    that differ only in case.  Hard links are stored as regular files.

    The archive is written to a temporary file next to ``archive_path`` and renamed
    into place only when complete; on any error or interrupt the temporary file is
    removed and ``archive_path`` is left untouched.
    """
    src_dir = Path(src_dir)
    archive_path = Path(archive_path)
    _check_args(src_dir, archive_path, root_name, mtime, fmt, chunk_size)
    threads = max(1, int(usable_cpus() if threads is None else threads))

    try:
        archive_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PublishError(
            f"cannot create output folder {archive_path.parent}: {exc.strerror or exc}"
        ) from exc
    tmp_path = archive_path.with_name(f".{archive_path.name}.tmp-{uuid.uuid4().hex[:16]}")
    try:
        with tmp_path.open("wb") as f:
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
            with tmp_path.open("rb") as f:
                sha256 = hashlib.file_digest(f, "sha256").hexdigest()
        tmp_path.chmod(0o644)
        tmp_path.replace(archive_path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp_path.unlink(missing_ok=True)
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
        members = _walk(src_dir, root_name, allow_symlinks=True, cancel=cancel)
        _tar.write_tar(sink, members, mtime=mtime, owner_name="root", error=PublishError)
        sink.finish()
        _check_cancel(cancel)
    except BaseException:
        stop.failed.set()  # only our own workers: the caller's event is theirs to set
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return sink.size, sink.sha256.hexdigest(), sink.tar_sha256.hexdigest()


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
    seen: dict[str, str] = {}
    with zipfile.ZipFile(out, "w", allowZip64=True) as zf:
        for entry in _walk(src_dir, root_name, allow_symlinks=False, cancel=cancel):
            _check_windows_name(entry, seen)
            name = entry.name
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
            with Path(entry.path).open("rb") as src, zf.open(info, "w", force_zip64=False) as dst:
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
