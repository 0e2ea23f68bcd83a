"""How one audit run is set up: its own copy of the stack, folders, environment and command.

Each run publishes a private copy of the stack (the stack file, its uv settings,
``requirements/`` and the launch and support modules: nothing else of the spec
folder) into fresh build and output folders, through the real command line in a
subprocess, so that process-wide settings (umask, CPU affinity, the clock, the
environment) really apply.  The wheel and runtime caches are shared, so no run
downloads anything.
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from venvstacks_docker.audit_plan import OTHER_SUITE, Run
from venvstacks_docker.spec import StackSpec
from venvstacks_docker.stack_files import copy_root, placed, stack_inputs

#: A folder name no build tool should choke on, and that many do.
LONG_NAME = "a rather long folder name, with spaces \u2013 \u00fcn\u00efc\u00f6d\u00e9 and \u2713 marks"
HOSTNAME = "audit-host.audit.invalid"
OTHER_UID = "4242:4242"


@dataclass(frozen=True, kw_only=True)
class Prepared:
    """A run ready to start: where its stack copy and folders are, and how it runs."""

    root: Path
    spec: Path
    build_dir: Path
    output_dir: Path
    argv: list[str]
    env: dict[str, str]
    preexec: Callable[[], None] | None


def run_root(work_dir: Path, run: Run, run_id: str) -> Path:
    """Where a run's files go: the work folder, or a tmpfs when file order is varied."""
    safe = run.name.replace(":", "-")
    if "file-order" in run.variations:
        return Path("/dev/shm") / f"venvstacks-docker-audit-{run_id}" / safe
    return work_dir / safe


def _relaid_spec(text: str) -> str:
    """The same stack with its tables and keys in another order (layer order within a kind kept)."""
    data = tomllib.loads(text)

    def flip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: flip(value[k]) for k in reversed(list(value))}
        if isinstance(value, list):
            return [flip(v) for v in value]  # list order is meaning: the layers' order
        return value

    return tomli_w.dumps(flip(data))


def copy_stack(spec: StackSpec, dest: Path, *, shuffled: bool, relaid: bool) -> Path:
    """Copy what publishing ``spec`` reads into ``dest``; returns the copied stack file.

    Files above the spec folder keep their place relative to it (:mod:`.stack_files`).
    """
    files = stack_inputs(spec)
    if shuffled:
        random.Random(0xA0D17).shuffle(files)  # a fixed shuffle: the same audit twice does the same
    root = copy_root(dest, files)
    spec_rel = Path(spec.path.name)
    for rel in files:
        target = placed(root, rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel == spec_rel and relaid:
            target.write_text(_relaid_spec(spec.path.read_text(encoding="utf-8")), encoding="utf-8")
        else:
            shutil.copy2(spec.spec_dir / rel, target)
    return root / spec.path.name


def _preexec(variations: tuple[str, ...]) -> Callable[[], None] | None:
    umask = "umask" in variations
    one_cpu = "cpus" in variations

    def apply() -> None:  # runs in the child, before exec
        if umask:
            os.umask(0o077)
        if one_cpu and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    return apply if umask or one_cpu else None


def _env(run: Run, root: Path) -> dict[str, str]:
    from venvstacks_docker.runtimes import cache_root

    env = dict(os.environ)
    # every run shares the caller's caches (runtimes, wheels, uv's), also when HOME moves
    env["VENVSTACKS_DOCKER_CACHE"] = str(cache_root())
    env.setdefault("UV_CACHE_DIR", str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "uv"))
    v = run.variations
    if "timezone" in v:
        env["TZ"] = "Pacific/Chatham"
    if "locale" in v:
        env.update(LC_ALL="C", LANG="C")
    if "home" in v:
        (root / "home").mkdir(parents=True, exist_ok=True)
        env["HOME"] = str(root / "home")
    if "user" in v:
        env["VENVSTACKS_DOCKER_SANDBOX_UID"] = OTHER_UID
    if "hostname" in v:
        env["VENVSTACKS_DOCKER_CONTAINER_HOSTNAME"] = HOSTNAME
    if "container-cpus" in v:
        env["VENVSTACKS_DOCKER_CONTAINER_CPUS"] = "0"
    return env


def prepare(spec: StackSpec, run: Run, root: Path, include: tuple[str, ...]) -> Prepared:
    """Lay out a run's copy of the stack and the command that publishes it."""
    v = run.variations
    stack_dir = root / LONG_NAME / "stack" if "build-path" in v else root / "stack"
    if root.exists():
        shutil.rmtree(root)
    copied = copy_stack(spec, stack_dir, shuffled="file-order" in v, relaid="spec-layout" in v)
    build_dir = stack_dir / "_build"
    output_dir = stack_dir / ("published elsewhere" if "output-path" in v else "_artifacts")
    argv = [sys.executable, "-m", "venvstacks_docker", "build", "--publish", "--build-dir", str(build_dir),
            "--output-dir", str(output_dir), *(w for p in include for w in ("--include", p))]
    argv += ["--container"] if run.where == "container" else ["--native"]
    if "base-image" in v:
        argv += ["--base-image", f"venvstacks-docker-base:{OTHER_SUITE}"]
    argv.append(str(copied))
    if "clock" in v:
        argv = ["faketime", "-m", "-f", "+20y", *argv]
    return Prepared(root=root, spec=copied, build_dir=build_dir, output_dir=output_dir, argv=argv,
                    env=_env(run, root), preexec=_preexec(v))


__all__ = ["HOSTNAME", "LONG_NAME", "OTHER_UID", "Prepared", "copy_stack", "prepare", "run_root"]
