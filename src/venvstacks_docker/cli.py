"""Command line interface: ``venvstacks-docker`` (also ``python -m venvstacks_docker``).

The subcommands and options venvstacks users know keep their names and meaning; our
additions are named in each command's help.  Human output (progress, tables) goes to
stderr, machine output (``--json``) to stdout.  Errors are caught in one place,
:func:`main`, which prints one message with a hint and exits with the error's code.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.exceptions import TyperException
from rich.console import Console
from rich.tree import Tree

from venvstacks_docker import __version__
from venvstacks_docker import build as _build
from venvstacks_docker import lock as _lock
from venvstacks_docker import spec as _spec
from venvstacks_docker.errors import EXIT_CODES, Interrupted, SpecError, VenvstacksDockerError

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)
log = logging.getLogger("venvstacks_docker")


@dataclass
class _State:
    verbose: int = 0
    quiet: bool = False


STATE = _State()

app = typer.Typer(
    name="venvstacks-docker",
    help="Lock, build, publish and verify layered Python environment stacks "
    "(venvstacks.toml), reproducibly, natively or in builder containers.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        out.print(f"venvstacks-docker: {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", "-V", callback=_version_callback, is_eager=True,
                                          help="Show the version and exit.")] = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True,
                                         help="More output (repeat for debug logs; shows tracebacks).")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Less output.")] = False,
) -> None:
    STATE.verbose = verbose
    STATE.quiet = quiet
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    if quiet:
        level = logging.ERROR
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)


# --- shared options -----------------------------------------------------------------

SpecArg = Annotated[Path, typer.Argument(help="The stack file (venvstacks.toml).", show_default=False)]
BuildDirOpt = Annotated[str, typer.Option("--build-dir", help="Build folder (relative to the spec folder).")]
IncludeOpt = Annotated[Optional[list[str]], typer.Option(
    "--include", help="Only these layers (fnmatch pattern on build names such as 'app-*'); repeatable.")]
AllowMissingOpt = Annotated[bool, typer.Option("--allow-missing", help="Unmatched --include patterns only warn.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
IndexOpt = Annotated[bool, typer.Option("--index/--no-index", help="Query the default package index (PyPI).")]
LocalWheelsOpt = Annotated[Optional[list[str]], typer.Option(
    "--local-wheels", help="Extra folder of wheels for locking (relative to the spec folder); repeatable.")]
ResetLockOpt = Annotated[Optional[list[str]], typer.Option(
    "--reset-lock", help="Discard the existing lock of matching layers before relocking; repeatable.")]
RuntimeSourceOpt = Annotated[Optional[list[str]], typer.Option(
    "--runtime-source",
    help="\\[ours] A runtime archive, file:// URL or mirror folder to take Python runtimes from; repeatable "
    "(also VENVSTACKS_DOCKER_RUNTIME_SOURCES).")]
NativeOpt = Annotated[bool, typer.Option(
    "--native/--container",
    help="\\[ours] Run on this host instead of in a builder container (Linux defaults to the container).")]
BaseImageOpt = Annotated[Optional[str], typer.Option(
    "--base-image", help="\\[ours] Base image for the builder container (default: spec, "
    "VENVSTACKS_DOCKER_BASE_IMAGE, then the bootstrapped Debian base).")]
ShowOpt = Annotated[bool, typer.Option("--show", help="Show the selected layers and operations first.")]
ShowOnlyOpt = Annotated[bool, typer.Option("--show-only", help="Only show the selected layers and operations.")]


def _load(spec_path: Path) -> _spec.StackSpec:
    return _spec.load(spec_path)


def _resolve_dir(spec: _spec.StackSpec, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (spec.spec_dir / path)


def _ctx(spec: _spec.StackSpec, build_dir: str, runtime_source: list[str] | None,
         offline: bool = False) -> _build.BuildContext:
    return _build.BuildContext(
        spec=spec,
        build_dir=_resolve_dir(spec, build_dir).absolute(),
        runtime_sources=tuple(runtime_source or ()),
        offline=offline,
    )


def _preflight(spec: _spec.StackSpec, build_dir: str, output_dir: str | None) -> None:
    """Refuse bad folders and settings before anything is written (or a container started)."""
    from venvstacks_docker import preflight

    preflight.source_date_epoch_value()
    preflight.check_work_folders(spec, _resolve_dir(spec, build_dir).absolute(),
                                 _resolve_dir(spec, output_dir).absolute() if output_dir else None)


@contextmanager
def _hold(spec: _spec.StackSpec, command: str, *, build_dir: Path, output_dir: Path | None = None,
          requirements: bool = False, say: Callable[[str], None]) -> Iterator[None]:
    """Hold the locks of the folders ``command`` writes (one writer per folder)."""
    from venvstacks_docker import locking

    locks = locking.work_locks(requirements_dir=spec.requirements_dir if requirements else None,
                               build_dir=build_dir, output_dir=output_dir)
    with locking.hold(locks, command=command, say=say):
        yield


def _warn(message: str) -> None:
    if not STATE.quiet:
        err.print("[yellow]note:[/] ", end="")
        err.print(message, markup=False)


def _select(spec: _spec.StackSpec, include: list[str] | None, allow_missing: bool) -> list[_spec.LayerSpec]:
    layers = list(spec.all_layers())
    if not include:
        return layers
    chosen = []
    for pattern in include:
        matched = [l for l in layers if fnmatch.fnmatchcase(l.env_name, pattern)]
        if not matched:
            names = ", ".join(l.env_name for l in layers)
            if not allow_missing:
                raise SpecError(f"--include {pattern!r} matches no layer", hint=f"layers: {names}")
            err.print(f"[yellow]warning:[/] --include {pattern!r} matches no layer")
        chosen += [m for m in matched if m not in chosen]
    return [l for l in layers if l in chosen]


def _with_dependencies(spec: _spec.StackSpec, layers: list[_spec.LayerSpec]) -> list[_spec.LayerSpec]:
    wanted = set()
    for layer in layers:
        wanted.add(layer.env_name)
        wanted.update(low.env_name for low in spec.lower_layers(layer))
    return [l for l in spec.all_layers() if l.env_name in wanted]


def _with_derived(spec: _spec.StackSpec, layers: list[_spec.LayerSpec]) -> list[_spec.LayerSpec]:
    wanted = {l.env_name for l in layers}
    for layer in layers:
        wanted.update(d.env_name for d in spec.derived_layers(layer))
    return [l for l in spec.all_layers() if l.env_name in wanted]


@contextmanager
def _progress(what: str) -> Iterator[Callable[[str], None]]:
    """A spinner on stderr with the current step; step lines too with --verbose."""
    start = time.monotonic()
    if STATE.quiet or not err.is_terminal:
        def say(msg: str) -> None:
            if not STATE.quiet:
                err.print(f"* {msg}")
        yield say
    else:
        with err.status(what) as status:
            def say(msg: str) -> None:
                status.update(f"{what}: {msg}")
                if STATE.verbose:
                    err.print(f"* {msg}")
            yield say
    if not STATE.quiet:
        err.print(f"[green]✓[/] {what} ({time.monotonic() - start:.1f}s)")


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


# --- show ---------------------------------------------------------------------------


def _layer_json(spec: _spec.StackSpec, layer: _spec.LayerSpec, ops: dict[str, list[str]] | None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": layer.env_name,
        "install_target": _build.deployed_name(spec, layer),
        "has_valid_lock": not _lock.lock_problems(spec, layer),
        "selected_operations": ops.get(layer.env_name) if ops is not None else None,
    }
    if layer.kind != "runtime":
        data["dependencies"] = [_layer_json(spec, low, ops) for low in spec.lower_layers(layer)]
    return data


def _stack_json(spec: _spec.StackSpec, layers: list[_spec.LayerSpec], ops: dict[str, list[str]] | None) -> dict[str, Any]:
    names = {l.env_name for l in layers}
    return {
        "spec_name": str(spec.path),
        "runtimes": [_layer_json(spec, l, ops) for l in spec.runtimes if l.env_name in names],
        "frameworks": [_layer_json(spec, l, ops) for l in spec.frameworks if l.env_name in names],
        "applications": [_layer_json(spec, l, ops) for l in spec.applications if l.env_name in names],
    }


def _print_tree(spec: _spec.StackSpec, layers: list[_spec.LayerSpec], ops: dict[str, list[str]] | None = None) -> None:
    tree = Tree(str(spec.path))
    names = {l.env_name for l in layers}
    for title, group in (("Runtimes", spec.runtimes), ("Frameworks", spec.frameworks),
                         ("Applications", spec.applications)):
        chosen = [l for l in group if l.env_name in names]
        if not chosen:
            continue
        branch = tree.add(title)
        for layer in chosen:
            label = ("*" if _lock.lock_problems(spec, layer) else "") + layer.env_name
            deploy = _build.deployed_name(spec, layer)
            if deploy != layer.env_name:
                label += f" -> {deploy}"
            if ops is not None and ops.get(layer.env_name):
                label += f" [dim]({', '.join(ops[layer.env_name])})[/]"
            node = branch.add(label)
            for low in spec.lower_layers(layer):
                node.add(low.env_name)
    out.print(tree)


@app.command()
def show(
    spec_path: SpecArg,
    build_dir: BuildDirOpt = "_build",
    include: IncludeOpt = None,
    allow_missing: AllowMissingOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Show the layers of a stack and whether their locks are valid ('*' = needs locking)."""
    spec = _load(spec_path)
    layers = _select(spec, include, allow_missing)
    if include:
        # matches, what they depend on, and what depends on them
        related = {l.env_name for l in _with_dependencies(spec, layers) + _with_derived(spec, layers)}
        layers = [l for l in spec.all_layers() if l.env_name in related]
    if json_output:
        _emit_json(_stack_json(spec, layers, None))
    else:
        _print_tree(spec, layers)


