"""Bad folders and settings are refused before anything is written, natively and in
container mode (where the host checks before any container starts).

These run the real CLI against a copy of sample_project; nothing is built.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from _helpers import cli

CONTAINER_MODES = [("--native",), ()]  # () = the default: the builder container


def one_clear_error(result, code: int = 2) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert result.stderr.count("error:") == 1
    return " ".join(result.stderr.split())


def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize("mode", CONTAINER_MODES)
@pytest.mark.parametrize("case", ["output-in-build", "build-in-output", "same-folder", "output-in-layer",
                                  "output-in-launch-package", "build-in-launch-package"])
def test_nested_folders_are_refused_before_anything_is_written(sample_spec: Path, case: str,
                                                               mode: tuple[str, ...]) -> None:
    folder = sample_spec.parent
    before = tree(folder)
    build, out = {
        "output-in-build": ("_build", "_build/out"),
        "build-in-output": ("_artifacts/build", "_artifacts"),
        "same-folder": ("both", "both"),
        "output-in-layer": ("_build", "_build/app-report-demo/out"),
        "output-in-launch-package": ("_build", "launch_modules/report_demo/out"),
        "build-in-launch-package": ("launch_modules/report_demo/build", "_artifacts"),
    }[case]
    result = cli("build", *mode, "--publish", "--build-dir", build, "--output-dir", out, sample_spec, check=False)
    message = one_clear_error(result)
    assert ("inside" in message or "the same folder" in message) and "hint:" in message
    assert tree(folder) == before  # no folder was created, no container was started


@pytest.mark.parametrize("mode", CONTAINER_MODES)
def test_an_output_path_that_is_a_file_is_refused(sample_spec: Path, mode: tuple[str, ...]) -> None:
    target = sample_spec.parent / "_artifacts"
    target.write_text("not a folder\n")
    message = one_clear_error(cli("publish", *mode, sample_spec, check=False))
    assert f"--output-dir {target} is a file, not a folder" in message
    assert target.read_text() == "not a folder\n"


@pytest.mark.parametrize("mode", CONTAINER_MODES)
@pytest.mark.parametrize("value", ["abc", "-5", "1.5", "99999999999999"])
def test_a_bad_source_date_epoch_is_refused(sample_spec: Path, mode: tuple[str, ...], value: str) -> None:
    before = tree(sample_spec.parent)
    result = cli("build", *mode, "--publish", sample_spec, check=False,
                 env={**os.environ, "SOURCE_DATE_EPOCH": value})
    message = one_clear_error(result)
    assert f"SOURCE_DATE_EPOCH must be a whole number of seconds, not {value!r}" in message
    assert tree(sample_spec.parent) == before


def test_the_dry_run_and_show_only_start_no_container_and_write_nothing(sample_spec: Path) -> None:
    before = tree(sample_spec.parent)
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}  # any engine use would fail
    assert cli("publish", "--dry-run", sample_spec, env=env).returncode == 0
    assert cli("build", "--show-only", sample_spec, env=env).returncode == 0
    assert cli("build", "--json", sample_spec, env=env).returncode == 0
    assert tree(sample_spec.parent) == before
