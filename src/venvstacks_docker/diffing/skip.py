"""Skipping the parts of two ``.xz`` archives that are byte-for-byte the same.

The tool compresses every 32 MiB of tar into an xz stream of its own, and the index
at the end of each stream says where it is (:mod:`.container`).  When stream *i* of A
and of B start at the same place in the tar stream, have the same length and the same
compressed bytes, they decompress to the same bytes: they are not decompressed at all.
Only the runs of differing streams are, and their members are found again by
re-synchronising on the tar headers:

- the tar stream before a run is the same on both sides, so the first header at or
  after the run's start is at the same offset in both (checked), and must begin a
  chain of valid headers (checksum, ``ustar`` magic) that runs through the window;
- the bytes before that header belong to a member that started earlier; they must be
  equal on both sides, otherwise the fast path gives up;
- after the run both chains are followed (into the following, shared streams) until
  they meet at one header offset: from there on the two tar streams are identical.

Whenever a check fails, :meth:`Plan.windows` returns ``None`` and the archives are
read completely instead: the fast path never decides *whether* archives differ (the
sha256 of the files does), only how much has to be read to say *why*.
"""

from __future__ import annotations

import io
import lzma
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from venvstacks_docker.diffing.container import XzStream, xz_info
from venvstacks_docker.diffing.members import Member, tar_member

_PIECE = 1 << 20
MAX_WINDOW = 256 << 20
"""Decompressed bytes a plan may hold per side; beyond it, the archives are streamed."""
_ZERO = bytes(512)
_NO_DATA = frozenset(b"123456")  # link, symlink, device, folder, FIFO entries have no data blocks
_END = -1
_BAD = -2

Items = Iterator[tuple[Member, IO[bytes] | None]]


def _valid_header(block: bytes) -> bool:
    if len(block) < 512 or block[257:262] != b"ustar":
        return False
    try:
        stored = int(block[148:156].replace(b"\0", b" ").strip() or b"-1", 8)
    except ValueError:
        return False
    return stored == sum(block) - sum(block[148:156]) + 256


def _data_size(block: bytes) -> int:
    if block[156] in _NO_DATA:
        return 0
    field_ = block[124:136]
    if field_[0] & 0x80:
        return int.from_bytes(field_[1:], "big")
    return int(field_.replace(b"\0", b" ").strip() or b"0", 8)


def _step(data: bytearray, pos: int) -> int:
    """The offset of the header after the one at ``pos``; ``_END`` at end-of-archive zeros, ``_BAD``."""
    block = bytes(data[pos:pos + 512])
    if block == _ZERO:
        return _END
    if not _valid_header(block):
        return _BAD
    return pos + 512 + ((_data_size(block) + 511) & ~511)


@dataclass
class _Window:
    """Decompressed tar bytes of one side, from the start of a run on."""

    data: bytearray
    run_end: int
    final: bool


@dataclass
class _Cursor:
    """Where the shared extension after a run is: which stream, and its decoder if started."""

    index: int
    decoder: lzma.LZMADecompressor | None = None
    raw: bytes = b""


