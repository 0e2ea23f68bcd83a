"""Launch and support modules: where they may live, which files they ship, their hash.

An application's modules are copied into its ``site-packages``, so only files the stack
owns may end up there:

* a module's path must stay inside the folder holding the stack file, also after
  following the links in the path itself (``launch_modules -> ../elsewhere`` is refused,
  a link to another file of that folder is fine).  That folder is all a builder
  container sees, so this also makes native and container builds agree;
* a package folder may not contain symbolic links at all: nothing is ever read
  *through* a link inside a module, neither for its hash nor when it is copied.

``iter_module_files``, ``module_hash`` and ``module_name`` are also importable from
:mod:`venvstacks_docker.spec`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

from venvstacks_docker.errors import SpecError

_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = (".pyc", ".pyo")
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
               | getattr(os, "O_BINARY", 0))
LINK_HINT = "replace the link with a copy of the file, or remove it"


def module_name(path: Path) -> str:
    """The importable name of a module file or package folder."""
    return path.stem if path.suffix == ".py" else path.name


def _skipped_part(name: str) -> bool:
    return name in _SKIP_DIRS or name.startswith(".git")


def iter_module_files(path: Path) -> list[Path]:
    """What a launch/support module ships, sorted, without caches and VCS files.

    For a ``.py`` file: the file.  For a package folder: its regular files and its
    symbolic links (listed, never followed: a link to a folder is not descended into,
    and the copy step refuses links), skipping ``__pycache__``, ``.pyc``/``.pyo`` files
    and any path with a component starting with ``.git``.  A missing path gives ``[]``.
    """
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []
    found: list[Path] = []
    pending = [path]
    while pending:
        folder = pending.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                item = folder / entry.name
                if _skipped_part(entry.name):
                    continue
                if entry.is_symlink():
                    if item.suffix not in _SKIP_SUFFIXES:
                        found.append(item)
                elif entry.is_dir(follow_symlinks=False):
                    pending.append(item)
                elif entry.is_file(follow_symlinks=False) and item.suffix not in _SKIP_SUFFIXES:
                    found.append(item)
    return sorted(found)  # Path order, as the former rglob-based listing used


def module_links(path: Path) -> list[Path]:
    """Symbolic links inside a package folder (those ``iter_module_files`` lists)."""
    if not path.is_dir():
        return []
    return [item for item in iter_module_files(path) if item.is_symlink()]


def read_no_follow(file: Path) -> bytes | None:
    """The bytes of a regular file, or ``None`` if it is a symbolic link (or not a file).

    The file is opened with ``O_NOFOLLOW`` where the OS has it, so a link swapped in
    after the listing is not followed either.
    """
    if not hasattr(os, "O_NOFOLLOW") and file.is_symlink():
        return None
    try:
        fd = os.open(file, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK) or file.is_symlink():
            return None
        raise
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        return handle.read()


def _file_digest(file: Path) -> str:
    """``sha256:<hex>`` of a file's bytes; a symbolic link counts as its link text."""
    data = read_no_follow(file)
    if data is None:
        data = b"\0symlink\0" + os.fsencode(os.readlink(file))
    return "sha256:" + hashlib.sha256(data).hexdigest()


def module_hash(path: Path) -> str:
    """The module's content hash, computed exactly as venvstacks 0.8 does.

    A ``.py`` file: sha256 over its name and ``sha256:<hex of its bytes>``, written
    ``sha256:<hex>``.  A package: sha256 over, folder by folder (top down, sub-folders
    in sorted order), the folder's name, then each file's name and ``sha256:<hex>`` in
    sorted order, written ``sha256/<hex>``.  The files are those the layer ships
    (:func:`iter_module_files`: no ``__pycache__``, ``.pyc``, ``.git*``), so the hash
    equals venvstacks' whenever the package holds nothing of those kinds.  A symbolic link
    (refused at load, so only one made afterwards) counts as its link text.
    """
    if not path.is_dir():
        digest = hashlib.sha256(path.name.encode() + _file_digest(path).encode())
        return "sha256:" + digest.hexdigest()
    shipped = set(iter_module_files(path))
    digest = hashlib.sha256()
    for folder, subdirs, files in os.walk(path):
        here = Path(folder)
        subdirs[:] = sorted(d for d in subdirs if not _skipped_part(d)
                            and not (here / d).is_symlink())
        digest.update(here.name.encode())
        for name in sorted(files):
            if here / name in shipped:
                digest.update(name.encode())
                digest.update(_file_digest(here / name).encode())
    return "sha256/" + digest.hexdigest()


