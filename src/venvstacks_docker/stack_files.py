"""The files of a stack that a publish reads, and how to lay them out in a copy.

A copy of a stack (an audit's varied run, a bundle's ``stack/`` folder) must keep every
relative path of the stack file valid, also for modules the stack file names *above*
its own folder (``../shared/empty.py``, as venvstacks' own sample project does).  So
the stack file's folder is nested as deep as the furthest ``..`` reaches.
"""

from __future__ import annotations

import os
from pathlib import Path

from venvstacks_docker.spec import StackSpec

#: The name of each extra folder level a copy nests the stack file's folder in.
UP: str = "up"


def stack_inputs(spec: StackSpec) -> list[Path]:
    """What publishing ``spec`` reads, relative to its folder (sorted, ``../`` where above).

    The stack file, ``venvstacks.uv.toml``, every file of ``requirements/``, and the
    launch and support modules (without ``__pycache__``).
    """
    base = spec.spec_dir
    files = [spec.path]
    uv_file = base / "venvstacks.uv.toml"
    if uv_file.is_file():
        files.append(uv_file)
    roots = [spec.requirements_dir] + [m for layer in spec.applications
                                       for m in (layer.launch_module, *layer.support_modules) if m is not None]
    for root in roots:
        if root.is_file():
            files.append(root)
        elif root.is_dir():
            files += [p for p in sorted(root.rglob("*")) if p.is_file() and "__pycache__" not in p.parts]
    unique = dict.fromkeys(Path(os.path.relpath(f, base)) for f in files)
    return sorted(unique, key=lambda p: p.as_posix())


def nesting(files: list[Path]) -> int:
    """How many ``..`` the furthest of ``files`` (relative paths) climbs."""
    return max((next((i for i, part in enumerate(rel.parts) if part != ".."), len(rel.parts))
                for rel in files), default=0)


def copy_root(dest: Path, files: list[Path]) -> Path:
    """Where the stack file's folder goes in a copy at ``dest`` holding ``files``."""
    return dest.joinpath(*([UP] * nesting(files)))


def placed(root: Path, rel: Path) -> Path:
    """Where ``rel`` (relative to the stack file's folder) lands in a copy rooted at ``root``."""
    return Path(os.path.normpath(root / rel))


__all__ = ["UP", "copy_root", "nesting", "placed", "stack_inputs"]
