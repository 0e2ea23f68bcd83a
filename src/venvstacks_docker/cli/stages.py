"""The stack commands: ``show``, ``lock``, ``build``, ``publish`` and ``local-export``.

Each command makes a plan (:mod:`venvstacks_docker.plan`) on the host, shows it if asked,
checks the folders (:mod:`venvstacks_docker.preflight`), and hands it to the native or
the container executor; both return the same outcome, rendered here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from venvstacks_docker import plan as _plan
from venvstacks_docker import platforms as _plat
from venvstacks_docker import preflight
from venvstacks_docker.bundle_use import Checked, check_fits, open_bundle
from venvstacks_docker.cli import render
from venvstacks_docker.cli._common import (
    BUILDING,
    CONTAINER_PLATFORMS,
    DEFAULT_ENGINES,
    LOCKING,
    OUTPUT,
    SELECT,
    AllowMissingOpt,
    BaseImageOpt,
    BuildDirOpt,
    EngineOpt,
    Engines,
    IncludeOpt,
    IndexOpt,
    JsonOpt,
    LocalWheelsOpt,
    NativeOpt,
    PlatformOpt,
    ResetLockOpt,
    RuntimeSourceOpt,
    ShowOnlyOpt,
    ShowOpt,
    SpecArg,
    StageCommand,
    TransferOpt,
    absolute_source,
    emit_json,
    in_container,
    load,
    resolve_dir,
)
from venvstacks_docker.errors import SpecError
from venvstacks_docker.execute import Outcome, run_plan
from venvstacks_docker.spec import StackSpec

OutputDirOpt = Annotated[str, typer.Option("--output-dir", rich_help_panel=OUTPUT,
                                           help="Where archives and metadata go, relative to the stack file's folder.")]
TagOutputsOpt = Annotated[bool, typer.Option("--tag-outputs/--no-tag-outputs", rich_help_panel=OUTPUT,
                                             help="Put the platform and build number in archive and metadata names.")]
PublishDependenciesOpt = Annotated[bool, typer.Option("--publish-dependencies/--no-publish-dependencies",
                                                      rich_help_panel=SELECT,
                                                      help="Also publish the layers the selected ones need.")]
PublishDerivedOpt = Annotated[bool, typer.Option("--publish-derived/--no-publish-derived", rich_help_panel=SELECT,
                                                 help="Also publish the layers built on the selected ones.")]
LockDependenciesOpt = Annotated[bool, typer.Option("--lock-dependencies/--no-lock-dependencies", rich_help_panel=SELECT,
                                                   help="Also relock the layers the selected ones need.")]
FromBundleOpt = Annotated[Path | None, typer.Option(
    "--from-bundle", metavar="BUNDLE", rich_help_panel=BUILDING,
    help="Build offline from a bundle (file or unpacked folder): its wheels, runtimes and builder image, "
    "no index, no network.")]


def register(app: typer.Typer) -> None:
    """Add the stage commands (``show``, ``lock``, ``build``, ``publish``, ``local-export``) to ``app``."""
    epilog = ("Every on/off option also takes its --no- form (--no-show, --no-publish, --no-force...), "
              "as in venvstacks: the last one given wins.")
    for name, command in (("show", show), ("lock", lock), ("build", build), ("publish", publish),
                          ("local-export", local_export)):
        app.command(name, cls=StageCommand, epilog=epilog)(command)


def _target(platform: str | None, native: bool) -> str:
    """``--platform``: this machine's, or a Linux platform builder containers build for."""
    here = _plat.current_platform()
    if platform is None or platform == here:
        return here
    if platform not in CONTAINER_PLATFORMS:
        raise SpecError(f"--platform {platform!r}: builder containers build for " + " and ".join(CONTAINER_PLATFORMS),
                        hint="macOS and Windows layers build on such a machine (`venvstacks-docker ci github` "
                        "writes a workflow that does it)")
    if not in_container(native):
        raise SpecError(f"--platform {platform} is not this machine's platform ({here}): it builds in a builder "
                        "container only", hint="drop --native")
    return platform


