"""The audit's plan, its runs' set-up, and its verdicts (fast: nothing is built).

The end-to-end audit of sample_project under every variation is in
tests/docker/test_audit_sample.py.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
from _helpers import copy_sample

from venvstacks_docker import audit_plan, spec
from venvstacks_docker.audit import AuditReport, RunResult
from venvstacks_docker.audit_runs import LONG_NAME, copy_stack, prepare, run_root
from venvstacks_docker.errors import SpecError

HOST = ("build-path", "output-path", "umask", "timezone", "locale", "home", "clock", "file-order", "cpus",
        "spec-layout")


def test_everything_is_varied_at_once_in_as_few_runs_as_possible() -> None:
    plan = audit_plan.plan_audit("s.toml", (), audit_plan.choose((), ()), engine=True)
    main = [r for r in plan.runs if not r.follow_up]
    assert [r.name for r in main] == ["reference", "host", "container", "base-image"]
    host = next(r for r in main if r.name == "host")
    assert set(host.variations) == set(HOST) - set(plan.skipped)
    # a combined run that differs is followed by one run per variation it combined
    follow = [r.name for r in plan.runs if r.follow_up and r.name.startswith("host:")]
    assert follow == [f"host:{n}" for n in host.variations]


def test_separately_plans_one_run_per_variation() -> None:
    plan = audit_plan.plan_audit("s.toml", (), ["umask", "timezone"], engine=False, separately=True)
    assert [(r.name, r.variations) for r in plan.runs] == [
        ("reference", ()), ("umask", ("umask",)), ("timezone", ("timezone",))]


def test_what_cannot_run_here_is_left_out_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no faketime on this PATH
    plan = audit_plan.plan_audit("s.toml", (), audit_plan.choose((), ()), engine=False)
    assert "apt-get install faketime" in plan.skipped["clock"]
    assert "no container engine answers" in plan.skipped["container"]
    assert all(r.where == "host" for r in plan.runs)
    plan = audit_plan.plan_audit("s.toml", (), audit_plan.choose((), ("container",)), engine=True)
    assert "--dont-vary container" in plan.skipped["hostname"]


def test_unknown_variations_are_a_clear_error() -> None:
    with pytest.raises(SpecError, match="unknown variation 'umsak'") as caught:
        audit_plan.choose(("umsak",), ())
    assert caught.value.hint and "umask" in caught.value.hint


def test_a_run_copies_only_what_publishing_reads(tmp_path: Path) -> None:
    stack = spec.load(copy_sample(tmp_path / "sample project"))
    (stack.spec_dir / "notes.txt").write_text("not an input\n")
    (stack.spec_dir / "_build").mkdir()
    copied = copy_stack(stack, tmp_path / "copy", shuffled=True, relaid=True)
    files = sorted(str(p.relative_to(tmp_path / "copy")) for p in (tmp_path / "copy").rglob("*") if p.is_file())
    assert "notes.txt" not in files and not any(f.startswith("_build") for f in files)
    assert "venvstacks.toml" in files and any(f.startswith("requirements/") for f in files)
    assert any(f.startswith("launch_modules/report_demo/") for f in files)
    # the relaid stack file is the same stack, written in another order
    original, relaid = stack.path.read_text(), copied.read_text()
    assert original != relaid and tomllib.loads(original) == tomllib.loads(relaid)
    again = spec.load(copied)
    assert [layer.env_name for layer in again.all_layers()] == [layer.env_name for layer in stack.all_layers()]


def test_a_varied_run_gets_its_paths_environment_and_process_settings(tmp_path: Path) -> None:
    stack = spec.load(copy_sample(tmp_path / "sample project"))
    run = audit_plan.Run(name="host", variations=HOST, where="host")
    root = run_root(tmp_path / "work", run, "abc")
    assert str(root).startswith("/dev/shm/")  # file-order: a tmpfs
    try:
        prepared = prepare(stack, run, root, ("app-*",))
        assert LONG_NAME in str(prepared.spec) and prepared.output_dir.name == "published elsewhere"
        assert prepared.argv[:4] == ["faketime", "-m", "-f", "+20y"]
        assert "--native" in prepared.argv and prepared.argv[-1] == str(prepared.spec)
        assert prepared.env["TZ"] == "Pacific/Chatham" and prepared.env["LC_ALL"] == "C"
        assert prepared.env["HOME"].startswith(str(root)) and prepared.env["VENVSTACKS_DOCKER_CACHE"]
        assert prepared.preexec is not None
    finally:
        import shutil

        shutil.rmtree(root.parent, ignore_errors=True)
    container = prepare(stack, audit_plan.Run(name="c", variations=("container", "hostname", "user"),
                                              where="container"), tmp_path / "c", ())
    assert "--container" in container.argv
    assert container.env["VENVSTACKS_DOCKER_CONTAINER_HOSTNAME"] == "audit-host.audit.invalid"
    assert container.env["VENVSTACKS_DOCKER_SANDBOX_UID"] == "4242:4242"
    assert os.environ.get("TZ") == container.env.get("TZ")  # nothing else changed


def test_each_variation_is_judged_by_the_run_that_isolates_it() -> None:
    combined = audit_plan.Run(name="host", variations=("umask", "timezone"), where="host")
    alone_umask = audit_plan.Run(name="host:umask", variations=("umask",), where="host", follow_up=True)
    alone_tz = audit_plan.Run(name="host:timezone", variations=("timezone",), where="host", follow_up=True)
    plan = audit_plan.AuditPlan(spec_path="s", include=(), runs=(
        audit_plan.Run(name="reference", variations=(), where="host"), combined, alone_umask, alone_tz))
    report = AuditReport(plan=plan, results=[
        RunResult(run=plan.runs[0], status="identical"),
        RunResult(run=combined, status="different", layers={"a": "different", "b": "identical"}),
        RunResult(run=alone_umask, status="different", layers={"a": "different", "b": "identical"}),
        RunResult(run=alone_tz, status="identical", layers={"a": "identical", "b": "identical"}),
    ])
    assert not report.identical
    assert report.verdicts() == {"umask": {"a": "different", "b": "identical"},
                                 "timezone": {"a": "identical", "b": "identical"}}
    data = report.to_dict()
    assert (data["schema"], data["schema_version"]) == ("venvstacks-docker/audit", 1)


def test_the_copy_keeps_modules_named_above_the_spec_folder_in_place(tmp_path: Path) -> None:
    # venvstacks' sample_project names '../minimal_project/empty.py': the copy must hold it too
    project = tmp_path / "project"
    (project / "stack").mkdir(parents=True)
    (project / "shared").mkdir()
    (project / "shared" / "empty.py").write_text("")
    (project / "stack" / "venvstacks.toml").write_text(
        '[[runtimes]]\nname = "cpython-3.11"\npython_implementation = "cpython@3.11.13"\nrequirements = []\n'
        '[[applications]]\nname = "app"\nlaunch_module = "../shared/empty.py"\n'
        'runtime = "cpython-3.11"\nrequirements = []\n')
    stack = spec.load(project / "stack" / "venvstacks.toml")
    copied = copy_stack(stack, tmp_path / "copy", shuffled=False, relaid=False)
    assert copied == tmp_path / "copy" / "up" / "venvstacks.toml"
    assert (tmp_path / "copy" / "shared" / "empty.py").is_file()
    again = spec.load(copied)
    assert again.applications[0].launch_module.resolve() == (tmp_path / "copy" / "shared" / "empty.py").resolve()
