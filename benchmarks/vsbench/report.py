"""Rendering docs/benchmarks.md from a run's results with ``templates/benchmarks.md.j2``.

The template holds the text and layout; the functions here turn the results into the
values it shows (one small function per part of the report) and format numbers.
Sections other benchmarks write into the same file between their own markers
(``<!-- NAME: start -->`` … ``<!-- NAME: end -->``) are carried over from the previous report
by ``keep_sections``.
"""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext

from . import config
from .config import (
    EDITED_APP,
    EDITED_MODULE,
    NEWEST,
    RELEASE,
    RUNTIME_VERSION,
    STAGE_NAME,
    STEP_LABEL,
    TOOL_LABEL,
    TOOLS,
    VENVSTACKS,
    WORK,
)
from .harness import shown_path
from .summary import best_wall, contended_now, other_work, summarize

TEMPLATES = Path(__file__).resolve().parent / "templates"
# sections other scripts own in the report: <!-- NAME: start --> ... <!-- NAME: end -->
SECTION_START = re.compile(r"<!-- ([\w-]+): start -->")

# why the archives' contents differ: (test on the entries only in venvstacks' / only in ours, text
# with {version} and {installer} for the venvstacks release)
CONTENT_REASONS = [
    (lambda only_vs, only_ours: any(n.startswith("share/venv/dynlib/") or n == "bin/python_" for n in only_vs),
     "venvstacks {version} made `share/venv/dynlib/` links (or a `bin/python_` link) that venvstacks-docker did "
     "not: both link a layer's shared libraries for the layers above, but venvstacks-docker never links an "
     "extension module, whatever Python version its name is tagged for (see "
     "docs/explanation/shared-libraries.md)"),
    (lambda only_vs, only_ours: any(n.startswith("share/venv/dynlib/") or n == "bin/python_" for n in only_ours),
     "venvstacks-docker made `share/venv/dynlib/` links (or a `bin/python_` link) that venvstacks {version} did "
     "not"),
    (lambda only_vs, only_ours: any(n.endswith(("/INSTALLER", "/REQUESTED")) for n in only_vs),
     "`INSTALLER`/`REQUESTED` files are written by {installer}, which venvstacks {version} installs with; "
     "venvstacks-docker's archives have neither"),
    (lambda only_vs, only_ours: any(n.startswith("bin/") for n in only_ours),
     "venvstacks {version} deletes everything in a layer's `bin/` whose name does not start with `python`, the "
     "runtime's own `2to3`/`idle3`/`pydoc3` scripts included; venvstacks-docker keeps those (they are "
     "relocatable `/bin/sh` trampolines in this runtime)"),
]


# --------------------------------------------------------------------------- formatting


def fmt_s(value: float | None) -> str:
    """Seconds with two decimals, or n/a."""
    return "n/a" if value is None else f"{value:.2f} s"


def fmt_size(n: int | None) -> str:
    """Bytes as MiB, KiB or B, or n/a."""
    if n is None:
        return "n/a"
    if n >= 1024 * 1024:
        return f"{n / 1024 / 1024:.2f} MiB"
    if n >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n} B"


def verdict(ok: bool | None) -> str:
    """A target's verdict in bold."""
    return {True: "**met**", False: "**not met**", None: "**not measured**"}[ok]


def short_hash(value: str | None) -> str:
    """The first 12 hex digits of a module hash (any ``algo:`` or ``algo/`` prefix dropped)."""
    return f"`{value.split(':')[-1].split('/')[-1][:12]}…`" if value else "n/a"


def triple(values: list[float]) -> str:
    """A 1/5/15 minute load average."""
    return f"{values[0]:.2f} / {values[1]:.2f} / {values[2]:.2f}"


def _sample(names: list[str]) -> str:
    """How many names, and the first four of them."""
    if not names:
        return "-"
    shown = ", ".join(f"`{n}`" for n in names[:4])
    return f"{len(names)}: {shown}" + (", …" if len(names) > 4 else "")


# --------------------------------------------------------------------------- parts of the report


