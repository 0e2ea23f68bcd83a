"""The terminal report: a summary table, then each differing member with its explanations.

:func:`renderables` gives rich objects (the CLI prints them in colour on a terminal);
:func:`render_text` the same as plain text.
"""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from venvstacks_docker.diffing.model import ArchiveReport, Finding, Report
from venvstacks_docker.ui import human_size

#: Members shown per archive without ``-v`` (all with it).
MEMBERS_SHOWN = 40
_DIFF_LINES = 30


def _size(n: int | None) -> str:
    return human_size(n) if n is not None else "-"


def summary_table(report: Report) -> Table:
    """One row per archive pair: what it is, its status, how many members differ and why."""
    table = Table(title=f"diff {report.a} {report.b}", title_justify="left", expand=False)
    for column in ("layer / archive", "result", "size A", "size B", "members differing", "causes"):
        table.add_column(column, overflow="fold")  # never cut a name off with …
    for archive in report.archives:
        kinds = ", ".join(f"{k} ({n})" if n > 1 else k for k, n in sorted(archive.kinds().items()))
        style = "green" if archive.identical else "red"
        table.add_row(escape(archive.label), f"[{style}]{archive.status}[/]", _size(archive.size_a),
                      _size(archive.size_b), str(len(archive.members)) if archive.opened else "-", escape(kinds))
    return table


def _finding(finding: Finding, verbose: int, indent: str) -> list[RenderableType]:
    out: list[RenderableType] = [Text.assemble((f"{indent}{finding.kind}: ", "bold"), finding.explanation)]
    diff = finding.details.get("diff") if finding.kind == "content-text" else None
    if isinstance(diff, str) and diff:
        lines = diff.splitlines()
        shown = lines if verbose else lines[:_DIFF_LINES]
        text = Text()
        for line in shown:
            style = "green" if line.startswith("+") else "red" if line.startswith("-") else \
                "cyan" if line.startswith("@@") else ""
            text.append(f"{indent}  {line}\n", style=style)
        if len(shown) < len(lines):
            text.append(f"{indent}  [... {len(lines) - len(shown)} more diff lines: use -v or --html]\n", style="dim")
        out.append(text)
    elif verbose and finding.details and finding.kind != "content-text":
        out.append(Text(f"{indent}  {_compact(finding.details)}", style="dim"))
    return out


def _compact(details: dict[str, Any]) -> str:
    import json

    text = json.dumps(details, sort_keys=True, default=str)
    return text if len(text) <= 2000 else text[:2000] + " ..."


def _archive(archive: ArchiveReport, verbose: int) -> list[RenderableType]:
    out: list[RenderableType] = [Text(f"\n{archive.label}: {archive.status}", style="bold")]
    if archive.status in ("only-in-a", "only-in-b"):
        return out
    if archive.streams_skipped:
        out.append(Text(f"  ({archive.streams_skipped} identical xz stream(s) not decompressed)", style="dim"))
    for finding in archive.findings:
        out += _finding(finding, verbose, "  ")
    shown = archive.members if verbose else archive.members[:MEMBERS_SHOWN]
    for member in shown:
        out.append(Text(f"  {member.name}" + ("" if member.status == "different" else f" ({member.status})"),
                        style="bold cyan"))
        for finding in member.findings:
            out += _finding(finding, verbose, "    ")
    if len(shown) < len(archive.members):
        out.append(Text(f"  [... {len(archive.members) - len(shown)} more differing members: use -v or --html]",
                        style="dim"))
    return out


def _metadata(report: Report, verbose: int) -> list[RenderableType]:
    out: list[RenderableType] = []
    for meta in report.metadata:
        counted = meta.counted(report.strict)
        if meta.status in ("only-in-a", "only-in-b"):
            out.append(Text(f"{meta.file}: {meta.status}", style="bold"))
        elif counted:
            out.append(Text(f"{meta.file}: {len(counted)} field(s) differ", style="bold"))
            for f in counted:
                why = f" ({f.explanation})" if f.explanation else ""
                out.append(Text(f"  {f.path}: {_value(f.a)} -> {_value(f.b)}{why}"))
    runs = report.run_field_differences()
    if runs:
        title = "run fields (counted: --strict)" if report.strict else "run fields (describe the run, not counted " \
            "without --strict)"
        out.append(Text(title, style="bold"))
        for file, f in runs:
            out.append(Text(f"  {file}: {f.path}: {_value(f.a)} -> {_value(f.b)}", style="dim"))
    if out:
        out.insert(0, Text("\nmetadata", style="bold underline"))
    return out


def _value(value: Any) -> str:
    text = repr(value) if not isinstance(value, (dict, list)) else _compact({"v": value})[5:-1]
    return text if len(text) <= 120 else text[:117] + "..."


def renderables(report: Report, verbose: int = 0) -> list[RenderableType]:
    """The report as rich renderables: summary table, metadata, archives, verdict."""
    out: list[RenderableType] = [summary_table(report), *_metadata(report, verbose)]
    for archive in report.archives:
        if not archive.identical:
            out += _archive(archive, verbose)
    style = "bold green" if report.identical else "bold red"
    out.append(Text("\n" + report.verdict(), style=style))
    return out


def render_text(report: Report, verbose: int = 0, *, width: int = 120) -> str:
    """The report as plain text (no colours), e.g. for a log file or a test."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False, highlight=False,
                      soft_wrap=False)
    console.print(Group(*renderables(report, verbose)))
    return buffer.getvalue()