def _show_selection(spec: _spec.StackSpec, layers: list[_spec.LayerSpec], ops: dict[str, list[str]], *,
                    show: bool, show_only: bool, json_output: bool) -> bool:
    """venvstacks' --show/--show-only/--json rules; True means stop here.

    ``--json`` alone implies ``--show-only`` (the selection as JSON); ``--show --json``
    runs the command and prints its results as JSON.
    """
    if show_only or (json_output and not show):
        if json_output:
            _emit_json(_stack_json(spec, layers, ops))
        else:
            _print_tree(spec, layers, ops)
        return True
    if show and not json_output:
        _print_tree(spec, layers, ops)
    return False


# --- lock ---------------------------------------------------------------------------


def _index(spec: _spec.StackSpec, index: bool, local_wheels: list[str] | None) -> _lock.IndexOptions:
    dirs = tuple(_resolve_dir(spec, d).absolute() for d in (local_wheels or ()))
    for d in dirs:
        if not d.is_dir():
            raise SpecError(f"--local-wheels folder {d} does not exist")
    return _lock.IndexOptions(query_default_index=index, local_wheel_dirs=dirs)


def _do_lock(
    ctx: _build.BuildContext,
    layers: list[_spec.LayerSpec],
    *,
    index: _lock.IndexOptions,
    if_needed: bool,
    reset: set[str],
    say: Callable[[str], None],
) -> dict[str, str]:
    return _lock.lock_stack(
        ctx.spec, layers, build_dir=ctx.build_dir, index=index, if_needed=if_needed, reset=reset,
        runtime_python_for=lambda layer: _build.ensure_runtime_interpreter(ctx, layer),
        on_layer=lambda layer, status: say(f"{layer.env_name}: {status}"),
    )


