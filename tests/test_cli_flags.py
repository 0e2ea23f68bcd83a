"""The command line as venvstacks 0.8 users know it: every boolean option with its
``--no-`` form, and a missing-runtime hint that names a Python the runtime builder can make.

The venvstacks side is read from its 0.8.0 release (commit c2e47ed) in
``../shared/venvstacks-0.8.0/``, its wheel ``venvstacks-0.8.0-py3-none-any.whl``: the
boolean options of its commands are the parameters its ``cli.py`` annotates as flags or
tri-states, which typer turns into ``--name/--no-name``.  It is read with ``ast``,
nothing of it is run.  In-process and fast: nothing is built.
"""

from __future__ import annotations

import ast
import json
import os
import zipfile
from pathlib import Path

import pytest
from _helpers import copy_sample

from venvstacks_docker.cli import app, run
from venvstacks_docker.errors import RuntimeArchiveError
from venvstacks_docker.runtimes import RuntimeRequest, acquire_runtime

SHARED = Path(__file__).resolve().parents[2] / "shared" / "venvstacks-0.8.0"
WHEEL = SHARED / "venvstacks-0.8.0-py3-none-any.whl"
VENVSTACKS_TESTS = SHARED / "tests"
STAGES = ("show", "lock", "build", "publish", "local-export")
needs_wheel = pytest.mark.skipif(not WHEEL.is_file(), reason=f"venvstacks 0.8.0's wheel is not at {WHEEL}")


@pytest.fixture(autouse=True)
def no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to reach a container engine fails loudly."""
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/venvstacks-docker-test.sock")


@pytest.fixture
def stack(tmp_path: Path) -> Path:
    return copy_sample(tmp_path / "sample project")


def cli(capsys: pytest.CaptureFixture[str], *args: str | os.PathLike[str]) -> tuple[int, str, str]:
    code = run([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _venvstacks_source(name: str) -> ast.Module:
    with zipfile.ZipFile(WHEEL) as wheel:
        return ast.parse(wheel.read(f"venvstacks/{name}").decode("utf-8"))


def venvstacks_flags() -> dict[str, set[str]]:
    """Command -> every boolean option venvstacks 0.8 accepts (both forms)."""
    flags: dict[str, set[str]] = {}
    for node in _venvstacks_source("cli.py").body:
        if not isinstance(node, ast.FunctionDef):
            continue
        if not any(isinstance(d, ast.Name) and d.id == "_cli_subcommand" for d in node.decorator_list):
            continue
        names = set()
        for arg in node.args.args:
            kind = arg.annotation.id if isinstance(arg.annotation, ast.Name) else ""
            if kind.startswith(("_CLI_OPT_FLAG_", "_CLI_OPT_TRISTATE_")):
                option = arg.arg.replace("_", "-")
                names |= {f"--{option}", f"--no-{option}"}
        flags[node.name.replace("_", "-")] = names
    return flags


def ours() -> dict[str, dict[str, object]]:
    """Command -> option name -> click parameter, hidden options included."""
    import typer.main

    root = typer.main.get_command(app)
    result: dict[str, dict[str, object]] = {}
    for name in STAGES:
        command = root.commands[name]  # type: ignore[attr-defined]
        result[name] = {opt: p for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    return result


@needs_wheel
def test_every_boolean_option_of_venvstacks_is_accepted_in_both_forms() -> None:
    theirs = venvstacks_flags()
    assert set(theirs) == set(STAGES)
    assert {"--publish", "--no-publish", "--show", "--no-show", "--force", "--no-force",
            "--include-dependencies", "--no-include-dependencies"} <= set().union(*theirs.values())
    mine = ours()
    missing = {command: sorted(flags - set(mine[command])) for command, flags in theirs.items()}
    assert missing == {command: [] for command in STAGES}


def test_every_boolean_option_of_ours_has_its_other_form() -> None:
    for command, params in ours().items():
        for option, param in params.items():
            if getattr(param, "is_flag", False) and option != "--help":
                assert param.secondary_opts, f"{command} {option} has no --no- form"  # type: ignore[attr-defined]


def plan_of(capsys: pytest.CaptureFixture[str], *args: str | os.PathLike[str]) -> dict[str, object]:
    code, out, err = cli(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)["plan"]  # type: ignore[no-any-return]


def test_the_last_form_given_wins(capsys: pytest.CaptureFixture[str], stack: Path) -> None:
    assert plan_of(capsys, "build", "--publish", stack)["publish"] is True
    assert plan_of(capsys, "build", "--publish", "--no-publish", stack)["publish"] is False
    assert plan_of(capsys, "publish", "--dry-run", "--no-dry-run", stack)["dry_run"] is False
    assert plan_of(capsys, "publish", "--force", "--no-force", "--no-tag-outputs", stack)["force"] is False
    assert plan_of(capsys, "lock", "--if-needed", "--no-clean", "--no-index", stack)["query_default_index"] is False

    def ops(*args: str) -> dict[str, list[str]]:
        steps = plan_of(capsys, "build", "--include", "app-report-*", *args, stack)["steps"]
        return {s["layer_name"]: s["operations"] for s in steps}  # type: ignore[attr-defined]

    assert "publish" in ops("--include-dependencies")["cpython-3.11"]
    assert "publish" not in ops("--include-dependencies", "--no-include-dependencies")["cpython-3.11"]
    assert "publish" not in ops("--publish-dependencies", "--no-publish-dependencies")["cpython-3.11"]


def test_no_show_and_no_json_turn_them_off(capsys: pytest.CaptureFixture[str], stack: Path) -> None:
    code, out, _ = cli(capsys, "lock", "--show-only", "--json", "--no-json", stack)
    assert code == 0 and out.startswith(str(stack)) and "app-report-demo" in out  # the tree
    code, out, _ = cli(capsys, "publish", "--show", "--no-show", "--dry-run", stack)
    assert code == 0 and out.startswith("Dry run:")  # no tree first


# --- the missing runtime hint -------------------------------------------------------------


@pytest.mark.parametrize(("wanted", "buildable"), [("3.11.2", "3.11.2"), ("3.11.13", "3.11.2"),
                                                   ("3.13.5", "3.13.5"), ("3.12.11", "3.13.5")])
def test_the_missing_runtime_hint_names_a_version_the_builder_makes(
        wanted: str, buildable: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from venvstacks_docker.runtime_build.recipe import PINS

    monkeypatch.setenv("VENVSTACKS_DOCKER_CACHE", str(tmp_path))  # nothing cached
    monkeypatch.delenv("VENVSTACKS_DOCKER_RUNTIME_SOURCES", raising=False)
    with pytest.raises(RuntimeArchiveError) as excinfo:
        acquire_runtime(RuntimeRequest(implementation="cpython", version=wanted, platform="linux_x86_64"),
                        offline=True)
    hint = excinfo.value.hint or ""
    assert buildable in PINS
    assert f"`venvstacks-docker runtime build --python-version {buildable}`" in hint
    assert (f'"cpython@{buildable}"' in hint) == (wanted != buildable)  # then the stack must name it
    assert "VENVSTACKS_DOCKER_RUNTIME_SOURCES" in hint


def test_no_runtime_build_is_suggested_where_it_cannot_build(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VENVSTACKS_DOCKER_CACHE", str(tmp_path))
    with pytest.raises(RuntimeArchiveError) as excinfo:
        acquire_runtime(RuntimeRequest(implementation="cpython", version="3.11.2", platform="macosx_arm64"),
                        offline=True)
    assert "--python-version" not in (excinfo.value.hint or "")
    assert "Linux only" in (excinfo.value.hint or "")
