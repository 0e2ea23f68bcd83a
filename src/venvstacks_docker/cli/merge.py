"""``merge OUT... -o OUT``: per-platform tagged publications combined into one folder."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from venvstacks_docker.cli._common import OUTPUT, SHOW, out

if TYPE_CHECKING:
    from venvstacks_docker.merge import MergePlan


def register(app: typer.Typer) -> None:
    """Add the ``merge`` command to ``app``."""
    app.command("merge")(merge)


def merge(
    inputs: Annotated[list[Path], typer.Argument(
        help="Output folders of `publish --tag-outputs` (one per platform, or per --include selection).",
        show_default=False)],
    output: Annotated[Path, typer.Option(
        "--output", "-o", metavar="DIR", rich_help_panel=OUTPUT, show_default=False,
        help="The merged folder: new or empty (never replaced or mixed into).")],
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", rich_help_panel=SHOW, help="Verify the inputs and print what would be merged; write nothing.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", rich_help_panel=SHOW,
                                              help="The result as JSON on stdout.")] = False,
) -> None:
    """Verify tagged publications and combine them into one folder, one manifest per platform."""
    from venvstacks_docker import merge as _merge
    from venvstacks_docker import ui
    from venvstacks_docker.metadata import dumps

    reporter = ui.current()
    with reporter.phase("verifying the inputs"):
        plan = _merge.plan_merge(inputs, output.expanduser())
    staged: dict[str, str] = {}
    if not dry_run:
        with reporter.phase("merging"):
            staged = _merge.execute_merge(plan, on_event=reporter.detail).staged
    for note in plan.left_out:
        reporter.note(f"not merged: {note}")
    if json_output:
        sys.stdout.write(dumps(plan.as_dict(dry_run=dry_run)))
        return
    _render(plan, staged, dry_run)


def _render(plan: MergePlan, staged: dict[str, str], dry_run: bool) -> None:
    from venvstacks_docker.ui import human_size

    for rel in sorted(plan.manifests):
        count = sum(1 for layer in plan.layers if rel.endswith(f"venvstacks-{layer.platform}.json"))
        out.print(f"Manifest: {rel} ({count} layer(s))", markup=False)
    width = max(len(layer.archive_name) for layer in plan.layers)
    for layer in plan.layers:
        size = human_size(int(layer.entry["archive_size"]))
        sha = str(layer.entry["archive_hashes"]["sha256"])[:12]
        what = "would merge" if dry_run else staged.get(layer.archive_name, "merged")
        out.print(f"{layer.archive_name:<{width}}  {size:>9}  {sha}  {what} from {layer.source}", markup=False)
    verdict = "would write" if dry_run else "wrote"
    out.print(f"{verdict} {plan.out}: {len(plan.layers)} layer archive(s) for {', '.join(plan.platforms)}",
              markup=False)