def _lock_selection(spec: _spec.StackSpec, included: list[_spec.LayerSpec], *, has_include: bool,
                    if_needed: bool, lock_dependencies: bool) -> tuple[list[_spec.LayerSpec], set[str]]:
    """Layers to lock, and which of them must be relocked even if valid."""
    targets = included
    if has_include and not if_needed:
        targets = _with_derived(spec, included)
    deps = [l for l in _with_dependencies(spec, targets) if l not in targets]
    force = {l.env_name for l in targets} if not if_needed else set()
    if lock_dependencies:
        force |= {l.env_name for l in deps}
    return [l for l in spec.all_layers() if l in targets or l in deps], force


def _run_lock(ctx: _build.BuildContext, layers: list[_spec.LayerSpec], force: set[str], *,
              index: _lock.IndexOptions, reset_patterns: list[str] | None,
              say: Callable[[str], None]) -> dict[str, str]:
    reset = {l.env_name for l in layers if any(fnmatch.fnmatchcase(l.env_name, p) for p in reset_patterns or ())}
    results: dict[str, str] = {}
    # valid locks of layers not forced stay as they are
    for layer in layers:
        must = layer.env_name in force or layer.env_name in reset
        try:
            res = _do_lock(ctx, [layer], index=index, if_needed=not must, reset=reset & {layer.env_name},
                           say=say)
        except KeyboardInterrupt:
            kept = f"; locks kept: {', '.join(results)}" if results else ""
            raise Interrupted(f"locking was interrupted in layer {layer.env_name}, which the next "
                              f"lock redoes{kept}") from None
        results.update(res)
    return results


