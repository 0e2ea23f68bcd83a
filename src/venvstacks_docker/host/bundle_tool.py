"""The wheels a bundle carries so venvstacks-docker itself installs on the offline host.

The tool's own wheel (built reproducibly from a checkout, or re-packed from the
installed files) and one wheel of each of its dependencies, pinned to the versions
installed here, for the builder image's Python (CPython 3.11, manylinux_2_28) and, when
it differs, for the Python running this command: per dependency, the wheel that Python
would install (:func:`venvstacks_docker.platforms.best_wheel`).  Dependencies come from PyPI (or the
configured index) through ``uv pip compile --format pylock.toml`` and are fetched and
hash-checked by the one wheel fetcher into the wheel cache.
"""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from venvstacks_docker import platforms as _plat
from venvstacks_docker._run import run
from venvstacks_docker.errors import LockError
from venvstacks_docker.host.images.common import TOOL_PY_MINOR, host_target
from venvstacks_docker.host.images.tool import UV_PLATFORM, find_tool_wheel
from venvstacks_docker.wheels import WheelRef, ensure_wheels

TOOL_NAME = "venvstacks-docker"


def installed_pins(name: str = TOOL_NAME) -> list[str]:
    """``dist==version`` for every installed distribution ``name`` needs (not ``name``)."""
    env = default_environment()
    seen: dict[str, str] = {}
    todo = [name]
    while todo:
        key = canonicalize_name(todo.pop())
        if key in seen:
            continue
        try:
            dist = metadata.distribution(key)
        except metadata.PackageNotFoundError:
            continue
        seen[key] = dist.version
        for raw in dist.requires or []:
            req = Requirement(raw)
            if req.marker is None or req.marker.evaluate({**env, "extra": ""}):  # type: ignore[dict-item]
                todo.append(req.name)
    return [f"{n}=={v}" for n, v in sorted(seen.items()) if n != canonicalize_name(name)]


def _targets() -> list[tuple[str, str]]:
    uv_platform = UV_PLATFORM[host_target()]  # the builder image's platform on this machine
    targets = [(TOOL_PY_MINOR, uv_platform)]
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if here != TOOL_PY_MINOR:
        targets.append((here, uv_platform))
    return targets


def _resolve(tool_wheel: Path, python: str, uv_platform: str, work: Path) -> list[WheelRef]:
    import uv

    work.mkdir(parents=True, exist_ok=True)
    (work / "requirements.in").write_text(f"{TOOL_NAME} @ {tool_wheel.absolute().as_uri()}\n", encoding="utf-8")
    (work / "constraints.txt").write_text("\n".join(installed_pins()) + "\n", encoding="utf-8")
    out = work / f"pylock.py{python.replace('.', '')}_{uv_platform.split('-')[0]}.toml"
    run([uv.find_uv_bin(), "pip", "compile", "--quiet", "--no-header", "--format", "pylock.toml",
         "--python-version", python, "--python-platform", uv_platform, "--only-binary", ":all:",
         "-c", work / "constraints.txt", "-o", out, work / "requirements.in"],
        what=f"resolving venvstacks-docker's dependencies for Python {python}", error=LockError)
    arch = uv_platform.split("-")[0]
    tags = _plat.supported_tags(f"linux_{arch}", f"{python}.0", "2.28", "")
    refs = []
    for pkg in tomllib.loads(out.read_text(encoding="utf-8")).get("packages", []):
        if canonicalize_name(pkg["name"]) == TOOL_NAME:
            continue
        wheels = {w.get("name") or w["url"].rsplit("/", 1)[-1]: w for w in pkg.get("wheels", [])}
        best = _plat.best_wheel(wheels, tags)  # the one wheel that Python would install
        if best is not None:
            refs.append(WheelRef(filename=best, sha256=wheels[best]["hashes"]["sha256"], url=wheels[best]["url"]))
    return refs


def tool_wheels(work: Path, wheel_cache: Path) -> list[Path]:
    """The tool's wheel (in ``work``) and its dependencies' wheels (in ``wheel_cache``)."""
    tool = find_tool_wheel(work / "tool")
    refs: dict[str, WheelRef] = {}
    for python, uv_platform in _targets():
        refs.update((r.filename, r) for r in _resolve(tool, python, uv_platform, work / "resolve"))
    deps = ensure_wheels(refs.values(), wheel_cache)
    return [tool, *deps]


__all__ = ["installed_pins", "tool_wheels"]
