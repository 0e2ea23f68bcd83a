"""Helpers shared by the test modules: the CLI runner and sample_project copies."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_project"


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
    shutil.copytree(SAMPLE, dest, ignore=shutil.ignore_patterns("_build", "_artifacts", "_export", "_audit",
                                                                 "__pycache__"))
    return dest / "venvstacks.toml"


@dataclass
class Published:
    spec: Path
    build_dir: Path
    output_dir: Path