@app.command()
def lock(
    typer_ctx: typer.Context,
    spec_path: SpecArg,
    build_dir: BuildDirOpt = "_build",
    clean: Annotated[bool, typer.Option("--clean", help="Recreate the runtime environments first.")] = False,
    if_needed: Annotated[bool, typer.Option("--if-needed", help="Skip layers whose lock is still valid.")] = False,
    index: IndexOpt = True,
    local_wheels: LocalWheelsOpt = None,
    include: IncludeOpt = None,
    reset_lock: ResetLockOpt = None,
    allow_missing: AllowMissingOpt = False,
    lock_dependencies: Annotated[bool, typer.Option(
        "--lock-dependencies", help="Also relock the layers the included ones depend on.")] = False,
    show: ShowOpt = False,
    show_only: ShowOnlyOpt = False,
    json_output: JsonOpt = False,
    runtime_source: RuntimeSourceOpt = None,
    native: NativeOpt = False,
    base_image: BaseImageOpt = None,
) -> None:
    """Lock layer requirements (pylock.toml files next to the spec, in requirements/)."""
    spec = _load(spec_path)
    _preflight(spec, build_dir, None)
    ctx = _ctx(spec, build_dir, runtime_source)
    included = _select(spec, include, allow_missing)
    layers, force = _lock_selection(spec, included, has_include=bool(include), if_needed=if_needed,
                                    lock_dependencies=lock_dependencies)
    ops = {l.env_name: (["lock"] if l.env_name in force else ["lock-if-needed"]) for l in layers}
    if _show_selection(spec, layers, ops, show=show, show_only=show_only, json_output=json_output):
        return
    if _dispatch_to_container(typer_ctx, "lock", spec, native, base_image, build_dir=build_dir, output_dir=None):
        return
    with _progress("locking") as say, _hold(spec, "lock", build_dir=ctx.build_dir, requirements=True, say=say):
        if clean:
            for rt in {spec.runtime_of(l).env_name for l in layers}:
                _build.remove_tree(ctx, ctx.build_dir / rt)
        results = _run_lock(ctx, layers, force, index=_index(spec, index, local_wheels),
                            reset_patterns=reset_lock, say=say)
    _report_locks(spec, results, json_output)


def _report_locks(spec: _spec.StackSpec, results: dict[str, str], json_output: bool) -> None:
    rows = []
    for env_name, status in results.items():
        layer = spec.layer(env_name)
        paths = _lock.lock_paths(spec, layer)
        meta = _lock.read_meta(spec, layer) or {}
        rows.append({"layer": env_name, "status": status, "lock_file": str(paths.pylock),
                     "locked_at": meta.get("locked_at"), "lock_version": meta.get("lock_version")})
    if json_output:
        _emit_json({"locks": rows})
        return
    for row in rows:
        out.print(f"{_rel(Path(row['lock_file']), spec.spec_dir)}  [dim]{row['status']}, "
                  f"locked at {row['locked_at']}[/]")


# --- build / publish ----------------------------------------------------------------


def _buildable(ctx: _build.BuildContext, layers: list[_spec.LayerSpec], *, explicit: bool) -> list[_spec.LayerSpec]:
    ok = _build.layers_for_build(ctx.spec, ctx.platform, layers)
    skipped = [l.env_name for l in layers if l not in ok]
    if skipped and explicit and not STATE.quiet:
        err.print(f"[dim]skipping layers not targeting {ctx.platform}: {', '.join(skipped)}[/]")
    return ok


def _output_selection(ctx: _build.BuildContext, include: list[str] | None, allow_missing: bool, *,
                      dependencies: bool, derived: bool) -> list[_spec.LayerSpec]:
    """Layers ``publish`` and ``local-export`` act on (built ones for this platform)."""
    layers = _select(ctx.spec, include, allow_missing)
    if derived:
        layers = _with_derived(ctx.spec, layers)
    if dependencies:
        layers = _with_dependencies(ctx.spec, layers)
    return _buildable(ctx, layers, explicit=bool(include))


def _run_build(ctx: _build.BuildContext, layers: list[_spec.LayerSpec], *, clean: bool,
               say: Callable[[str], None]) -> dict[str, str]:
    results: dict[str, str] = {}
    for layer in layers:
        try:
            results[layer.env_name] = _build.build_layer(ctx, layer, clean=clean, on_event=say)
        except KeyboardInterrupt:
            kept = f"; layers kept: {', '.join(results)}" if results else ""
            raise Interrupted(f"building was interrupted in layer {layer.env_name}, which the next "
                              f"build redoes{kept}") from None
        say(f"{layer.env_name}: {results[layer.env_name]}")
    return results


