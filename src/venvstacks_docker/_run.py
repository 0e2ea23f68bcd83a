"""The one place that runs subprocesses (on the host and inside builder containers)."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from venvstacks_docker.errors import CommandError, VenvstacksDockerError

log = logging.getLogger(__name__)

StrPath = str | os.PathLike[str]


def run(
    cmd: Sequence[StrPath],
    *,
    cwd: StrPath | None = None,
    env: Mapping[str, str] | None = None,
    capture: bool = False,
    what: str | None = None,
    error: type[VenvstacksDockerError] | None = None,
) -> str:
    """Run ``cmd``; return its stdout when ``capture`` is set, else ``""``.

    A missing executable or a non-zero exit raises ``error`` (default
    :class:`CommandError`) whose message names ``what`` and carries the command's
    stderr tail, so callers can turn it into a stage-specific error.
    """
    argv = [os.fspath(c) for c in cmd]
    exe = argv[0]
    if os.sep not in exe and shutil.which(exe, path=(env or os.environ).get("PATH")) is None:
        raise (error or CommandError)(
            f"cannot run {what or exe}: '{exe}' was not found on PATH",
            hint=f"install {exe} or put it on PATH",
        )
    log.debug("+ %s", shlex.join(argv))
    try:
        proc = subprocess.run(
            argv,
            cwd=os.fspath(cwd) if cwd is not None else None,
            env=dict(env) if env is not None else None,
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError as exc:
        raise (error or CommandError)(f"cannot run {what or exe}: {exc}") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-25:]
        detail = "\n".join("    " + line for line in tail)
        raise (error or CommandError)(
            f"{what or Path(exe).name} failed (exit {proc.returncode}):\n{detail}"
        )
    if proc.stderr:
        log.debug("%s", proc.stderr.rstrip())
    return proc.stdout if capture else ""
