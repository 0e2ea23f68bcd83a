"""Shared libraries across layers: venvstacks' ``share/venv/dynlib`` folders.

A wheel in a lower layer may ship a shared library (``libfoo.so``) that an extension
module in an upper layer links by name.  The dynamic loader finds it neither through
``sys.path`` nor through the upper module's rpath, so each layer publishes its libraries
by name, and each layered environment's interpreter puts those folders on the loader
path:

* after installing a layer's packages, every shared library below its
  ``site-packages`` (a name ending in ``.so`` or ``.dylib`` that is not a Python
  extension module, and that no ``dynlib_exclude`` pattern matches) gets a relative
  symlink of the same name in the layer's ``share/venv/dynlib/``;
* a layered environment's ``bin/python`` is a small shell script (bash on Linux, zsh
  on macOS) that appends the lower layers' ``share/venv/dynlib`` folders, as paths
  relative to itself, to ``LD_LIBRARY_PATH`` (``DYLD_LIBRARY_PATH`` on macOS), then
  runs the runtime's interpreter through the ``bin/python_`` symlink under its own
  name, so ``sys.executable`` and the ``pyvenv.cfg`` lookup still see ``bin/python``.

Everything here is deterministic: the scan is sorted, links are relative, and the
script's text depends only on the lower layers' deployed names and the target OS.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath

from venvstacks_docker.errors import BuildError

DYNLIB_DIR = PurePosixPath("share/venv/dynlib")
"""Where a layer links its shared libraries, relative to the layer folder."""
BYPASS_NAME = "python_"
"""The symlink to the runtime's interpreter that the ``bin/python`` script runs."""
LIB_SUFFIXES = (".so", ".dylib")

# The tag of an extension module's file name, as in ``name.<tag>.so``: CPython
# (``cpython-311-x86_64-linux-gnu``, ``cpython-313t-darwin``), PyPy and the stable ABI.
_EXT_TAG = re.compile(r"abi3|cpython-\d+[a-z]*(-[^.]+)?|pypy\d*-pp\d+(-[^.]+)?")
_SHELLS = {"linux": ("/usr/bin/bash", "LD_LIBRARY_PATH"), "macosx": ("/bin/zsh", "DYLD_LIBRARY_PATH")}


def supports_dynlib(target_os: str) -> bool:
    """Whether layers for ``target_os`` (``linux``, ``macosx``, ``win``) link shared libraries."""
    return target_os in _SHELLS


def is_extension_module(name: str) -> bool:
    """``name.<tag>.so`` for a Python extension tag: importable, never a link target.

    A plain ``foo.so`` counts as a library (venvstacks links it too); versioned sonames
    (``libfoo.so.1``) do not end in ``.so`` and are never linked.
    """
    parts = name.split(".")
    return len(parts) == 3 and parts[2] == "so" and bool(parts[0]) and _EXT_TAG.fullmatch(parts[1]) is not None


# --- dynlib_exclude patterns ---------------------------------------------------------


def pattern_problem(pattern: str) -> str | None:
    """Why a ``dynlib_exclude`` pattern can never match a library, or ``None`` if it can.

    Patterns are matched against the end of a library's path (see :func:`excluded`), so
    an empty pattern, an absolute one, an empty segment (``a//b``, a trailing ``/``) or
    a ``.``/``..`` segment would silently exclude nothing.
    """
    if not pattern:
        return "is empty"
    if pattern.startswith("/"):
        return "is absolute (patterns match the end of a path inside the layer, e.g. 'triton/**')"
    segments = pattern.split("/")
    if "" in segments:
        return "has an empty path segment (a trailing '/' matches no file: use 'folder/**')"
    if any(seg in (".", "..") for seg in segments):
        return "has a '.' or '..' segment, which no library path contains"
    return None


def _match_from(pattern: Sequence[str], path: Sequence[str]) -> bool:
    """Whether the glob segments ``pattern`` match all of the path segments ``path``."""
    if not pattern:
        return not path
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        # any number of segments; a final ``**`` needs at least one (it names files below)
        first = 1 if not rest else 0
        return any(_match_from(rest, path[i:]) for i in range(first, len(path) + 1))
    return bool(path) and fnmatchcase(path[0], head) and _match_from(rest, path[1:])


def excluded(relative: PurePosixPath, patterns: Iterable[str]) -> bool:
    """Whether a ``dynlib_exclude`` pattern matches the end of ``relative``.

    ``relative`` is the library's path inside the layer folder.  A pattern matches when
    it matches the path's last segments as a whole: ``*``, ``?`` and ``[...]`` stay in
    one segment (and match hidden names), ``**`` matches any number of segments.  So
    ``"*.so"`` excludes every ``.so``, ``"triton/**"`` everything below a ``triton``
    folder, ``"project/**/libpng.*"`` that library anywhere below ``project``.
    """
    parts = relative.parts
    for pattern in patterns:
        segs = pattern.split("/")
        if any(_match_from(segs, parts[start:]) for start in range(len(parts))):
            return True
    return False


# --- scanning and linking --------------------------------------------------------------