def _publish_report(results: list[Any], manifest: Path, out_dir: Path, json_output: bool, dry_run: bool) -> None:
    if json_output:
        _emit_json({
            "dry_run": dry_run,
            "manifest": str(manifest),
            "output_dir": str(out_dir),
            "layers": [{"status": r.status, "archive": str(r.archive), **r.metadata} for r in results],
        })
        return
    if dry_run:
        out.print(f"Dry run: would publish to {out_dir}")
        for r in results:
            out.print(f"  {r.metadata['archive_name']}  [dim](archive_build {r.metadata['archive_build']})[/]")
        return
    out.print(f"Manifest: {_rel(manifest, out_dir)}")
    for r in results:
        sha = r.metadata.get("archive_hashes", {}).get("sha256", "")
        out.print(f"  {r.metadata['archive_name']}  {r.metadata.get('archive_size', 0):>12,d} B  "
                  f"sha256:{sha[:16]}…  [dim]{r.status}[/]")


@app.command()
def build(
    typer_ctx: typer.Context,
    spec_path: SpecArg,
    build_dir: BuildDirOpt = "_build",
    output_dir: Annotated[str, typer.Option("--output-dir", help="Where archives and metadata go.")] = "_artifacts",
    clean: Annotated[bool, typer.Option("--clean", help="Recreate the environments (implies --force for publish).")] = False,
    lock_if_needed: Annotated[bool, typer.Option("--lock-if-needed", help="Lock layers whose lock is invalid first.")] = False,
    lock_: Annotated[bool, typer.Option("--lock", help="Deprecated alias of --lock-if-needed.", hidden=True)] = False,
    do_build: Annotated[bool, typer.Option("--build/--no-build", help="Build the selected environments.")] = True,
    publish_: Annotated[bool, typer.Option("--publish", help="Also publish archives (else a publish dry run is shown).")] = False,
    index: IndexOpt = True,
    local_wheels: LocalWheelsOpt = None,
    tag_outputs: Annotated[bool, typer.Option("--tag-outputs", help="Platform and build number in archive names.")] = False,
    include: IncludeOpt = None,
    reset_lock: ResetLockOpt = None,
    allow_missing: AllowMissingOpt = False,
    lock_dependencies: Annotated[bool, typer.Option("--lock-dependencies")] = False,
    build_dependencies: Annotated[bool, typer.Option("--build-dependencies")] = False,
    publish_dependencies: Annotated[bool, typer.Option("--publish-dependencies")] = False,
    include_dependencies: Annotated[Optional[bool], typer.Option(
        "--include-dependencies/--no-include-dependencies", help="Set all three *-dependencies flags.")] = None,
    build_derived: Annotated[bool, typer.Option("--build-derived")] = False,
    publish_derived: Annotated[bool, typer.Option("--publish-derived")] = False,
    show: ShowOpt = False,
    show_only: ShowOnlyOpt = False,
    json_output: JsonOpt = False,
    runtime_source: RuntimeSourceOpt = None,
    native: NativeOpt = False,
    base_image: BaseImageOpt = None,
    offline: Annotated[bool, typer.Option("--offline", help="\\[ours] No network: runtimes and wheels must be cached.")] = False,
) -> None:
    """Build (and optionally lock and publish) layer environments: the pipeline command."""
    spec = _load(spec_path)
    _preflight(spec, build_dir, output_dir if publish_ else None)
    if include_dependencies is not None:
        lock_dependencies = build_dependencies = publish_dependencies = include_dependencies
    ctx = _ctx(spec, build_dir, runtime_source, offline)
    included = _select(spec, include, allow_missing)
    build_targets = _with_derived(spec, included) if build_derived else included
    publish_targets = list(included)
    if publish_derived:
        publish_targets = _with_derived(spec, publish_targets)
    if publish_dependencies:
        publish_targets = _with_dependencies(spec, publish_targets)
    everything = _with_dependencies(spec, build_targets)
    ops: dict[str, list[str]] = {}
    for l in everything:
        ops[l.env_name] = []
        if lock_if_needed or lock_:
            ops[l.env_name].append("lock-if-needed")
        if do_build:
            ops[l.env_name].append("build" if l in build_targets or build_dependencies else "build-if-needed")
        if l in publish_targets:
            ops[l.env_name].append("publish")
    if _show_selection(spec, everything, ops, show=show, show_only=show_only, json_output=json_output):
        return
    if _dispatch_to_container(typer_ctx, "build", spec, native, base_image, build_dir=build_dir,
                              output_dir=output_dir if publish_ else None):
        return
    out_dir = _resolve_dir(spec, output_dir) if publish_ else None
    with _hold(spec, "build", build_dir=ctx.build_dir, output_dir=out_dir,
               requirements=lock_if_needed or lock_, say=_warn):
        _build_pipeline(ctx, everything, build_targets, publish_targets, clean=clean,
                        lock=(lock_if_needed or lock_), lock_dependencies=lock_dependencies,
                        do_build=do_build, publish=publish_, tag_outputs=tag_outputs,
                        index=_index(spec, index, local_wheels) if (lock_if_needed or lock_) else None,
                        reset_lock=reset_lock, out_dir=_resolve_dir(spec, output_dir), json_output=json_output)


