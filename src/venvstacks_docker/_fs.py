"""Small file system primitives shared by the stages.

:func:`write_new_file` creates a file that must not exist yet, never through a symlink.
:func:`rename_noreplace` moves a file or folder to a path that must not exist yet,
atomically where the kernel can do it: ``renameat2(RENAME_NOREPLACE)`` on Linux,
``renamex_np(RENAME_EXCL)`` on macOS.  Plain ``os.rename`` is not enough: on POSIX it
silently replaces an existing file, or an existing *empty* folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import stat
import sys
from collections.abc import Callable
from typing import IO

_AT_FDCWD = -100  # Linux
_RENAME_NOREPLACE = 1  # Linux <linux/fs.h>
_RENAME_EXCL = 0x4  # macOS <stdio.h>
# renameat2 syscall numbers, for C libraries without a renameat2() wrapper (glibc < 2.28)
_SYS_RENAMEAT2 = {"x86_64": 316, "amd64": 316, "aarch64": 276, "arm64": 276}
# errno values meaning "this kernel / file system cannot do an exclusive rename"
_UNSUPPORTED = {
    errno.ENOSYS, errno.EINVAL, getattr(errno, "ENOTSUP", -1), getattr(errno, "EOPNOTSUPP", -1)
}

_COPY_BUFSIZE = 1024 * 1024
_Renamer = Callable[[bytes, bytes], int]
_native_cache: list[_Renamer | None] = []


def _load_native() -> _Renamer | None:
    """A C function doing an exclusive rename on this platform, or None."""
    if sys.platform not in ("linux", "darwin"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    if sys.platform == "darwin":
        fn = getattr(libc, "renamex_np", None)
        if fn is None:
            return None
        fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
        fn.restype = ctypes.c_int
        return lambda src, dst: fn(src, dst, _RENAME_EXCL)
    fn = getattr(libc, "renameat2", None)
    if fn is not None:
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        fn.restype = ctypes.c_int
        return lambda src, dst: fn(_AT_FDCWD, src, _AT_FDCWD, dst, _RENAME_NOREPLACE)
    number = _SYS_RENAMEAT2.get(platform.machine().lower())
    syscall = getattr(libc, "syscall", None)
    if number is None or syscall is None:
        return None
    syscall.restype = ctypes.c_long
    return lambda src, dst: syscall(
        ctypes.c_long(number), ctypes.c_int(_AT_FDCWD), ctypes.c_char_p(src),
        ctypes.c_int(_AT_FDCWD), ctypes.c_char_p(dst), ctypes.c_uint(_RENAME_NOREPLACE),
    )


def _native() -> _Renamer | None:
    if not _native_cache:
        _native_cache.append(_load_native())
    return _native_cache[0]


def rename_noreplace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Rename ``src`` to ``dst``, never replacing anything already at ``dst``.

    Raises ``FileExistsError`` if ``dst`` exists in any form (file, symlink, even an
    empty folder), other ``OSError`` as ``os.rename`` would.  Atomic on Linux and
    macOS; elsewhere (or on file systems refusing the flag) it falls back to
    :func:`rename_noreplace_fallback`, which is atomic for files but only
    check-then-rename for folders.
    """
    src_s, dst_s = os.fspath(src), os.fspath(dst)
    native = _native()
    if native is not None:
        if native(os.fsencode(src_s), os.fsencode(dst_s)) == 0:
            return
        code = ctypes.get_errno()
        if code not in _UNSUPPORTED:
            raise OSError(code, os.strerror(code), src_s, None, dst_s)
    rename_noreplace_fallback(src_s, dst_s)


def rename_noreplace_fallback(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """:func:`rename_noreplace` without kernel help.

    Files and symlinks are hard-linked to ``dst`` (which fails if it exists) and then
    unlinked at ``src``; folders (and file systems without hard links) are renamed
    after checking that ``dst`` does not exist, which leaves a small race window.
    """
    src_s, dst_s = os.fspath(src), os.fspath(dst)
    if not stat.S_ISDIR(os.lstat(src_s).st_mode):
        try:
            os.link(src_s, dst_s, follow_symlinks=False)
        except FileExistsError:
            raise
        except (OSError, NotImplementedError):
            pass  # no hard links here: check, then rename
        else:
            os.unlink(src_s)
            return
    if os.path.lexists(dst_s):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), src_s, None, dst_s)
    os.rename(src_s, dst_s)  # on Windows this refuses an existing dst by itself


def write_new_file(path: str, src: IO[bytes], mode: int, mtime: float | None = None) -> None:
    """Create ``path`` from the stream ``src``, then set ``mode`` (and ``mtime``).

    Fails with ``FileExistsError`` if anything is at ``path`` already, including a
    symlink (``O_EXCL`` never follows one): an existing file is never truncated."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    with os.fdopen(os.open(path, flags, 0o600), "wb") as dst:
        while block := src.read(_COPY_BUFSIZE):
            dst.write(block)
    os.chmod(path, mode)
    if mtime is not None:
        set_mtime(path, mtime)


def set_mtime(path: str, mtime: float) -> None:
    """Set the access and modification times of a file or folder; out-of-range times
    (from an archive, say) are ignored rather than fatal."""
    with contextlib.suppress(OverflowError, ValueError, OSError):
        os.utime(path, (mtime, mtime))
