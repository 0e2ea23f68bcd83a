"""Running one command at a time: its log file, wall-clock and CPU timing, machine load and info."""

from __future__ import annotations

import hashlib
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ROOT


def log(msg: str) -> None:
    """Progress line on stderr, with the time of day."""
    stamp = time.strftime("%H:%M:%S")
    print(f"[bench {stamp}] {msg}", file=sys.stderr, flush=True)


def loadavg() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages."""
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)


def cpu_busy_seconds() -> float:
    """CPU seconds all processes on the machine have used so far (from /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    guest = sum(fields[8:10]) if len(fields) > 9 else 0  # already counted in user/nice
    return (sum(fields) - idle - guest) / os.sysconf("SC_CLK_TCK")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every tool runs with: the caller's, minus settings that would skew it."""
    env = dict(os.environ)
    # the sandbox sets this; a normal user environment does not, and both tools compile
    # bytecode explicitly anyway
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("VIRTUAL_ENV", None)
    for name in list(env):
        if name.startswith("VENVSTACKS_DOCKER_"):
            env.pop(name)
    env.update(extra or {})
    return env


def capture(cmd: list[str], **kwds: Any) -> str:
    """Run an untimed helper command; its stdout and stderr, stripped."""
    result = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), **kwds)
    return (result.stdout + result.stderr).strip()


def tail_of(path: Path, lines: int = 15) -> str:
    """The last lines of a log file ("" if it cannot be read)."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def shown_path(path: Path) -> str:
    """``path`` relative to the repository root when it is inside it (the work folder may not be)."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


class CommandFailed(RuntimeError):
    """A timed command exited non-zero; carries its log file and the log's tail."""

    def __init__(self, cmd: list[str], returncode: int, log_path: Path) -> None:
        tail = tail_of(log_path)
        super().__init__(f"{' '.join(cmd)} exited {returncode}; see {log_path}\n{tail}")
        self.cmd = cmd
        self.returncode = returncode
        self.log_path = log_path
        self.tail = tail


@dataclass
class Timing:
    """What one timed command took."""

    wall_s: float
    cpu_s: float
    load_1m_before: float
    log: str
    # cores' worth of CPU used by everything else on the machine while the command ran
    # ((machine-wide busy CPU time - this command's CPU time) / wall time); for container
    # builds this includes the container's own processes, which are not our children
    other_cores: float = 0.0


def best(timings: list[Timing]) -> Timing:
    """The run with the lowest wall-clock time."""
    return min(timings, key=lambda t: t.wall_s)


class Runner:
    """Runs commands with their output in a log file, timing the wall clock and CPU."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.logs.mkdir(parents=True, exist_ok=True)
        self._count = 0

    def run(self, label: str, cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> Timing:
        """Run ``cmd`` in ``cwd`` (``env`` added to the child environment); raise CommandFailed on failure."""
        self._count += 1
        log_path = self.logs / f"{self._count:03d}-{label}.log"
        load = loadavg()[0]
        log(f"{label}: {' '.join(cmd)}")
        with log_path.open("w") as out:
            shown_env = "".join(f"{k}={v} " for k, v in (env or {}).items())
            out.write(f"$ cd {cwd}\n$ {shown_env}{' '.join(cmd)}\n\n")
            out.flush()
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            busy_before = cpu_busy_seconds()
            start = time.perf_counter()
            proc = subprocess.run(
                cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=child_env(env), stdin=subprocess.DEVNULL
            )
            wall = time.perf_counter() - start
            busy = cpu_busy_seconds() - busy_before
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            out.write(f"\n[exit {proc.returncode}; {wall:.2f} s wall]\n")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if proc.returncode != 0:
            raise CommandFailed(cmd, proc.returncode, log_path)
        other = max(0.0, busy - cpu) / wall if wall > 0 else 0.0
        log(f"{label}: {wall:.2f} s wall, {cpu:.2f} s CPU, other work {other:.2f} cores")
        return Timing(wall_s=wall, cpu_s=cpu, load_1m_before=load, log=shown_path(log_path),
                      other_cores=other)


def machine_info() -> dict[str, Any]:
    """CPU, RAM, OS, kernel, Python and the load average now, for the report's Machine table."""
    cpu_model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    os_name = platform.platform()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return {
        "nproc": int(capture(["nproc"]) or os.cpu_count() or 0),
        "cpu_model": cpu_model,
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "os": os_name,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_at_start": loadavg(),
    }


def git_info() -> dict[str, Any]:
    """This checkout's short commit and the uncommitted files that would change the tool."""
    head = capture(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT)
    dirty = capture(["git", "status", "--porcelain", "--", "src", "pyproject.toml", "Dockerfiles"], cwd=ROOT)
    return {"commit": head, "dirty_files": [line.split(maxsplit=1)[1] for line in dirty.splitlines() if line.strip()]}