def _build_pipeline(ctx: _build.BuildContext, everything: list[_spec.LayerSpec],
                    build_targets: list[_spec.LayerSpec], publish_targets: list[_spec.LayerSpec], *,
                    clean: bool, lock: bool, lock_dependencies: bool, do_build: bool, publish: bool,
                    tag_outputs: bool, index: _lock.IndexOptions | None, reset_lock: list[str] | None,
                    out_dir: Path, json_output: bool) -> None:
    """``build``'s steps, run while the command holds its folders' locks."""
    spec = ctx.spec
    if lock and index is not None:
        layers, force = _lock_selection(spec, everything, has_include=False, if_needed=True,
                                        lock_dependencies=lock_dependencies)
        with _progress("locking") as say:
            _run_lock(ctx, layers, force, index=index, reset_patterns=reset_lock, say=say)
    buildable = _buildable(ctx, everything, explicit=True)
    if do_build:
        with _progress("building") as say:
            _run_build(ctx, buildable, clean=clean, say=say)
    targets = [l for l in buildable if l in publish_targets]
    _publish_step(ctx, targets, out_dir, tag_outputs=tag_outputs, force=clean,
                  dry_run=not publish, json_output=json_output)


def _publish_step(ctx: _build.BuildContext, layers: list[_spec.LayerSpec], out_dir: Path, *, tag_outputs: bool,
                  force: bool, dry_run: bool, json_output: bool) -> None:
    from venvstacks_docker import publish as _publish

    with _progress("publishing" if not dry_run else "planning publication") as say:
        results, manifest = _publish.publish_layers(ctx, layers, out_dir, tag_outputs=tag_outputs, force=force,
                                                    dry_run=dry_run, on_event=say)
    _publish_report(results, manifest, out_dir, json_output, dry_run)


@app.command()
def publish(
    typer_ctx: typer.Context,
    spec_path: SpecArg,
    build_dir: BuildDirOpt = "_build",
    output_dir: Annotated[str, typer.Option("--output-dir", help="Where archives and metadata go.")] = "_artifacts",
    force: Annotated[bool, typer.Option("--force", help="Rebuild archives even if their inputs are unchanged.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would be published.")] = False,
    tag_outputs: Annotated[bool, typer.Option("--tag-outputs", help="Platform and build number in archive names.")] = False,
    include: IncludeOpt = None,
    allow_missing: AllowMissingOpt = False,
    publish_dependencies: Annotated[bool, typer.Option("--publish-dependencies")] = False,
    publish_derived: Annotated[bool, typer.Option("--publish-derived")] = False,
    show: ShowOpt = False,
    show_only: ShowOnlyOpt = False,
    json_output: JsonOpt = False,
    native: NativeOpt = False,
    base_image: BaseImageOpt = None,
) -> None:
    """Publish layer archives of already-built environments (with metadata under __venvstacks__/)."""
    spec = _load(spec_path)
    _preflight(spec, build_dir, output_dir)
    ctx = _ctx(spec, build_dir, None, offline=True)
    layers = _output_selection(ctx, include, allow_missing, dependencies=publish_dependencies,
                               derived=publish_derived)
    ops = {l.env_name: ["publish"] for l in layers}
    if _show_selection(spec, layers, ops, show=show, show_only=show_only, json_output=json_output):
        return
    if _dispatch_to_container(typer_ctx, "publish", spec, native or dry_run, base_image, build_dir=build_dir,
                              output_dir=output_dir):
        return
    _publish_step(ctx, layers, _resolve_dir(spec, output_dir), tag_outputs=tag_outputs, force=force,
                  dry_run=dry_run, json_output=json_output)


