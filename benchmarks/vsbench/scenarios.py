"""What is measured: the commands of every step (data) and one function per scenario.

The scenarios run in this order on the same project copies, one per tool (each one starts
from the state the previous one left): warm-up lock, fresh lock, clean build + publish, unchanged
publish, build + publish after editing a launch module, and the container build.
"""

from __future__ import annotations

import re
import shutil
import time
from typing import Any

from .config import EDITED_APP, EDITED_MODULE, RELEASE, ROOT, TOOLS, VENVSTACKS, WORK
from .harness import CommandFailed, Timing, capture, log, sha256_file
from .projects import (
    Project,
    app_metadata,
    archive_sizes,
    archive_state,
    compare_archives,
    expected_module_hash,
    locked_packages,
    prepare_project,
)
from .session import AfterRun, Bench, PrepareFor
from .tools import stage_runtime

# step -> arguments between the executable and the spec file, the same for every venvstacks release
VENVSTACKS_COMMANDS: dict[str, tuple[str, ...]] = {
    "lock": ("lock",),
    "build-clean": ("build", "--publish", "--clean"),
    "publish": ("publish",),
    "build-edit": ("build", "--publish"),
}
# tool -> step -> arguments between the executable and the spec file
COMMANDS: dict[str, dict[str, tuple[str, ...]]] = {
    **dict.fromkeys(VENVSTACKS, VENVSTACKS_COMMANDS),
    "ours": {
        "lock": ("lock", "--native"),
        "build-clean": ("build", "--native", "--publish", "--clean"),
        "publish": ("publish", "--native"),
        "build-edit": ("build", "--native", "--publish"),
    },
    "ours-container": {
        "build-clean": ("build", "--publish", "--clean"),
    },
}
# steps timed under their own name that run another step's command
SAME_COMMAND = {"build-clean-paired": "build-clean"}


def command(bench: Bench, tool: str, step: str, project: Project) -> list[str]:
    """The command line of ``step`` for ``tool``, on that tool's copy of the spec."""
    if tool not in COMMANDS:
        raise KeyError(tool)
    return [bench.tools.exe(tool), *COMMANDS[tool][SAME_COMMAND.get(step, step)], str(project.spec)]


def prepare(bench: Bench, tool: str, step: str, project: Project) -> None:
    """Untimed preparation before a timed command."""
    if step == "lock":
        shutil.rmtree(project.requirements, ignore_errors=True)
    if step in ("build-clean", "build-clean-paired"):
        # every archive must really be written
        shutil.rmtree(project.output_dir, ignore_errors=True)
    if tool in RELEASE and step in ("lock", "build-clean") and (
            step == "build-clean" or not (project.build_dir / "cpython-3.11").exists()):
        assert bench.archive is not None
        stage_runtime(bench.archive, project.build_dir)


def timed(bench: Bench, step: str, tools: tuple[str, ...] = TOOLS, *, after: AfterRun | None = None,
          also: PrepareFor | None = None, repeat: int | None = None) -> None:
    """Time ``step`` for ``tools``; ``also`` runs (untimed) after the step's own preparation."""

    def prepare_for(tool: str, project: Project) -> None:
        prepare(bench, tool, step, project)
        if also is not None:
            also(tool, project)

    bench.time_step(step, tools, command=lambda tool, project: command(bench, tool, step, project),
                    prepare=prepare_for, after=after, repeat=repeat)


def warm_up(bench: Bench) -> None:
    """One untimed lock per tool, which fills the package caches."""
    log("warm-up locks (untimed; fills the package caches)")
    for tool in TOOLS:
        project = bench.projects[tool]
        try:
            prepare(bench, tool, "lock", project)
            bench.runner.run(f"{tool}-lock-warmup", command(bench, tool, "lock", project), cwd=project.root,
                             env=project.env)
        except CommandFailed as exc:
            bench.error(tool, "lock-warmup", exc)


def measure_lock(bench: Bench) -> None:
    """A fresh lock (lock files deleted first), ``--lock-repeat`` times; then the pins each tool chose."""
    timed(bench, "lock", repeat=bench.lock_repeat)
    for tool in TOOLS:  # a failed final lock would break everything after it
        project = bench.projects[tool]
        if not any(project.requirements.rglob("*")):
            log(f"{tool}: no lock files after the lock step; relocking untimed")
            bench.runner.run(f"{tool}-lock-again", command(bench, tool, "lock", project),
                             cwd=project.root, env=project.env)
    bench.results["locked_packages"] = {tool: locked_packages(bench.projects[tool]) for tool in TOOLS}


def measure_clean_build(bench: Bench) -> None:
    """Clean build + publish (output folder deleted first); archive sizes and contents."""
    sizes: dict[str, dict[str, int]] = {}

    def record_sizes(tool: str, project: Project, timing: Timing) -> None:
        sizes[tool] = archive_sizes(project.output_dir)

    timed(bench, "build-clean", after=record_sizes)
    bench.results["archive_sizes"] = sizes
    if all(tool in sizes for tool in TOOLS):
        log("comparing archive contents (untimed)")
        bench.results["archive_contents"] = {
            key: compare_archives(bench.projects[key].output_dir, bench.projects["ours"].output_dir)
            for key in VENVSTACKS
        }