# --- checks ----------------------------------------------------------------------


def outside_spec_folder(spec_dir: Path, path: Path) -> Path | None:
    """Where ``path`` really leads if a symbolic link takes it out of ``spec_dir``, else ``None``.

    A module the stack file itself names outside its folder (``../shared/x.py``, an
    absolute path) is what the user asked for, as venvstacks allows; one that *looks*
    inside but leads elsewhere through a link would ship a file nobody named.
    """
    try:
        root = spec_dir.resolve()
        target = path.resolve()
    except (OSError, RuntimeError):  # a link loop: certainly not a usable module
        return path
    named = Path(os.path.normpath(path))  # lexical: where the stack file points
    if not (named == spec_dir or spec_dir in named.parents):
        return None  # named outside on purpose
    if target == root or root in target.parents:
        return None
    return target


def _outside_message(key: str, value: str, spec_dir: Path, target: Path) -> str:
    leads = "" if Path(value).is_absolute() and Path(value) == target else f" (it leads to {target})"
    return (f"{key} {value!r} leads outside the folder holding the stack file, {spec_dir}, "
            f"through a symbolic link{leads}; name the real location in the stack file, or copy the module")


def _links_message(label: str, package: Path, links: list[Path]) -> str:
    shown = [f"{link.relative_to(package).as_posix()} -> {os.readlink(link)}" for link in links[:3]]
    more = f" (and {len(links) - 3} more)" if len(links) > 3 else ""
    noun = "a symbolic link" if len(links) == 1 else f"{len(links)} symbolic links"
    return f"{label} contains {noun}: {', '.join(shown)}{more}"


def check_module_path(spec_dir: Path, value: str, where: str, key: str) -> Path:
    """Validate one ``launch_module``/``support_modules`` entry; its absolute path.

    :raises SpecError: the module is outside ``spec_dir``, missing, not a ``.py`` file or
        package, or a package holding symbolic links.
    """
    path = (spec_dir / value).absolute()
    target = outside_spec_folder(spec_dir, path)
    if target is not None:
        raise SpecError(f"{where}: {_outside_message(key, value, spec_dir, target)}",
                        hint="a link would ship a file the stack file does not name; modules "
                             "outside the stack's folder must be named by their real path")
    if not path.exists():
        raise SpecError(f"{where}: {key} {value!r} does not exist (looked at {path})",
                        hint="paths are relative to the folder holding the stack file")
    if path.is_file() and path.suffix != ".py":
        raise SpecError(f"{where}: {key} {value!r} must be a .py file or a package folder")
    if path.is_dir() and not (path / "__init__.py").exists() and not (path / "__main__.py").exists():
        raise SpecError(f"{where}: {key} folder {value!r} is not a package",
                        hint="add an __init__.py (and a __main__.py to run it with -m)")
    try:
        links = module_links(path)
    except OSError as exc:
        raise SpecError(f"{where}: cannot read {key} {value!r}: {exc.strerror or exc} "
                        f"({exc.filename or path})") from exc
    if links:
        raise SpecError(f"{where}: {_links_message(f'{key} {value!r}', path, links)}",
                        hint=f"{LINK_HINT} (links inside launch and support modules are refused: "
                             "following one could ship a file from elsewhere on this machine)")
    return path


def module_problem(spec_dir: Path, module: Path) -> tuple[str, str] | None:
    """Why ``module`` may not be copied now, and what to do; ``None`` if it may.

    Re-checks the load-time rules just before copying, in case the folder changed since
    the stack file was loaded.
    """
    label = f"module {module_name(module)!r} ({module})"
    target = outside_spec_folder(spec_dir, module)
    if target is not None:
        return (f"{label} now leads outside the folder holding the stack file, to {target}",
                "move the module back into that folder")
    if not module.exists():
        return f"{label} no longer exists", "restore it, or remove it from the stack file"
    links = module_links(module)
    if links:
        return (_links_message(label, module, links) + " (made after the stack file was loaded)",
                LINK_HINT)
    return None
