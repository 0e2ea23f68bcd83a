"""Run an audit (:mod:`venvstacks_docker.audit_plan`) and judge every layer under every variation.

Each run publishes its own copy of the stack (:mod:`venvstacks_docker.audit_runs`);
the reference runs first, then the others, and each run's output folder is compared
with the reference's by :func:`venvstacks_docker.diffing.compare_outputs` (archives and
metadata; fields that describe the run rather than the result, such as the builder
image, are reported but not held against it).  A combined run that differs is followed
by one run per variation it combined, to name the variation responsible.

The reference publication also gets the ELF policy check (:mod:`venvstacks_docker.elf_policy`)
with each layer's ``linux_target`` from the stack file; its violations are reported
(``elf_policy`` in the JSON, a note) but never change the audit's verdict.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from venvstacks_docker import ui
from venvstacks_docker.audit_plan import AuditPlan, Run
from venvstacks_docker.audit_runs import Prepared, prepare, run_root
from venvstacks_docker.errors import LockError
from venvstacks_docker.locking import RUN_ID
from venvstacks_docker.metadata import envelope
from venvstacks_docker.spec import StackSpec

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class RunResult:
    """What one run gave: its status and, per layer, identical or different."""

    run: Run
    status: str = "not-run"
    """``identical``, ``different``, ``failed`` or ``not-needed``."""
    seconds: float = 0.0
    layers: dict[str, str] = field(default_factory=dict)
    diff: dict[str, Any] | None = None
    error: str | None = None
    log_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON data of this run."""
        return {"name": self.run.name, "variations": list(self.run.variations), "where": self.run.where,
                "follow_up": self.run.follow_up, "status": self.status, "seconds": round(self.seconds, 1),
                "layers": self.layers, "diff": self.diff, "error": self.error, "log_file": self.log_file}