def _versions(results: dict[str, Any]) -> dict[str, Any]:
    """The tool versions table: per venvstacks release its origin and libraries, ours with its commit."""
    git = results["git"]
    note = f" (working tree had uncommitted changes in: {', '.join(git['dirty_files'])})" if git["dirty_files"] else ""
    if git.get("measured"):
        note += f"; measured: {git['measured']}"
    if (git.get("head_at_end") and not git["commit"].startswith(git["head_at_end"][:7])
            and git.get("measured", "").startswith("snapshot")):
        note += f"; HEAD moved to `{git['head_at_end'][:7]}` during the run, which does not affect the snapshot"
    versions = results["versions"]
    rows = [[TOOL_LABEL[key], f"{versions[key]['version']} (pdm {versions[key]['pdm']}, pbs-installer "
             f"{versions[key]['pbs_installer']}); from {RELEASE[key].origin}", versions[key]["uv"]]
            for key in VENVSTACKS if key in versions]
    rows.append(["venvstacks-docker", f"{versions['ours']['version']}, commit `{git['commit']}`{note}",
                 versions["ours"]["uv"]])
    runtime = results["runtime_archive"]
    return {"version_rows": rows, "runtime_name": Path(runtime["path"]).name}


def _speedup(value: float | None) -> str:
    """A speed-up as ``1.23x``, or n/a."""
    return "n/a" if value is None else f"{value:.2f}x"


def _rounds_won(results: dict[str, Any], key: str, step: str) -> tuple[int, int] | None:
    """In how many rounds of ``step`` ours was faster than ``key`` (None unless both ran every round)."""
    ours = results["timings"].get("ours", {}).get(step, [])
    theirs = results["timings"].get(key, {}).get(step, [])
    if len(ours) < 2 or len(ours) != len(theirs) or len(ours) != results.get("lock_repeat", len(ours)):
        return None
    return sum(a["wall_s"] < b["wall_s"] for a, b in zip(ours, theirs, strict=True)), len(ours)