def _where(spec: StackSpec, build_dir: str, output_dir: str | None = None, *, local_wheels: list[str] | None = None,
           runtime_source: list[str] | None = None, offline: bool = False, index: bool = True,
           bundle_dir: Path | None = None, platform: str | None = None) -> _plan.Where:
    dirs = tuple(resolve_dir(spec, d) for d in local_wheels or ())
    for folder in dirs:
        if not folder.is_dir():
            raise SpecError(f"--local-wheels folder {folder} does not exist")
    return _plan.Where(platform=platform or _plat.current_platform(), build_dir=resolve_dir(spec, build_dir),
                       output_dir=resolve_dir(spec, output_dir) if output_dir else None,
                       runtime_sources=tuple(absolute_source(spec, s) for s in runtime_source or ()),
                       offline=offline, local_wheel_dirs=dirs, query_default_index=index, bundle_dir=bundle_dir)


def _execute(spec: StackSpec, plan: _plan.Plan, *, native: bool, base_image: str | None,
             engines: Engines = DEFAULT_ENGINES) -> Outcome:
    """Check the folders, then run the plan here or in a builder container."""
    preflight.source_date_epoch_value()
    preflight.check_work_folders(spec, plan.build_dir, plan.output_dir if plan.command != "build" or plan.publish
                                 else None, output_option="--output-dir")
    read_only = plan.command == "publish" and plan.dry_run  # nothing to build or write: no container
    if in_container(native) and not read_only:
        from venvstacks_docker.host.dispatch import run_plan_in_container

        return run_plan_in_container(plan, spec, base_image=base_image, transfer=engines.transfer,
                                     engine=engines.for_platform(plan.platform))
    return run_plan(plan, spec)


def _finish(spec: StackSpec, plan: _plan.Plan, *, show: bool, show_only: bool, json_output: bool,
            native: bool, base_image: str | None, engines: Engines = DEFAULT_ENGINES,
            replan: Callable[[str], _plan.Plan] | None = None) -> None:
    # one run per platform given to --engine PLATFORM=ENGINE (build, publish), one after the other
    runs = engines.plans(plan, replan, native=native, json_output=json_output)
    for each in runs:
        if len(runs) > 1:
            from venvstacks_docker import ui

            ui.current().step(f"{plan.command} for {each.platform}, on {engines.for_platform(each.platform)}")
        if render.show_plan(spec, each, show=show, show_only=show_only, json_output=json_output):
            continue
        outcome = _execute(spec, each, native=native, base_image=base_image, engines=engines)
        render.print_outcome(spec, each, outcome, json_output=json_output)


def _bundle_source(spec_path: Path | None, bundle: Path) -> tuple[StackSpec, Checked]:
    """The stack and the verified, unpacked bundle of ``--from-bundle``.

    Without a stack file, the bundled one is used (then the build and output folders are
    relative to the current folder, not to the bundle).
    """
    from venvstacks_docker.runtimes import cache_root

    checked = open_bundle(bundle.expanduser().absolute(), cache_root())
    if spec_path is None:
        stack_file = str((checked.manifest.get("stack") or {}).get("stack_file", ""))
        return load(checked.path / stack_file), checked
    return load(spec_path), checked


def _bundle_folders(spec_path: Path | None, *folders: str) -> list[str]:
    """Folder options of a run from the bundled stack file: relative to the current folder."""
    return [f if spec_path is not None else str(Path(f).expanduser().absolute()) for f in folders]


def _check_bundle_fits(spec: StackSpec, plan: _plan.Plan, checked: Checked) -> None:
    from venvstacks_docker.lockfiles import read_meta

    needed = plan.layers_with("build", "build-if-needed")
    check_fits(checked, platform=plan.platform,
               layers={name: (read_meta(spec, spec.layer(name)) or {}).get("requirements_hash") for name in needed})


