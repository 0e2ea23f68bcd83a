"""What every command of the CLI shares: state, options, consoles, JSON output."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.console import Console, ConsoleDimensions
from typer.core import TyperCommand, TyperOption

from venvstacks_docker import spec as _spec
from venvstacks_docker.metadata import dumps, envelope

if TYPE_CHECKING:
    from venvstacks_docker.plan import Plan


class _ResultConsole(Console):
    """A console as wide as the terminal, and of unbounded width when stdout is not one
    (a file, a pipe): trees and tables are then never cut to 80 columns."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        return size if self.is_terminal else ConsoleDimensions(1_000_000, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


#: Results (tables, JSON) go to stdout; everything for people to stderr (:mod:`ui`).
out = _ResultConsole(highlight=False, soft_wrap=True)


@dataclass
class State:
    """The program's own options (before the command name)."""

    verbosity: int = 0
    debug: bool = False


STATE = State()

# Help panels group the options of the busy commands.
SELECT = "Layer selection"
LOCKING = "Locking"
BUILDING = "Building"
OUTPUT = "Publishing and output"
WHERE = "Where it runs (venvstacks-docker)"
SHOW = "What to print"

SpecArg = Annotated[Path, typer.Argument(help="The stack file (venvstacks.toml), or its folder.",
                                         show_default=False)]
BuildDirOpt = Annotated[str, typer.Option(
    "--build-dir", help="Build folder, relative to the stack file's folder.", rich_help_panel=BUILDING)]
IncludeOpt = Annotated[list[str] | None, typer.Option(
    "--include", metavar="PATTERN", rich_help_panel=SELECT,
    help="Only layers whose name matches (fnmatch, e.g. 'app-*'); repeatable.")]
AllowMissingOpt = Annotated[bool, typer.Option(
    "--allow-missing/--no-allow-missing", rich_help_panel=SELECT,
    help="Warn instead of failing when an --include pattern matches nothing.")]
JsonOpt = Annotated[bool, typer.Option(
    "--json/--no-json", rich_help_panel=SHOW,
    help="JSON on stdout: alone, the selection without running anything; with --show, the results.")]
ShowOpt = Annotated[bool, typer.Option("--show/--no-show", rich_help_panel=SHOW,
                                       help="Print the selected layers and operations, then run.")]
ShowOnlyOpt = Annotated[bool, typer.Option("--show-only/--no-show-only", rich_help_panel=SHOW,
                                           help="Print the selected layers and operations and stop.")]
IndexOpt = Annotated[bool, typer.Option("--index/--no-index", rich_help_panel=LOCKING,
                                        help="Query the default package index (PyPI) when locking.")]
LocalWheelsOpt = Annotated[list[str] | None, typer.Option(
    "--local-wheels", metavar="DIR", rich_help_panel=LOCKING,
    help="A folder of wheels to lock from, relative to the stack file's folder; repeatable.")]
ResetLockOpt = Annotated[list[str] | None, typer.Option(
    "--reset-lock", metavar="PATTERN", rich_help_panel=LOCKING,
    help="Forget the existing lock of matching layers before relocking; repeatable.")]
RuntimeSourceOpt = Annotated[list[str] | None, typer.Option(
    "--runtime-source", metavar="SOURCE", rich_help_panel=BUILDING,
    help="A runtime archive, folder of archives or file:// or https:// URL to take Python runtimes "
    "from; repeatable (more in the environment variable reference).")]
NativeOpt = Annotated[bool, typer.Option(
    "--native/--container", rich_help_panel=WHERE,
    help="Run on this host, or in a builder container (the default on Linux).")]
PlatformOpt = Annotated[str | None, typer.Option(
    "--platform", metavar="PLATFORM", rich_help_panel=WHERE,
    help="The target platform (default: this machine's). linux_x86_64 or linux_aarch64 builds in a builder "
    "container of that architecture; another architecture than this machine's runs under qemu emulation "
    "(`venvstacks-docker emulation status`).")]
BaseImageOpt = Annotated[str | None, typer.Option(
    "--base-image", metavar="IMAGE", rich_help_panel=WHERE,
    help="Base image of the builder container (default: the stack file's base_image, "
    "VENVSTACKS_DOCKER_BASE_IMAGE, then the bootstrapped Debian base).")]
TransferOpt = Annotated[Literal["auto", "mount", "copy"], typer.Option(
    "--transfer", metavar="MODE", rich_help_panel=WHERE,
    help="How files reach the builder container: mount (the host's folders), copy (through the Engine API), "
    "or auto: mount when the engine's socket is on this machine, else copy.")]
EngineOpt = Annotated[list[str] | None, typer.Option(
    "--engine", metavar="ENGINE", rich_help_panel=WHERE,
    help="The container engine: a docker context name or a URL (unix://, tcp://, ssh://); PLATFORM=ENGINE "
    "for one target platform only; repeatable (default: DOCKER_HOST, DOCKER_CONTEXT, the current context).")]


#: The target platforms of builder containers (``--engine PLATFORM=ENGINE``).
CONTAINER_PLATFORMS = ("linux_x86_64", "linux_aarch64")


