"""What a command will do, decided before anything runs: the plan.

:func:`plan_lock`, :func:`plan_build`, :func:`plan_publish` and :func:`plan_export`
turn a stack, the selection options and the target platform into a :class:`Plan`: the
layers involved, the operations on each and why it is included, plus every setting the
run needs.  Nothing is written and no container is started: the CLI renders a plan for
``--show-only`` and ``--json`` on the host, selection errors are reported once, here,
and the executors (native: :mod:`venvstacks_docker.execute`; container:
:mod:`venvstacks_docker.host.dispatch`) take the plan, never an argument list.  A plan
travels into a builder container as JSON (:meth:`Plan.to_dict`).

The selection rules are venvstacks 0.8's: ``--include`` patterns (fnmatch) pick
layers; ``lock`` adds the layers depending on them, ``build`` the lower layers they
need; the ``--*-dependencies`` and ``--*-derived`` flags widen what is locked, built
or published.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from venvstacks_docker import lock as _lock
from venvstacks_docker.errors import SpecError
from venvstacks_docker.spec import LayerSpec, StackSpec

log = logging.getLogger(__name__)

Command = Literal["lock", "build", "publish", "local-export"]
PLAN_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class Selection:
    """The layer selection options of a command line (venvstacks' names)."""

    include: tuple[str, ...] = ()
    allow_missing: bool = False
    lock_dependencies: bool = False
    build_dependencies: bool = False
    publish_dependencies: bool = False
    build_derived: bool = False
    publish_derived: bool = False


@dataclass(frozen=True, kw_only=True)
class LayerStep:
    """One layer of a plan: what is done to it, and why it is in the plan."""

    layer_name: str
    operations: tuple[str, ...]
    reason: str


@dataclass(frozen=True, kw_only=True)
class Plan:
    """Everything a run of ``command`` does; executors need nothing else."""

    command: Command
    spec_path: Path
    platform: str
    build_dir: Path
    output_dir: Path | None = None
    steps: tuple[LayerStep, ...] = ()
    skipped: tuple[str, ...] = ()
    """Selected layers that do not target ``platform`` (not built, published or exported)."""
    # locking
    lock: bool = False
    lock_clean: bool = False
    reset_lock: tuple[str, ...] = ()
    query_default_index: bool = True
    local_wheel_dirs: tuple[Path, ...] = ()
    # building
    build: bool = False
    clean: bool = False
    runtime_sources: tuple[str, ...] = ()
    offline: bool = False
    bundle_dir: Path | None = None
    """An unpacked bundle to build from (``--from-bundle``): its wheels and runtimes, offline."""
    # publishing and exporting
    publish: bool = False
    dry_run: bool = False
    force: bool = False
    tag_outputs: bool = False

    def layers_with(self, *operations: str) -> list[str]:
        """Names of the layers with any of ``operations``, in stack order."""
        return [s.layer_name for s in self.steps if set(s.operations) & set(operations)]

    @property
    def operations(self) -> dict[str, list[str]]:
        """The operations of each layer, by layer name."""
        return {s.layer_name: list(s.operations) for s in self.steps}

    @property
    def needs_network(self) -> bool:
        """Whether running the plan may reach a package index (only to lock)."""
        return self.lock

    @property
    def writes_build(self) -> bool:
        """Whether running the plan writes into the build folder (a dry run does not)."""
        return self.lock or self.build or self.writes_output

    @property
    def writes_output(self) -> bool:
        """Whether running the plan writes into the output folder (a dry run does not)."""
        return self.output_dir is not None and (self.command == "local-export" or (self.publish and not self.dry_run))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (paths as strings), the one a builder container receives."""
        data = asdict(self)
        for key in ("spec_path", "build_dir", "output_dir", "bundle_dir"):
            data[key] = str(data[key]) if data[key] is not None else None
        data["local_wheel_dirs"] = [str(p) for p in self.local_wheel_dirs]
        data["plan_version"] = PLAN_VERSION
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        """The plan :meth:`to_dict` wrote.

        :raises SpecError: when the plan was written by another version of the tool.
        """
        if data.get("plan_version") != PLAN_VERSION:
            raise SpecError(f"cannot run a plan of version {data.get('plan_version')!r}",
                            hint=f"the host and the builder image must run the same tool version (plan {PLAN_VERSION})")
        fields = {k: v for k, v in data.items() if k != "plan_version"}
        fields["spec_path"] = Path(fields["spec_path"])
        fields["build_dir"] = Path(fields["build_dir"])
        fields["output_dir"] = Path(fields["output_dir"]) if fields.get("output_dir") else None
        fields["bundle_dir"] = Path(fields["bundle_dir"]) if fields.get("bundle_dir") else None
        fields["steps"] = tuple(LayerStep(layer_name=s["layer_name"], operations=tuple(s["operations"]),
                                          reason=s["reason"]) for s in fields.get("steps", ()))
        fields["local_wheel_dirs"] = tuple(Path(p) for p in fields.get("local_wheel_dirs", ()))
        for key in ("skipped", "reset_lock", "runtime_sources"):
            fields[key] = tuple(fields.get(key, ()))
        return cls(**fields)


@dataclass(frozen=True, kw_only=True)
class Where:
    """Where a command works (absolute paths) and for which platform."""

    platform: str
    build_dir: Path
    output_dir: Path | None = None
    runtime_sources: tuple[str, ...] = ()
    offline: bool = False
    local_wheel_dirs: tuple[Path, ...] = field(default=())
    query_default_index: bool = True
    bundle_dir: Path | None = None


# --- selection ----------------------------------------------------------------------


def select(spec: StackSpec, include: tuple[str, ...], allow_missing: bool) -> list[LayerSpec]:
    """The layers ``--include`` picks (all layers without patterns), in stack order.

    :raises SpecError: for a pattern that matches nothing, unless ``allow_missing``.
    """
    layers = list(spec.all_layers())
    if not include:
        return layers
    chosen: set[str] = set()
    for pattern in include:
        matched = [layer.env_name for layer in layers if fnmatch.fnmatchcase(layer.env_name, pattern)]
        if not matched:
            names = ", ".join(layer.env_name for layer in layers)
            if not allow_missing:
                raise SpecError(f"--include {pattern!r} matches no layer", hint=f"layers: {names}")
            log.warning(f"--include {pattern!r} matches no layer")
        chosen.update(matched)
    return [layer for layer in layers if layer.env_name in chosen]


def with_dependencies(spec: StackSpec, layers: list[LayerSpec]) -> list[LayerSpec]:
    """``layers`` plus every layer they need, in stack order."""
    wanted = {layer.env_name for layer in layers}
    for layer in layers:
        wanted.update(low.env_name for low in spec.lower_layers(layer))
    return [layer for layer in spec.all_layers() if layer.env_name in wanted]


def with_derived(spec: StackSpec, layers: list[LayerSpec]) -> list[LayerSpec]:
    """``layers`` plus every layer built on them, in stack order."""
    wanted = {layer.env_name for layer in layers}
    for layer in layers:
        wanted.update(d.env_name for d in spec.derived_layers(layer))
    return [layer for layer in spec.all_layers() if layer.env_name in wanted]


def related(spec: StackSpec, include: tuple[str, ...], allow_missing: bool) -> list[LayerSpec]:
    """What ``show --include`` lists: the matches, what they need and what needs them."""
    layers = select(spec, include, allow_missing)
    if not include:
        return layers
    names = {layer.env_name for layer in with_dependencies(spec, layers) + with_derived(spec, layers)}
    return [layer for layer in spec.all_layers() if layer.env_name in names]


def _reason(layer: LayerSpec, selected: list[LayerSpec], include: tuple[str, ...], extra: str) -> str:
    if layer in selected:
        return "matches --include" if include else "every layer"
    return extra


def _targeting(layers: list[LayerSpec], platform: str) -> tuple[list[LayerSpec], tuple[str, ...]]:
    ok = [layer for layer in layers if platform in layer.platforms]
    return ok, tuple(layer.env_name for layer in layers if layer not in ok)


# --- plans --------------------------------------------------------------------------


def plan_lock(spec: StackSpec, selection: Selection, where: Where, *, if_needed: bool = False,
              clean: bool = False, reset_lock: tuple[str, ...] = ()) -> Plan:
    """``lock``: the selected layers (and, with ``--include``, those built on them)."""
    selected = select(spec, selection.include, selection.allow_missing)
    targets = with_derived(spec, selected) if selection.include and not if_needed else selected
    everything = with_dependencies(spec, targets)
    forced = {layer.env_name for layer in targets} if not if_needed else set()
    if selection.lock_dependencies:
        forced |= {layer.env_name for layer in everything if layer not in targets}
    reset = _matching(everything, reset_lock)
    steps = tuple(LayerStep(layer_name=layer.env_name,
                            operations=("lock",) if layer.env_name in forced | set(reset) else ("lock-if-needed",),
                            reason=_reason(layer, selected, selection.include,
                                           "built on a selected layer" if layer in targets
                                           else "needed by a selected layer"))
                  for layer in everything)
    return Plan(command="lock", spec_path=spec.path, platform=where.platform, build_dir=where.build_dir,
                steps=steps, lock=True, lock_clean=clean, reset_lock=reset,
                query_default_index=where.query_default_index, local_wheel_dirs=where.local_wheel_dirs,
                runtime_sources=where.runtime_sources, offline=where.offline)


def _matching(layers: list[LayerSpec], patterns: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(layer.env_name for layer in layers
                 if any(fnmatch.fnmatchcase(layer.env_name, p) for p in patterns))


def plan_build(spec: StackSpec, selection: Selection, where: Where, *, lock_if_needed: bool = False,
               build: bool = True, publish: bool = False, clean: bool = False, tag_outputs: bool = False,
               reset_lock: tuple[str, ...] = ()) -> Plan:
    """``build``: lock if asked, build the selection and what it needs, publish (or dry-run)."""
    selected = select(spec, selection.include, selection.allow_missing)
    build_targets = with_derived(spec, selected) if selection.build_derived else selected
    publish_targets = with_derived(spec, selected) if selection.publish_derived else list(selected)
    if selection.publish_dependencies:
        publish_targets = with_dependencies(spec, publish_targets)
    everything = with_dependencies(spec, build_targets)
    buildable, skipped = _targeting(everything, where.platform)
    steps = []
    for layer in everything:
        ops = ["lock-if-needed"] if lock_if_needed else []
        if build:
            explicit = layer in build_targets or selection.build_dependencies
            ops.append("build" if explicit else "build-if-needed")
        if layer in publish_targets and layer in buildable:
            ops.append("publish")
        extra = "built on a selected layer" if layer in build_targets else "needed by a selected layer"
        steps.append(LayerStep(layer_name=layer.env_name, operations=tuple(ops),
                               reason=_reason(layer, selected, selection.include, extra)))
    steps = [s if s.layer_name not in skipped else replace(s, operations=tuple(
        op for op in s.operations if op.startswith("lock"))) for s in steps]
    return Plan(command="build", spec_path=spec.path, platform=where.platform, build_dir=where.build_dir,
                output_dir=where.output_dir, steps=tuple(steps), skipped=skipped, lock=lock_if_needed,
                reset_lock=_matching(everything, reset_lock), query_default_index=where.query_default_index,
                local_wheel_dirs=where.local_wheel_dirs, build=build, clean=clean,
                runtime_sources=where.runtime_sources, offline=where.offline or where.bundle_dir is not None,
                bundle_dir=where.bundle_dir, publish=publish, dry_run=not publish, force=clean,
                tag_outputs=tag_outputs)


def _output_layers(spec: StackSpec, selection: Selection,
                   where: Where) -> tuple[list[LayerSpec], list[LayerSpec], tuple[str, ...]]:
    selected = select(spec, selection.include, selection.allow_missing)
    layers = with_derived(spec, selected) if selection.publish_derived else selected
    if selection.publish_dependencies:
        layers = with_dependencies(spec, layers)
    ok, skipped = _targeting(layers, where.platform)
    return selected, ok, skipped


def plan_publish(spec: StackSpec, selection: Selection, where: Where, *, force: bool = False,
                 dry_run: bool = False, tag_outputs: bool = False) -> Plan:
    """``publish``: archive built layers into the output folder."""
    selected, layers, skipped = _output_layers(spec, selection, where)
    steps = tuple(LayerStep(layer_name=layer.env_name, operations=("publish",),
                            reason=_reason(layer, selected, selection.include, "widened by --publish-*"))
                  for layer in layers)
    return Plan(command="publish", spec_path=spec.path, platform=where.platform, build_dir=where.build_dir,
                output_dir=where.output_dir, steps=steps, skipped=skipped, publish=True, dry_run=dry_run,
                force=force, tag_outputs=tag_outputs)


def plan_export(spec: StackSpec, selection: Selection, where: Where, *, force: bool = False) -> Plan:
    """``local-export``: copy built layers into a folder and post-install them there."""
    selected, layers, skipped = _output_layers(spec, selection, where)
    steps = tuple(LayerStep(layer_name=layer.env_name, operations=("export",),
                            reason=_reason(layer, selected, selection.include, "widened by --publish-*"))
                  for layer in layers)
    return Plan(command="local-export", spec_path=spec.path, platform=where.platform,
                build_dir=where.build_dir, output_dir=where.output_dir, steps=steps, skipped=skipped,
                force=force)


def lock_status(spec: StackSpec, layer: LayerSpec) -> bool:
    """Whether ``layer`` has a valid lock (the ``*`` of ``show``)."""
    return not _lock.lock_problems(spec, layer)


__all__ = ["LayerStep", "Plan", "Selection", "Where", "plan_build", "plan_export", "plan_lock",
           "plan_publish", "related", "select", "with_dependencies", "with_derived"]