def _timings(results: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """The timings table, the load range before the commands and the list of all runs."""
    rows = []
    for step, label in STEP_LABEL.items():
        s = summary["steps"][step]
        other = [s["other"][tool] for tool in TOOLS]
        rows.append([label, *(fmt_s(s["wall"][tool]) for tool in TOOLS),
                     *(_speedup(s["speedup"][key]) for key in VENVSTACKS),
                     " / ".join("n/a" if s["cpu"][tool] is None else f"{s['cpu'][tool]:.2f}" for tool in TOOLS),
                     " / ".join("n/a" if o is None else f"{o:.2f}" for o in other)])
    per_tool = [(tool, results["timings"].get(tool, {})) for tool in (*TOOLS, "ours-container")]
    loads = [r["load_1m_before"] for _, steps in per_tool for runs in steps.values() for r in runs]
    all_runs = "; ".join(f"{TOOL_LABEL[tool]} {step}: " + ", ".join(format(r["wall_s"], ".2f") for r in runs)
                         for tool, steps in per_tool for step, runs in steps.items() if runs)
    lock = summary["steps"]["lock"]
    return {"timing_rows": rows, "loads": loads, "all_runs": all_runs, "lock": lock,
            "lock_rounds": {key: _rounds_won(results, key, "lock") for key in VENVSTACKS},
            "lock_slower": {key: lock["speedup"][key] is not None and lock["speedup"][key] < 1
                            for key in VENVSTACKS}}


def _container(results: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """The container paragraph: best times, the pairs, whether the archives are identical."""
    container = results.get("container", {})
    cont = best_wall(results, "ours-container", "build-clean-paired")
    native = best_wall(results, "ours", "build-clean-paired")
    if not (container.get("measured") and cont and native):
        return {"measured": False, "reason": container.get("reason", "not attempted")}
    pairs = list(zip(results["timings"]["ours"].get("build-clean-paired", []),
                     results["timings"]["ours-container"].get("build-clean-paired", []), strict=False))
    pcts = [(c["wall_s"] - n["wall_s"]) / n["wall_s"] * 100 for n, c in pairs]
    native_sha = container.get("native_archive_sha256", {})
    mismatches = ", ".join(f"{k} {v[:12]}… vs {native_sha.get(k, '-')[:12]}…"
                           for k, v in container.get("archive_sha256", {}).items() if native_sha.get(k) != v)
    rough = contended_now(results) or (pcts and max(pcts) - min(pcts) > 10)
    native_runs = [*results["timings"]["ours"].get("build-clean", []),
                   *results["timings"]["ours"].get("build-clean-paired", [])]
    return {
        "measured": True, "best": cont.wall_s, "native": native.wall_s,
        "overhead": summary["container_overhead_pct"],
        "pairs": ", ".join(f"{c['wall_s']:.1f} s vs {n['wall_s']:.1f} s ({pct:+.0f} %)"
                           for (n, c), pct in zip(pairs, pcts, strict=True)),
        "identical": container.get("byte_identical_to_native"), "mismatches": mismatches,
        "rough": rough, "low": min(pcts) if rough else None, "high": max(pcts) if rough else None,
        "native_range": " and ".join(f"{f(r['wall_s'] for r in native_runs):.1f} s" for f in (min, max)),
    }


def _sizes(results: dict[str, Any]) -> list[list[str]]:
    """Rows of the archive size table (the total row is in the template)."""
    sizes = {tool: results.get("archive_sizes", {}).get(tool, {}) for tool in TOOLS}
    rows = []
    for name in sorted(set().union(*sizes.values())):
        got = {tool: sizes[tool].get(name) for tool in TOOLS}
        ours = got["ours"]
        rows.append([name, *(f"{fmt_size(n)} ({n if n is not None else '-'} B)" for n in got.values()),
                     *(f"{(ours - got[key]) / got[key] * 100:+.2f} %" if got[key] and ours else "n/a"
                       for key in VENVSTACKS)])
    return rows


def _contents(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per venvstacks release: the archive contents table against ours and why the contents differ."""
    out = []
    for key, contents in results.get("archive_contents", {}).items():
        version = RELEASE[key].version
        rows = [[name, f"{c['entries'][0]} / {c['entries'][1]}",
                 f"{fmt_size(c['uncompressed'][0])} / {fmt_size(c['uncompressed'][1])}",
                 _sample(c["only_venvstacks"]), _sample(c["only_ours"]), str(len(c["same_name_different_size"]))]
                for name, c in contents.items()]
        only_vs = {n for c in contents.values() for n in c["only_venvstacks"]}
        only_ours = {n for c in contents.values() for n in c["only_ours"]}
        reasons = [text.format(version=version, installer=RELEASE[key].installer)
                   for test, text in CONTENT_REASONS if test(only_vs, only_ours)]
        differing = sorted({n.rstrip("/").rsplit("/", 1)[-1] for c in contents.values()
                            for n in c["same_name_different_size"]})
        shown = (", ".join(f"`{n}`" for n in differing[:10]) + (", …" if len(differing) > 10 else "")
                 if differing else "none")
        out.append({"label": TOOL_LABEL[key], "version": version, "rows": rows, "reasons": reasons,
                    "differing": shown})
    return out


def _pins(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per venvstacks release: whether it locked the same versions as ours, and per layer what differs."""
    pins = results.get("locked_packages", {})
    out = []
    for key in VENVSTACKS:
        if not (pins.get(key) and pins.get("ours")):
            continue
        differences = []
        for layer in sorted(set(pins[key]) | set(pins["ours"])):
            a, b = set(pins[key].get(layer, [])), set(pins["ours"].get(layer, []))
            if a != b:
                differences.append(f"{layer}: {TOOL_LABEL[key]} only {sorted(a - b)}, ours only {sorted(b - a)}")
        out.append({"label": TOOL_LABEL[key], "same": pins[key] == pins["ours"], "differences": differences})
    return out


def _targets(results: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """The targets table, where the clean build time went, and what the unchanged publish rewrote."""
    clean = summary["steps"]["build-clean"]
    oldest = VENVSTACKS[0]
    clean_text = "n/a" if clean["speedup"][oldest] is None else f"{clean['speedup'][oldest]:.2f}x wall clock"
    if clean["cpu_ratio"][oldest]:
        clean_text += f" ({clean['cpu_ratio'][oldest]:.2f}x in CPU time)"
    lock = summary["steps"]["lock"]
    lock_text = "n/a"
    if lock["speedup"][NEWEST] is not None:
        lock_text = (f"best {lock['wall']['ours']:.2f} s vs {lock['wall'][NEWEST]:.2f} s "
                     f"({lock['speedup'][NEWEST]:.2f}x); median {lock['median']['ours']:.2f} s vs "
                     f"{lock['median'][NEWEST]:.2f} s; CPU {lock['cpu']['ours']:.2f} s vs {lock['cpu'][NEWEST]:.2f} s")
    runs = {tool: best_wall(results, tool, "build-clean") for tool in TOOLS}
    rewrote = results.get("publish_unchanged_rewrote", {})
    return {
        "clean_text": clean_text, "lock_text": lock_text,
        "cpu": [(TOOL_LABEL[tool], runs[tool]) for tool in TOOLS] if all(
            t and t.cpu_s > 0 for t in runs.values()) else None,
        "rewrote": [(TOOL_LABEL[tool], rewrote[tool]) for tool in TOOLS if tool in rewrote],
    }


def _edit(results: dict[str, Any]) -> dict[str, Any]:
    """The launch-module edit table and whether each tool picked the edit up."""
    findings = results.get("edit_findings", {})
    rows = [[TOOL_LABEL[tool], short_hash(f["hash_before"]), short_hash(f["hash_after"]),
             short_hash(f["expected_hash"]),
             ("yes" if f["archive_sha_before"] != f["archive_sha_after"] else "no")
             + (f" ({', '.join(f['new_or_rewritten'])})" if f["new_or_rewritten"] else ""),
             "**yes**" if f["picked_up"] else "**no**"]
            for tool in TOOLS for f in findings.get(tool, [])]
    stale = [TOOL_LABEL[key] for key in VENVSTACKS
             if findings.get(key) and not any(f["picked_up"] for f in findings[key])]
    ours_edit = findings.get("ours", [])
    return {"edit_rows": rows, "vs_stale": stale,
            "ours_missed": bool(ours_edit) and not all(f["picked_up"] for f in ours_edit)}


def _method(results: dict[str, Any]) -> dict[str, Any]:
    """Spec adjustments per tool, notes and errors (last 10 lines of each failed command's log)."""
    changes = [f"{TOOL_LABEL.get(tool, tool)}: {item}"
               for tool, items in results.get("spec_changes", {}).items() for item in items]
    errors = [dict(e, label=TOOL_LABEL.get(e["tool"], e["tool"]), tail_lines=e["tail"].splitlines()[-10:])
              for e in results["errors"]]
    return {"spec_changes": changes, "notes": results.get("notes") or [], "errors": errors}


# --------------------------------------------------------------------------- rendering


class _JoinLines(jinja2.ext.Extension):
    """A backslash at the end of a template line joins the next line to it, minus its indentation."""

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        return re.sub(r"\\\n[ \t]*", "", source)


def _environment() -> jinja2.Environment:
    """The Jinja2 environment of the report template, with the formatting helpers as filters."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), extensions=[_JoinLines], undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False,
    )
    env.filters.update(s=fmt_s, size=fmt_size, verdict=verdict, triple=triple)
    return env


def _minutes(results: dict[str, Any]) -> int | None:
    """How long the run took, in whole minutes."""
    try:
        started, finished = (_dt.datetime.fromisoformat(results[k]) for k in ("started", "finished"))
    except (KeyError, ValueError):
        return None
    return round((finished - started).total_seconds() / 60)


def render_report(results: dict[str, Any], json_path: str | None) -> str:
    """The Markdown report for ``results`` (which gains a ``summary`` entry)."""
    summary = summarize(results)
    results["summary"] = summary
    other = other_work(results)
    context: dict[str, Any] = {
        "r": results, "m": results["machine"], "summary": summary,
        "contended": contended_now(results), "other_min": min(other, default=0), "other_max": max(other, default=0),
        "json_path": json_path, "config": config, "RUNTIME_VERSION": RUNTIME_VERSION, "STAGE_NAME": STAGE_NAME,
        "EDITED_MODULE": EDITED_MODULE, "EDITED_APP": EDITED_APP, "WORK": results.get("work_dir", shown_path(WORK)),
        "minutes": _minutes(results),
        "TOOLS": TOOLS, "VENVSTACKS": VENVSTACKS, "NEWEST": NEWEST, "RELEASE": RELEASE, "LABEL": TOOL_LABEL,
        "versions": [RELEASE[key].version for key in VENVSTACKS], "tool_labels": [TOOL_LABEL[t] for t in TOOLS],
        "size_pct": {key: "n/a" if pct is None else f"{pct:+.2f} %"
                     for key, pct in summary["size_total"]["pct"].items()},
        "container": _container(results, summary), "size_rows": _sizes(results),
        "contents": _contents(results), "pins": _pins(results),
        **_versions(results), **_timings(results, summary),
        **_targets(results, summary), **_edit(results), **_method(results),
    }
    return _environment().get_template("benchmarks.md.j2").render(context)


def keep_sections(report: str, previous: str | None) -> str:
    """``report`` with the sections other scripts wrote into ``previous`` (between their markers) appended."""
    if not previous:
        return report
    for match in SECTION_START.finditer(previous):
        end = f"<!-- {match.group(1)}: end -->"
        if match.group(0) in report or end not in previous[match.end():]:
            continue
        block = previous[match.start():previous.index(end, match.end()) + len(end)]
        report = report.rstrip("\n") + "\n\n" + block + "\n"
    return report
