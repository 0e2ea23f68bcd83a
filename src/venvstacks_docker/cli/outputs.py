"""Commands on published output: ``verify`` and ``deploy``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from venvstacks_docker import ui
from venvstacks_docker.cli._common import JsonOpt, out
from venvstacks_docker.errors import Interrupted, VerifyError


def register(app: typer.Typer) -> None:
    """Add the commands that work on publish outputs (``verify``, ``deploy``) to ``app``."""
    app.command()(verify)
    app.command()(deploy)


def verify(
    output_dir: Annotated[Path, typer.Argument(help="A publish output folder (holding __venvstacks__/).",
                                               show_default=False)],
    json_output: JsonOpt = False,
) -> None:
    """Check every published archive's size and sha256 against the metadata."""
    from venvstacks_docker import verify as _verify
    from venvstacks_docker.txn import settled

    with settled(output_dir, command="verify", say=ui.current().note):
        report = _verify.verify_output_dir(output_dir)
    if json_output:
        sys.stdout.write(report.to_json())
    else:
        out.print(report.render_text(), end="", markup=False)
    if not report.ok:
        raise typer.Exit(VerifyError.return_code)


def deploy(
    output_dir: Annotated[Path, typer.Argument(help="A publish output folder.", show_default=False)],
    target: Annotated[Path, typer.Argument(help="Folder to unpack the layers into (created if needed).",
                                           show_default=False)],
    manifest: Annotated[Path | None, typer.Option(
        metavar="FILE", help="Which manifest to deploy when __venvstacks__/ has several (one per platform).")] = None,
    python: Annotated[str | None, typer.Option(
        metavar="PYTHON",
        help="Interpreter to run postinstall.py with (default: each layer's deployed runtime).")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Unpack published archives side by side and run each layer's postinstall.py."""
    from venvstacks_docker import deploy as _deploy
    from venvstacks_docker.txn import settled

    reporter = ui.current()
    try:
        with reporter.phase("deploying"), settled(output_dir, command="deploy", say=reporter.note):
            result = _deploy.deploy(output_dir, target, manifest=manifest, python=python)
    except KeyboardInterrupt:
        raise Interrupted(f"deploy was interrupted: the layers it had unpacked into {target} were "
                          "removed again") from None
    if json_output:
        from venvstacks_docker.metadata import dumps

        sys.stdout.write(dumps(result.as_dict()))
    else:
        out.print(result.render_text(), end="", markup=False)
