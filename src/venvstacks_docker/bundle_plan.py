"""What a bundle carries, decided before anything is fetched (pure: spec and locks in, plan out).

A bundle holds everything a host with no network needs to publish a locked stack:
the stack file, its lock files and modules; every wheel each selected layer installs on
each chosen platform (named and pinned by the locks); each runtime archive; a builder
image per Linux platform; and the wheels of venvstacks-docker itself and of its
dependencies.  This module decides the stack files, wheels and runtimes; the bundle
executor (:mod:`venvstacks_docker.host.bundle_make`) fetches them, adds the image and
the tool, and writes the bundle (:mod:`venvstacks_docker.bundle_format`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from venvstacks_docker import lockfiles as _lock
from venvstacks_docker import plan as _plan
from venvstacks_docker import platforms as _plat
from venvstacks_docker.errors import LockError, SpecError
from venvstacks_docker.runtimes import PLATFORM_TRIPLES, RuntimeRequest, archive_name_pattern
from venvstacks_docker.spec import LayerSpec, StackSpec
from venvstacks_docker.stack_files import copy_root, placed, stack_inputs
from venvstacks_docker.wheels import wheel_ref

Role = Literal["stack", "wheel", "runtime", "builder-image", "tool-wheel"]

#: Folders of a bundle, below its top folder.
STACK_DIR = "stack"
WHEELS_DIR = "wheels"
RUNTIMES_DIR = "runtimes"
IMAGES_DIR = "images"
TOOL_DIR = "tool"


@dataclass(frozen=True, kw_only=True)
class Wanted:
    """A file the bundle will carry, and where it comes from."""

    name: str
    """Member name below the bundle's top folder (``wheels/numpy-....whl``)."""
    role: Role
    sha256: str | None = None
    """Pinned by a lock (wheels), or ``None`` when known only once the file is made."""
    layers: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ()
    url: str | None = None
    path: Path | None = None


@dataclass(frozen=True, kw_only=True)
class RuntimeNeed:
    """A runtime archive a runtime layer needs on one platform."""

    layer: str
    platform: str
    request: RuntimeRequest
    sha256: str | None
    """The archive the runtime's lock pinned, when it was locked for this platform."""


@dataclass(frozen=True, kw_only=True)
class BundlePlan:
    """Everything ``bundle`` will put in the bundle; the executor needs nothing else."""

    spec_path: Path
    output: Path
    platforms: tuple[str, ...]
    layers: tuple[str, ...]
    """Selected layers and every layer they need, in stack order."""
    include: tuple[str, ...] = ()
    files: tuple[Wanted, ...] = ()
    runtimes: tuple[RuntimeNeed, ...] = ()
    image_targets: tuple[str, ...] = ()
    """Platforms that get a builder image (Linux targets, unless ``--no-image``)."""
    base_image: str | None = None
    tool: bool = True
    since: Path | None = None
    stack_file: str = ""
    """The stack file's member name (``stack/venvstacks.toml``, deeper when modules sit above it)."""
    locks: dict[str, dict[str, object]] = field(default_factory=dict)
    """Per bundled layer: what its lock records (hashes, ``lock_version``, platforms)."""


def _platforms(spec: StackSpec, platforms: tuple[str, ...]) -> tuple[str, ...]:
    chosen = platforms or (_plat.current_platform(),)
    for plat in chosen:
        if plat not in PLATFORM_TRIPLES:
            raise SpecError(f"unknown platform {plat!r}", hint=f"use one of: {', '.join(sorted(PLATFORM_TRIPLES))}")
    if not any(plat in layer.platforms for plat in chosen for layer in spec.all_layers()):
        raise SpecError(f"no layer of the stack targets {', '.join(chosen)}",
                        hint="name a platform the stack's layers list with --platform")
    return tuple(sorted(set(chosen)))


def _check_locks(spec: StackSpec, layers: list[LayerSpec]) -> None:
    stale = {layer.env_name: _lock.lock_problems(spec, layer) for layer in layers}
    stale = {name: why for name, why in stale.items() if why}
    if stale:
        detail = "; ".join(f"{name}: {', '.join(why)}" for name, why in stale.items())
        raise LockError(f"cannot bundle layers whose lock is missing or out of date ({detail})",
                        hint=f"lock them first: venvstacks-docker lock --if-needed {spec.path}")


