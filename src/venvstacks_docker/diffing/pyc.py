"""``.pyc`` files: the 16-byte header (PEP 552) and the source path compiled into them.

The header is a magic number (the Python version), a flags word (0: timestamp-based;
1: unchecked hash; 3: checked hash), then either the source's mtime and size or a
64-bit hash of the source.  The code object is not unmarshalled (marshal is not safe
on untrusted data): the source path (``co_filename``) is found as the marshalled
string that ends in ``.py``.
"""

from __future__ import annotations

import datetime
import importlib.util
import re
import sys
from dataclasses import dataclass
from typing import Final

from venvstacks_docker.diffing import paths
from venvstacks_docker.diffing.model import Finding

# magic number (first two bytes, little endian) of the final release of each version
_MAGIC: Final = {3413: "3.8", 3425: "3.9", 3439: "3.10", 3495: "3.11", 3531: "3.12", 3571: "3.13"}
_RUNNING = int.from_bytes(importlib.util.MAGIC_NUMBER[:2], "little")
# marshal string types (with and without FLAG_REF): short ascii (1-byte length), others (4-byte length)
_SHORT: Final = frozenset({0x7A, 0xFA, 0x5A, 0xDA})
_LONG: Final = frozenset({0x61, 0xE1, 0x41, 0xC1, 0x75, 0xF5, 0x74, 0xF4})
_PY_END: Final = re.compile(rb"\.py(?![A-Za-z0-9_])")


@dataclass(frozen=True)
class PycHeader:
    """The fields of a ``.pyc`` header."""

    magic: int
    mode: str  # "timestamp" | "checked-hash" | "unchecked-hash"
    mtime: int | None = None
    source_size: int | None = None
    source_hash: str | None = None

    @property
    def python(self) -> str:
        """The Python version the magic number belongs to, in words."""
        version = _MAGIC.get(self.magic)
        if version is None and self.magic == _RUNNING:
            version = f"{sys.version_info.major}.{sys.version_info.minor}"
        return f"Python {version} (magic {self.magic})" if version else f"magic number {self.magic}"


def header(data: bytes) -> PycHeader | None:
    """The header of a ``.pyc`` file, ``None`` if too short or not one."""
    if len(data) < 16 or data[2:4] != b"\r\n":
        return None
    magic = int.from_bytes(data[0:2], "little")
    flags = int.from_bytes(data[4:8], "little")
    if flags & 1:
        return PycHeader(magic, "checked-hash" if flags & 2 else "unchecked-hash", source_hash=data[8:16].hex())
    return PycHeader(magic, "timestamp", mtime=int.from_bytes(data[8:12], "little"),
                     source_size=int.from_bytes(data[12:16], "little"))


def source_paths(data: bytes) -> set[str]:
    """Marshalled strings ending in ``.py``: the source path(s) the code was compiled from."""
    found = set()
    for match in _PY_END.finditer(data, 16):
        end = match.end()
        for start in range(end - 1, max(16, end - 4096), -1):
            n = end - start
            if (n < 256 and data[start - 1] == n and data[start - 2] in _SHORT) or (
                    start >= 21 and data[start - 4:start] == n.to_bytes(4, "little") and data[start - 5] in _LONG):
                text = data[start:end].decode("utf-8", "replace")
                if "/" in text or "\\" in text or text.endswith(".py"):
                    found.add(text)
                break
    return found


def _when(mtime: int) -> str:
    return datetime.datetime.fromtimestamp(mtime, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _describe(h: PycHeader) -> str:
    if h.mode == "timestamp":
        return f"timestamp-based (source mtime {_when(h.mtime or 0)}, size {h.source_size})"
    return f"{h.mode} (source hash {h.source_hash})"


def analyze(a: bytes, b: bytes, name: str) -> list[Finding]:
    """Findings for two different ``.pyc`` files; empty if neither has a ``.pyc`` header."""
    ha, hb = header(a), header(b)
    if ha is None or hb is None:
        return []
    found = []
    if ha.magic != hb.magic:
        found.append(Finding("pyc-magic", f"compiled by {ha.python} in A and {hb.python} in B",
                             {"a": ha.magic, "b": hb.magic}))
    if ha.mode != hb.mode:
        found.append(Finding(
            "pyc-invalidation-mode",
            f"the bytecode is {_describe(ha)} in A but {_describe(hb)} in B. A timestamp-based .pyc records "
            "the source file's mtime, so every rebuild changes it; py_compile and compileall write checked-hash "
            "files instead when SOURCE_DATE_EPOCH is set (or with --invalidation-mode checked-hash)",
            {"a": ha.mode, "b": hb.mode}))
    elif ha.mode == "timestamp":
        if ha.mtime != hb.mtime:
            found.append(Finding(
                "pyc-source-mtime",
                f"the timestamp-based .pyc records the source's mtime {_when(ha.mtime or 0)} in A and "
                f"{_when(hb.mtime or 0)} in B: the .py file was touched between the builds. Compile with "
                "SOURCE_DATE_EPOCH set (checked-hash .pyc) or give the sources one mtime",
                {"a": ha.mtime, "b": hb.mtime}))
        if ha.source_size != hb.source_size:
            found.append(Finding("pyc-source-size",
                                 f"compiled from a source of {ha.source_size} bytes in A and {hb.source_size} in B: "
                                 "the .py file itself differs", {"a": ha.source_size, "b": hb.source_size}))
    elif ha.source_hash != hb.source_hash:
        found.append(Finding("pyc-source-hash",
                             f"compiled from another source: source hash {ha.source_hash} in A, "
                             f"{hb.source_hash} in B", {"a": ha.source_hash, "b": hb.source_hash}))
    pa, pb = source_paths(a), source_paths(b)
    if pa != pb:
        sentence, details = paths.explain_paths(pa - pb, pb - pa, name)
        found.append(Finding("pyc-embedded-path",
                             "the source path compiled into the code (co_filename, shown in tracebacks) differs: "
                             + sentence, details))
    if not found and a[16:] != b[16:]:
        found.append(Finding("pyc-code", "same header and source path, but the compiled code differs: "
                             "another compiler (Python build) or optimisation level", {}))
    return found
