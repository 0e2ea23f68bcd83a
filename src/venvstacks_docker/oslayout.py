"""Where a layer keeps its interpreter and its packages on each target OS, and the names
a Windows layer may hold.

Pure functions of names, so every rule is tested on any host (``tests/test_windows_layout.py``):

* **Linux and macOS**: ``bin/python`` and ``lib/pythonX.Y/site-packages``, as in
  python-build-standalone's ``install_only`` runtimes and in ``venv``.  A layered
  environment's ``bin/python`` is the shared-library wrapper of :mod:`.dynlib`; a layer
  publishes its shared libraries in ``share/venv/dynlib``.
* **Windows**: a runtime has ``python.exe`` at its top (python-build-standalone puts no
  interpreter in ``Scripts``) and ``Lib/site-packages``.  A layered environment is made
  with ``venv --copies``: ``Scripts/python.exe`` is a copy of the venv launcher, which
  starts the interpreter in the folder named by ``home`` in the layer's ``pyvenv.cfg``
  (``postinstall.py`` writes it on the target: the runtime's folder).  A Windows layer
  holds no symlinks (staging ships a copy of what a link points at; zip archives refuse
  links).  Lower layers' DLL folders are ``Library/bin`` (as venvstacks has them), added
  with ``os.add_dll_directory`` by the ``sitecustomize.py`` that ``postinstall.py`` writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from venvstacks_docker.dynlib import DYNLIB_DIR

WINDOWS_DYNLIB_DIR = "Library/bin"
"""Where a Windows layer's DLLs for the layers above are (venvstacks' ``dynlib_path``)."""
_WINDOWS_RESERVED = frozenset({"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                               *(f"LPT{i}" for i in range(1, 10))})
_WINDOWS_FORBIDDEN = frozenset('<>:"|?*\\') | frozenset(map(chr, range(32)))


@dataclass(frozen=True)
class Layout:
    """Paths inside one layer folder, with ``/`` separators (Windows accepts them too)."""

    python: str
    """The layer's interpreter."""
    site_dir: str
    """Its ``site-packages``."""
    scripts_dir: str
    """Where ``venv`` and installers put executables (entry points are dropped from it)."""
    dynlib_dir: str
    """Where the layer keeps shared libraries for the layers above."""


def layout(target_os: str, kind: str, py_minor: str) -> Layout:
    """The layout of a ``kind`` layer (runtime, framework, application) for ``target_os``
    (``linux``, ``macosx``, ``win``) and Python ``py_minor`` (``"3.11"``)."""
    if target_os == "win":
        python = "python.exe" if kind == "runtime" else "Scripts/python.exe"
        return Layout(python, "Lib/site-packages", "Scripts", WINDOWS_DYNLIB_DIR)
    return Layout("bin/python", f"lib/python{py_minor}/site-packages", "bin", str(DYNLIB_DIR))


def base_python(target_os: str, runtime_folder: str) -> str:
    """The runtime's interpreter, relative to a layered environment's folder."""
    return f"../{runtime_folder}/{layout(target_os, 'runtime', '').python}"


def dynlib_dirs(target_os: str, lower_folders: Iterable[str]) -> list[str]:
    """``dynlib_dirs`` of a layered environment: each lower layer's library folder."""
    folder = layout(target_os, "framework", "").dynlib_dir
    return [f"../{name}/{folder}" for name in lower_folders]


def config_path(value: str) -> PurePosixPath:
    r"""A relative path from a layer config: venvstacks on Windows writes ``\``, we write ``/``."""
    return PurePosixPath(value.replace("\\", "/"))


def layer_python(layer_dir: Path, config: Mapping[str, Any], *, runtime: bool) -> Path:
    """The interpreter of an unpacked layer: its config's ``python``, else the first of
    the places a Windows or a POSIX layer keeps it that exists (whatever OS runs this)."""
    named = config.get("python")
    if isinstance(named, str) and named:
        return layer_dir / config_path(named)
    guesses = ("python.exe", "bin/python3", "bin/python") if runtime else ("Scripts/python.exe", "bin/python")
    for rel in guesses:
        if (layer_dir / rel).exists():
            return layer_dir / rel
    return layer_dir / guesses[-1]


# --- names a Windows layer may hold ----------------------------------------------------------


def windows_name_problem(name: str) -> str | None:
    """Why Windows cannot create a file or folder called ``name`` (one path component),
    or ``None``.  ``""``, ``.`` and ``..`` are left to the callers' own checks."""
    if name in ("", ".", ".."):
        return None
    bad = sorted({c for c in name if c in _WINDOWS_FORBIDDEN})
    if bad:
        shown = " ".join(repr(c) for c in bad)
        return f"has characters Windows does not allow in a name ({shown})"
    if name[-1] in ". ":
        return "ends with a dot or a space (Windows drops them: it would name another file)"
    stem = name.split(".", 1)[0].rstrip(" ").upper()
    if stem in _WINDOWS_RESERVED:
        return f"is a reserved device name on Windows ({stem})"
    return None


def windows_path_problem(path: str) -> str | None:
    r"""Why Windows cannot create the ``/`` separated ``path`` (naming its first bad
    component), or ``None``.  A ``\`` is a bad character: zip names separate with ``/`` only."""
    for part in path.split("/"):
        why = windows_name_problem(part)
        if why:
            return f"has the name {part!r}, which {why}"
    return None


def case_clash(seen: dict[str, str], path: str) -> str | None:
    """The earlier path that ``path`` equals on a case-insensitive file system (NTFS,
    APFS by default), or ``None``; records ``path`` in ``seen``."""
    key = path.casefold()
    earlier = seen.get(key)
    if earlier is None:
        seen[key] = path
    return earlier


__all__ = [
    "WINDOWS_DYNLIB_DIR",
    "Layout",
    "base_python",
    "case_clash",
    "config_path",
    "dynlib_dirs",
    "layer_python",
    "layout",
    "windows_name_problem",
    "windows_path_problem",
]