@app.command("local-export")
def local_export(
    typer_ctx: typer.Context,
    spec_path: SpecArg,
    build_dir: BuildDirOpt = "_build",
    output_dir: Annotated[str, typer.Option("--output-dir", help="Where the environments are exported.")] = "_export",
    force: Annotated[bool, typer.Option("--force", help="Export again even if unchanged.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would be exported.")] = False,
    include: IncludeOpt = None,
    allow_missing: AllowMissingOpt = False,
    publish_dependencies: Annotated[bool, typer.Option("--publish-dependencies")] = False,
    publish_derived: Annotated[bool, typer.Option("--publish-derived")] = False,
    show: ShowOpt = False,
    show_only: ShowOnlyOpt = False,
    json_output: JsonOpt = False,
    native: NativeOpt = False,
    base_image: BaseImageOpt = None,
) -> None:
    """Export built environments to a local folder and run their post-install step."""
    from venvstacks_docker import export as _export

    spec = _load(spec_path)
    _preflight(spec, build_dir, output_dir)
    ctx = _ctx(spec, build_dir, None, offline=True)
    layers = _output_selection(ctx, include, allow_missing, dependencies=publish_dependencies,
                               derived=publish_derived)
    out_dir = _resolve_dir(spec, output_dir)
    ops = {l.env_name: ["export"] for l in layers}
    if _show_selection(spec, layers, ops, show=show, show_only=show_only or dry_run, json_output=json_output):
        return
    if _dispatch_to_container(typer_ctx, "local-export", spec, native, base_image, build_dir=build_dir, output_dir=output_dir):
        return
    with _progress("exporting") as say:
        results, manifest = _export.export_layers(ctx, layers, out_dir, force=force, on_event=say)
    if json_output:
        _emit_json({"manifest": str(manifest), "layers": [
            {"layer": l.env_name, "folder": str(folder), "status": status} for l, folder, status in results]})
    else:
        for l, folder, status in results:
            out.print(f"{_rel(folder, out_dir)}  [dim]{status}[/]")


# --- verify / deploy ----------------------------------------------------------------


@app.command()
def verify(
    output_dir: Annotated[Path, typer.Argument(help="A publish output folder (holding __venvstacks__/).")],
    json_output: JsonOpt = False,
) -> None:
    """\\[ours] Check every published archive's size and sha256 against the metadata."""
    from venvstacks_docker import verify as _verify
    from venvstacks_docker.errors import VerifyError

    from venvstacks_docker.txn import settled

    with settled(output_dir, command="verify", say=_warn):
        report = _verify.verify_output_dir(output_dir)
    if json_output:
        sys.stdout.write(report.to_json())
    else:
        out.print(report.render_text())
    if not report.ok:
        raise typer.Exit(VerifyError.return_code)


@app.command()
def deploy(
    output_dir: Annotated[Path, typer.Argument(help="A publish output folder.")],
    target: Annotated[Path, typer.Argument(help="Folder to unpack the layers into (created if needed).")],
    manifest: Annotated[Optional[Path], typer.Option(help="Which manifest, if the folder has several.")] = None,
    python: Annotated[Optional[str], typer.Option(
        help="Interpreter to run postinstall.py with (default: each layer's deployed runtime).")] = None,
    json_output: JsonOpt = False,
) -> None:
    """\\[ours] Unpack published archives side by side and run each layer's postinstall.py."""
    from venvstacks_docker import deploy as _deploy

    from venvstacks_docker.txn import settled

    try:
        with _progress("deploying") as say, settled(output_dir, command="deploy", say=say):
            result = _deploy.deploy(output_dir, target, manifest=manifest, python=python)
    except KeyboardInterrupt:
        raise Interrupted(f"deploy was interrupted: the layers it had unpacked into {target} were "
                          "removed again") from None
    if json_output:
        _emit_json(result.as_dict())
    else:
        out.print(result.render_text(), end="", markup=False)


# --- container dispatch ---------------------------------------------------------------


def _dispatch_to_container(ctx: typer.Context, command: str, spec: _spec.StackSpec, native: bool, base_image: str | None, *,
                           build_dir: str, output_dir: str | None) -> bool:
    """Run ``command`` in a builder container instead of here; False means run natively."""
    if native or os.environ.get("VENVSTACKS_DOCKER_IN_CONTAINER") == "1":
        return False
    if not sys.platform.startswith("linux"):
        return False
    from venvstacks_docker._argv import reserialise
    from venvstacks_docker.host import dispatch

    overrides: dict[str, Any] = {"spec_path": spec.path, "base_image": None,
                                 "build_dir": str(_resolve_dir(spec, build_dir).absolute())}
    if "output_dir" in ctx.params:
        overrides["output_dir"] = str(_resolve_dir(spec, ctx.params["output_dir"]).absolute())
    if ctx.params.get("local_wheels"):
        overrides["local_wheels"] = [str(_resolve_dir(spec, d).absolute()) for d in ctx.params["local_wheels"]]
    if ctx.params.get("runtime_source"):
        overrides["runtime_source"] = [_absolute_source(spec, s) for s in ctx.params["runtime_source"]]
    if not ctx.params.get("json_output"):
        overrides["show"] = False  # the selection was shown here already
    root_args = ["-v"] * STATE.verbose + (["-q"] if STATE.quiet else [])
    argv = reserialise(ctx, overrides=overrides, root_args=root_args, extra=["--native"])
    dispatch.run_command_in_container(
        command, argv, spec=spec, base_image=base_image,
        build_dir=_resolve_dir(spec, build_dir).absolute(),
        output_dir=_resolve_dir(spec, output_dir).absolute() if output_dir else None,
        verbose=STATE.verbose, quiet=STATE.quiet,
    )
    return True


