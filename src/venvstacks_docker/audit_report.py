"""An audit's report for people: a verdict table in the terminal, or one HTML page."""

from __future__ import annotations

import html
from typing import Any

from venvstacks_docker.audit import AuditReport, layers_of
from venvstacks_docker.audit_plan import VARIATIONS

_MARK = {"identical": "identical", "different": "DIFFERENT", "missing": "missing"}


def verdict_rows(report: AuditReport) -> list[tuple[str, str, dict[str, str]]]:
    """(variation, how it was varied, layer -> verdict) for every variation that ran."""
    verdicts = report.verdicts()
    return [(name, VARIATIONS[name].what, verdicts[name]) for name in VARIATIONS if name in verdicts]


def render_text(report: AuditReport) -> str:
    """The verdicts as lines: one per variation, then what differed, failed or was left out."""
    lines = []
    layers = list(layers_of(report))
    for name, _what, per_layer in verdict_rows(report):
        different = [layer for layer in layers if per_layer.get(layer) != "identical"]
        verdict = "identical" if not different else "DIFFERENT: " + ", ".join(
            f"{layer} ({_MARK.get(per_layer.get(layer, 'missing'), '?')})" for layer in different)
        lines.append(f"{name:<15} {verdict}")
    for result in report.results:
        if result.status == "failed":
            lines.append(f"{result.run.name:<15} FAILED: {result.error} (log: {result.log_file})")
        elif result.status == "different" and result.diff:
            lines += [f"  {result.run.name}: {line}" for line in _findings(result.diff)[:20]]
    for name, why in report.plan.skipped.items():
        lines.append(f"{name:<15} not run: {why}")
    runs = [r for r in report.results if r.status not in ("not-needed",)]
    failed = any(r.status == "failed" for r in report.results)
    lines.append(("FAILED: " if failed else "OK: " if report.identical else "DIFFERENT: ") +
                 f"{len(layers)} layer(s), {len(runs)} run(s), {len(verdict_rows(report))} variation(s) checked, "
                 f"{len(report.plan.skipped)} not run")
    return "\n".join(lines) + "\n"


def _findings(diff: dict[str, Any]) -> list[str]:
    """One line per finding of a diff report (its layers' members)."""
    out: list[str] = []
    for layer in diff.get("layers", []):
        for member in layer.get("members", []):
            for finding in member.get("findings", []):
                where = f"{layer.get('layer_name', '?')}: {member.get('name', '?')}"
                out.append(f"{where}: {finding.get('explanation', '')}")
    for finding in diff.get("metadata", []):
        out.append(f"metadata: {finding.get('explanation', finding)}")
    return out


def _cell(verdict: str) -> str:
    return f'<td class="{html.escape(verdict)}">{_MARK.get(verdict, html.escape(verdict))}</td>'


def render_html(report: AuditReport) -> str:
    """One self-contained page: the verdict table, then each difference with its explanation."""
    layers = list(layers_of(report))
    head = "".join(f"<th>{html.escape(layer)}</th>" for layer in layers)
    rows = []
    for name, what, per_layer in verdict_rows(report):
        cells = "".join(_cell(per_layer.get(layer, "missing")) for layer in layers)
        rows.append(f"<tr><th>{html.escape(name)}</th><td>{html.escape(what)}</td>{cells}</tr>")
    skipped = "".join(f"<li><b>{html.escape(n)}</b>: {html.escape(w)}</li>" for n, w in report.plan.skipped.items())
    details = []
    for result in report.results:
        if result.status == "different" and result.diff:
            items = "".join(f"<li>{html.escape(line)}</li>" for line in _findings(result.diff))
            details.append(f"<h3>{html.escape(result.run.name)}</h3><ul>{items}</ul>")
        elif result.status == "failed":
            error = html.escape(result.error or "")
            details.append(f"<h3>{html.escape(result.run.name)}: failed</h3><pre>{error}</pre>")
    failed = [r.run.name for r in report.results if r.status == "failed"]
    summary = ("Audit incomplete: a run failed" if failed else
               "Every layer is identical under every variation" if report.identical else "Differences found")
    return _PAGE.format(summary=summary, head=head, rows="".join(rows), skipped=skipped or "<li>none</li>",
                        details="".join(details) or "<p>No differences.</p>")


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>venvstacks-docker audit</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; }} th, td {{ border: 1px solid #ccc; padding: .3em .6em; text-align: left; }}
td.identical {{ background: #e6f4ea; }} td.different, td.missing {{ background: #fde7e9; font-weight: bold; }}
</style></head><body>
<h1 id="summary">{summary}</h1>
<table><tr><th>variation</th><th>how</th>{head}</tr>{rows}</table>
<h2>Not run</h2><ul>{skipped}</ul>
<h2>Differences</h2>{details}
</body></html>
"""

__all__ = ["render_html", "render_text", "verdict_rows"]
