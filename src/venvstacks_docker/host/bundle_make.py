"""The bundle executor on the connected host: fetch what the plan names, write the bundle.

Wheels go through the wheel cache (hash-checked against the locks), runtime archives
through the runtime search (checked against the runtime lock's pin where the lock has
one for that platform), builder images are made or found as for a publish and saved
reproducibly, and the tool's wheels are resolved for the builder's Python.  The bundle
is then written in one go (:func:`venvstacks_docker.bundle_format.write_bundle`).
"""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from venvstacks_docker import __version__, ui
from venvstacks_docker import bundle_use as _use
from venvstacks_docker.bundle_format import Entry, manifest, write_bundle
from venvstacks_docker.bundle_plan import IMAGES_DIR, RUNTIMES_DIR, TOOL_DIR, BundlePlan
from venvstacks_docker.metadata import sha256_file
from venvstacks_docker.runtimes import acquire_runtime, cache_root
from venvstacks_docker.spec import StackSpec
from venvstacks_docker.wheels import WheelRef, ensure_wheels


@dataclass(frozen=True)
class Made:
    """A bundle written: where, its manifest's sha256, and what it holds."""

    path: Path
    manifest_sha256: str
    manifest: dict[str, Any]
    carried: int
    """Files inside the bundle (an incremental bundle carries fewer than it lists)."""
    size: int


class _Collector:
    """Member name -> file, and the manifest entry of each."""

    def __init__(self) -> None:
        self.sources: dict[str, Path] = {}
        self.entries: dict[str, Entry] = {}

    def add(self, name: str, path: Path, role: str, *, sha256: str | None = None,
            layers: tuple[str, ...] = (), platforms: tuple[str, ...] = ()) -> None:
        self.sources[name] = path
        self.entries[name] = Entry(name=name, size=path.stat().st_size, sha256=sha256 or sha256_file(path),
                                   role=role, layers=layers, platforms=platforms)


def _wheels(plan: BundlePlan, into: _Collector) -> None:
    wanted = [w for w in plan.files if w.role == "wheel"]
    if not wanted:
        return
    cache = cache_root() / "wheels"
    with ui.current().phase(f"fetching {len(wanted)} wheel(s) into the wheel cache"):
        refs = [WheelRef(filename=w.name.rsplit("/", 1)[-1], sha256=w.sha256 or "", url=w.url, path=w.path)
                for w in wanted]
        ensure_wheels(refs, cache, on_fetch=lambda name: ui.current().step(f"fetching {name}"))
    for w in wanted:
        into.add(w.name, cache / w.name.rsplit("/", 1)[-1], "wheel", sha256=w.sha256, layers=w.layers,
                 platforms=w.platforms)


def _runtimes(plan: BundlePlan, spec: StackSpec, into: _Collector) -> None:
    for need in plan.runtimes:
        found = acquire_runtime(need.request, sources=spec.runtime_sources, expected_sha256=need.sha256)
        name = f"{RUNTIMES_DIR}/{found.filename}"
        old = into.entries.get(name)
        layers = tuple(sorted({*(old.layers if old else ()), need.layer}))
        platforms = tuple(sorted({*(old.platforms if old else ()), need.platform}))
        into.add(name, Path(found.path), "runtime", sha256=found.sha256, layers=layers, platforms=platforms)
        ui.current().detail(f"runtime for {need.layer} on {need.platform}: {found.filename}")


def _images(plan: BundlePlan, spec: StackSpec, into: _Collector, work: Path) -> dict[str, Any]:
    if not plan.image_targets:
        return {}
    from venvstacks_docker.host.bundle_image import save_image
    from venvstacks_docker.host.engine import session
    from venvstacks_docker.host.images.builder import ensure_builder_image

    recorded = {}
    with session() as client:
        for target in plan.image_targets:
            with ui.current().phase(f"preparing the builder image for {target}"):
                image = ensure_builder_image(target, base_image=plan.base_image, spec_base_image=spec.base_image,
                                             client=client, on_progress=ui.current().detail)
            name = f"{IMAGES_DIR}/builder-{target}.tar"
            with ui.current().phase(f"saving the builder image {image.tag}"):
                save_image(client, image.tag, work / f"builder-{target}.tar", work / f"save-{target}")
            into.add(name, work / f"builder-{target}.tar", "builder-image", platforms=(target,))
            recorded[target] = {"member": name, "tag": image.tag, "image_id": image.image_id}
    return recorded


def _tool(into: _Collector, work: Path) -> None:
    from venvstacks_docker.host.bundle_tool import tool_wheels

    with ui.current().phase("collecting the wheels of venvstacks-docker and its dependencies"):
        for wheel in tool_wheels(work / "tool", cache_root() / "wheels"):
            into.add(f"{TOOL_DIR}/{wheel.name}", wheel, "tool-wheel")


def _body(plan: BundlePlan, images: dict[str, Any], since: _use.Checked | None) -> dict[str, Any]:
    return {
        "tool": {"name": "venvstacks-docker", "version": __version__},
        "platforms": list(plan.platforms),
        "include": list(plan.include),
        "stack": {"stack_file": plan.stack_file, "layers": plan.locks},
        "builder_images": images,
        "since": {"manifest_sha256": since.manifest_sha256, "bundle": since.path.name} if since else None,
    }


@contextlib.contextmanager
def _work_folder() -> Iterator[Path]:
    work = cache_root() / "bundle-work" / uuid.uuid4().hex[:12]
    work.mkdir(parents=True)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def make_bundle(plan: BundlePlan, spec: StackSpec) -> Made:
    """Fetch and make everything ``plan`` names and write the bundle to ``plan.output``.

    :raises BundleError: for a ``--since`` bundle that fails verification.
    :raises LockError, BuildError, RuntimeArchiveError, ContainerError: for what cannot
        be fetched or made (nothing is written then).
    """
    since = _use.verify(plan.since) if plan.since else None
    into = _Collector()
    for w in (w for w in plan.files if w.role == "stack"):
        assert w.path is not None
        into.add(w.name, w.path, "stack")
    _wheels(plan, into)
    _runtimes(plan, spec, into)
    with _work_folder() as work:
        images = _images(plan, spec, into, work)
        if plan.tool:
            _tool(into, work)
        entries = list(into.entries.values())
        if since is not None:
            old = {(e.name, e.sha256) for e in since.entries}
            entries = [Entry(**{**e.__dict__, "in_base": True}) if (e.name, e.sha256) in old else e
                       for e in entries]
        carried = {e.name: into.sources[e.name] for e in entries if not e.in_base}
        data = manifest(_body(plan, images, since), entries)
        plan.output.parent.mkdir(parents=True, exist_ok=True)
        with ui.current().phase(f"writing {plan.output.name} ({len(carried)} files)"):
            digest = write_bundle(plan.output, data, carried)
    return Made(plan.output, digest, data, len(carried), plan.output.stat().st_size)


__all__ = ["Made", "make_bundle"]