def _stack_files(spec: StackSpec) -> tuple[list[Wanted], str]:
    rels = stack_inputs(spec)
    root = copy_root(Path(STACK_DIR), rels)
    files = [Wanted(name=placed(root, rel).as_posix(), role="stack", path=spec.spec_dir / rel) for rel in rels]
    return files, (root / spec.path.name).as_posix()


def _wheels(spec: StackSpec, layers: list[LayerSpec], platforms: tuple[str, ...]) -> list[Wanted]:
    found: dict[str, Wanted] = {}
    for plat in platforms:
        for layer in layers:
            if plat not in layer.platforms:
                continue
            lock_dir = _lock.lock_paths(spec, layer).folder
            for _pkg, entry in _lock.install_requirements(spec, layer, plat):
                ref = wheel_ref(entry, lock_dir)
                old = found.get(ref.filename)
                if old is not None and old.sha256 != ref.sha256:
                    raise LockError(f"two locks pin {ref.filename} with different hashes "
                                    f"({old.sha256[:12] if old.sha256 else '?'}…, {ref.sha256[:12]}…)",
                                    hint="relock the layers so they agree on the wheel")
                layers_ = tuple(sorted({*(old.layers if old else ()), layer.env_name}))
                plats = tuple(sorted({*(old.platforms if old else ()), plat}))
                found[ref.filename] = Wanted(name=f"{WHEELS_DIR}/{ref.filename}", role="wheel", sha256=ref.sha256,
                                             layers=layers_, platforms=plats, url=ref.url, path=ref.path)
    return [found[name] for name in sorted(found)]


def _runtimes(spec: StackSpec, layers: list[LayerSpec], platforms: tuple[str, ...]) -> list[RuntimeNeed]:
    needs = []
    for layer in layers:
        if layer.kind != "runtime":
            continue
        pin = (_lock.read_meta(spec, layer) or {}).get("runtime_archive") or {}
        for plat in platforms:
            if plat not in layer.platforms:
                continue
            request = RuntimeRequest(implementation=layer.implementation, version=layer.py_version, platform=plat)
            pinned = pin.get("sha256") if archive_name_pattern(request).match(str(pin.get("name", ""))) else None
            needs.append(RuntimeNeed(layer=layer.env_name, platform=plat, request=request, sha256=pinned))
    return needs


def _lock_records(spec: StackSpec, layers: list[LayerSpec]) -> dict[str, dict[str, object]]:
    records: dict[str, dict[str, object]] = {}
    for layer in layers:
        meta = _lock.read_meta(spec, layer) or {}
        records[layer.env_name] = {"kind": layer.kind, "platforms": list(layer.platforms),
                                   "requirements_hash": meta.get("requirements_hash"),
                                   "lock_version": meta.get("lock_version")}
    return records


def plan_bundle(spec: StackSpec, *, output: Path, include: tuple[str, ...] = (), allow_missing: bool = False,
                platforms: tuple[str, ...] = (), image: bool = True, base_image: str | None = None,
                tool: bool = True, since: Path | None = None) -> BundlePlan:
    """Decide what a bundle of ``spec`` carries.

    :raises SpecError: for an unknown platform, or ``--include`` patterns matching nothing.
    :raises LockError: when a bundled layer's lock is missing or out of date, or lacks a
        wheel for a chosen platform.
    """
    chosen = _platforms(spec, platforms)
    layers = _plan.with_dependencies(spec, _plan.select(spec, include, allow_missing))
    layers = [layer for layer in layers if set(layer.platforms) & set(chosen)]
    if not layers:
        raise SpecError(f"no selected layer targets {', '.join(chosen)}")
    _check_locks(spec, layers)
    stack, stack_file = _stack_files(spec)
    linux = tuple(p for p in chosen if _plat.os_of(p) == "linux")
    return BundlePlan(
        spec_path=spec.path, output=output, platforms=chosen, layers=tuple(layer.env_name for layer in layers),
        include=include, files=(*stack, *_wheels(spec, layers, chosen)),
        runtimes=tuple(_runtimes(spec, layers, chosen)),
        image_targets=linux if image else (), base_image=base_image, tool=tool, since=since, stack_file=stack_file,
        locks=_lock_records(spec, layers))


__all__ = ["IMAGES_DIR", "RUNTIMES_DIR", "STACK_DIR", "TOOL_DIR", "WHEELS_DIR", "BundlePlan", "Role", "RuntimeNeed",
           "Wanted", "plan_bundle"]