@dataclass(frozen=True)
class Engines:
    """``--transfer`` and ``--engine`` of a stage command."""

    transfer: str = "auto"
    engines: tuple[str, ...] = ()

    def for_platform(self, platform: str) -> str | None:
        """The engine given for ``platform`` (``PLATFORM=ENGINE``, else a bare ``ENGINE``).

        :raises SpecError: for an unknown platform, or one given twice.
        """
        from venvstacks_docker.errors import SpecError

        chosen: dict[str, str] = {}
        for value in self.engines:
            name, sep, engine = value.partition("=")
            key = name if sep and "://" not in name else ""
            engine = engine if key else value
            if key and key not in CONTAINER_PLATFORMS:
                raise SpecError(f"--engine {value!r}: {key!r} is not a platform builder containers build for",
                                hint=f"use {' or '.join(CONTAINER_PLATFORMS)}")
            if key in chosen or not engine:
                raise SpecError(f"--engine {value!r}: " + ("no engine named" if not engine else
                                f"{key or 'the engine'} is given twice"))
            chosen[key] = engine
        return chosen.get(platform, chosen.get(""))

    def platforms(self) -> list[str]:
        """The platforms named by ``PLATFORM=ENGINE``, in the order given."""
        return [value.partition("=")[0] for value in self.engines
                if "=" in value and value.partition("=")[0] in CONTAINER_PLATFORMS]

    def plans(self, plan: Plan, replan: Callable[[str], Plan] | None, *, native: bool,
              json_output: bool) -> list[Plan]:
        """The runs of a command: ``plan``, or with ``--engine PLATFORM=ENGINE`` (for
        ``build`` and ``publish``, which ``replan``), one plan per platform named, in order.

        :raises SpecError: for a bad ``--engine``; for platforms with ``--native``, with
            ``--json``, publishing into one folder without ``--tag-outputs``, or sharing
            the build folder in mount mode.
        """
        from venvstacks_docker.errors import SpecError

        self.for_platform(plan.platform)  # a bad --engine is refused before anything runs
        targets = self.platforms()
        if not targets or replan is None:
            return [plan]
        if native:
            raise SpecError("--engine PLATFORM=ENGINE names the engines of builder containers: not with --native")
        plans = [plan if target == plan.platform else replan(target) for target in targets]
        if len(plans) == 1:
            return plans
        if json_output:
            raise SpecError("--json prints one plan: with several --engine PLATFORM=ENGINE, run one command per "
                            "platform", hint="or drop --json")
        if plan.writes_output and not plan.tag_outputs:
            raise SpecError(f"{' and '.join(targets)} would publish into one output folder under the same names",
                            hint="add --tag-outputs (each platform's archives and manifest get names of their own)")
        self._check_build_folders(plans)
        return plans

    def _check_build_folders(self, plans: list[Plan]) -> None:
        from venvstacks_docker.errors import SpecError
        from venvstacks_docker.host.dispatch import copies

        mounted = [p.platform for p in plans if not copies(self.transfer, self.for_platform(p.platform))]
        if len(mounted) > 1:
            raise SpecError(f"{' and '.join(mounted)} would share the build folder {plans[0].build_dir} (both in "
                            "mount mode)", hint="give --transfer copy (each engine then keeps a build volume of its "
                            "own), or run one command per platform, each with its own --build-dir")


DEFAULT_ENGINES = Engines()


class StageCommand(TyperCommand):
    """A stage command whose ``--help`` lists ``--no-X`` only where it turns off a default.

    Every on/off option takes both forms, the last one given winning, as in venvstacks;
    listing ``--no-publish-dependencies`` next to ``--publish-dependencies`` too would
    cut the option names short in an 80-column help, so the help says it once instead.
    """

    def format_help(self, ctx: Any, formatter: Any) -> None:
        quiet = [p for p in self.params if isinstance(p, TyperOption) and p.is_flag and p.default in (False, None)
                 and p.secondary_opts == [f"--no-{p.opts[0].removeprefix('--')}"]]
        saved = [(p, p.secondary_opts, p.show_default) for p in quiet]
        for param in quiet:
            param.secondary_opts, param.show_default = [], False
        try:
            super().format_help(ctx, formatter)
        finally:
            for param, secondary, show_default in saved:
                param.secondary_opts, param.show_default = secondary, show_default


def load(spec_path: Path) -> _spec.StackSpec:
    return _spec.load(spec_path)


def resolve_dir(spec: _spec.StackSpec, value: str | os.PathLike[str]) -> Path:
    """A folder option: ``~`` expanded, relative to the stack file's folder, absolute."""
    path = Path(value).expanduser()
    return (path if path.is_absolute() else spec.spec_dir / path).absolute()


def absolute_source(spec: _spec.StackSpec, source: str) -> str:
    """A ``--runtime-source`` path as an absolute path (URLs stay as they are)."""
    if "://" in source and not source.startswith("file://"):
        return source
    raw = Path(source.removeprefix("file://")).expanduser()
    for candidate in (raw, spec.spec_dir / raw):
        if candidate.exists():
            return str(candidate.absolute())
    return source


def emit_json(kind: str, body: dict[str, Any]) -> None:
    """Print one ``--json`` result: ``body`` in the versioned envelope."""
    sys.stdout.write(dumps(envelope(kind, body)))


def rel(path: Path | str, base: Path) -> str:
    try:
        return str(Path(path).relative_to(base))
    except ValueError:
        return str(path)


def in_container(native: bool) -> bool:
    """Whether a stage command runs in a builder container (Linux, unless --native)."""
    return not native and sys.platform.startswith("linux") and os.environ.get("VENVSTACKS_DOCKER_IN_CONTAINER") != "1"