def find_shared_libraries(env: Path, site: Path, exclude: Iterable[str] = ()) -> list[Path]:
    """Shared libraries below ``site`` (inside the layer folder ``env``), in sorted order.

    Symlinked folders are not followed; excluded libraries and extension modules are left out.
    """
    patterns = list(exclude)
    found: list[Path] = []
    for root, dirs, files in os.walk(site):
        dirs.sort()
        for name in sorted(files):
            if not name.endswith(LIB_SUFFIXES) or is_extension_module(name):
                continue
            path = Path(root, name)
            if not excluded(PurePosixPath(path.relative_to(env).as_posix()), patterns):
                found.append(path)
    return found


def map_link_names(libraries: Iterable[Path]) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    """Link name -> library, and the names two or more different libraries want (sorted)."""
    chosen: dict[str, Path] = {}
    clashes: dict[str, list[Path]] = {}
    for lib in libraries:
        name = lib.name
        if name in clashes:
            if lib not in clashes[name]:
                clashes[name].append(lib)
        elif name in chosen and chosen[name] != lib:
            clashes[name] = [chosen.pop(name), lib]
        else:
            chosen[name] = lib
    return dict(sorted(chosen.items())), {k: sorted(v) for k, v in sorted(clashes.items())}


def link_shared_libraries(env: Path, site: Path, exclude: Iterable[str], *, layer: str) -> list[str]:
    """(Re)make ``env``'s ``share/venv/dynlib`` links; returns the link names made.

    Stale entries are removed first; an empty folder is not left behind.  Two libraries
    with one name are a :class:`BuildError` (the loader could only ever find one).
    """
    chosen, clashes = map_link_names(find_shared_libraries(env, site, exclude))
    if clashes:
        lines = [f"  {name}: {', '.join(p.relative_to(env).as_posix() for p in paths)}"
                 for name, paths in clashes.items()]
        raise BuildError(
            f"layer {layer}: several shared libraries have the same name, so "
            f"{DYNLIB_DIR} cannot link them all:\n" + "\n".join(lines),
            hint="add patterns for the unwanted ones to the layer's dynlib_exclude")
    folder = env / DYNLIB_DIR
    if folder.is_dir() and not folder.is_symlink():
        for entry in sorted(folder.iterdir()):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    if chosen:
        folder.mkdir(parents=True, exist_ok=True)
        for name, lib in chosen.items():
            (folder / name).symlink_to(os.path.relpath(lib, folder))
    elif folder.is_dir() and not folder.is_symlink():
        folder.rmdir()
    return list(chosen)


# --- the bin/python script ------------------------------------------------------------------


def layer_dynlib_dirs(lower_folders: Iterable[str]) -> list[str]:
    """``dynlib_dirs`` of a layered env's config: each lower layer's folder, from the layer."""
    return [f"../{name}/{DYNLIB_DIR}" for name in lower_folders]


def wrapper_script(dynlib_dirs: Sequence[str], target_os: str) -> str:
    """The text of a layered environment's ``bin/python`` for ``target_os``.

    ``dynlib_dirs`` are relative to the layer folder (as in ``venvstacks_layer.json``);
    the script reaches them relative to its own folder, so it works wherever the
    layers are unpacked side by side.
    """
    shell, var = _SHELLS[target_os]
    adds = [f'add_libdir "$here"/{shlex.quote("../" + d)}' for d in dynlib_dirs]
    lines = [
        f"#!{shell}",
        "# venvstacks layer interpreter: puts the shared library folders of the lower",
        f"# layers (share/venv/dynlib) on {var}, then runs the runtime's",
        "# interpreter (bin/python_) under this script's name.",
        "set -eu",
        'here="$(cd "$(dirname "$(readlink -f "$0")")" >/dev/null 2>&1 && pwd)"',
        "add_libdir() {",
        f'  case ":${{{var}-}}:" in',
        '    *":$1:"*) ;;',
        f'    *) {var}="${{{var}:+${var}:}}$1" ;;',
        "  esac",
        "}",
        *adds,
        f"export {var}",
        f'base="$here/{BYPASS_NAME}"',
        'if [ ! -L "$base" ] || [ "$base" -ef "$here/python" ]; then',
        '  echo "$here/python: $base must be a symlink to the runtime\'s interpreter" >&2',
        "  exit 127",
        "fi",
        'exec -a "$here/python" "$base" "$@"',
        "",
    ]
    return "\n".join(lines)


def write_interpreter(bin_dir: Path, base_python: str, dynlib_dirs: Sequence[str], target_os: str) -> None:
    """Make ``bin_dir/python``: the wrapper script, with ``python_`` linked to ``base_python``.

    ``base_python`` is the runtime's interpreter relative to ``bin_dir``.  Other aliases
    (``python3``...) should link to ``python``.
    """
    bypass, python = bin_dir / BYPASS_NAME, bin_dir / "python"
    for path in (bypass, python):
        path.unlink(missing_ok=True)
    bypass.symlink_to(base_python)
    python.write_text(wrapper_script(dynlib_dirs, target_os), encoding="utf-8", newline="\n")
    python.chmod(0o755)


__all__ = [
    "BYPASS_NAME",
    "DYNLIB_DIR",
    "LIB_SUFFIXES",
    "excluded",
    "find_shared_libraries",
    "is_extension_module",
    "layer_dynlib_dirs",
    "link_shared_libraries",
    "map_link_names",
    "pattern_problem",
    "supports_dynlib",
    "wrapper_script",
    "write_interpreter",
]
