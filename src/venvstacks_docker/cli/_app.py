"""The program: global options, the command groups, and the one place errors become exit codes."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.exceptions import TyperException

from venvstacks_docker import __version__, ui
from venvstacks_docker.cli import audit, ci, diff, merge, outputs, stages
from venvstacks_docker.cli._common import STATE, out
from venvstacks_docker.errors import EXIT_CODES, FilesystemError, Interrupted, VenvstacksDockerError

err = Console(stderr=True, highlight=False, soft_wrap=True)

app = typer.Typer(
    name="venvstacks-docker",
    help="Lock, build, publish, verify and deploy layered Python environment stacks "
    "(venvstacks.toml), reproducibly, natively or in builder containers.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
stages.register(app)
outputs.register(app)
audit.register(app)
diff.register(app)
merge.register(app)
ci.register(app)


def _version_callback(value: bool) -> None:
    if value:
        out.print(f"venvstacks-docker {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", "-V", callback=_version_callback, is_eager=True,
                                          help="Show the version and exit.")] = False,
    verbose: Annotated[int, typer.Option(
        "--verbose", "-v", count=True,
        help="More detail: commands run, image builds (-vv: libraries' debug logs).")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors and results.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show a traceback for every error.")] = False,
) -> None:
    STATE.verbosity = -1 if quiet else verbose
    STATE.debug = debug
    if not isinstance(ui.current(), ui.EventReporter):
        ui.install(ui.Reporter(verbosity=STATE.verbosity))


@app.command("_run-plan", hidden=True)
def run_plan_command(plan_file: Annotated[Path, typer.Argument()]) -> None:
    """Run a plan the host wrote (inside a builder container), reporting as JSON events."""
    from venvstacks_docker.execute import run_plan
    from venvstacks_docker.plan import Plan

    reporter = ui.EventReporter(verbosity=STATE.verbosity)
    ui.install(reporter)
    try:
        outcome = run_plan(Plan.from_dict(json.loads(plan_file.read_text(encoding="utf-8"))))
    except VenvstacksDockerError as exc:
        reporter.error(code=exc.return_code, message=exc.message, hint=exc.hint)
        raise typer.Exit(exc.return_code) from None
    reporter.outcome(outcome.to_dict())


def _register_subapps(args: list[str]) -> None:
    """Add the ``runtime``, ``image``, ``bundle`` and ``emulation`` groups, importing them only when needed.

    (The image group pulls in the Docker SDK, which would slow every other command.)
    """
    groups = {"runtime", "image", "bundle", "emulation"}
    words = [a for a in args if not a.startswith("-")]
    wanted = groups if not words else {words[0]}
    if _registered or (not wanted & groups and not any(a in ("-h", "--help") for a in args)):
        return
    from venvstacks_docker.cli.bundle import bundle_app
    from venvstacks_docker.cli.emulation import emulation_app
    from venvstacks_docker.cli.image import image_app
    from venvstacks_docker.cli.runtime import runtime_app

    app.add_typer(runtime_app, name="runtime")
    app.add_typer(image_app, name="image", help="Builder images: render, build, bootstrap a base, list, prune.")
    app.add_typer(bundle_app, name="bundle")
    app.add_typer(emulation_app, name="emulation")
    _registered.append(True)


_registered: list[bool] = []


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Console script entry point: run the CLI and map errors to exit codes."""
    sys.exit(run(sys.argv[1:] if argv is None else argv))


def run(args: list[str]) -> int:
    """Run the CLI with ``args``; return the exit code (for tests and :func:`main`)."""
    _register_subapps(args)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C and SIGTERM both unwind through the cleanup paths (temporary files,
        # containers).  SIGINT is set explicitly: a process started in the background
        # by a non-interactive shell inherits SIGINT as ignored.
        previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
                    signal.SIGTERM: signal.signal(signal.SIGTERM, _on_sigterm)}
    try:
        return _run(args)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(args: list[str]) -> int:
    try:
        result = app(args=args, prog_name="venvstacks-docker", standalone_mode=False)
        return result if isinstance(result, int) else 0  # without standalone mode, typer returns Exit codes
    except Interrupted as exc:
        _report_interrupt(exc)
        return exc.return_code
    except VenvstacksDockerError as exc:
        _print_error(exc)
        return exc.return_code
    except (KeyboardInterrupt, typer.Abort):
        _report_interrupt(Interrupted("nothing half-written was left behind"))
        return Interrupted.return_code
    except typer.Exit as exc:
        return exc.exit_code
    except TyperException as exc:
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            err.print(f"error: {exc.format_message()}", markup=False)
        return exc.exit_code if exc.exit_code not in (0, 1) else 2
    except OSError as exc:
        # an OSError no stage turned into a message of its own: still say what failed
        where = f" ({exc.filename})" if exc.filename else ""
        _print_error(FilesystemError(f"{exc.strerror or exc}{where}",
                                     hint="free some space or fix the permissions, then run again"), exc)
        return FilesystemError.return_code
    except Exception as exc:  # noqa: BLE001 - the one place that turns crashes into messages
        err.print_exception()  # a bug: always with its traceback
        err.print(f"[red]internal error[/]: {type(exc).__name__}: {exc}", markup=True)
        err.print("  hint: please report it with the traceback above", markup=False)
        return 1


def _report_interrupt(exc: Interrupted) -> None:
    reporter = ui.current()
    if isinstance(reporter, ui.EventReporter):
        reporter.error(code=exc.return_code, message=exc.message, hint=None)
        return
    err.print("[red]interrupted[/]: ", end="")
    err.print(exc.message, markup=False)


def _print_error(exc: VenvstacksDockerError, cause: BaseException | None = None) -> None:
    reporter = ui.current()
    if isinstance(reporter, ui.EventReporter):  # in a container: the host prints it
        reporter.error(code=exc.return_code, message=exc.message, hint=exc.hint)
        return
    if STATE.debug:
        err.print_exception() if cause is None else err.print(repr(cause))
    err.print("[red]error[/]: ", end="")
    err.print(exc.message, markup=False)
    if exc.hint:
        err.print("  [yellow]hint[/]: ", end="")
        err.print(exc.hint, markup=False)
    err.print(f"  [dim]exit code {exc.return_code}: {EXIT_CODES.get(exc.return_code, '')}[/]")
