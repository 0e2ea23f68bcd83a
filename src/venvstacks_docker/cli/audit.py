"""``venvstacks-docker audit``: publish a stack again and again under variations, compare."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from venvstacks_docker import audit_plan, ui
from venvstacks_docker.cli._common import SELECT, SHOW, IncludeOpt, JsonOpt, SpecArg, emit_json, load, out
from venvstacks_docker.errors import AuditDifference, CommandError
from venvstacks_docker.metadata import dumps


def register(app: typer.Typer) -> None:
    """Add ``audit`` to the program."""
    app.command()(audit)


def _engine_answers() -> bool:
    from venvstacks_docker.errors import ContainerError
    from venvstacks_docker.host.engine import connect

    try:
        connect(timeout=10).close()
    except ContainerError:
        return False
    return True


def _ensure_other_base(plan: audit_plan.AuditPlan) -> None:
    """The container run on another Debian base needs that base (made once, then reused)."""
    if not any("base-image" in run.variations for run in plan.runs):
        return
    from venvstacks_docker.host.images import bootstrap_base

    with ui.current().phase(f"Debian {audit_plan.OTHER_SUITE} base image"):
        bootstrap_base(suite=audit_plan.OTHER_SUITE, on_progress=ui.current().detail)


def audit(
    spec_path: SpecArg,
    include: IncludeOpt = None,
    vary: Annotated[list[str] | None, typer.Option(
        "--vary", metavar="NAME", rich_help_panel=SELECT,
        help="Vary only these (repeatable; default: all). Names: " + ", ".join(audit_plan.VARIATIONS))] = None,
    dont_vary: Annotated[list[str] | None, typer.Option(
        "--dont-vary", metavar="NAME", rich_help_panel=SELECT, help="Do not vary these (repeatable).")] = None,
    separately: Annotated[bool, typer.Option(
        "--separately", help="One run per variation, instead of all at once then bisecting a difference.")] = False,
    work_dir: Annotated[str, typer.Option(
        "--work-dir", metavar="DIR", help="Where the runs build and publish, relative to the stack file's folder.")
    ] = "_audit",
    keep: Annotated[bool, typer.Option("--keep", help="Keep every run's folders (else removed at the end).")] = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Runs at once (each uses every CPU it may).")] = 1,
    show_only: Annotated[bool, typer.Option("--show-only", rich_help_panel=SHOW,
                                            help="Print the runs the audit would do and stop.")] = False,
    json_output: JsonOpt = False,
    html_file: Annotated[Path | None, typer.Option(
        "--html", metavar="FILE", rich_help_panel=SHOW, help="Also write the report as one HTML page.")] = None,
) -> None:
    """Publish the stack again under varied conditions and check every archive is identical."""
    from venvstacks_docker import audit_report
    from venvstacks_docker.audit import run_audit

    spec = load(spec_path)
    chosen = audit_plan.choose(tuple(vary or ()), tuple(dont_vary or ()))
    needs_engine = any(audit_plan.VARIATIONS[n].where == "container" for n in chosen)
    plan = audit_plan.plan_audit(str(spec.path), tuple(include or ()), chosen,
                                 engine=needs_engine and _engine_answers(), separately=separately)
    if show_only:
        _show(plan, json_output)
        return
    _ensure_other_base(plan)
    folder = Path(work_dir).expanduser()
    folder = (folder if folder.is_absolute() else spec.spec_dir / folder).absolute()
    report = run_audit(plan, spec, work_dir=folder, jobs=jobs, keep=keep)
    if html_file is not None:
        html_file.write_text(audit_report.render_html(report), encoding="utf-8")
    if json_output:
        sys.stdout.write(dumps(report.to_dict()))
    else:
        out.print(audit_report.render_text(report), end="", markup=False)
    failed = [r for r in report.results if r.status == "failed"]
    if failed:
        raise CommandError(f"audit run(s) failed: {', '.join(r.run.name for r in failed)} (see above)",
                           hint="read the run's log; rerun with --keep to keep its folders")
    if not report.identical:
        raise AuditDifference("the audit found differences (above)",
                              hint="`venvstacks-docker diff` explains them member by member; --keep keeps the runs")


def _show(plan: audit_plan.AuditPlan, json_output: bool) -> None:
    if json_output:
        emit_json("audit-plan", plan.to_dict())
        return
    for run in plan.runs:
        when = " (only if its combined run differs)" if run.follow_up else ""
        out.print(f"{run.name:<24} {run.where:<9} {', '.join(run.variations) or 'no variations'}{when}",
                  markup=False)
    for name, why in plan.skipped.items():
        out.print(f"{'(not run) ' + name:<34} {why}", markup=False)