@dataclass(kw_only=True)
class AuditReport:
    """Every run of an audit, and a verdict per variation and layer."""

    plan: AuditPlan
    results: list[RunResult]
    elf_policy: dict[str, Any] | None = None
    """The ELF policy check of the reference publication (``None`` when it did not publish)."""

    @property
    def identical(self) -> bool:
        """Everything that ran gave the reference's bytes, and nothing failed."""
        return all(r.status in ("identical", "not-needed") for r in self.results if r.run.name != "reference")

    def verdicts(self) -> dict[str, dict[str, str]]:
        """Variation -> layer -> identical/different, from the run that isolates it best."""
        out: dict[str, dict[str, str]] = {}
        for result in self.results:
            if result.status not in ("identical", "different") or result.run.name == "reference":
                continue
            for variation in result.run.variations:
                alone = len(result.run.variations) == 1
                if variation not in out or alone:
                    out[variation] = dict(result.layers)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The ``audit --json`` output (envelope ``venvstacks-docker/audit``)."""
        return envelope("audit", {"identical": self.identical, "plan": self.plan.to_dict(),
                                  "runs": [r.to_dict() for r in self.results], "verdicts": self.verdicts(),
                                  "skipped": self.plan.skipped, "elf_policy": self.elf_policy})


def check_locks(spec: StackSpec, include: tuple[str, ...]) -> None:
    """An audit publishes the committed locks: they must be valid.

    :raises LockError: naming the layers to lock first.
    """
    from venvstacks_docker import lock as _lock
    from venvstacks_docker.plan import select

    stale = [layer.env_name for layer in select(spec, include, False) if _lock.lock_problems(spec, layer)]
    if stale:
        raise LockError(f"an audit publishes the committed locks, and these are out of date: {', '.join(stale)}",
                        hint="lock first: `venvstacks-docker lock --if-needed` (an audit never relocks)")


def _execute(prepared: Prepared, run: Run) -> tuple[int, str]:
    log_file = prepared.root / "run.log"
    with log_file.open("w", encoding="utf-8") as out:
        proc = subprocess.run(prepared.argv, env=prepared.env, preexec_fn=prepared.preexec,
                              stdout=out, stderr=subprocess.STDOUT, check=False)
    return proc.returncode, str(log_file)


def _compare(reference: Path, output: Path) -> dict[str, Any]:
    from venvstacks_docker.diffing import compare_outputs

    report = compare_outputs(reference, output)
    return {"identical": report.identical, "layers": report.layer_verdicts(), "report": report.to_dict()}


def _run_one(spec: StackSpec, run: Run, work_dir: Path, include: tuple[str, ...],
             reference: Path | None) -> tuple[RunResult, Path]:
    result = RunResult(run=run)
    prepared = prepare(spec, run, run_root(work_dir, run, RUN_ID), include)
    start = time.monotonic()
    code, result.log_file = _execute(prepared, run)
    result.seconds = time.monotonic() - start
    if code != 0:
        result.status = "failed"
        tail = Path(result.log_file).read_text(encoding="utf-8", errors="replace").strip().splitlines()[-8:]
        result.error = f"exit {code}: " + " / ".join(tail)
        return result, prepared.output_dir
    if reference is None:
        result.status = "identical"  # the reference is identical to itself
        return result, prepared.output_dir
    compared = _compare(reference, prepared.output_dir)
    result.status = "identical" if compared["identical"] else "different"
    result.layers = compared["layers"]
    result.diff = None if compared["identical"] else compared["report"]
    return result, prepared.output_dir


def _follow_ups(plan: AuditPlan, parent: str) -> list[Run]:
    return [r for r in plan.runs if r.follow_up and r.name.startswith(parent + ":")]


def _say(result: RunResult) -> None:
    what = ", ".join(result.run.variations) or "no variations"
    ui.current().step(f"{result.run.name} ({what}): {result.status} in {result.seconds:.0f}s")


def run_audit(plan: AuditPlan, spec: StackSpec, *, work_dir: Path, jobs: int = 1, keep: bool = False) -> AuditReport:
    """Run ``plan``: the reference first, then the runs (``jobs`` at a time), then follow-ups.

    The builder images the container runs need must exist or be buildable (the CLI
    bootstraps the other Debian base first when the plan varies it).
    """
    check_locks(spec, plan.include)
    results: dict[str, RunResult] = {}
    with ui.current().phase("reference run"):
        reference, ref_out = _run_one(spec, plan.runs[0], work_dir, plan.include, None)
    results["reference"] = reference
    _say(reference)
    if reference.status == "failed":
        return AuditReport(plan=plan, results=list(results.values()))
    elf_policy = _elf_policy(spec, ref_out)
    main = [r for r in plan.runs[1:] if not r.follow_up]
    with ui.current().phase("audit runs"), ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for result, _out in pool.map(lambda r: _run_one(spec, r, work_dir, plan.include, ref_out), main):
            results[result.run.name] = result
            _say(result)
    for parent in main:
        for follow in _follow_ups(plan, parent.name):
            if results[parent.name].status != "different":
                results[follow.name] = RunResult(run=follow, status="not-needed")
                continue
            result, _out = _run_one(spec, follow, work_dir, plan.include, ref_out)
            results[follow.name] = result
            _say(result)
    if not keep:
        _clean(work_dir)
    ordered = [results[r.name] for r in plan.runs if r.name in results]
    return AuditReport(plan=plan, results=ordered, elf_policy=elf_policy)


def _elf_policy(spec: StackSpec, out: Path) -> dict[str, Any] | None:
    """The ELF policy check of the reference publication, with a note when it finds something."""
    from venvstacks_docker.elf_policy import ElfOptions, Targets
    from venvstacks_docker.verify import verify_output_dir

    report = verify_output_dir(out, elf=ElfOptions(targets=Targets.from_spec(spec))).elf_policy
    if report is None:
        return None
    if report.violations:
        layers = ", ".join(layer.install_target for layer in report.layers if layer.violations)
        ui.current().note(f"ELF policy: {report.violations} violation(s) in the reference publication ({layers}); "
                          "`venvstacks-docker verify --spec` on a publication of this stack lists them")
    return report.as_dict()


def _clean(work_dir: Path) -> None:
    for folder in (work_dir, Path("/dev/shm") / f"venvstacks-docker-audit-{RUN_ID}"):
        shutil.rmtree(folder, ignore_errors=True)


def layers_of(report: AuditReport) -> Iterator[str]:
    """Every layer any run judged, in first-seen order."""
    seen: dict[str, None] = {}
    for result in report.results:
        seen.update(dict.fromkeys(result.layers))
    yield from seen


__all__ = ["AuditReport", "RunResult", "check_locks", "layers_of", "run_audit"]
