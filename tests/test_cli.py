"""The command line, in-process (``venvstacks_docker.cli.run``): help, JSON envelopes,
selection errors, exit codes and error rendering.  Fast: nothing is built and no
container is started (a container would need ``DOCKER_HOST``, which points nowhere here).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from _helpers import copy_sample

from venvstacks_docker import __version__
from venvstacks_docker.cli import app, run
from venvstacks_docker.errors import EXIT_CODES


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


def _commands() -> list[tuple[str, ...]]:
    import typer.main

    root = typer.main.get_command(app)
    return [(name,) for name in root.commands if not name.startswith("_")]  # type: ignore[attr-defined]


def test_every_command_has_help_for_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    import typer.main

    run(["runtime", "--help"])  # registers the lazily added groups
    capsys.readouterr()
    root = typer.main.get_command(app)
    pending = [((), root)]
    seen = 0
    while pending:
        path, command = pending.pop()
        for name, sub in getattr(command, "commands", {}).items():
            if not getattr(sub, "hidden", False):
                pending.append(((*path, name), sub))
        for param in command.params:
            if getattr(param, "param_type_name", "") == "option" and not getattr(param, "hidden", False):
                assert param.help, f"{' '.join(path)} {param.opts[0]} has no help"
                seen += 1
        code, out, err = cli(capsys, *path, "--help")
        assert code == 0, err
        assert "…" not in out, f"help of {' '.join(path)} is cut"
    assert seen > 80


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "--version") == (0, f"venvstacks-docker {__version__}\n", "")


def test_show_json_is_the_versioned_envelope_with_venvstacks_keys(capsys, stack: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = cli(capsys, "show", "--json", stack)
    assert code == 0
    data = json.loads(out)
    assert (data["schema"], data["schema_version"]) == ("venvstacks-docker/show", 1)
    app_entry = data["applications"][0]
    assert app_entry["layer_name"] == app_entry["name"] == "app-classification-demo"  # ours and venvstacks'
    assert app_entry["selected_operations"] is None


def test_json_alone_shows_the_plan_without_running(capsys, stack: Path) -> None:  # type: ignore[no-untyped-def]
    before = sorted(p.name for p in stack.parent.iterdir())
    code, out, err = cli(capsys, "build", "--json", "--include", "app-report-*", "--publish", stack)
    assert code == 0, err
    data = json.loads(out)
    assert data["schema"] == "venvstacks-docker/selection"
    assert data["plan"]["command"] == "build" and data["plan"]["publish"] is True
    ops = {s["layer_name"]: s["operations"] for s in data["plan"]["steps"]}
    assert ops["app-report-demo"] == ["build", "publish"]
    assert sorted(p.name for p in stack.parent.iterdir()) == before  # nothing written, no container


def test_a_mistyped_include_is_reported_once_before_anything_starts(capsys, stack: Path) -> None:  # type: ignore[no-untyped-def]
    code, _out, err = cli(capsys, "build", "--publish", "--include", "app-reprot-*", stack)
    assert code == 2
    assert err.count("--include 'app-reprot-*' matches no layer") == 1
    assert "app-report-demo" in err  # the hint lists the layers
    assert not (stack.parent / "_build").exists()


def test_errors_are_one_unwrapped_message_with_a_hint_and_a_traceback_only_on_debug(capsys, stack: Path) -> None:  # type: ignore[no-untyped-def]
    long_dir = "a-rather-long-folder-name-" * 4
    code, _, err = cli(capsys, "publish", "--native", "--build-dir", long_dir, "--output-dir", f"{long_dir}/out",
                       stack)
    assert code == 2
    first = err.splitlines()[0]
    assert first.startswith("error: the output folder") and long_dir in first  # one line, however long
    assert "hint:" in err and "exit code 2" in err and "Traceback" not in err
    code, _, err = cli(capsys, "--debug", "publish", "--native", "--build-dir", long_dir, "--output-dir",
                       f"{long_dir}/out", stack)
    assert code == 2 and "Traceback" in err


def test_every_exit_code_means_one_thing() -> None:
    descriptions = list(EXIT_CODES.values())
    assert len(set(descriptions)) == len(descriptions)
    assert "audit" not in EXIT_CODES[7]  # verification only
    assert EXIT_CODES[11].startswith("deploy")


def test_the_publish_dry_run_names_the_folder_and_lists_archives(capsys, stack: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, err = cli(capsys, "publish", "--dry-run", "--include", "app-*", stack)
    assert code == 0, err
    assert f"Dry run: would publish to {stack.parent / '_artifacts'}" in out
    assert "app-report-demo.tar.xz" in out


def test_quiet_prints_only_results(capsys, stack: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, err = cli(capsys, "-q", "publish", "--dry-run", stack)
    assert code == 0 and err == "" and "Dry run" in out