@dataclass
class Plan:
    """Which streams of two ``.xz`` archives are equal, and the windows around the others."""

    a: Path
    b: Path
    streams_a: list[XzStream]
    streams_b: list[XzStream]
    equal: list[bool]
    skipped: int = 0
    tar_equal: bool | None = None
    _touched: set[int] = field(default_factory=set)

    def runs(self) -> list[tuple[int, int, int]]:
        """``(first, end_a, end_b)`` stream indexes of each run of differing streams (ends exclusive)."""
        runs = []
        n, i = len(self.equal), 0
        while i < max(len(self.streams_a), len(self.streams_b)):
            if i < n and self.equal[i]:
                i += 1
                continue
            start = i
            while i < n and not self.equal[i]:
                i += 1
            ends = (len(self.streams_a), len(self.streams_b)) if i >= n else (i, i)
            runs.append((start, *ends))
            i = max(ends)
        return runs


    def windows(self) -> list[tuple[Items, Items]] | None:
        """Member iterators for each run, A and B; ``None`` when the fast path does not apply."""
        runs = self.runs()
        size = sum(s.uncompressed_size for r in runs for s in self.streams_a[r[0]:r[1]])
        if not runs or size > MAX_WINDOW:
            return None
        result = []
        tar_equal = True
        for start, end_a, end_b in runs:
            pair = self._run(start, end_a, end_b)
            if pair is None:
                return None
            (wa, wb), same = pair
            result.append((wa, wb))
            tar_equal = tar_equal and same
        self.skipped = sum(self.equal) - len(self._touched)
        self.tar_equal = tar_equal
        return result

    def _run(self, start: int, end_a: int, end_b: int) -> tuple[tuple[Items, Items], bool] | None:
        data: dict[str, bytes] = {}
        thread = threading.Thread(target=lambda: data.__setitem__("b", _decompress(self.b,
                                                                                    self.streams_b[start:end_b])))
        thread.start()
        data["a"] = _decompress(self.a, self.streams_a[start:end_a])
        thread.join()
        if "b" not in data:
            return None
        wa = _Window(bytearray(data["a"]), len(data["a"]), end_a == len(self.streams_a))
        wb = _Window(bytearray(data["b"]), len(data["b"]), end_b == len(self.streams_b))
        first = _resync(wa)
        if first != _resync(wb) or wa.data[:first] != wb.data[:first]:
            return None
        boundary = self._converge(wa, wb, first, end_a)
        if boundary is None:
            return None
        ba, bb = boundary
        same = wa.data[first:ba] == wb.data[first:bb]
        return (_items(wa, first, ba), _items(wb, first, bb)), same

    def _extend(self, windows: tuple[_Window, _Window], cursor: _Cursor) -> bool:
        """Append the next piece (1 MiB) of the following shared, equal streams to both windows;
        False when there is none (the end of the archive, or a stream that differs)."""
        while True:
            if cursor.decoder is None:
                if cursor.index >= len(self.equal) or not self.equal[cursor.index]:
                    return False
                stream = self.streams_a[cursor.index]
                with self.a.open("rb") as f:
                    f.seek(stream.offset)
                    cursor.raw = f.read(stream.size)
                cursor.decoder = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
                self._touched.add(cursor.index)
            try:
                piece = cursor.decoder.decompress(cursor.raw, max_length=_PIECE)
            except lzma.LZMAError:
                return False
            cursor.raw = b""
            last = cursor.index + 1 == len(self.streams_a) == len(self.streams_b)
            if cursor.decoder.eof:
                cursor.decoder = None
                cursor.index += 1
            for w in windows:
                w.data += piece
                w.final = last and cursor.decoder is None
            if piece:
                return True
            if cursor.decoder is not None and cursor.decoder.needs_input:
                return False

    def _converge(self, wa: _Window, wb: _Window, first: int, end: int) -> tuple[int, int] | None:
        """Where the two header chains meet after the run: the end offset of each window's members."""
        pos = {"a": first, "b": first}
        windows = {"a": wa, "b": wb}
        next_stream = _Cursor(end)
        while True:
            for side, other in (("a", "b"), ("b", "a")):
                w = windows[side]
                while pos[side] >= 0 and (pos[side] < w.run_end or pos[side] < pos[other]):
                    while pos[side] + 512 > len(w.data):
                        if not self._extend((wa, wb), next_stream):
                            return _finals(wa, wb, pos)
                    pos[side] = _step(w.data, pos[side])
            if pos["a"] < 0 or pos["b"] < 0:
                return _finals(wa, wb, pos)
            if pos["a"] == pos["b"]:
                while pos["a"] > len(wa.data):  # the last member's data runs into the next stream
                    if not self._extend((wa, wb), next_stream):
                        return None
                return pos["a"], pos["b"]


def _finals(wa: _Window, wb: _Window, pos: dict[str, int]) -> tuple[int, int] | None:
    """The chains reached the end of the tar stream: the windows must hold all of it."""
    if pos["a"] == _BAD or pos["b"] == _BAD or not (wa.final and wb.final):
        return None
    return len(wa.data), len(wb.data)


def _decompress(path: Path, streams: list[XzStream]) -> bytes:
    if not streams:
        return b""
    with path.open("rb") as f:
        f.seek(streams[0].offset)
        raw = f.read(streams[-1].offset + streams[-1].size - streams[0].offset)
    try:
        return lzma.decompress(raw, format=lzma.FORMAT_XZ)
    except lzma.LZMAError:
        return b""


def _resync(window: _Window) -> int:
    """The first offset in the window where a chain of valid tar headers starts and runs
    through the window (the window's length when none does: one member covers it all)."""
    data = window.data
    for pos in range(0, len(data), 512):
        if data[pos + 257:pos + 262] != b"ustar":
            continue
        walk = pos
        while 0 <= walk < len(data):
            walk = _step(data, walk)
        if walk >= len(data) or (walk == _END and window.final):
            return pos
    return len(data)


def _items(window: _Window, start: int, end: int) -> Items:
    if end <= start:
        return
    with tarfile.open(fileobj=io.BytesIO(bytes(window.data[start:end])), mode="r:") as tar:
        for info in tar:
            yield tar_member(info), tar.extractfile(info) if info.isreg() else None


def plan(a: Path, b: Path) -> Plan | None:
    """Which streams of two ``.xz`` files are equal (comparing compressed bytes only); ``None`` if none are."""
    ia, ib = xz_info(a), xz_info(b)
    if ia is None or ib is None or len(ia.streams) < 2 or len(ib.streams) < 2:
        return None
    equal = []
    with a.open("rb") as fa, b.open("rb") as fb:
        for sa, sb in zip(ia.streams, ib.streams, strict=False):
            same = (sa.uncompressed_offset, sa.uncompressed_size, sa.size) == (
                sb.uncompressed_offset, sb.uncompressed_size, sb.size)
            if same:
                fa.seek(sa.offset)
                fb.seek(sb.offset)
                same = fa.read(sa.size) == fb.read(sb.size)
            equal.append(same)
    if not any(equal):
        return None
    return Plan(a, b, ia.streams, ib.streams, equal)
