"""``diff A B``: explain the differences between two publications, archives or metadata files."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from venvstacks_docker.cli._common import STATE, emit_json, out
from venvstacks_docker.errors import DifferenceFound, SpecError


def register(app: typer.Typer) -> None:
    """Add the ``diff`` command to ``app``."""
    app.command("diff")(diff)


def diff(
    a: Annotated[Path, typer.Argument(help="An output folder, a layer archive or a metadata file.",
                                      show_default=False)],
    b: Annotated[Path, typer.Argument(help="The same kind of thing to compare it with.", show_default=False)],
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")] = False,
    html: Annotated[Path | None, typer.Option(
        "--html", metavar="FILE", help="Write the report as one self-contained HTML file.")] = None,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Count differences in run fields (venvstacks_docker.builder_image, ...) too.")] = False,
    context: Annotated[int, typer.Option(
        "--context", metavar="N", min=0, help="Lines of context in the unified diffs of text files.")] = 3,
) -> None:
    """Explain member by member, in Python terms, how two publications differ (exit 12 when they do)."""
    from venvstacks_docker import diffing, ui
    from venvstacks_docker.metadata import write_text_atomic
    from venvstacks_docker.txn import settled

    if json_output and html is not None:
        raise SpecError("--json and --html cannot be combined", hint="run diff twice, once with each")
    with contextlib.ExitStack() as stack:
        folders = {f.resolve(): f for f in (a, b) if f.is_dir()}  # one lock per folder, even for `diff X X`
        for folder in folders.values():  # wait for a publish into either folder to finish (as verify does)
            if folder.is_dir():
                stack.enter_context(settled(folder, command="diff", say=ui.current().note))
        report = diffing.compare(a, b, strict=strict, context=context)
    if json_output:
        emit_json("diff", report.body())
    else:
        if html is not None:
            write_text_atomic(html.absolute(), diffing.render_html(report))
        for renderable in diffing.renderables(report, STATE.verbosity):
            out.print(renderable)
        if html is not None:
            out.print(f"HTML report: {html}", markup=False)
    if not report.identical:
        raise typer.Exit(DifferenceFound.return_code)
