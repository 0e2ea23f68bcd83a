"""Absolute paths embedded in files, and where such a path most likely came from.

A layer archive must not depend on where it was built: an absolute path in a script,
a ``.pyc`` file or a shared library usually names the build folder, a temporary
folder, a cache or the build machine's home.  :func:`origin` says which, in words,
using the member's own name when the path ends with it.
"""

from __future__ import annotations

import re
from typing import Final

_SEGMENT = r"[A-Za-z0-9_.+@~=-]+"
# at least two segments, not preceded by something that makes it a relative path or a URL's tail
_TEXT_PATH: Final = re.compile(rf"(?<![\w/.~:=-])(/{_SEGMENT}(?:/{_SEGMENT})+/?)")
_BYTES_PATH: Final = re.compile(rb"(?<![\w/.~:=-])(/[A-Za-z0-9_.+@~=-]+(?:/[A-Za-z0-9_.+@~=-]+)+/?)")
# paths every Linux system has: the same on every machine, so not "where it was built"
_SYSTEM_PREFIXES: Final = ("/usr/", "/bin/", "/etc/", "/lib/", "/lib64/", "/sbin/", "/dev/", "/proc/",
                           "/sys/", "/System/", "/Library/")
_LAYER_MARKERS: Final = ("/lib/python", "/bin/python", "/site-packages/", "/include/python", "/share/venv/")
MAX_PATHS: Final = 20


def text_paths(text: str) -> set[str]:
    """Absolute paths (two or more segments) in ``text``."""
    return {m.rstrip("/") for m in _TEXT_PATH.findall(text)}


def binary_paths(data: bytes) -> set[str]:
    """Absolute paths (two or more segments, ASCII) in binary ``data``."""
    return {m.decode("ascii").rstrip("/") for m in _BYTES_PATH.findall(data)}


def is_system(path: str) -> bool:
    """Whether the path is a system location (the same on every machine)."""
    return path.startswith(_SYSTEM_PREFIXES) or path in ("/bin/sh", "/usr/bin/env")


def _layer_relative(member: str | None) -> str | None:
    """The member name below the archive's top folder (``lib/python3.11/...``)."""
    if not member or "/" not in member:
        return None
    return member.split("/", 1)[1]


def origin(path: str, member: str | None = None) -> str:
    """Where an embedded absolute path most likely came from, as a phrase."""
    rel = _layer_relative(member)
    if rel and path.endswith("/" + rel):
        prefix = path[: -len(rel) - 1]
        return f"this member's own location when it was built: the layer was in {prefix}"
    if "/_build/" in path:
        build = path[: path.index("/_build/") + len("/_build")]
        return f"a venvstacks build folder ({build}/<layer>)"
    for marker in _LAYER_MARKERS:
        if marker in path:
            return f"a Python environment or layer folder at {path[: path.index(marker)] or '/'}"
    if path.startswith(("/tmp/", "/var/tmp/")):
        return "a temporary folder"
    if "/.cache/" in path or "/cache/uv" in path:
        return "a cache folder (uv's or pip's)"
    if path.startswith(("/home/", "/root/", "/Users/")):
        return "a home folder on the build machine"
    if path.startswith(("/install/", "/tools/")):
        return "python-build-standalone's build prefix"
    if is_system(path):
        return "a system location (the same on every machine)"
    return "an absolute path on the build machine"


def explain_paths(only_a: set[str], only_b: set[str], member: str | None) -> tuple[str, dict[str, object]]:
    """A sentence and details for absolute paths found on one side only."""
    def listed(paths: set[str]) -> list[dict[str, str]]:
        return [{"path": p, "origin": origin(p, member)} for p in sorted(paths)[:MAX_PATHS]]

    parts = []
    for side, paths in (("A", only_a), ("B", only_b)):
        if paths:
            first = sorted(paths)[0]
            more = f" and {len(paths) - 1} more" if len(paths) > 1 else ""
            parts.append(f"only {side} has {first} ({origin(first, member)}){more}")
    details: dict[str, object] = {"only_in_a": listed(only_a), "only_in_b": listed(only_b)}
    return "; ".join(parts), details
