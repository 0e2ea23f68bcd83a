"""Data files shipped with the tool, found the same way from a source tree and a wheel.

The wheel force-includes the top-level ``Dockerfiles/`` folder as
``venvstacks_docker/Dockerfiles``; in a source checkout (editable install) it sits at the
repository root instead.  Everything that needs those files asks this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

#: This folder (``venvstacks_docker/resources``): ``pinned_images.toml`` and friends.
RESOURCES_DIR: Final = Path(__file__).resolve().parent
#: The installed package folder.
PACKAGE_DIR: Final = RESOURCES_DIR.parent
#: Pinned default base images per target.
PINNED_IMAGES: Final = RESOURCES_DIR / "pinned_images.toml"

_INSTALLED_DOCKERFILES: Final = PACKAGE_DIR / "Dockerfiles"
# src/venvstacks_docker/resources -> src/venvstacks_docker -> src -> <repository root>
_SOURCE_ROOT: Final = PACKAGE_DIR.parent.parent


def source_root() -> Path | None:
    """The repository root when running from a source checkout, else ``None``.

    A checkout is recognised by its ``pyproject.toml`` naming this project next to a
    ``src/venvstacks_docker`` folder that is this very package.
    """
    pyproject = _SOURCE_ROOT / "pyproject.toml"
    if PACKAGE_DIR.parent.name != "src" or not pyproject.is_file():
        return None
    try:
        text = pyproject.read_text(encoding="utf-8")
    except OSError:
        return None
    return _SOURCE_ROOT if 'name = "venvstacks-docker"' in text else None


def dockerfiles_dir() -> Path:
    """The folder holding the builder-image templates (``*.Dockerfile.j2``)."""
    if _INSTALLED_DOCKERFILES.is_dir():
        return _INSTALLED_DOCKERFILES
    root = source_root()
    if root is not None and (root / "Dockerfiles").is_dir():
        return root / "Dockerfiles"
    # Report the place a wheel would have them: that is the broken installation.
    return _INSTALLED_DOCKERFILES