def _absolute_source(spec: _spec.StackSpec, source: str) -> str:
    """A ``--runtime-source`` path as an absolute path (URLs stay as they are)."""
    if "://" in source and not source.startswith("file://"):
        return source
    raw = Path(source.removeprefix("file://")).expanduser()
    for candidate in (raw, spec.spec_dir / raw):
        if candidate.exists():
            return str(candidate.absolute())
    return source


# --- entry point ----------------------------------------------------------------------


def _register_subapps(args: list[str]) -> None:
    """Add the ``runtime`` and ``image`` groups, importing them only when needed.

    (The image group pulls in the Docker SDK, which would slow every other command.)
    """
    words = [a for a in args if not a.startswith("-")]
    wanted = {"runtime", "image"} if not words else {words[0]}
    if not wanted & {"runtime", "image"} and not any(a in ("-h", "--help") for a in args):
        return
    from venvstacks_docker import runtime_build

    runtime_app = typer.Typer(help="Python runtime archives (python-build-standalone layout).",
                              no_args_is_help=True)

    @runtime_app.command("build", add_help_option=False,
                         context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def runtime_build_cmd(ctx: typer.Context) -> None:
        """Build a relocatable CPython runtime archive from a pinned source tarball (see --help)."""
        code = runtime_build.main(list(ctx.args))
        if code:
            raise typer.Exit(code)

    app.add_typer(runtime_app, name="runtime")
    try:
        from venvstacks_docker.host.image_cli import image_app
    except ImportError:  # pragma: no cover - host package is always shipped
        return
    app.add_typer(image_app, name="image", help="Builder images: render, build, bootstrap a base.")


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Console script entry point: run the CLI and map errors to exit codes."""
    args = sys.argv[1:] if argv is None else argv
    _register_subapps(args)
    if threading_main():
        # Ctrl-C and SIGTERM both unwind through the cleanup paths (temporary files,
        # containers).  SIGINT is set explicitly: a process started in the background
        # by a non-interactive shell inherits SIGINT as ignored.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _on_sigterm)
    code = 0
    try:
        result = app(args=args, prog_name="venvstacks-docker", standalone_mode=False)
        # without standalone mode, typer returns the code of a raised typer.Exit
        if isinstance(result, int):
            code = result
    except Interrupted as exc:
        err.print("[red]interrupted[/]: ", end="")
        err.print(exc.message, markup=False)
        code = exc.return_code
    except VenvstacksDockerError as exc:
        _print_error(exc)
        code = exc.return_code
    except (KeyboardInterrupt, typer.Abort):
        err.print("[red]interrupted[/]: nothing half-written was left behind")
        code = Interrupted.return_code
    except OSError as exc:
        # an OSError no stage turned into a message of its own: still say what failed
        from venvstacks_docker.errors import FilesystemError

        where = f" ({exc.filename})" if exc.filename else ""
        _print_error(FilesystemError(f"{exc.strerror or exc}{where}",
                                     hint="free some space or fix the permissions, then run again"))
        code = FilesystemError.return_code
    except typer.Exit as exc:
        code = exc.exit_code
    except TyperException as exc:
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            err.print(f"error: {exc.format_message()}", markup=False)
        code = exc.exit_code if exc.exit_code not in (0, 1) else 2
    except Exception as exc:  # noqa: BLE001 - the one place that turns crashes into messages
        if STATE.verbose:
            err.print_exception()
        err.print(f"[red]internal error[/]: {type(exc).__name__}: {exc}\n"
                  "  hint: rerun with --verbose for a traceback, and please report it")
        code = 1
    sys.exit(code)


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _print_error(exc: VenvstacksDockerError) -> None:
    if STATE.verbose:
        err.print_exception()
    err.print("[red]error[/]: ", end="")
    err.print(exc.message, markup=False)
    if exc.hint:
        err.print("  [yellow]hint[/]: ", end="")
        err.print(exc.hint, markup=False)
    err.print(f"  [dim]exit code {exc.return_code}: {EXIT_CODES.get(exc.return_code, '')}[/]")
