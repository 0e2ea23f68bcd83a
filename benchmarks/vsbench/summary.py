"""The numbers the report is built on: best runs, speed-ups, size totals, targets, machine load."""

from __future__ import annotations

from typing import Any

from .config import STEP_LABEL, TARGET_PUBLISH_S, TARGET_SIZE_PCT, TARGET_SPEEDUP
from .harness import Timing, best


def best_wall(results: dict[str, Any], tool: str, step: str) -> Timing | None:
    """The fastest recorded run of ``step`` by ``tool`` (None if it never succeeded)."""
    runs = results["timings"].get(tool, {}).get(step, [])
    if not runs:
        return None
    return best([Timing(**r) for r in runs])


def _step_summary(results: dict[str, Any], step: str) -> dict[str, Any]:
    """Best wall and CPU times of both tools for one step, and the speed-up."""
    vs = best_wall(results, "venvstacks", step)
    ours = best_wall(results, "ours", step)
    speedup = vs.wall_s / ours.wall_s if vs and ours and ours.wall_s > 0 else None
    return {
        "venvstacks_s": vs.wall_s if vs else None,
        "ours_s": ours.wall_s if ours else None,
        "venvstacks_cpu_s": vs.cpu_s if vs else None,
        "ours_cpu_s": ours.cpu_s if ours else None,
        "speedup": speedup,
    }


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Per-step comparison, total archive sizes, target verdicts and the container overhead."""
    summary: dict[str, Any] = {"steps": {step: _step_summary(results, step) for step in STEP_LABEL}}
    sizes = results.get("archive_sizes", {})
    vs_sizes, our_sizes = sizes.get("venvstacks", {}), sizes.get("ours", {})
    total_vs, total_ours = sum(vs_sizes.values()), sum(our_sizes.values())
    size_pct = (total_ours - total_vs) / total_vs * 100 if total_vs and total_ours else None
    summary["size_total"] = {"venvstacks": total_vs, "ours": total_ours, "pct": size_pct}
    clean = summary["steps"]["build-clean"]["speedup"]
    publish = summary["steps"]["publish"]["ours_s"]
    summary["targets"] = {
        "clean_speedup": None if clean is None else clean >= TARGET_SPEEDUP,
        "size": None if size_pct is None else size_pct <= TARGET_SIZE_PCT,
        "publish_unchanged": None if publish is None else publish < TARGET_PUBLISH_S,
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
