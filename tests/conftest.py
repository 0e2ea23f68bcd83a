"""Shared fixtures: the real runtime archive, copies of sample_project, a CLI runner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_project"
sys.path.insert(0, str(Path(__file__).parent))


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str | os.PathLike[str], env: dict[str, str] | None = None, cwd: Path | None = None,
        check: bool = True) -> CliResult:
    """Run the real command line (``python -m venvstacks_docker``) in a subprocess."""
    proc = subprocess.run([sys.executable, "-m", "venvstacks_docker", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd, check=False)
    result = CliResult(proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise AssertionError(f"command failed ({proc.returncode}): {args}\n{proc.stdout}\n{proc.stderr}")
    return result


def copy_sample(dest: Path) -> Path:
    """Copy sample_project (spec, launch modules, committed locks) without build outputs."""
    shutil.copytree(SAMPLE, dest, ignore=shutil.ignore_patterns("_build", "_artifacts", "_export",
                                                                 "__pycache__"))
    return dest / "venvstacks.toml"


@pytest.fixture(scope="session")
def runtime_archive() -> Path:
    """The real CPython 3.11.2 install_only archive (built once, then cached by hash)."""
    from _runtime_fixture import ensure_runtime_archive

    return ensure_runtime_archive()


@dataclass
class Published:
    spec: Path
    build_dir: Path
    output_dir: Path


@pytest.fixture(scope="session")
def published_sample(runtime_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Published:
    """sample_project built and published natively once per test session."""
    root = tmp_path_factory.mktemp("published")
    spec = copy_sample(root / "sample project")
    cli("build", "--native", "--publish", spec)
    return Published(spec=spec, build_dir=spec.parent / "_build", output_dir=spec.parent / "_artifacts")


@pytest.fixture
def sample_spec(tmp_path: Path) -> Iterator[Path]:
    yield copy_sample(tmp_path / "sample project")