def measure_unchanged_publish(bench: Bench) -> None:
    """Publish right after the clean build; which archives (if any) got rewritten."""
    rewritten: dict[str, list[str]] = {}
    states = {tool: archive_state(bench.projects[tool].output_dir) for tool in TOOLS}

    def check_unchanged(tool: str, project: Project, timing: Timing) -> None:
        now = archive_state(project.output_dir)
        changed = sorted(name for name, state in now.items() if states[tool].get(name) != state)
        rewritten.setdefault(tool, [])
        rewritten[tool] = sorted(set(rewritten[tool]) | set(changed))
        states[tool] = now

    timed(bench, "publish", after=check_unchanged)
    bench.results["publish_unchanged_rewrote"] = rewritten


def measure_edit(bench: Bench) -> None:
    """Append a comment to a launch module, build + publish; see whether the published metadata picked it up."""
    findings: dict[str, list[dict[str, Any]]] = {tool: [] for tool in TOOLS}
    pending: dict[str, dict[str, Any]] = {}

    def edit(tool: str, project: Project) -> None:
        module = project.root / EDITED_MODULE
        meta = app_metadata(project.output_dir, EDITED_APP) or {}
        archive = project.output_dir / f"{EDITED_APP}.tar.xz"
        with module.open("a") as stream:
            stream.write(f"# benchmark edit {time.time_ns()}\n")
        pending[tool] = {
            "hash_before": meta.get("app_launch_module_hash"),
            "archive_sha_before": sha256_file(archive) if archive.exists() else None,
            "archives_before": archive_state(project.output_dir),
            "expected_hash": expected_module_hash(tool, bench.tools, module),
        }

    def check_edit(tool: str, project: Project, timing: Timing) -> None:
        info = pending.pop(tool)
        meta = app_metadata(project.output_dir, EDITED_APP) or {}
        new_archives = archive_state(project.output_dir)
        archive = project.output_dir / f"{EDITED_APP}.tar.xz"
        info.update(
            hash_after=meta.get("app_launch_module_hash"),
            archive_sha_after=sha256_file(archive) if archive.exists() else None,
            new_or_rewritten=sorted(n for n, s in new_archives.items() if info["archives_before"].get(n) != s),
        )
        del info["archives_before"]
        info["picked_up"] = info["hash_after"] == info["expected_hash"]
        findings[tool].append(info)

    timed(bench, "build-edit", after=check_edit, also=edit)
    bench.results["edit_findings"] = findings


def _container_project(bench: Bench) -> Project:
    """A copy for the container build with the native run's lock files and (edited) launch modules."""
    project = prepare_project("ours-container", WORK / "runs" / "ours-container")
    shutil.copytree(bench.projects["ours"].requirements, project.requirements)
    # the native copy's launch modules carry the benchmark's edits by now: use the same files
    shutil.rmtree(project.root / "launch_modules")
    shutil.copytree(bench.projects["ours"].root / "launch_modules", project.root / "launch_modules")
    return project


def measure_container(bench: Bench) -> None:
    """Clean build + publish in the builder container, each run paired with a native one."""
    info: dict[str, Any] = {"measured": False}
    bench.results["container"] = info
    listing = capture([bench.tools.ours, "image", "list"])
    info["image_list"] = listing
    if not re.search(r"^base\s", listing, re.M):
        info["reason"] = "no bootstrapped base image (`venvstacks-docker image bootstrap-base` not run)"
        return
    try:
        bench.runner.run("ours-container-image-build", [bench.tools.ours, "image", "build"], cwd=ROOT)
    except CommandFailed as exc:
        info["reason"] = f"`venvstacks-docker image build` failed (exit {exc.returncode}): {exc.tail[-600:]}"
        return
    # same spec and the native run's lock files: the container step times build+publish only.
    # Each container build is paired with a native clean build run right next to it (order
    # alternating), so that both see about the same load from other work on the machine.
    project = bench.projects["ours-container"] = _container_project(bench)
    digests: dict[str, dict[str, str]] = {}

    def record_digests(tool: str, proj: Project, timing: Timing) -> None:
        digests[tool] = {p.name: sha256_file(p) for p in sorted(proj.output_dir.glob("*.tar.xz"))}

    timed(bench, "build-clean-paired", ("ours", "ours-container"), after=record_digests)
    runs = bench.results["timings"].get("ours-container", {}).get("build-clean-paired", [])
    if not runs:
        err = next((e for e in bench.results["errors"] if e["tool"] == "ours-container"), None)
        info["reason"] = "container build failed: " + (err["tail"][-800:] if err else "unknown")
        return
    info["measured"] = True
    info["archive_sizes"] = archive_sizes(project.output_dir)
    info["archive_sha256"] = digests.get("ours-container", {})
    info["native_archive_sha256"] = digests.get("ours", {})
    info["byte_identical_to_native"] = (
        bool(digests.get("ours")) and digests.get("ours") == digests.get("ours-container")
    )


def measure_all(bench: Bench) -> None:
    """Every scenario, in order (the container one unless ``--quick`` or ``--no-container``)."""
    warm_up(bench)
    measure_lock(bench)
    measure_clean_build(bench)
    measure_unchanged_publish(bench)
    measure_edit(bench)
    if bench.args.quick or bench.args.no_container:
        reason = "--quick" if bench.args.quick else "--no-container"
        bench.results["container"] = {"measured": False, "reason": f"skipped ({reason})"}
    else:
        measure_container(bench)
