"""The native executor: run a :class:`~venvstacks_docker.plan.Plan` on this machine.

It holds the locks of the folders the plan writes, runs the stages in order (lock,
build, publish or export) and returns an :class:`Outcome`: plain JSON-ready results
that the CLI renders, here or, when the plan ran in a builder container, on the host.
Progress goes through :mod:`venvstacks_docker.ui`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from venvstacks_docker import build as _build
from venvstacks_docker import lock as _lock
from venvstacks_docker import ui
from venvstacks_docker.bundle_plan import RUNTIMES_DIR, WHEELS_DIR
from venvstacks_docker.errors import Interrupted
from venvstacks_docker.locking import hold, work_locks
from venvstacks_docker.plan import Plan
from venvstacks_docker.spec import LayerSpec, StackSpec
from venvstacks_docker.spec import load as load_spec

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Outcome:
    """What a run did, JSON-ready (it crosses the container boundary as JSON)."""

    locks: list[dict[str, Any]] = field(default_factory=list)
    builds: list[dict[str, Any]] = field(default_factory=list)
    published: dict[str, Any] | None = None
    exported: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, the one a builder container sends back."""
        return {"locks": self.locks, "builds": self.builds, "published": self.published,
                "exported": self.exported}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Outcome:
        """The outcome :meth:`to_dict` wrote."""
        return cls(locks=list(data.get("locks") or []), builds=list(data.get("builds") or []),
                   published=data.get("published"), exported=data.get("exported"))


def context(plan: Plan, spec: StackSpec) -> _build.BuildContext:
    """The build context a plan runs in."""
    if plan.bundle_dir is not None:  # everything from the bundle, nothing from the network
        return _build.BuildContext(spec=spec, build_dir=plan.build_dir, platform=plan.platform,
                                   wheel_dir=plan.bundle_dir / WHEELS_DIR,
                                   runtime_sources=(str(plan.bundle_dir / RUNTIMES_DIR), *plan.runtime_sources),
                                   offline=True)
    return _build.BuildContext(spec=spec, build_dir=plan.build_dir, platform=plan.platform,
                               runtime_sources=plan.runtime_sources, offline=plan.offline)


def run_plan(plan: Plan, spec: StackSpec | None = None) -> Outcome:
    """Run ``plan`` here, holding its folders' locks; ``spec`` defaults to loading it."""
    spec = spec or load_spec(plan.spec_path)
    ctx = context(plan, spec)
    outcome = Outcome()
    locks = work_locks(requirements_dir=spec.requirements_dir if plan.lock else None,
                       build_dir=plan.build_dir if plan.writes_build else None,
                       output_dir=plan.output_dir if plan.writes_output else None,
                       output_what="the export folder" if plan.command == "local-export" else "the output folder")
    with hold(locks, command=plan.command, say=ui.current().note):
        if plan.skipped:
            log.info(f"skipping layers not targeting {plan.platform}: {', '.join(plan.skipped)}")
        if plan.lock:
            outcome.locks = _run_lock(ctx, plan)
        if plan.build:
            outcome.builds = _run_build(ctx, plan)
        if plan.command in ("build", "publish"):
            outcome.published = _run_publish(ctx, plan)
        if plan.command == "local-export":
            outcome.exported = _run_export(ctx, plan)
    return outcome


def _layers(spec: StackSpec, names: list[str]) -> list[LayerSpec]:
    return [spec.layer(name) for name in names]


def _run_lock(ctx: _build.BuildContext, plan: Plan) -> list[dict[str, Any]]:
    spec = ctx.spec
    index = _lock.IndexOptions(query_default_index=plan.query_default_index,
                               local_wheel_dirs=plan.local_wheel_dirs)
    layers = _layers(spec, plan.layers_with("lock", "lock-if-needed"))
    if plan.lock_clean:
        for rt in sorted({spec.runtime_of(layer).env_name for layer in layers}):
            _build.remove_tree(ctx, ctx.build_dir / rt)
    forced = set(plan.layers_with("lock"))
    results: dict[str, str] = {}
    with ui.current().phase("locking"):
        for layer in layers:
            try:
                results.update(_lock.lock_stack(
                    spec, [layer], build_dir=ctx.build_dir, index=index, if_needed=layer.env_name not in forced,
                    reset={layer.env_name} & set(plan.reset_lock),
                    runtime_python_for=lambda low: _build.ensure_runtime_interpreter(ctx, low),
                    on_layer=lambda low, status: log.info(f"{low.env_name}: {status}")))
            except KeyboardInterrupt:
                kept = f"; locks kept: {', '.join(results)}" if results else ""
                raise Interrupted(f"locking was interrupted in layer {layer.env_name}, which the next "
                                  f"lock redoes{kept}") from None
    return [_lock_row(spec, spec.layer(name), status) for name, status in results.items()]


def _lock_row(spec: StackSpec, layer: LayerSpec, status: str) -> dict[str, Any]:
    meta = _lock.read_meta(spec, layer) or {}
    return {"layer_name": layer.env_name, "status": status,
            "lock_file": str(_lock.lock_paths(spec, layer).pylock),
            "locked_at": meta.get("locked_at"), "lock_version": meta.get("lock_version")}


def _run_build(ctx: _build.BuildContext, plan: Plan) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with ui.current().phase("building"):
        for layer in _layers(ctx.spec, plan.layers_with("build", "build-if-needed")):
            try:
                status = _build.build_layer(ctx, layer, clean=plan.clean, on_event=log.info)
            except KeyboardInterrupt:
                kept = f"; layers kept: {', '.join(r['layer_name'] for r in rows)}" if rows else ""
                raise Interrupted(f"building was interrupted in layer {layer.env_name}, which the next "
                                  f"build redoes{kept}") from None
            log.info(f"{layer.env_name}: {status}")
            rows.append({"layer_name": layer.env_name, "status": status})
    return rows


def _run_publish(ctx: _build.BuildContext, plan: Plan) -> dict[str, Any]:
    from venvstacks_docker import publish as _publish

    assert plan.output_dir is not None
    layers = _layers(ctx.spec, plan.layers_with("publish"))
    with ui.current().phase("planning publication" if plan.dry_run else "publishing"):
        results, manifest = _publish.publish_layers(ctx, layers, plan.output_dir, tag_outputs=plan.tag_outputs,
                                                    force=plan.force, dry_run=plan.dry_run, on_event=log.info)
    return {"dry_run": plan.dry_run, "manifest": str(manifest), "output_dir": str(plan.output_dir),
            "layers": [{"layer_name": r.layer.env_name, "status": r.status, "archive": str(r.archive),
                        "note": r.note, "metadata": r.metadata} for r in results]}


def _run_export(ctx: _build.BuildContext, plan: Plan) -> dict[str, Any]:
    from venvstacks_docker import export as _export

    assert plan.output_dir is not None
    with ui.current().phase("exporting"):
        results, manifest = _export.export_layers(ctx, _layers(ctx.spec, plan.layers_with("export")),
                                                  plan.output_dir, force=plan.force, on_event=log.info)
    return {"manifest": str(manifest), "output_dir": str(plan.output_dir),
            "layers": [{"layer_name": layer.env_name, "folder": str(folder), "status": status}
                       for layer, folder, status in results]}


__all__ = ["Outcome", "context", "run_plan"]
