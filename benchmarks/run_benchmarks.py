#!/usr/bin/env python3
"""Benchmark venvstacks-docker against venvstacks 0.7.0 and 0.8.0 on ``sample_project``.

Run from the repository root with the project's dev venv::

    .venv/bin/python benchmarks/run_benchmarks.py [--quick] [--repeat N] [--lock-repeat N]
        [--output docs/benchmarks.md] [--json results.json]

One run does everything on this machine:

1. creates (or reuses) venvs under the work folder (``benchmarks/.work/``, or
   ``$VSBENCH_WORK_DIR``): venvstacks 0.7.0 from PyPI, pinned by
   ``benchmarks/venvstacks-0.7.0-constraints.txt``; venvstacks 0.8.0 from the wheel in
   ``../shared/venvstacks-0.8.0/`` (or ``$VSBENCH_VENVSTACKS_080_DIR``), pinned by the
   ``constraints.txt`` next to it; and a snapshot of this checkout's committed HEAD (so
   concurrent edits in the checkout cannot change the tool being measured half-way;
   ``--ours dev`` uses the editable ``.venv`` install instead);
2. finds the CPython 3.11.2 ``install_only`` runtime archive this project builds (the
   venvstacks-docker cache; built with ``scripts/build-python-runtime`` when missing);
3. copies ``sample_project`` (spec and launch modules only) into one work folder per tool and
   stages the unpacked runtime at ``<build-dir>/cpython@3.11.2/`` for both venvstacks releases,
   which cannot download python-build-standalone here (no GitHub access);
4. times, for the three tools, with warm package caches: a fresh lock, a clean build+publish, a
   publish of the unchanged stack and a build+publish after editing one launch module; records
   the archive sizes; optionally times a clean build+publish in our builder container;
5. writes a Markdown report, and the raw results as JSON next to it (``docs/benchmarks.json``
   for ``docs/benchmarks.md``), to ``last-results.json`` in the work folder and to ``--json``.

Only wall-clock time is compared (``time.perf_counter`` around each command); the CPU time of
the command's process tree (``getrusage(RUSAGE_CHILDREN)``) is recorded as well because it is
much less sensitive to other load on the machine.

``--report-only RESULTS_JSON`` renders the report again from saved results without measuring.
Either way the sections other benchmarks keep in the report between their own markers
(``<!-- NAME: start -->`` … ``<!-- NAME: end -->``: ``bench_spec_loading.py``'s, ``bench_diff.py``'s,
``bench_bundle.py``'s) are carried over from the existing file.

The pieces live in ``benchmarks/vsbench/``: the harness (``harness``, ``session``, ``tools``,
``projects``), what is measured (``scenarios``) and the report (``summary``, ``report`` and
``templates/benchmarks.md.j2``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from vsbench import scenarios
from vsbench.config import ROOT, TOOL_LABEL, WORK
from vsbench.harness import log
from vsbench.report import fmt_s, keep_sections, render_report
from vsbench.session import Bench


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one run per step, skip the container measurement")
    parser.add_argument("--repeat", type=int, default=1, help="run each timed step N times, report the best")
    parser.add_argument("--lock-repeat", type=int, default=None,
                        help="run the (short) lock step N times instead (default: as --repeat)")
    parser.add_argument("--no-container", action="store_true", help="skip the builder-container measurement")
    parser.add_argument("--ours", choices=("snapshot", "dev"), default="snapshot",
                        help="venvstacks-docker to measure: a snapshot of the committed HEAD installed into "
                             "its own venv (default), or the editable dev install in .venv")
    parser.add_argument("--output", default="docs/benchmarks.md",
                        help="Markdown report (relative to the repo root); the raw results are written next "
                             "to it with the suffix .json")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the raw results as JSON")
    parser.add_argument("--note", action="append", default=[],
                        help="a remark to print in the report's Notes section (repeatable; kept in the results)")
    parser.add_argument("--report-only", metavar="RESULTS_JSON", default=None,
                        help="only re-render the report from saved raw results (no measuring)")
    return parser.parse_args(argv)


def _in_repo(path: str) -> Path:
    """``path`` as given if absolute, else relative to the repository root."""
    return Path(path) if Path(path).is_absolute() else ROOT / path


def _write_json(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run every scenario; the results (also saved to last-results.json in the work folder)."""
    shutil.rmtree(WORK / "logs", ignore_errors=True)
    bench = Bench(args)
    bench.setup()
    scenarios.measure_all(bench)
    results = bench.finish()
    results["notes"] = list(args.note)
    settings = "".join(f"{name}={os.environ[name]} " for name in ("VSBENCH_WORK_DIR", "VSBENCH_VENVSTACKS_080_DIR")
                       if os.environ.get(name))
    results["command"] = settings + " ".join([".venv/bin/python benchmarks/run_benchmarks.py", *sys.argv[1:]])
    # saved before rendering, so a rendering problem never costs a measurement run
    _write_json(WORK / "last-results.json", results)
    return results


def write_report(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """Render the report over the old one (keeping other benchmarks' sections), write the results."""
    report = render_report(results, args.json_path)
    output = _in_repo(args.output)
    previous = output.read_text(encoding="utf-8") if output.is_file() else None
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(keep_sections(report, previous))
    log(f"report written to {output}")
    _write_json(output.with_suffix(".json"), results)
    log(f"raw results written to {output.with_suffix('.json')}")
    if args.json_path:
        json_out = _in_repo(args.json_path)
        _write_json(json_out, results)
        log(f"raw results written to {json_out}")


def main(argv: list[str] | None = None) -> int:
    """Measure (or load saved results), write the report; non-zero if any command failed."""
    args = parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        results = json.loads(Path(args.report_only).read_text())
        results["notes"] = list(results.get("notes", [])) + list(args.note)
    else:
        results = measure(args)
    write_report(args, results)
    s = results["summary"]
    for step, data in s["steps"].items():
        times = ", ".join(f"{TOOL_LABEL[tool]} {fmt_s(wall)}" for tool, wall in data["wall"].items())
        speedups = ", ".join(f"vs {TOOL_LABEL[key]} " + ("n/a" if value is None else f"{value:.2f}x")
                             for key, value in data["speedup"].items())
        log(f"{step}: {times}; speed-up {speedups}")
    log(f"targets: {s['targets']}")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