def _build_from_bundle(spec_path: Path | None, bundle: Path, *, build_dir: str, output_dir: str,
                       selection: _plan.Selection, publish: bool, tag_outputs: bool, clean: bool,
                       show: tuple[bool, bool, bool], native: bool, engines: Engines = DEFAULT_ENGINES) -> None:
    """Build (and publish) from a bundle, offline: the plan is an ordinary build plan
    whose wheels and runtimes come from the bundle, and whose builder image is the bundle's."""
    spec, checked = _bundle_source(spec_path, bundle)
    build_dir, output_dir = _bundle_folders(spec_path, build_dir, output_dir)
    where = _where(spec, build_dir, output_dir, bundle_dir=checked.path)
    plan = _plan.plan_build(spec, selection, where, build=True, publish=publish, clean=clean, tag_outputs=tag_outputs)
    _check_bundle_fits(spec, plan, checked)
    _finish(spec, plan, show=show[0], show_only=show[1], json_output=show[2], native=native, base_image=None,
            engines=engines)


def show(
    spec_path: SpecArg,
    build_dir: BuildDirOpt = "_build",
    include: IncludeOpt = None,
    allow_missing: AllowMissingOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Show the layers of a stack and whether their locks are valid ('*' = needs locking)."""
    spec = load(spec_path)
    names = [layer.env_name for layer in _plan.related(spec, tuple(include or ()), allow_missing)]
    if json_output:
        emit_json("show", render.stack_json(spec, names, None))
    else:
        render.print_tree(spec, names)


def lock(
    spec_path: SpecArg,
    build_dir: BuildDirOpt = "_build",
    clean: Annotated[bool, typer.Option("--clean/--no-clean", rich_help_panel=LOCKING,
                                        help="Recreate the runtime environments used to lock first.")] = False,
    if_needed: Annotated[bool, typer.Option("--if-needed/--no-if-needed", rich_help_panel=LOCKING,
                                            help="Skip layers whose lock is still valid.")] = False,
    index: IndexOpt = True,
    local_wheels: LocalWheelsOpt = None,
    include: IncludeOpt = None,
    reset_lock: ResetLockOpt = None,
    allow_missing: AllowMissingOpt = False,
    lock_dependencies: LockDependenciesOpt = False,
    show: ShowOpt = False,
    show_only: ShowOnlyOpt = False,
    json_output: JsonOpt = False,
    runtime_source: RuntimeSourceOpt = None,
    native: NativeOpt = False,
    platform: PlatformOpt = None,
    base_image: BaseImageOpt = None,
    transfer: TransferOpt = "auto",
    engine: EngineOpt = None,
) -> None:
    """Lock layer requirements (pylock.toml files in requirements/, next to the stack file)."""
    spec = load(spec_path)
    selection = _plan.Selection(include=tuple(include or ()), allow_missing=allow_missing,
                                lock_dependencies=lock_dependencies)
    where = _where(spec, build_dir, local_wheels=local_wheels, runtime_source=runtime_source, index=index,
                   platform=_target(platform, native))
    plan = _plan.plan_lock(spec, selection, where, if_needed=if_needed, clean=clean,
                           reset_lock=tuple(reset_lock or ()))
    _finish(spec, plan, show=show, show_only=show_only, json_output=json_output, native=native,
            base_image=base_image, engines=Engines(transfer, tuple(engine or ())))


def build(
    spec_path: SpecArg,
    build_dir: BuildDirOpt = "_build",
    output_dir: OutputDirOpt = "_artifacts",
    clean: Annotated[bool, typer.Option("--clean/--no-clean", rich_help_panel=BUILDING,
                                        help="Recreate the environments (and rebuild every archive).")] = False,
    lock_if_needed: Annotated[bool, typer.Option("--lock-if-needed/--no-lock-if-needed", rich_help_panel=LOCKING,
                                                 help="Lock layers whose lock is out of date first.")] = False,
    lock_: Annotated[bool, typer.Option("--lock/--no-lock", hidden=True, help="Old name of --lock-if-needed.")] = False,
    do_build: Annotated[bool, typer.Option("--build/--no-build", rich_help_panel=BUILDING,
                                           help="Build the selected environments.")] = True,
    publish_: Annotated[bool, typer.Option(
        "--publish/--no-publish", rich_help_panel=OUTPUT,
        help="Also publish archives (otherwise a publish dry run is shown).")] = False,
    index: IndexOpt = True,
    local_wheels: LocalWheelsOpt = None,
    tag_outputs: TagOutputsOpt = False,
    include: IncludeOpt = None,
    reset_lock: ResetLockOpt = None,
    allow_missing: AllowMissingOpt = False,
    lock_dependencies: LockDependenciesOpt = False,
    build_dependencies: Annotated[bool, typer.Option(
        "--build-dependencies/--no-build-dependencies", rich_help_panel=SELECT,
        help="Rebuild, not just bring up to date, the layers the selected ones need.")] = False,
    publish_dependencies: PublishDependenciesOpt = False,
    include_dependencies: Annotated[bool | None, typer.Option(
        "--include-dependencies/--no-include-dependencies", rich_help_panel=SELECT, show_default=False,
        help="Set all three --*-dependencies options at once (--no-include-dependencies clears them).")] = None,
    build_derived: Annotated[bool, typer.Option("--build-derived/--no-build-derived", rich_help_panel=SELECT,
                                                help="Also build the layers built on the selected ones.")] = False,
    publish_derived: PublishDerivedOpt = False,
    show: ShowOpt = False,
    show_only: ShowOnlyOpt = False,
    json_output: JsonOpt = False,
    runtime_source: RuntimeSourceOpt = None,
    native: NativeOpt = False,
    platform: PlatformOpt = None,
    base_image: BaseImageOpt = None,
    transfer: TransferOpt = "auto",
    engine: EngineOpt = None,
    offline: Annotated[bool, typer.Option("--offline/--no-offline", rich_help_panel=BUILDING,
                                          help="No network: runtimes and wheels must already be cached.")] = False,
    from_bundle: FromBundleOpt = None,
) -> None:
    """Build layer environments, locking first and publishing after if asked: the pipeline command."""
    if include_dependencies is not None:  # venvstacks' --[no-]include-dependencies: all three at once
        lock_dependencies = build_dependencies = publish_dependencies = include_dependencies
    selection = _plan.Selection(include=tuple(include or ()), allow_missing=allow_missing,
                                lock_dependencies=lock_dependencies, build_dependencies=build_dependencies,
                                publish_dependencies=publish_dependencies, build_derived=build_derived,
                                publish_derived=publish_derived)
    if from_bundle is not None:
        if lock_if_needed or lock_ or reset_lock or local_wheels:
            raise SpecError("--from-bundle builds from the bundled locks: it cannot lock",
                            hint="lock on the connected host and bundle again")
        _build_from_bundle(spec_path, from_bundle, build_dir=build_dir, output_dir=output_dir, selection=selection,
                           publish=publish_, tag_outputs=tag_outputs, clean=clean,
                           show=(show, show_only, json_output), native=native,
                           engines=Engines(transfer, tuple(engine or ())))
        return
    spec = load(spec_path)
    where = _where(spec, build_dir, output_dir, local_wheels=local_wheels, runtime_source=runtime_source,
                   offline=offline, index=index, platform=_target(platform, native))

    def make(platform: str) -> _plan.Plan:
        return _plan.plan_build(spec, selection, replace(where, platform=platform),
                                lock_if_needed=lock_if_needed or lock_, build=do_build, publish=publish_, clean=clean,
                                tag_outputs=tag_outputs, reset_lock=tuple(reset_lock or ()))

    _finish(spec, make(where.platform), show=show, show_only=show_only, json_output=json_output, native=native,
            base_image=base_image, engines=Engines(transfer, tuple(engine or ())), replan=make)


def publish(
    spec_path: Annotated[Path | None, typer.Argument(
        help="The stack file (venvstacks.toml), or its folder (with --from-bundle: default, the bundled one).",
        show_default=False)] = None,
    build_dir: BuildDirOpt = "_build",
    output_dir: OutputDirOpt = "_artifacts",
    force: Annotated[bool, typer.Option("--force/--no-force", rich_help_panel=OUTPUT,
                                        help="Rebuild archives even if their inputs are unchanged.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run/--no-dry-run", rich_help_panel=OUTPUT,
                                          help="Only show what would be published (the publishing request).")] = False,
    tag_outputs: TagOutputsOpt = False,
    include: IncludeOpt = None,
    allow_missing: AllowMissingOpt = False,
    publish_dependencies: PublishDependenciesOpt = False,
    publish_derived: PublishDerivedOpt = False,
    show: ShowOpt = False,
    show_only: ShowOnlyOpt = False,
    json_output: JsonOpt = False,
    native: NativeOpt = False,
    platform: PlatformOpt = None,
    base_image: BaseImageOpt = None,
    transfer: TransferOpt = "auto",
    engine: EngineOpt = None,
    from_bundle: Annotated[Path | None, typer.Option(
        "--from-bundle", metavar="BUNDLE", rich_help_panel=BUILDING,
        help="Build and publish offline from a bundle (file or unpacked folder): its stack (unless one is "
        "given), wheels, runtimes and builder image; no index, no network.")] = None,
) -> None:
    """Publish already-built environments: one archive per layer, metadata in __venvstacks__/.

    With --from-bundle: build the layers from the bundle first (offline), then publish.
    """
    selection = _plan.Selection(include=tuple(include or ()), allow_missing=allow_missing,
                                publish_dependencies=publish_dependencies, publish_derived=publish_derived)
    if from_bundle is not None:
        _build_from_bundle(spec_path, from_bundle, build_dir=build_dir, output_dir=output_dir, selection=selection,
                           publish=not dry_run, tag_outputs=tag_outputs, clean=force,
                           show=(show, show_only, json_output), native=native,
                           engines=Engines(transfer, tuple(engine or ())))
        return
    if spec_path is None:
        raise SpecError("publish needs the stack file", hint="venvstacks-docker publish path/to/venvstacks.toml "
                        "(or --from-bundle BUNDLE to publish a bundled stack)")
    spec = load(spec_path)
    where = _where(spec, build_dir, output_dir, platform=_target(platform, native))

    def make(platform: str) -> _plan.Plan:
        return _plan.plan_publish(spec, selection, replace(where, platform=platform), force=force, dry_run=dry_run,
                                  tag_outputs=tag_outputs)

    _finish(spec, make(where.platform), show=show, show_only=show_only, json_output=json_output, native=native,
            base_image=base_image, engines=Engines(transfer, tuple(engine or ())), replan=make)


def local_export(
    spec_path: SpecArg,
    build_dir: BuildDirOpt = "_build",
    output_dir: Annotated[str, typer.Option(
        "--output-dir", rich_help_panel=OUTPUT,
        help="Where the environments are exported, relative to the stack file's folder.")] = "_export",
    force: Annotated[bool, typer.Option("--force/--no-force", rich_help_panel=OUTPUT,
                                        help="Export again even if unchanged.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run/--no-dry-run", rich_help_panel=OUTPUT,
                                          help="The same as --show-only.")] = False,
    include: IncludeOpt = None,
    allow_missing: AllowMissingOpt = False,
    publish_dependencies: PublishDependenciesOpt = False,
    publish_derived: PublishDerivedOpt = False,
    show: ShowOpt = False,
    show_only: ShowOnlyOpt = False,
    json_output: JsonOpt = False,
    native: NativeOpt = False,
    base_image: BaseImageOpt = None,
    transfer: TransferOpt = "auto",
    engine: EngineOpt = None,
) -> None:
    """Export built environments to a folder on this machine and run their post-install step."""
    spec = load(spec_path)
    selection = _plan.Selection(include=tuple(include or ()), allow_missing=allow_missing,
                                publish_dependencies=publish_dependencies, publish_derived=publish_derived)
    plan = _plan.plan_export(spec, selection, _where(spec, build_dir, output_dir), force=force)
    _finish(spec, plan, show=show, show_only=show_only or dry_run, json_output=json_output, native=native,
            base_image=base_image, engines=Engines(transfer, tuple(engine or ())))
