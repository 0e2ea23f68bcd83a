"""The HTML report: one self-contained file (inline CSS, no scripts, every value escaped).

A summary (the verdict and a table of archives), the metadata differences, then each
differing member with its findings; unified diffs are coloured by line.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from venvstacks_docker import __version__
from venvstacks_docker.diffing.model import ArchiveReport, Finding, Report
from venvstacks_docker.ui import human_size

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #1b1b1b; background: #fff; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1em; font-family: ui-monospace, monospace; margin: 1.2em 0 0.3em; word-break: break-all; }
table { border-collapse: collapse; margin: 1em 0; } th, td { border: 1px solid #ccc; padding: 4px 8px;
  text-align: left; vertical-align: top; } th { background: #f3f3f3; }
.verdict { font-size: 1.2em; font-weight: bold; padding: 0.5em 0.8em; border-radius: 4px; display: inline-block; }
.same { background: #e6f4ea; color: #137333; } .differs { background: #fce8e6; color: #a50e0e; }
.kind { font-family: ui-monospace, monospace; font-weight: bold; background: #eef; padding: 0 4px;
  border-radius: 3px; }
ul.findings { margin: 0.2em 0 0.8em; } ul.findings li { margin: 0.3em 0; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.85em; white-space: pre; }
pre .add { color: #137333; } pre .del { color: #a50e0e; } pre .hunk { color: #1a55a5; }
.details { color: #555; font-size: 0.85em; font-family: ui-monospace, monospace; word-break: break-all; }
.run { color: #777; }
"""
MAX_MEMBERS = 2000


def _diff_block(diff: str) -> str:
    lines = []
    for line in diff.splitlines():
        cls = "add" if line.startswith("+") else "del" if line.startswith("-") else \
            "hunk" if line.startswith("@@") else ""
        text = escape(line)
        lines.append(f'<span class="{cls}">{text}</span>' if cls else text)
    return "<pre>" + "\n".join(lines) + "</pre>"


def _finding(f: Finding) -> str:
    body = f'<span class="kind">{escape(f.kind)}</span> {escape(f.explanation)}'
    diff = f.details.get("diff")
    if f.kind == "content-text" and isinstance(diff, str) and diff:
        body += _diff_block(diff)
    elif f.details:
        text = json.dumps(f.details, sort_keys=True, default=str)
        body += f'<div class="details">{escape(text[:4000])}</div>'
    return f"<li>{body}</li>"


def _summary(report: Report) -> str:
    rows = []
    for a in report.archives:
        kinds = ", ".join(f"{k} ({n})" if n > 1 else k for k, n in sorted(a.kinds().items()))
        rows.append("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in (
            a.label, a.status, human_size(a.size_a) if a.size_a is not None else "-",
            human_size(a.size_b) if a.size_b is not None else "-",
            len(a.members) if a.opened else "-", kinds or "-")) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("layer / archive", "result", "size A", "size B",
                                              "members differing", "causes"))
    return f'<table class="summary"><tr>{head}</tr>{"".join(rows)}</table>'


def _value(v: Any) -> str:
    text = json.dumps(v, sort_keys=True, default=str)
    return escape(text if len(text) <= 300 else text[:297] + "...")


def _metadata(report: Report) -> str:
    rows = []
    for meta in report.metadata:
        if meta.status in ("only-in-a", "only-in-b"):
            rows.append(f"<tr><td>{escape(meta.file)}</td><td colspan=4>{meta.status}</td></tr>")
        for f in meta.fields:
            counted = report.strict or not f.run_field
            cls = "" if counted else ' class="run"'
            note = f.explanation
            rows.append(f"<tr{cls}><td>{escape(meta.file)}</td><td>{escape(f.path)}</td><td>{_value(f.a)}</td>"
                        f"<td>{_value(f.b)}</td><td>{escape(note)}</td></tr>")
    if not rows:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("file", "field", "A", "B", "why"))
    return f"<h2>Metadata</h2><table>{head}{''.join(rows)}</table>"


def _archive(a: ArchiveReport) -> str:
    parts = [f"<h2>{escape(a.label)}: {escape(a.status)}</h2>",
             f'<p class="details">A: {escape(str(a.a))}<br>B: {escape(str(a.b))}<br>sha256 A {a.sha256_a}<br>'
             f"sha256 B {a.sha256_b}<br>members read A/B: {a.members_a}/{a.members_b}, equal (not opened further): "
             f"{a.members_equal}, analyzed: {a.analyzed}, identical xz streams skipped: {a.streams_skipped}</p>"]
    if a.findings:
        parts.append('<ul class="findings">' + "".join(_finding(f) for f in a.findings) + "</ul>")
    for member in a.members[:MAX_MEMBERS]:
        status = "" if member.status == "different" else f" ({member.status})"
        parts.append(f"<h3>{escape(member.name)}{escape(status)}</h3>")
        parts.append('<ul class="findings">' + "".join(_finding(f) for f in member.findings) + "</ul>")
    if len(a.members) > MAX_MEMBERS:
        parts.append(f"<p>... {len(a.members) - MAX_MEMBERS} more differing members (see --json)</p>")
    return "\n".join(parts)


def render_html(report: Report) -> str:
    """The whole report as one HTML document."""
    verdict_cls = "same" if report.identical else "differs"
    body = [
        f"<h1>venvstacks-docker diff</h1><p>A: <code>{escape(report.a)}</code><br>B: <code>{escape(report.b)}"
        f"</code></p>",
        f'<p id="verdict" class="verdict {verdict_cls}">{escape(report.verdict())}</p>',
        "<h2>Summary</h2>", _summary(report), _metadata(report),
        *(_archive(a) for a in report.archives if not a.identical),
        f'<p class="details">venvstacks-docker {escape(__version__)}; finding kinds are described in '
        "docs/reference/diff.md</p>",
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>diff: {escape(report.verdict())}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
