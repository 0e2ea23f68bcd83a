"""The command line as venvstacks 0.8 users know it: every boolean option with its
``--no-`` form, ``show``'s ``@???`` and ``spec_name``, the publish dry run's request,
and a missing-runtime hint that names a Python the runtime builder can make.

The venvstacks side is read from its 0.8.0 release (commit c2e47ed) in
``../shared/venvstacks-0.8.0/``: its stack specs and sample project in ``tests/``, and its
wheel ``venvstacks-0.8.0-py3-none-any.whl``: the
boolean options of its commands are the parameters its ``cli.py`` annotates as flags or
tri-states, which typer turns into ``--name/--no-name``; the keys of a publishing
request are the fields of its ``ArchiveBuildMetadata`` in ``stacks.py``.  Both are read
with ``ast``, nothing of it is run.  In-process and fast: nothing is built.
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


# --- show -----------------------------------------------------------------------------


def test_show_names_an_unlocked_versioned_layer_at_unknown_version(capsys: pytest.CaptureFixture[str],
                                                                   stack: Path) -> None:
    text = stack.read_text(encoding="utf-8")
    stack.write_text(text.replace('name = "reporting"', 'name = "reporting"\nversioned = true'), encoding="utf-8")
    code, out, _ = cli(capsys, "show", stack)
    assert code == 0 and "│   └── *framework-reporting -> framework-reporting@???" in out
    assert out.count("── *framework-reporting -> framework-reporting@???") == 2  # and under app-report-demo
    assert "└── *app-report-demo" in out  # a layer below it needs locking
    data = json.loads(cli(capsys, "show", "--json", stack)[1])
    reporting = next(f for f in data["frameworks"] if f["name"] == "framework-reporting")
    assert reporting["install_target"] == "framework-reporting@???" and reporting["has_valid_lock"] is False
    sklearn = next(f for f in data["frameworks"] if f["name"] == "framework-sklearn")
    assert sklearn["install_target"] == "framework-sklearn"  # not versioned: its own name


needs_tests = pytest.mark.skipif(not VENVSTACKS_TESTS.is_dir(),
                                 reason=f"venvstacks 0.8.0's tests are not at {VENVSTACKS_TESTS}")


@needs_tests
def test_show_on_venvstacks_specs(capsys: pytest.CaptureFixture[str]) -> None:
    # tests/stack_specs/at_symbol.toml: a versioned runtime, never locked
    code, out, _ = cli(capsys, "show", VENVSTACKS_TESTS / "stack_specs" / "at_symbol.toml")
    assert code == 0 and "│   └── *cpython@3.12 -> cpython@3.12@???" in out.splitlines()
    # tests/sample_project: versioned layers with venvstacks' committed, valid locks
    data = json.loads(cli(capsys, "show", "--json", VENVSTACKS_TESTS / "sample_project")[1])
    targets = {layer["name"]: layer["install_target"] for kind in ("runtimes", "frameworks", "applications")
               for layer in data[kind]}
    assert (targets["cpython-3.12"], targets["framework-scipy"], targets["app-scipy-import"]) == \
        ("cpython-3.12@3", "framework-scipy@5", "app-scipy-import@5")
    out = cli(capsys, "show", VENVSTACKS_TESTS / "sample_project")[1]
    assert "│   │   └── cpython-3.12 -> cpython-3.12@3" in out.splitlines()  # a lower layer, same label


def test_spec_name_is_absolute_and_normalised(capsys: pytest.CaptureFixture[str], stack: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(stack.parent.parent)
    roundabout = Path(stack.parent.name) / ".." / stack.parent.name / "." / stack.name
    data = json.loads(cli(capsys, "show", "--json", roundabout)[1])
    assert data["spec_name"] == str(stack)
    assert cli(capsys, "show", roundabout)[1].splitlines()[0] == str(stack)
    selection = json.loads(cli(capsys, "publish", "--json", roundabout)[1])
    assert selection["spec_name"] == str(stack)


# --- the publish dry run ----------------------------------------------------------------


def venvstacks_request_keys() -> tuple[set[str], set[str]]:
    """(every key, the required keys) of venvstacks' ``ArchiveBuildMetadata``."""
    classes = {node.name: node for node in _venvstacks_source("stacks.py").body if isinstance(node, ast.ClassDef)}
    every, required = set(), set()
    for name in ("LayerSpecMetadata", "ArchiveBuildMetadata"):
        for item in classes[name].body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                every.add(item.target.id)
                if not ast.unparse(item.annotation).startswith("NotRequired"):
                    required.add(item.target.id)
    return every, required


@needs_wheel
def test_the_dry_run_prints_venvstacks_publishing_request(capsys: pytest.CaptureFixture[str], stack: Path) -> None:
    code, out, err = cli(capsys, "publish", "--dry-run", stack)
    assert code == 0, err
    first, _, rest = out.partition("\n")
    assert first == f"Dry run: would publish to {stack.parent / '_artifacts'}; the publishing request:"
    request = json.loads(rest)
    assert list(request) == ["layers"] and list(request["layers"]) == ["applications", "frameworks", "runtimes"]
    assert [r["layer_name"] for r in request["layers"]["runtimes"]] == ["cpython-3.11"]
    assert [a["layer_name"] for a in request["layers"]["applications"]] == \
        ["app-classification-demo", "app-clustering-demo", "app-report-demo"]
    every, required = venvstacks_request_keys()
    for entries in request["layers"].values():
        for entry in entries:
            assert required <= set(entry) <= every, entry["layer_name"]
            assert entry["archive_name"] == f"{entry['install_target']}.tar.xz"
    # --show --json keeps its shape and carries the same request
    code, out, _ = cli(capsys, "publish", "--dry-run", "--show", "--json", stack)
    publication = json.loads(out)["publication"]
    assert publication["dry_run"] is True and publication["layers"][0]["status"] == "dry-run"
    assert publication["request"] == request


def test_build_without_publish_says_how_to_publish(capsys: pytest.CaptureFixture[str], stack: Path) -> None:
    from venvstacks_docker.cli import render
    from venvstacks_docker.spec import load

    spec = load(stack)
    published = {"dry_run": True, "output_dir": str(stack.parent / "_artifacts"), "layers": []}
    render.print_publication(spec, published, "build")
    out = capsys.readouterr().out
    assert json.loads(out.split("\n", 1)[1].rsplit("}", 1)[0] + "}") == \
        {"layers": {"applications": [], "frameworks": [], "runtimes": []}}
    assert out.rstrip().endswith("add --publish to write the archives.")


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
