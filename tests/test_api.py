"""The Python API end to end: plan, lock, publish, verify and deploy from Python.

Uses the session's natively built sample project (tests/conftest.py) so nothing is
rebuilt; publishing the small application layers takes a second.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from _helpers import Published

import venvstacks_docker as vsd
from venvstacks_docker.errors import SpecError

pytestmark = [pytest.mark.slow, pytest.mark.runtime]


def test_a_stack_can_be_planned_published_verified_and_deployed_from_python(
    published_sample: Published, tmp_path: Path
) -> None:
    stack = vsd.Stack.load(published_sample.spec, build_dir=published_sample.build_dir,
                           output_dir=tmp_path / "out")
    assert stack.output_dir == tmp_path / "out" and stack.spec.path == published_sample.spec

    plan = stack.plan_publish(include=["app-*"])
    assert [step.layer_name for step in plan.steps] == [
        "app-classification-demo", "app-clustering-demo", "app-report-demo"]

    locked = stack.lock(if_needed=True)  # the committed locks are valid: nothing to do
    assert {row["status"] for row in locked.locks} == {"skipped"}

    published = stack.publish(include=["app-*"])
    assert published.published is not None
    assert {layer["status"] for layer in published.published["layers"]} == {"built"}
    report = vsd.verify_output(stack.output_dir)
    assert report.ok and len(report.layers) == 3

    # the application layers need their runtime and framework: publish those too
    stack.publish()
    result = vsd.deploy_output(stack.output_dir, tmp_path / "deployed")
    app = next(a for a in result.applications if a.layer_name == "app-report-demo")
    ran = subprocess.run([str(app.python), "-m", app.launch_module], capture_output=True, text=True, check=True)
    assert "logistic regression" in ran.stdout


def test_errors_carry_the_message_hint_and_exit_code(published_sample: Published) -> None:
    stack = vsd.Stack.load(published_sample.spec)
    with pytest.raises(SpecError, match="matches no layer") as caught:
        stack.plan_publish(include=["app-nope"])
    assert caught.value.return_code == 2 and caught.value.hint
