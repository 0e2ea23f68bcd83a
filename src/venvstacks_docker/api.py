"""The Python API: a :class:`Stack` to plan, lock, build, publish and export, and
:func:`verify_output` and :func:`deploy_output` for publications.

Everything here runs natively in this process, like the CLI with ``--native``, and
reports progress through :mod:`logging` (logger ``venvstacks_docker``); nothing is
printed.  Errors are :class:`~venvstacks_docker.errors.VenvstacksDockerError`
subclasses carrying a message, a hint and the CLI's exit code.

.. code-block:: python

    from venvstacks_docker import Stack, deploy_output, verify_output

    stack = Stack.load("venvstacks.toml")             # _build and _artifacts next to it
    stack.lock(if_needed=True)
    outcome = stack.build(publish=True)
    assert verify_output(stack.output_dir).ok
    deploy_output(stack.output_dir, "/opt/stack")

``include`` takes the CLI's ``--include`` patterns.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from venvstacks_docker import plan as _plan
from venvstacks_docker import platforms as _plat
from venvstacks_docker import preflight
from venvstacks_docker.deploy import DeployResult, deploy
from venvstacks_docker.execute import Outcome, run_plan
from venvstacks_docker.spec import StackSpec
from venvstacks_docker.spec import load as load_spec
from venvstacks_docker.verify import VerifyReport, verify_output_dir

StrPath = str | os.PathLike[str]


@dataclass(frozen=True)
class Stack:
    """A stack file with the folders it is built and published in."""

    spec: StackSpec
    build_dir: Path
    output_dir: Path

    @classmethod
    def load(cls, path: StrPath, *, build_dir: StrPath = "_build", output_dir: StrPath = "_artifacts") -> Stack:
        """Load ``path``; relative folders are relative to the stack file's folder."""
        spec = load_spec(Path(path))

        def folder(value: StrPath) -> Path:
            p = Path(value).expanduser()
            return (p if p.is_absolute() else spec.spec_dir / p).absolute()

        return cls(spec=spec, build_dir=folder(build_dir), output_dir=folder(output_dir))

    @property
    def _where(self) -> _plan.Where:
        return _plan.Where(platform=_plat.current_platform(), build_dir=self.build_dir, output_dir=self.output_dir)

    def run(self, plan: _plan.Plan) -> Outcome:
        """Check the folders and run ``plan`` here (the CLI's ``--native``)."""
        preflight.source_date_epoch_value()
        preflight.check_work_folders(self.spec, plan.build_dir, plan.output_dir if plan.writes_output else None)
        return run_plan(plan, self.spec)

    def plan_lock(self, *, include: Sequence[str] = (), if_needed: bool = False) -> _plan.Plan:
        """The plan :meth:`lock` runs, without running it."""
        return _plan.plan_lock(self.spec, _plan.Selection(include=tuple(include)), self._where, if_needed=if_needed)

    def plan_build(self, *, include: Sequence[str] = (), lock_if_needed: bool = False,
                   publish: bool = False) -> _plan.Plan:
        """The plan :meth:`build` runs, without running it."""
        return _plan.plan_build(self.spec, _plan.Selection(include=tuple(include)), self._where,
                                lock_if_needed=lock_if_needed, publish=publish)

    def plan_publish(self, *, include: Sequence[str] = (), force: bool = False,
                     dry_run: bool = False) -> _plan.Plan:
        """The plan :meth:`publish` runs, without running it."""
        return _plan.plan_publish(self.spec, _plan.Selection(include=tuple(include)), self._where, force=force,
                                  dry_run=dry_run)

    def lock(self, *, include: Sequence[str] = (), if_needed: bool = False) -> Outcome:
        """Lock the selected layers (``requirements/`` next to the stack file)."""
        return self.run(self.plan_lock(include=include, if_needed=if_needed))

    def build(self, *, include: Sequence[str] = (), lock_if_needed: bool = False, publish: bool = False) -> Outcome:
        """Build the selected layers (and what they need); with ``publish``, publish them too."""
        return self.run(self.plan_build(include=include, lock_if_needed=lock_if_needed, publish=publish))

    def publish(self, *, include: Sequence[str] = (), force: bool = False, dry_run: bool = False) -> Outcome:
        """Publish built layers: one archive each, plus metadata, as one transaction."""
        return self.run(self.plan_publish(include=include, force=force, dry_run=dry_run))


def verify_output(output_dir: StrPath) -> VerifyReport:
    """Check a publication's archives against its metadata (``report.ok``)."""
    return verify_output_dir(Path(output_dir))


def deploy_output(output_dir: StrPath, target: StrPath, *, python: str | None = None) -> DeployResult:
    """Unpack a publication side by side into ``target`` and post-install every layer."""
    return deploy(Path(output_dir), Path(target), python=python)


__all__ = ["DeployResult", "Outcome", "Stack", "StackSpec", "VerifyReport", "deploy_output", "load_spec",
           "verify_output"]
