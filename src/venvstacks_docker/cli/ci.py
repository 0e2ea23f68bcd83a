"""``ci github SPEC``: write the GitHub Actions workflow that publishes every target platform."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from venvstacks_docker.cli._common import OUTPUT, SpecArg, load, out

ci_app = typer.Typer(no_args_is_help=True,
                     help="Continuous integration: workflows that publish a stack on every platform it targets.")


def register(app: typer.Typer) -> None:
    """Add the ``ci`` group to ``app``."""
    app.add_typer(ci_app, name="ci")


@ci_app.command("github")
def github(
    spec_path: SpecArg,
    output: Annotated[Path, typer.Option(
        "--output", "-o", metavar="FILE", rich_help_panel=OUTPUT,
        help="The workflow file to write (replaced atomically); `-` prints it instead.")
    ] = Path(".github/workflows/venvstacks.yml"),
    install: Annotated[str | None, typer.Option(
        "--install", metavar="REQUIREMENT", rich_help_panel=OUTPUT,
        help="What each job installs with pip (default: venvstacks-docker==<this version>).")] = None,
) -> None:
    """Write a GitHub Actions workflow: one publish job per target platform, then merge and verify."""
    import sys

    from venvstacks_docker import ci_workflow
    from venvstacks_docker.errors import PublishError
    from venvstacks_docker.metadata import write_text_atomic

    spec = load(spec_path)
    to_stdout = str(output) == "-"
    workflow = output.expanduser()
    text = ci_workflow.github_workflow(spec, workflow=None if to_stdout else workflow, install=install)
    if to_stdout:
        sys.stdout.write(text)
        return
    try:
        write_text_atomic(workflow.absolute(), text)
    except OSError as exc:
        raise PublishError(f"cannot write {workflow}: {exc.strerror or exc}",
                           hint="check the folder's permissions and free space") from exc
    jobs = ", ".join(f"{plat} ({runner.label}{', builder container' if runner.container else ''})"
                     for plat, runner in ci_workflow.RUNNERS.items() if plat in ci_workflow.target_platforms(spec))
    out.print(f"wrote {workflow}: publish on {jobs}, then merge and verify", markup=False)
