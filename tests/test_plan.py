"""The plan: what each command will do, decided without running anything.

Pure and fast: the sample project's spec and committed locks are read, nothing is
written.  The selection rules are venvstacks 0.8's (see
../shared/reference/venvstacks-0.8-behaviour.md, "--include" and the
``--*-dependencies``/``--*-derived`` flags).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _helpers import SAMPLE

from venvstacks_docker import plan, spec
from venvstacks_docker.errors import SpecError

RT, SKL, REP = "cpython-3.11", "framework-sklearn", "framework-reporting"
CLS, CLU, RPT = "app-classification-demo", "app-clustering-demo", "app-report-demo"


@pytest.fixture(scope="module")
def stack() -> spec.StackSpec:
    return spec.load(SAMPLE / "venvstacks.toml")


@pytest.fixture
def where(tmp_path: Path) -> plan.Where:
    return plan.Where(platform="linux_x86_64", build_dir=tmp_path / "build", output_dir=tmp_path / "out")


def names(p: plan.Plan) -> list[str]:
    return [s.layer_name for s in p.steps]


def test_build_selection_adds_what_the_selected_layers_need(stack, where) -> None:  # type: ignore[no-untyped-def]
    p = plan.plan_build(stack, plan.Selection(include=("app-report-*",)), where, publish=True)
    assert names(p) == [RT, SKL, REP, RPT]
    assert p.operations[RPT] == ["build", "publish"]
    assert p.operations[SKL] == ["build-if-needed"]  # needed, not selected: brought up to date only
    reasons = {s.layer_name: s.reason for s in p.steps}
    assert reasons[RPT] == "matches --include" and reasons[SKL] == "needed by a selected layer"
    assert p.layers_with("publish") == [RPT]


def test_build_flags_widen_the_selection(stack, where) -> None:  # type: ignore[no-untyped-def]
    sel = plan.Selection(include=(SKL,), build_derived=True, publish_dependencies=True)
    p = plan.plan_build(stack, sel, where, lock_if_needed=True, publish=True)
    assert names(p) == [RT, SKL, REP, CLS, CLU, RPT]
    assert all(ops[0] == "lock-if-needed" for ops in p.operations.values())
    assert p.layers_with("publish") == [RT, SKL]  # the selection plus what it needs
    assert p.needs_network and p.writes_output and not p.dry_run


def test_lock_with_include_relocks_the_layers_built_on_the_selection(stack, where) -> None:  # type: ignore[no-untyped-def]
    p = plan.plan_lock(stack, plan.Selection(include=(REP,)), where)
    assert p.operations == {RT: ["lock-if-needed"], SKL: ["lock-if-needed"], REP: ["lock"], RPT: ["lock"]}
    p = plan.plan_lock(stack, plan.Selection(include=(REP,), lock_dependencies=True), where, if_needed=True)
    assert p.operations == {RT: ["lock"], SKL: ["lock"], REP: ["lock-if-needed"]}
    p = plan.plan_lock(stack, plan.Selection(), where, reset_lock=("app-*",))
    assert p.reset_lock == (CLS, CLU, RPT) and p.operations[CLS] == ["lock"]


def test_publish_and_export_select_the_same_way(stack, where) -> None:  # type: ignore[no-untyped-def]
    sel = plan.Selection(include=(REP,), publish_derived=True)
    assert names(plan.plan_publish(stack, sel, where)) == [REP, RPT]
    export = plan.plan_export(stack, sel, where)
    assert names(export) == [REP, RPT] and export.layers_with("export") == [REP, RPT]


def test_layers_not_targeting_the_platform_are_skipped(stack, where) -> None:  # type: ignore[no-untyped-def]
    mac = plan.Where(platform="macosx_arm64", build_dir=where.build_dir, output_dir=where.output_dir)
    p = plan.plan_publish(stack, plan.Selection(), mac)
    assert p.steps == () and RT in p.skipped  # the sample stack targets linux_x86_64 only


def test_a_pattern_matching_nothing_is_one_clear_error(stack, where) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SpecError, match="--include 'app-nope' matches no layer") as caught:
        plan.plan_build(stack, plan.Selection(include=("app-nope",)), where)
    assert caught.value.hint is not None and RPT in caught.value.hint
    p = plan.plan_build(stack, plan.Selection(include=("app-nope", RPT), allow_missing=True), where)
    assert RPT in names(p)


def test_a_plan_survives_its_trip_into_a_container(stack, where) -> None:  # type: ignore[no-untyped-def]
    p = plan.plan_build(stack, plan.Selection(include=("app-*",)), where, lock_if_needed=True, publish=True,
                        tag_outputs=True)
    wire = json.loads(json.dumps(p.to_dict()))
    assert plan.Plan.from_dict(wire) == p
    with pytest.raises(SpecError, match="same tool version"):
        plan.Plan.from_dict({**wire, "plan_version": 99})


def test_show_lists_the_matches_with_what_they_need_and_what_needs_them(stack) -> None:  # type: ignore[no-untyped-def]
    related = [layer.env_name for layer in plan.related(stack, (REP,), False)]
    assert related == [RT, SKL, REP, RPT]
