"""What the compressed file itself says about how it was compressed: xz and gzip headers.

An ``.xz`` file is one or more streams (the tool writes one per 32 MiB of tar); each
stream records its integrity check, each block its filter chain (x86 BCJ, LZMA2 with
its dictionary size), and the index at the end of each stream the compressed and
uncompressed size of every block (xz file format 1.2.0).  The preset level itself is
not stored: the dictionary size narrows it down (presets 5 and 6 share 8 MiB).  A gzip
header records an mtime, a "fastest/best" flag, the OS and maybe a file name.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from venvstacks_docker.diffing.model import Finding

_FILTERS = {0x21: "LZMA2", 0x03: "delta", 0x04: "x86 BCJ", 0x05: "PowerPC BCJ", 0x06: "IA-64 BCJ",
            0x07: "ARM BCJ", 0x08: "ARM-Thumb BCJ", 0x09: "SPARC BCJ", 0x0A: "ARM64 BCJ", 0x0B: "RISC-V BCJ"}
_CHECKS = {0: "no check", 1: "CRC32", 4: "CRC64", 10: "SHA-256"}
_PRESETS = {256 << 10: "preset 0", 1 << 20: "preset 1", 2 << 20: "preset 2", 4 << 20: "preset 3 or 4",
            8 << 20: "preset 5 or 6", 16 << 20: "preset 7", 32 << 20: "preset 8", 64 << 20: "preset 9"}


@dataclass(frozen=True)
class XzStream:
    """One xz stream: where it is in the file and in the tar stream, and its settings."""

    offset: int
    size: int
    uncompressed_offset: int
    uncompressed_size: int
    check: str
    filters: str


@dataclass
class XzInfo:
    """The streams of an ``.xz`` file."""

    streams: list[XzStream] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        """Settings as recorded in the file (the same for every stream when written by the tool)."""
        sizes = sorted({s.uncompressed_size for s in self.streams[:-1]})
        return {
            "streams": len(self.streams),
            "filters": sorted({s.filters for s in self.streams}),
            "check": sorted({s.check for s in self.streams}),
            "stream_uncompressed_sizes": sizes,
        }


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("bad xz varint")


def _dict_size(prop: int) -> int:
    bits = prop & 0x3F
    return 0xFFFFFFFF if bits >= 40 else (2 | (bits & 1)) << (bits // 2 + 11)


def _human(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"


def _block_filters(header: bytes) -> str:
    flags = header[1]
    pos = 2
    if flags & 0x40:
        _, pos = _varint(header, pos)
    if flags & 0x80:
        _, pos = _varint(header, pos)
    names = []
    for _ in range((flags & 3) + 1):
        fid, pos = _varint(header, pos)
        size, pos = _varint(header, pos)
        props = header[pos:pos + size]
        pos += size
        name = _FILTERS.get(fid, f"filter 0x{fid:x}")
        if fid == 0x21 and props:
            d = _dict_size(props[0])
            name += f" (dictionary {_human(d)}: {_PRESETS.get(d, 'no standard preset')})"
        names.append(name)
    return " + ".join(names)


def _read(f: IO[bytes], offset: int, size: int) -> bytes:
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise ValueError("truncated xz file")
    return data


def _stream_at_end(f: IO[bytes], end: int) -> tuple[int, list[tuple[int, int]], int, str]:
    """Parse the stream that ends at ``end``: (start offset, [(unpadded, uncompressed)] blocks, flags, filters)."""
    footer = _read(f, end - 12, 12)
    if footer[10:12] != b"YZ":
        raise ValueError("no xz stream footer")
    index_size = (struct.unpack("<I", footer[4:8])[0] + 1) * 4
    index = _read(f, end - 12 - index_size, index_size)
    count, pos = _varint(index, 1)
    blocks = []
    for _ in range(count):
        unpadded, pos = _varint(index, pos)
        uncompressed, pos = _varint(index, pos)
        blocks.append((unpadded, uncompressed))
    blocks_size = sum((u + 3) & ~3 for u, _ in blocks)
    start = end - 12 - index_size - blocks_size - 12
    header = _read(f, start, 12)
    if header[:6] != b"\xfd7zXZ\x00":
        raise ValueError("no xz stream header")
    filters = "none"
    if blocks:
        size_byte = _read(f, start + 12, 1)[0]
        filters = _block_filters(_read(f, start + 12, (size_byte + 1) * 4))
    return start, blocks, header[7], filters


def xz_info(path: Path) -> XzInfo | None:
    """The streams of an ``.xz`` file, from its indexes (nothing is decompressed); ``None`` if unreadable."""
    try:
        with path.open("rb") as f:
            end = f.seek(0, 2)
            found = []
            while end > 0:
                while end >= 4 and _read(f, end - 4, 4) == b"\0\0\0\0":  # stream padding
                    end -= 4
                start, blocks, flags, filters = _stream_at_end(f, end)
                found.append((start, end - start, sum(u for _, u in blocks), _CHECKS.get(flags, f"check {flags}"),
                              filters))
                end = start
    except (OSError, ValueError, IndexError, struct.error):
        return None
    info = XzInfo()
    uoff = 0
    for start, size, usize, check_name, filters in reversed(found):
        info.streams.append(XzStream(start, size, uoff, usize, check_name, filters))
        uoff += usize
    return info


def gzip_info(path: Path) -> dict[str, Any] | None:
    """The gzip header fields that can differ between two compressions of one tar stream."""
    try:
        with path.open("rb") as f:
            head = f.read(10)
            name = b""
            if len(head) == 10 and head[3] & 0x08:
                while (c := f.read(1)) not in (b"", b"\0"):
                    name += c
    except OSError:
        return None
    if len(head) < 10 or head[:2] != b"\x1f\x8b":
        return None
    level = {2: "best (level 9)", 4: "fastest (level 1)"}.get(head[8], "default")
    return {"mtime": struct.unpack("<I", head[4:8])[0], "level": level, "os": head[9],
            "name": name.decode("latin-1")}


def describe(path: Path, fmt: str) -> dict[str, Any]:
    """The compression settings the file records, for ``fmt`` (``tar.xz``, ``tar.gz``...)."""
    if fmt == "tar.xz":
        info = xz_info(path)
        return info.describe() if info else {"unreadable": True}
    if fmt == "tar.gz":
        return gzip_info(path) or {"unreadable": True}
    return {}


def compression_finding(path_a: Path, path_b: Path, fmt: str, *, tar_equal: bool | None,
                        recorded: tuple[str | None, str | None] = (None, None)) -> Finding | None:
    """A ``compression`` finding when the recorded settings differ, or when only the compressed bytes do."""
    da, db = describe(path_a, fmt), describe(path_b, fmt)
    details: dict[str, Any] = {"a": da, "b": db}
    if recorded != (None, None):
        details["metadata_a"], details["metadata_b"] = recorded
    changed = sorted(k for k in set(da) | set(db) if da.get(k) != db.get(k))
    same_tar = "the uncompressed tar streams are identical, so only the compression differs. " if tar_equal else ""
    if changed:
        parts = [f"{k}: {_show(da.get(k))} in A, {_show(db.get(k))} in B" for k in changed]
        return Finding("compression", f"{same_tar}The files record other compressor settings: " + "; ".join(parts),
                       details)
    if recorded[0] != recorded[1]:
        return Finding("compression", f"{same_tar}The metadata records other settings: {recorded[0]!r} in A, "
                       f"{recorded[1]!r} in B", details)
    if tar_equal:
        return Finding("compression", same_tar + "The file headers record the same filter chain and dictionary: "
                       "the settings they do not record (preset level, nice_len, depth, --extreme) or the "
                       "compression library's version differ", details)
    return None


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "none"
    return str(value)
