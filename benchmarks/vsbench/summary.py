"""The numbers the report is built on: best runs, speed-ups, size totals, targets, machine load."""

from __future__ import annotations

import statistics
from typing import Any

from .config import NEWEST, STEP_LABEL, TARGET_PUBLISH_S, TARGET_SIZE_PCT, TARGET_SPEEDUP, TOOLS, VENVSTACKS
from .harness import Timing, best


def best_wall(results: dict[str, Any], tool: str, step: str) -> Timing | None:
    """The fastest recorded run of ``step`` by ``tool`` (None if it never succeeded)."""
    runs = results["timings"].get(tool, {}).get(step, [])
    if not runs:
        return None
    return best([Timing(**r) for r in runs])


def median_wall(results: dict[str, Any], tool: str, step: str) -> float | None:
    """The median wall time of ``step`` by ``tool`` over all its runs (None if it never succeeded)."""
    runs = results["timings"].get(tool, {}).get(step, [])
    return statistics.median(r["wall_s"] for r in runs) if runs else None


def _ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is zero."""
    return a / b if a is not None and b else None


def _step_summary(results: dict[str, Any], step: str) -> dict[str, Any]:
    """Per tool the best run's wall and CPU time and other work; our speed-up against each venvstacks."""
    runs = {tool: best_wall(results, tool, step) for tool in TOOLS}
    wall = {tool: t.wall_s if t else None for tool, t in runs.items()}
    cpu = {tool: t.cpu_s if t else None for tool, t in runs.items()}
    return {
        "wall": wall,
        "cpu": cpu,
        "other": {tool: t.other_cores if t else None for tool, t in runs.items()},
        "median": {tool: median_wall(results, tool, step) for tool in TOOLS},
        # venvstacks time / our time: higher is better for us
        "speedup": {key: _ratio(wall[key], wall["ours"]) for key in VENVSTACKS},
        "cpu_ratio": {key: _ratio(cpu[key], cpu["ours"]) for key in VENVSTACKS},
    }


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Per-step comparison, total archive sizes, target verdicts and the container overhead."""
    summary: dict[str, Any] = {"steps": {step: _step_summary(results, step) for step in STEP_LABEL}}
    sizes = results.get("archive_sizes", {})
    totals = {tool: sum(sizes.get(tool, {}).values()) for tool in TOOLS}
    size_pct = {key: (totals["ours"] - totals[key]) / totals[key] * 100 if totals[key] and totals["ours"] else None
                for key in VENVSTACKS}
    summary["size_total"] = {**totals, "pct": size_pct}
    steps = summary["steps"]
    clean = steps["build-clean"]["speedup"][VENVSTACKS[0]]
    publish = steps["publish"]["wall"]["ours"]
    lock = steps["lock"]["speedup"][NEWEST]
    summary["targets"] = {
        "clean_speedup": None if clean is None else clean >= TARGET_SPEEDUP,
        "size": {key: None if pct is None else pct <= TARGET_SIZE_PCT for key, pct in size_pct.items()},
        "publish_unchanged": None if publish is None else publish < TARGET_PUBLISH_S,
        "lock_vs_newest": None if lock is None else lock >= 1.0,
    }
    container = results.get("container", {})
    native_clean = best_wall(results, "ours", "build-clean-paired")
    cont = best_wall(results, "ours-container", "build-clean-paired")
    if container.get("measured") and cont and native_clean:
        summary["container_overhead_pct"] = (cont.wall_s - native_clean.wall_s) / native_clean.wall_s * 100
    return summary


def other_work(results: dict[str, Any]) -> list[float]:
    """"Other work" (cores) during every native timed command (container runs excluded)."""
    return [r.get("other_cores", 0.0) for tool, runs in results["timings"].items() if tool != "ours-container"
            for rs in runs.values() for r in rs]


def contended_now(results: dict[str, Any]) -> bool:
    """Whether other load on the machine was high enough to call the numbers noisy."""
    m = results["machine"]
    return m["load_at_start"][0] > m["nproc"] * 0.75 or max(other_work(results), default=0.0) > 0.5
