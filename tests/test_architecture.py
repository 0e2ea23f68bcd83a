"""The rules the codebase keeps: the host/container boundary, rooms that fit, a small
public API, and a CLI reference generated from the CLI."""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
from _helpers import REPO

import venvstacks_docker

SRC = REPO / "src" / "venvstacks_docker"


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages([str(SRC)], "venvstacks_docker."))


def test_stage_modules_never_import_the_host_side() -> None:
    """They run inside builder containers, where host/ (and the Docker SDK) has no business."""
    stage = [m for m in _modules() if not m.startswith(("venvstacks_docker.host", "venvstacks_docker.cli"))]
    assert "venvstacks_docker.publish" in stage and "venvstacks_docker.execute" in stage
    probe = ("import importlib, sys\n"
             f"for name in {stage!r}:\n"
             "    importlib.import_module(name)\n"
             "leaked = sorted(m for m in sys.modules if m.startswith(('venvstacks_docker.host', 'docker')))\n"
             "print(leaked)\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def _rooms(root: Path) -> tuple[list[str], list[str]]:
    files, functions = [], []
    for path in sorted(root.rglob("*.py")):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue  # scratch folders (benchmarks/.work holds whole venvs during a run)
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > 500:
            files.append(f"{path.relative_to(REPO)} ({len(text.splitlines())} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > 80:
                    functions.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({length} lines)")
    return files, functions


@pytest.mark.parametrize("folder", ["src", "benchmarks", "scripts"])
def test_rooms_that_fit(folder: str) -> None:
    files, functions = _rooms(REPO / folder)
    assert files == [], "files over 500 lines"
    assert functions == [], "functions over 80 lines"


def test_the_public_api_is_small_and_complete() -> None:
    assert set(dir(venvstacks_docker)) == set(venvstacks_docker.__all__)
    for name in venvstacks_docker.__all__:
        assert getattr(venvstacks_docker, name) is not None
    assert callable(venvstacks_docker.Stack.load)


def test_the_cli_reference_is_generated_from_the_cli() -> None:
    path = REPO / "scripts" / "generate_cli_reference.py"
    spec = importlib.util.spec_from_file_location("generate_cli_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    generated = module.render()
    committed = (REPO / "docs" / "reference" / "cli-options.md").read_text(encoding="utf-8")
    assert committed == generated, "run scripts/generate_cli_reference.py and commit the result"
    assert "`--include`" in generated and "## `venvstacks-docker runtime build`" in generated
