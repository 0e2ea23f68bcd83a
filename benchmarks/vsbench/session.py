"""One benchmark run: its tools, project copies, command runner and results, and the repeat loop."""

from __future__ import annotations

import argparse
import datetime as _dt
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .config import RELEASES, ROOT, TOOLS, WORK
from .harness import (
    CommandFailed,
    Runner,
    Timing,
    capture,
    git_info,
    loadavg,
    log,
    machine_info,
    sha256_file,
    shown_path,
)
from .projects import Project, prepare_project
from .tools import Tools, dev_venvstacks_docker, ensure_ours_snapshot, ensure_venvstacks_venv, find_runtime_archive

# (tool, project) -> the command to time / untimed preparation just before it
CommandFor = Callable[[str, Project], list[str]]
PrepareFor = Callable[[str, Project], None]
# called after each successful timed command
AfterRun = Callable[[str, Project, Timing], None]


class Bench:
    """The state of one run; ``results`` is what the report is rendered from (and saved as JSON)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.repeat = 1 if args.quick else max(1, args.repeat)
        self.lock_repeat = max(1, args.lock_repeat) if args.lock_repeat else self.repeat
        self.runner = Runner(WORK / "logs")
        self.tools: Tools  # set in setup()
        self.archive: Path | None = None
        self.projects: dict[str, Project] = {}
        self.results: dict[str, Any] = {
            "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "repeat": self.repeat,
            "lock_repeat": self.lock_repeat,
            "work_dir": shown_path(WORK),
            "quick": bool(args.quick),
            "timings": {},
            "errors": [],
            "notes": [],
        }

    def setup(self) -> None:
        """Record the machine, install or reuse both tools, find the runtime, copy the projects."""
        self.results["machine"] = machine_info()
        self.results["git"] = git_info()
        log(f"load average at start: {self.results['machine']['load_at_start']}")
        if self.args.ours == "snapshot":
            ours, commit = ensure_ours_snapshot()
            self.results["git"]["measured"] = f"snapshot of commit {commit[:12]} (installed from `git archive`)"
            self.results["git"]["commit"] = commit[:12]
            self.results["git"]["dirty_files"] = []
        else:
            ours = dev_venvstacks_docker()
            self.results["git"]["measured"] = "the editable dev install (working tree as it was while running)"
        self.tools = Tools(ours)
        for release in RELEASES:
            ensure_venvstacks_venv(release, self.tools.venvs[release.key])
        self.results["versions"] = self.tools.versions()
        self.archive = find_runtime_archive()
        self.results["runtime_archive"] = {"path": str(self.archive), "sha256": sha256_file(self.archive),
                                           "size": self.archive.stat().st_size}
        runs = WORK / "runs"
        for tool in TOOLS:
            self.projects[tool] = prepare_project(tool, runs / tool)
        self.results["spec_changes"] = {tool: p.spec_changes for tool, p in self.projects.items()}

    def time_step(self, step: str, tools: tuple[str, ...], *, command: CommandFor, prepare: PrepareFor,
                  after: AfterRun | None = None, repeat: int | None = None) -> None:
        """Run ``step`` for each tool ``repeat`` (default ``self.repeat``) times and keep all timings.

        The tool order rotates from one round to the next, so every tool takes every place in
        turn.  ``prepare`` runs untimed right before each command; a failed command (or
        preparation raising CommandFailed) is recorded as an error and the loop goes on.
        """
        for tool in tools:
            self.results["timings"].setdefault(tool, {}).setdefault(step, [])
        for index in range(repeat or self.repeat):
            shift = index % len(tools)
            order = tools[shift:] + tools[:shift]
            for tool in order:
                project = self.projects[tool]
                try:
                    prepare(tool, project)
                    timing = self.runner.run(f"{tool}-{step}-{index + 1}", command(tool, project),
                                             cwd=project.root, env=project.env)
                except CommandFailed as exc:
                    self.error(tool, step, exc)
                    continue
                self.results["timings"][tool][step].append(asdict(timing))
                if after is not None:
                    after(tool, project, timing)

    def error(self, tool: str, step: str, exc: CommandFailed) -> None:
        """Record a failed command for the report's Errors section."""
        log(f"FAILED {tool} {step}: {exc}")
        self.results["errors"].append(
            {"tool": tool, "step": step, "command": " ".join(exc.cmd), "exit": exc.returncode,
             "log": shown_path(exc.log_path), "tail": exc.tail}
        )

    def finish(self) -> dict[str, Any]:
        """Record the load, HEAD and time at the end; the results."""
        self.results["load_at_end"] = loadavg()
        self.results["git"]["head_at_end"] = capture(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT)
        self.results["finished"] = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
        return self.results
