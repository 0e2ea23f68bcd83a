"""Parallel xz compression for ``write_archive``: one independent xz stream per chunk.

``_ChunkedXzWriter`` is the file object tarfile writes the tar stream into; it cuts
the stream into fixed-size chunks, compresses them on a thread pool and writes the
streams strictly in order (see ``archive.XZ_CHUNK_SIZE`` for the trade-offs).
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import lzma
import threading
from collections.abc import Callable
from typing import IO

from venvstacks_docker.errors import Interrupted

# Input is fed to each chunk's compressor in slices of this size so that a worker
# notices cancellation (error or Ctrl-C in the main thread) quickly.  liblzma's
# output does not depend on how the input is sliced.
_FEED_SIZE = 1024 * 1024


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Interrupted("archive writing was cancelled")


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
