#!/usr/bin/env python3
"""Benchmark venvstacks 0.7.0 against venvstacks-docker on ``sample_project``.

Run from the repository root with the project's dev venv::

    .venv/bin/python benchmarks/run_benchmarks.py [--quick] [--repeat N]
        [--output docs/benchmarks.md] [--json results.json]

One run does everything on this machine:

1. creates (or reuses) a venv with venvstacks 0.7.0 from PyPI under ``benchmarks/.work/``,
   pinned by ``benchmarks/venvstacks-0.7.0-constraints.txt``, and one with a snapshot of this
   checkout's committed HEAD (so concurrent edits in the checkout cannot change the tool
   being measured half-way; ``--ours dev`` uses the editable ``.venv`` install instead);
2. finds the CPython 3.11.2 ``install_only`` runtime archive this project builds (the
   venvstacks-docker cache; built with ``scripts/build-python-runtime`` when missing);
3. copies ``sample_project`` (spec and launch modules only) into one work folder per tool and
   stages the unpacked runtime at ``<build-dir>/cpython@3.11.2/`` for venvstacks, which cannot
   download python-build-standalone here (no GitHub access);
4. times, for both tools, with warm package caches: a fresh lock, a clean build+publish, a
   publish of the unchanged stack and a build+publish after editing one launch module; records
   the archive sizes; optionally times a clean build+publish in our builder container;
5. writes a Markdown report (and optionally the raw results as JSON).

Only wall-clock time is compared (``time.perf_counter`` around each command); the CPU time of
the command's process tree (``getrusage(RUSAGE_CHILDREN)``) is recorded as well because it is
much less sensitive to other load on the machine.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tarfile
import textwrap
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
SAMPLE = ROOT / "sample_project"
CONSTRAINTS = HERE / "venvstacks-0.7.0-constraints.txt"
VENVSTACKS_VERSION = "0.7.0"
RUNTIME_VERSION = "3.11.2"
RUNTIME_PLATFORM = "linux_x86_64"
STAGE_NAME = f"cpython@{RUNTIME_VERSION}"
EDITED_MODULE = "launch_modules/sklearn_clustering.py"
EDITED_APP = "app-clustering-demo"

TARGET_SPEEDUP = 1.8
TARGET_SIZE_PCT = 2.0
TARGET_PUBLISH_S = 1.0

TOOLS = ("venvstacks", "ours")
TOOL_LABEL = {
    "venvstacks": f"venvstacks {VENVSTACKS_VERSION}",
    "ours": "venvstacks-docker (native)",
    "ours-container": "venvstacks-docker (container)",
}

# pbs-installer's version table has no CPython 3.11.2 (python-build-standalone never shipped
# one), and venvstacks asks it for a download link *before* looking for a staged runtime.
# This shim adds a 3.11.2 entry whose URL cannot be fetched, so venvstacks finds the staged
# tree (and would fail loudly, not silently download something else, if staging was missed).
# It is loaded lazily (only when pbs_installer._versions is imported) via a .pth file.
PBS_SHIM = '''\
"""venvstacks-docker benchmark shim: teach pbs-installer about CPython %(version)s.

The benchmark stages an unpacked runtime at <build-dir>/cpython@%(version)s/, so the URL
below is never fetched; it exists only so that venvstacks' lookup of a download link for
%(version)s succeeds.  Installed by benchmarks/run_benchmarks.py; affects only this venv.
"""
import importlib.abc
import importlib.machinery
import sys

_TARGET = "pbs_installer._versions"
_VERSION = (3, 11, 2)
_URL = "https://staged-runtime-required.invalid/cpython-%(version)s-install_only.tar.gz"


def _patch(module):
    from pbs_installer._utils import PythonVersion

    key = PythonVersion("cpython", *_VERSION)
    table = module.PYTHON_VERSIONS
    if key in table:
        return
    urls = {}
    for (plat, arch, stripped) in (("linux", "x86_64", True), ("linux", "x86_64", False)):
        urls[(plat, arch, stripped)] = (_URL, None)
    table[key] = urls


class _Loader(importlib.abc.Loader):
    def __init__(self, inner):
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        _patch(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != _TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


sys.meta_path.insert(0, _Finder())
''' % {"version": RUNTIME_VERSION}


# --------------------------------------------------------------------------- small helpers


def log(msg: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[bench {stamp}] {msg}", file=sys.stderr, flush=True)


def loadavg() -> tuple[float, float, float]:
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)


def cpu_busy_seconds() -> float:
    """CPU seconds all processes on the machine have used so far (from /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    guest = sum(fields[8:10]) if len(fields) > 9 else 0  # already counted in user/nice
    return (sum(fields) - idle - guest) / os.sysconf("SC_CLK_TCK")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
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
    result = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), **kwds)
    return (result.stdout + result.stderr).strip()


class CommandFailed(RuntimeError):
    def __init__(self, cmd: list[str], returncode: int, log_path: Path) -> None:
        tail = tail_of(log_path)
        super().__init__(f"{' '.join(cmd)} exited {returncode}; see {log_path}\n{tail}")
        self.cmd = cmd
        self.returncode = returncode
        self.log_path = log_path
        self.tail = tail


def tail_of(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


@dataclass
class Timing:
    wall_s: float
    cpu_s: float
    load_1m_before: float
    log: str
    # cores' worth of CPU used by everything else on the machine while the command ran
    # ((machine-wide busy CPU time - this command's CPU time) / wall time); for container
    # builds this includes the container's own processes, which are not our children
    other_cores: float = 0.0


class Runner:
    """Runs commands with their output in a log file, timing the wall clock and CPU."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.logs.mkdir(parents=True, exist_ok=True)
        self._count = 0

    def run(self, label: str, cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> Timing:
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
        return Timing(wall_s=wall, cpu_s=cpu, load_1m_before=load, log=str(log_path.relative_to(ROOT)),
                      other_cores=other)


# --------------------------------------------------------------------------- machine info


def machine_info() -> dict[str, Any]:
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
    head = capture(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT)
    dirty = capture(["git", "status", "--porcelain", "--", "src", "pyproject.toml", "Dockerfiles"], cwd=ROOT)
    return {"commit": head, "dirty_files": [line.split(maxsplit=1)[1] for line in dirty.splitlines() if line.strip()]}


# --------------------------------------------------------------------------- tools


def dev_venvstacks_docker() -> Path:
    ours = ROOT / ".venv" / "bin" / "venvstacks-docker"
    if not ours.exists():
        found = shutil.which("venvstacks-docker")
        if not found:
            raise SystemExit("venvstacks-docker not found (run scripts/setup)")
        ours = Path(found)
    return ours


def ensure_ours_snapshot() -> tuple[Path, str]:
    """Install the committed HEAD of this repository (not the working tree) into its own venv.

    Other people may edit and commit in this checkout while a benchmark runs; the editable dev
    install would then change under the measurement.  A snapshot keeps one version throughout.
    Returns the snapshot's ``venvstacks-docker`` and the commit.
    """
    commit = capture(["git", "rev-parse", "HEAD"], cwd=ROOT)
    if not re.fullmatch(r"[0-9a-f]{40}", commit):
        raise SystemExit(f"cannot tell this checkout's commit: {commit}")
    venv = WORK / f"venvstacks-docker-{commit[:12]}"
    exe = venv / "bin" / "venvstacks-docker"
    if exe.exists() and (venv / "benchmark-stamp.txt").exists():
        log(f"reusing {venv}")
        return exe, commit
    for old in WORK.glob("venvstacks-docker-*"):
        shutil.rmtree(old, ignore_errors=True)
    src = WORK / "src-snapshot"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    log(f"installing venvstacks-docker at {commit[:12]} into {venv}")
    archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=ROOT, check=True,
                             capture_output=True).stdout
    import io
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        kwds: dict[str, Any] = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}
        tar.extractall(src, **kwds)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    uv = ROOT / ".venv" / "bin" / "uv"
    if uv.exists():
        cmd = [str(uv), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), str(src)]
    else:
        cmd = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(src)]
    subprocess.run(cmd, check=True, env=child_env())
    shutil.rmtree(src, ignore_errors=True)
    (venv / "benchmark-stamp.txt").write_text(commit + "\n")
    return exe, commit


class Tools:
    def __init__(self, venv: Path, ours: Path) -> None:
        self.venv = venv
        self.venvstacks = str(venv / "bin" / "venvstacks")
        self.ours = str(ours)
        self.ours_python = str(Path(self.ours).parent / "python")

    def versions(self) -> dict[str, str]:
        return {
            "venvstacks": capture([self.venvstacks, "--version"]).removeprefix("venvstacks:").strip(),
            "venvstacks_uv": capture([str(self.venv / "bin" / "python"), "-Im", "uv", "--version"]),
            "venvstacks_pdm": capture([str(self.venv / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('pdm'))"]),
            "venvstacks_pbs_installer": capture([str(self.venv / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('pbs-installer'))"]),
            "ours": capture([self.ours, "--version"]).split(":")[-1].strip(),
            "ours_uv": capture([self.ours_python, "-c", "import uv, subprocess; subprocess.run([uv.find_uv_bin(), '--version'])"]),
        }


def ensure_venvstacks_venv(venv: Path) -> None:
    """Create the venvstacks 0.7.0 venv (reused while the constraints are unchanged)."""
    stamp = venv / "benchmark-stamp.txt"
    want = hashlib.sha256(CONSTRAINTS.read_bytes() + PBS_SHIM.encode()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == want and (venv / "bin" / "venvstacks").exists():
        log(f"reusing {venv}")
        return
    log(f"creating {venv} (venvstacks=={VENVSTACKS_VERSION} from PyPI)")
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    subprocess.run(
        [py, "-m", "pip", "install", "--quiet", "-c", str(CONSTRAINTS), f"venvstacks=={VENVSTACKS_VERSION}"],
        check=True,
        env=child_env(),
    )
    site = Path(
        subprocess.run(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    )
    (site / "_vsbench_pbs_shim.py").write_text(PBS_SHIM)
    (site / "_vsbench_pbs_shim.pth").write_text("import _vsbench_pbs_shim\n")
    check = subprocess.run(
        [py, "-c", f"from pbs_installer import get_download_link; print(get_download_link('{RUNTIME_VERSION}', arch='x86_64', platform='linux')[0])"],
        capture_output=True, text=True,
    )
    if check.returncode != 0 or STAGE_NAME not in check.stdout:
        raise SystemExit(f"pbs-installer shim did not take effect:\n{check.stdout}{check.stderr}")
    stamp.write_text(want + "\n")


def find_runtime_archive() -> Path:
    sys.path.insert(0, str(ROOT / "src"))
    from venvstacks_docker.errors import RuntimeArchiveError
    from venvstacks_docker.runtimes import RuntimeRequest, acquire_runtime

    request = RuntimeRequest(implementation="cpython", version=RUNTIME_VERSION, platform=RUNTIME_PLATFORM)
    try:
        return acquire_runtime(request, offline=True).path
    except RuntimeArchiveError as exc:
        log(f"runtime archive not cached ({exc}); building it with scripts/build-python-runtime")
    subprocess.run([str(ROOT / "scripts" / "build-python-runtime"), "--version", RUNTIME_VERSION], check=True)
    return acquire_runtime(request, offline=True).path


def stage_runtime(archive: Path, build_dir: Path) -> None:
    """Unpack the archive's python/ folder to <build_dir>/cpython@X.Y.Z/ (venvstacks 4.1 work-around)."""
    target = build_dir / STAGE_NAME
    shutil.rmtree(target, ignore_errors=True)
    build_dir.mkdir(parents=True, exist_ok=True)
    tmp = build_dir / f".{STAGE_NAME}.unpacking"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    with tarfile.open(archive) as tar:
        kwds: dict[str, Any] = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}
        tar.extractall(tmp, **kwds)
    (tmp / "python").rename(target)
    tmp.rmdir()


# --------------------------------------------------------------------------- project copies


@dataclass
class Project:
    tool: str
    root: Path
    spec_changes: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def spec(self) -> Path:
        return self.root / "venvstacks.toml"

    @property
    def build_dir(self) -> Path:
        return self.root / "_build"

    @property
    def output_dir(self) -> Path:
        return self.root / "_artifacts"

    @property
    def requirements(self) -> Path:
        return self.root / "requirements"


def drop_toml_table(text: str, table: str) -> tuple[str, bool]:
    """Remove ``[table]`` and its ``[table.*]`` subtables from TOML text (line based)."""
    out: list[str] = []
    skipping = False
    removed = False
    header = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    for line in text.splitlines(keepends=True):
        match = header.match(line)
        if match:
            name = match.group(1).strip().strip('"')
            skipping = name == table or name.startswith(table + ".")
            removed = removed or skipping
        if not skipping:
            out.append(line)
    return "".join(out), removed


def prepare_project(tool: str, root: Path) -> Project:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    shutil.copytree(SAMPLE / "launch_modules", root / "launch_modules")
    text = (SAMPLE / "venvstacks.toml").read_text()
    project = Project(tool=tool, root=root)
    text, removed = drop_toml_table(text, "tool.venvstacks-docker")
    if removed:
        project.spec_changes.append("dropped the [tool.venvstacks-docker] table")
    data = tomllib.loads(text)  # still valid TOML
    project.spec.write_text(text)
    if tool == "venvstacks":
        # [tool.uv] is new in venvstacks 0.8.0; 0.7.0 ignores it silently (and runs
        # `uv pip compile --no-config`), so the one setting sample_project uses is handed
        # to its uv through the environment instead, to lock the same package versions.
        uv_config = data.get("tool", {}).get("uv", {})
        for key, value in uv_config.items():
            if key == "exclude-newer":
                project.env["UV_EXCLUDE_NEWER"] = str(value)
                project.spec_changes.append(
                    f"[tool.uv] exclude-newer (ignored by 0.7.0) passed as UV_EXCLUDE_NEWER={value}"
                )
            else:
                project.spec_changes.append(f"[tool.uv] {key} is ignored by 0.7.0 and NOT passed on")
    # venvstacks filters launch-module files through the .gitignore rules of the enclosing
    # git repository; this folder is inside the project's ignored benchmarks/.work/, which
    # would silently drop package-style launch modules (report_demo/).  A repository of its
    # own (no ignore rules) makes the copy behave like the tracked sample_project/.
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return project


# --------------------------------------------------------------------------- measurements


def best(timings: list[Timing]) -> Timing:
    return min(timings, key=lambda t: t.wall_s)


def archive_sizes(output_dir: Path) -> dict[str, int]:
    return {p.name.removesuffix(".tar.xz"): p.stat().st_size for p in sorted(output_dir.glob("*.tar.xz"))}


def archive_state(output_dir: Path) -> dict[str, tuple[int, int]]:
    """name -> (mtime_ns, size): tells whether a command rewrote an archive."""
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(output_dir.glob("*.tar.xz"))}


def app_metadata(output_dir: Path, app: str) -> dict[str, Any] | None:
    candidates = sorted((output_dir / "__venvstacks__").rglob(f"{app}*.json"))
    for path in candidates:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and "app_launch_module_hash" in data:
            return data
    return None


def archive_members(path: Path) -> dict[str, int]:
    """member name (without the top folder) -> size, for a .tar.xz layer archive."""
    members: dict[str, int] = {}
    with tarfile.open(path) as tar:
        for info in tar:
            name = info.name.split("/", 1)[1] if "/" in info.name else ""
            if name:
                members[name + ("/" if info.isdir() else "")] = info.size
    return members


def compare_archives(vs_dir: Path, our_dir: Path) -> dict[str, Any]:
    """Per layer: uncompressed size and the entries only one of the two archives has."""
    out: dict[str, Any] = {}
    for vs_path in sorted(vs_dir.glob("*.tar.xz")):
        our_path = our_dir / vs_path.name
        if not our_path.exists():
            continue
        a, b = archive_members(vs_path), archive_members(our_path)
        only_vs = sorted(set(a) - set(b))
        only_ours = sorted(set(b) - set(a))
        out[vs_path.name.removesuffix(".tar.xz")] = {
            "entries": [len(a), len(b)],
            "uncompressed": [sum(a.values()), sum(b.values())],
            "only_venvstacks": only_vs,
            "only_ours": only_ours,
            "same_name_different_size": sorted(n for n in set(a) & set(b) if a[n] != b[n]),
        }
    return out


def locked_packages(project: Project) -> dict[str, list[str]]:
    """layer -> sorted ``name==version`` pins installed in the layer itself, from the
    packages-*.txt summaries both tools write (the "Shared packages inherited from other
    layers" section is left out: 0.7.0 feeds lower layers' requirements into upper locks,
    0.8.0 and ours only use them as constraints, so those sections differ by design)."""
    layers: dict[str, list[str]] = {}
    for folder in sorted(p for p in project.requirements.glob("*") if p.is_dir()):
        pins: set[str] = set()
        for summary in folder.glob("packages-*.txt"):
            for line in summary.read_text().splitlines():
                if line.lower().startswith("# shared packages"):
                    break
                line = line.split("#", 1)[0].strip()
                if "==" in line:
                    name, _, version = line.partition("==")
                    pins.add(f"{re.sub(r'[-_.]+', '-', name).lower()}=={version.strip()}")
        layers[folder.name] = sorted(pins)
    return layers


def expected_module_hash(tool: str, tools: Tools, path: Path) -> str:
    """The hash the tool itself computes for ``path`` (their algorithms differ)."""
    if tool == "venvstacks":
        code = (
            "import sys, pathlib, warnings; warnings.simplefilter('ignore');"
            "from venvstacks._hash_content import hash_module;"
            "print(hash_module(pathlib.Path(sys.argv[1])))"
        )
        return capture([str(tools.venv / "bin" / "python"), "-c", code, str(path)])
    code = (
        "import sys, pathlib; from venvstacks_docker.spec import module_hash;"
        "print(module_hash(pathlib.Path(sys.argv[1])))"
    )
    return capture([tools.ours_python, "-c", code, str(path)])


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.repeat = 1 if args.quick else max(1, args.repeat)
        self.runner = Runner(WORK / "logs")
        self.tools: Tools  # set in setup()
        self.archive: Path | None = None
        self.projects: dict[str, Project] = {}
        self.results: dict[str, Any] = {
            "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "repeat": self.repeat,
            "quick": bool(args.quick),
            "timings": {},
            "errors": [],
            "notes": [],
        }

    # commands ------------------------------------------------------------------------------

    def cmd(self, tool: str, step: str, project: Project) -> list[str]:
        spec = str(project.spec)
        if step == "build-clean-paired":
            step = "build-clean"
        if tool == "venvstacks":
            return {
                "lock": [self.tools.venvstacks, "lock", spec],
                "build-clean": [self.tools.venvstacks, "build", "--publish", "--clean", spec],
                "publish": [self.tools.venvstacks, "publish", spec],
                "build-edit": [self.tools.venvstacks, "build", "--publish", spec],
            }[step]
        if tool == "ours":
            return {
                "lock": [self.tools.ours, "lock", "--native", spec],
                "build-clean": [self.tools.ours, "build", "--native", "--publish", "--clean", spec],
                "publish": [self.tools.ours, "publish", "--native", spec],
                "build-edit": [self.tools.ours, "build", "--native", "--publish", spec],
            }[step]
        if tool == "ours-container":
            return {
                "build-clean": [self.tools.ours, "build", "--publish", "--clean", spec],
            }[step]
        raise KeyError(tool)

    def before(self, tool: str, step: str, project: Project) -> None:
        """Untimed preparation before a timed command."""
        if step == "lock":
            shutil.rmtree(project.requirements, ignore_errors=True)
        if step in ("build-clean", "build-clean-paired"):
            # every archive must really be written
            shutil.rmtree(project.output_dir, ignore_errors=True)
        if tool == "venvstacks" and step in ("lock", "build-clean"):
            if step == "build-clean" or not (project.build_dir / "cpython-3.11").exists():
                assert self.archive is not None
                stage_runtime(self.archive, project.build_dir)

    def time_step(self, step: str, tools: tuple[str, ...], *, after: Any = None) -> None:
        """Run ``step`` for each tool ``self.repeat`` times (tool order alternates) and keep all."""
        for tool in tools:
            self.results["timings"].setdefault(tool, {}).setdefault(step, [])
        for index in range(self.repeat):
            order = tools if index % 2 == 0 else tuple(reversed(tools))
            for tool in order:
                project = self.projects[tool]
                try:
                    self.before(tool, step, project)
                    timing = self.runner.run(f"{tool}-{step}-{index + 1}", self.cmd(tool, step, project),
                                             cwd=project.root, env=project.env)
                except CommandFailed as exc:
                    self.error(tool, step, exc)
                    continue
                self.results["timings"][tool][step].append(asdict(timing))
                if after is not None:
                    after(tool, project, timing)

    def error(self, tool: str, step: str, exc: CommandFailed) -> None:
        log(f"FAILED {tool} {step}: {exc}")
        self.results["errors"].append(
            {"tool": tool, "step": step, "command": " ".join(exc.cmd), "exit": exc.returncode,
             "log": str(exc.log_path.relative_to(ROOT)), "tail": exc.tail}
        )

    # steps ---------------------------------------------------------------------------------

    def setup(self) -> None:
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
        self.tools = Tools(WORK / f"venvstacks-{VENVSTACKS_VERSION}", ours)
        ensure_venvstacks_venv(self.tools.venv)
        self.results["versions"] = self.tools.versions()
        self.archive = find_runtime_archive()
        self.results["runtime_archive"] = {"path": str(self.archive), "sha256": sha256_file(self.archive),
                                           "size": self.archive.stat().st_size}
        runs = WORK / "runs"
        for tool in TOOLS:
            self.projects[tool] = prepare_project(tool, runs / tool)
        self.results["spec_changes"] = {tool: p.spec_changes for tool, p in self.projects.items()}

    def warm_up(self) -> None:
        log("warm-up locks (untimed; fills the package caches)")
        for tool in TOOLS:
            project = self.projects[tool]
            try:
                self.before(tool, "lock", project)
                self.runner.run(f"{tool}-lock-warmup", self.cmd(tool, "lock", project), cwd=project.root,
                                env=project.env)
            except CommandFailed as exc:
                self.error(tool, "lock-warmup", exc)

    def measure(self) -> None:
        self.time_step("lock", TOOLS)
        for tool in TOOLS:  # a failed final lock would break everything after it
            if not any(self.projects[tool].requirements.rglob("*")):
                log(f"{tool}: no lock files after the lock step; relocking untimed")
                self.runner.run(f"{tool}-lock-again", self.cmd(tool, "lock", self.projects[tool]),
                                cwd=self.projects[tool].root, env=self.projects[tool].env)

        self.results["locked_packages"] = {tool: locked_packages(self.projects[tool]) for tool in TOOLS}
        sizes: dict[str, dict[str, int]] = {}

        def record_sizes(tool: str, project: Project, timing: Timing) -> None:
            sizes[tool] = archive_sizes(project.output_dir)

        self.time_step("build-clean", TOOLS, after=record_sizes)
        self.results["archive_sizes"] = sizes
        if all(tool in sizes for tool in TOOLS):
            log("comparing archive contents (untimed)")
            self.results["archive_contents"] = compare_archives(
                self.projects["venvstacks"].output_dir, self.projects["ours"].output_dir
            )

        rewritten: dict[str, list[str]] = {}
        states = {tool: archive_state(self.projects[tool].output_dir) for tool in TOOLS}

        def check_unchanged(tool: str, project: Project, timing: Timing) -> None:
            now = archive_state(project.output_dir)
            changed = sorted(name for name, state in now.items() if states[tool].get(name) != state)
            rewritten.setdefault(tool, [])
            rewritten[tool] = sorted(set(rewritten[tool]) | set(changed))
            states[tool] = now

        self.time_step("publish", TOOLS, after=check_unchanged)
        self.results["publish_unchanged_rewrote"] = rewritten

        self.measure_edit()

        if self.args.quick or self.args.no_container:
            reason = "--quick" if self.args.quick else "--no-container"
            self.results["container"] = {"measured": False, "reason": f"skipped ({reason})"}
        else:
            self.measure_container()

    def measure_edit(self) -> None:
        findings: dict[str, list[dict[str, Any]]] = {tool: [] for tool in TOOLS}
        pending: dict[str, dict[str, Any]] = {}

        def before_edit(tool: str) -> None:
            project = self.projects[tool]
            module = project.root / EDITED_MODULE
            meta = app_metadata(project.output_dir, EDITED_APP) or {}
            archive = project.output_dir / f"{EDITED_APP}.tar.xz"
            with module.open("a") as stream:
                stream.write(f"# benchmark edit {time.time_ns()}\n")
            pending[tool] = {
                "hash_before": meta.get("app_launch_module_hash"),
                "archive_sha_before": sha256_file(archive) if archive.exists() else None,
                "archives_before": archive_state(project.output_dir),
                "expected_hash": expected_module_hash(tool, self.tools, module),
            }

        def after_edit(tool: str, project: Project, timing: Timing) -> None:
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

        original_before = self.before

        def before(tool: str, step: str, project: Project) -> None:
            original_before(tool, step, project)
            if step == "build-edit":
                before_edit(tool)

        self.before = before  # type: ignore[method-assign]
        try:
            self.time_step("build-edit", TOOLS, after=after_edit)
        finally:
            self.before = original_before  # type: ignore[method-assign]
        self.results["edit_findings"] = findings

    def measure_container(self) -> None:
        info: dict[str, Any] = {"measured": False}
        self.results["container"] = info
        listing = capture([self.tools.ours, "image", "list"])
        info["image_list"] = listing
        if not re.search(r"^base\s", listing, re.M):
            info["reason"] = "no bootstrapped base image (`venvstacks-docker image bootstrap-base` not run)"
            return
        try:
            self.runner.run("ours-container-image-build", [self.tools.ours, "image", "build"], cwd=ROOT)
        except CommandFailed as exc:
            info["reason"] = f"`venvstacks-docker image build` failed (exit {exc.returncode}): {exc.tail[-600:]}"
            return
        # same spec and the native run's lock files: the container step times build+publish only.
        # Each container build is paired with a native clean build run right next to it (order
        # alternating), so that both see about the same load from other work on the machine.
        project = prepare_project("ours-container", WORK / "runs" / "ours-container")
        shutil.copytree(self.projects["ours"].requirements, project.requirements)
        # the native copy's launch modules carry the benchmark's edits by now: use the same files
        shutil.rmtree(project.root / "launch_modules")
        shutil.copytree(self.projects["ours"].root / "launch_modules", project.root / "launch_modules")
        self.projects["ours-container"] = project
        digests: dict[str, dict[str, str]] = {}

        def record_digests(tool: str, proj: Project, timing: Timing) -> None:
            digests[tool] = {p.name: sha256_file(p) for p in sorted(proj.output_dir.glob("*.tar.xz"))}

        self.time_step("build-clean-paired", ("ours", "ours-container"), after=record_digests)
        runs = self.results["timings"].get("ours-container", {}).get("build-clean-paired", [])
        if not runs:
            err = next((e for e in self.results["errors"] if e["tool"] == "ours-container"), None)
            info["reason"] = "container build failed: " + (err["tail"][-800:] if err else "unknown")
            return
        info["measured"] = True
        info["archive_sizes"] = archive_sizes(project.output_dir)
        info["archive_sha256"] = digests.get("ours-container", {})
        info["native_archive_sha256"] = digests.get("ours", {})
        info["byte_identical_to_native"] = (
            bool(digests.get("ours")) and digests.get("ours") == digests.get("ours-container")
        )

    def run(self) -> dict[str, Any]:
        self.setup()
        self.warm_up()
        self.measure()
        self.results["load_at_end"] = loadavg()
        self.results["git"]["head_at_end"] = capture(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT)
        self.results["finished"] = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
        return self.results


# --------------------------------------------------------------------------- report


STEP_LABEL = {
    "lock": "lock (fresh, warm package caches)",
    "build-clean": "clean build + publish",
    "publish": "publish, unchanged stack",
    "build-edit": "build + publish after editing one launch module",
}


def best_wall(results: dict[str, Any], tool: str, step: str) -> Timing | None:
    runs = results["timings"].get(tool, {}).get(step, [])
    if not runs:
        return None
    return best([Timing(**r) for r in runs])


def fmt_s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def fmt_size(n: int | None) -> str:
    if n is None:
        return "n/a"
    if n >= 1024 * 1024:
        return f"{n / 1024 / 1024:.2f} MiB"
    if n >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n} B"


def verdict(ok: bool | None) -> str:
    return {True: "**met**", False: "**not met**", None: "**not measured**"}[ok]


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {"steps": {}}
    for step in STEP_LABEL:
        vs = best_wall(results, "venvstacks", step)
        ours = best_wall(results, "ours", step)
        speedup = vs.wall_s / ours.wall_s if vs and ours and ours.wall_s > 0 else None
        summary["steps"][step] = {
            "venvstacks_s": vs.wall_s if vs else None,
            "ours_s": ours.wall_s if ours else None,
            "venvstacks_cpu_s": vs.cpu_s if vs else None,
            "ours_cpu_s": ours.cpu_s if ours else None,
            "speedup": speedup,
        }
    sizes = results.get("archive_sizes", {})
    vs_sizes, our_sizes = sizes.get("venvstacks", {}), sizes.get("ours", {})
    total_vs, total_ours = sum(vs_sizes.values()), sum(our_sizes.values())
    size_pct = (total_ours - total_vs) / total_vs * 100 if total_vs and total_ours else None
    summary["size_total"] = {"venvstacks": total_vs, "ours": total_ours, "pct": size_pct}
    clean = summary["steps"]["build-clean"]["speedup"]
    publish = summary["steps"]["publish"]["ours_s"]
    summary["targets"] = {
        "clean_speedup": None if clean is None else clean >= TARGET_SPEEDUP,
        "size": None if size_pct is None else size_pct <= TARGET_SIZE_PCT,
        "publish_unchanged": None if publish is None else publish < TARGET_PUBLISH_S,
    }
    container = results.get("container", {})
    native_clean = best_wall(results, "ours", "build-clean-paired")
    cont = best_wall(results, "ours-container", "build-clean-paired")
    if container.get("measured") and cont and native_clean:
        summary["container_overhead_pct"] = (cont.wall_s - native_clean.wall_s) / native_clean.wall_s * 100
    return summary


def other_work(results: dict[str, Any]) -> list[float]:
    """"Other work" (cores) during every native timed command (container runs excluded)."""
    return [r.get("other_cores", 0.0) for tool, runs in results["timings"].items() if tool != "ours-container"
            for rs in runs.values() for r in rs]


def contended_now(results: dict[str, Any]) -> bool:
    m = results["machine"]
    return m["load_at_start"][0] > m["nproc"] * 0.75 or max(other_work(results), default=0.0) > 0.5


def render_report(results: dict[str, Any], json_path: str | None) -> str:
    summary = summarize(results)
    results["summary"] = summary
    m = results["machine"]
    v = results["versions"]
    load = m["load_at_start"]
    contended = contended_now(results)
    lines: list[str] = []
    add = lines.append

    add("# Benchmarks: venvstacks-docker vs venvstacks 0.7.0")
    add("")
    add("Generated by `benchmarks/run_benchmarks.py` "
        f"(run started {results['started']}, finished {results['finished']}). "
        "Do not edit by hand: rerun the script (see [Rerunning](#rerunning)).")
    add("")
    if contended:
        add(f"> **Contended machine.** The load average at the start was "
            f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min) on {m['nproc']} cores, and "
            f"{results['load_at_end'][0]:.2f} / {results['load_at_end'][1]:.2f} / {results['load_at_end'][2]:.2f} "
            f"at the end; while the timed commands ran, other processes kept "
            f"{min(other_work(results), default=0):.2f} to {max(other_work(results), default=0):.2f} of the "
            f"{m['nproc']} cores busy (column \"other work\" below): other work (test suites, builds) was running at the same time, so the wall-clock "
            "times below are inflated and noisy, and the ratios between the tools are only indicative. "
            "The CPU-time columns (user+system time of each command's process tree) are much less "
            "affected by other load; the container run's CPU time is not visible from the host.")
        add("")

    add("## Machine")
    add("")
    add("| | |")
    add("|---|---|")
    add(f"| CPU | {m['cpu_model']}, {m['nproc']} cores (`nproc`) |")
    add(f"| RAM | {m['ram_gib']} GiB |")
    add(f"| OS | {m['os']}, kernel {m['kernel']} |")
    add(f"| Python running the tools | {m['python']} |")
    add(f"| load average at start (1/5/15 min) | {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} |")
    le = results["load_at_end"]
    add(f"| load average at end | {le[0]:.2f} / {le[1]:.2f} / {le[2]:.2f} |")
    add("")

    add("## Tool versions")
    add("")
    git = results["git"]
    dirty = f" (working tree had uncommitted changes in: {', '.join(git['dirty_files'])})" if git["dirty_files"] else ""
    if git.get("measured"):
        dirty += f"; measured: {git['measured']}"
    if git.get("head_at_end") and not git["commit"].startswith(git["head_at_end"][:7]) and git.get("measured", "").startswith("snapshot"):
        dirty += f"; HEAD moved to `{git['head_at_end'][:7]}` during the run, which does not affect the snapshot"
    add("| tool | version | uv |")
    add("|---|---|---|")
    add(f"| venvstacks | {v['venvstacks']} (pdm {v['venvstacks_pdm']}, pbs-installer {v['venvstacks_pbs_installer']}) | {v['venvstacks_uv']} |")
    add(f"| venvstacks-docker | {v['ours']}, commit `{git['commit']}`{dirty} | {v['ours_uv']} |")
    add("")
    ra = results["runtime_archive"]
    add(f"Runtime for both: `{Path(ra['path']).name}` (sha256 `{ra['sha256'][:16]}…`, "
        f"{fmt_size(ra['size'])}), the CPython {RUNTIME_VERSION} build this project makes.")
    add("")

    add("## Timings")
    add("")
    rep = results["repeat"]
    add(f"Wall-clock seconds, {'best of ' + str(rep) if rep > 1 else 'one run each'}; "
        "speed-up = venvstacks time / venvstacks-docker time (higher is better for us). "
        "Our numbers are for native builds (`--native`).")
    add("")
    add("| step | venvstacks 0.7.0 | venvstacks-docker | speed-up | CPU: venvstacks | CPU: ours | other work: venvstacks / ours |")
    add("|---|---:|---:|---:|---:|---:|---:|")
    for step, label in STEP_LABEL.items():
        s = summary["steps"][step]
        sp = "n/a" if s["speedup"] is None else f"{s['speedup']:.2f}x"
        vs_t, our_t = best_wall(results, "venvstacks", step), best_wall(results, "ours", step)
        other = (f"{vs_t.other_cores:.2f} / {our_t.other_cores:.2f} cores" if vs_t and our_t else "n/a")
        add(f"| {label} | {fmt_s(s['venvstacks_s'])} | {fmt_s(s['ours_s'])} | {sp} | "
            f"{fmt_s(s['venvstacks_cpu_s'])} | {fmt_s(s['ours_cpu_s'])} | {other} |")
    add("")
    loads = []
    for tool in ("venvstacks", "ours", "ours-container"):
        for step, runs in results["timings"].get(tool, {}).items():
            for r in runs:
                loads.append(r["load_1m_before"])
    if loads:
        add(f"1-minute load average just before the timed commands: {min(loads):.1f} to {max(loads):.1f} "
            "(it includes this benchmark's own previous command). \"Other work\" is the CPU that the "
            "rest of the machine used while the reported run was going, in cores (of "
            f"{m['nproc']}): machine-wide busy CPU time from `/proc/stat` minus the command's own CPU "
            "time, divided by its wall time. CPU columns are user+system time of the command's "
            "process tree.")
        add("")
    if rep > 1:
        add("All runs (wall seconds): " + "; ".join(
            f"{tool} {step}: " + ", ".join(format(r["wall_s"], ".2f") for r in runs)
            for tool in ("venvstacks", "ours", "ours-container")
            for step, runs in results["timings"].get(tool, {}).items() if runs
        ) + ".")
        add("")

    lock = summary["steps"]["lock"]
    if lock["speedup"] is not None and lock["speedup"] < 1:
        add("Locking is slower in venvstacks-docker: it follows venvstacks 0.8.0's procedure (per layer "
            "a throw-away project, `uv lock --upgrade`, then `uv export --format pylock.toml`: two uv "
            "runs per layer), where 0.7.0 runs a single `uv pip compile` per layer.")
        add("")

    add("### Container build")
    add("")
    container = results.get("container", {})
    cont = best_wall(results, "ours-container", "build-clean-paired")
    native = best_wall(results, "ours", "build-clean-paired")
    if container.get("measured") and cont and native:
        pairs = zip(results["timings"]["ours"].get("build-clean-paired", []),
                    results["timings"]["ours-container"].get("build-clean-paired", []))
        pair_text = ", ".join(
            f"{c['wall_s']:.1f} s vs {n['wall_s']:.1f} s ({(c['wall_s'] - n['wall_s']) / n['wall_s'] * 100:+.0f} %)"
            for n, c in pairs)
        add(f"Clean build + publish in the builder container (`venvstacks-docker build --publish --clean`, "
            f"the native run's lock files), each run paired with a native clean build "
            f"(`--native`) right next to it: best {fmt_s(cont.wall_s)} in the container vs "
            f"{fmt_s(native.wall_s)} native, a container overhead of "
            f"**{summary['container_overhead_pct']:+.1f} %** (pairs, container vs native: {pair_text}). "
            "The container time includes starting the container and the host-side wheel prefetch. "
            + ("The container's archives are byte-identical to the native ones (same sha256)."
               if container.get("byte_identical_to_native") else
               "**The container's archives are not byte-identical to the native ones**: "
               + ", ".join(
                   f"{k} {v[:12]}… vs {container.get('native_archive_sha256', {}).get(k, '-')[:12]}…"
                   for k, v in container.get("archive_sha256", {}).items()
                   if container.get("native_archive_sha256", {}).get(k) != v) + "."))
        pair_pcts = [
            (c["wall_s"] - n["wall_s"]) / n["wall_s"] * 100
            for n, c in zip(results["timings"]["ours"].get("build-clean-paired", []),
                            results["timings"]["ours-container"].get("build-clean-paired", []))
        ]
        if contended_now(results) or (pair_pcts and max(pair_pcts) - min(pair_pcts) > 10):
            add("")
            add(f"The pairs range from {min(pair_pcts):+.0f} % to {max(pair_pcts):+.0f} %: identical "
                "native builds varied by about that much on this shared machine, so treat the overhead "
                "figure as rough.")
    else:
        add(f"Not measured: {container.get('reason', 'not attempted')}.")
    add("")

    add("## Archive sizes")
    add("")
    add("Both tools publish `.tar.xz` archives; sizes after the clean build.")
    add("")
    sizes = results.get("archive_sizes", {})
    vs_sizes, our_sizes = sizes.get("venvstacks", {}), sizes.get("ours", {})
    add("| layer | venvstacks 0.7.0 | venvstacks-docker | difference |")
    add("|---|---:|---:|---:|")
    for name in sorted(set(vs_sizes) | set(our_sizes)):
        a, b = vs_sizes.get(name), our_sizes.get(name)
        diff = f"{(b - a) / a * 100:+.2f} %" if a and b else "n/a"
        add(f"| {name} | {fmt_size(a)} ({a if a is not None else '-'} B) | {fmt_size(b)} ({b if b is not None else '-'} B) | {diff} |")
    st = summary["size_total"]
    pct = "n/a" if st["pct"] is None else f"{st['pct']:+.2f} %"
    add(f"| **total** | **{fmt_size(st['venvstacks'])}** | **{fmt_size(st['ours'])}** | **{pct}** |")
    add("")

    contents = results.get("archive_contents", {})
    if contents:
        add("What is in them (entries and uncompressed bytes of file data, venvstacks / ours; entries "
            "compared by path below the layer folder):")
        add("")
        add("| layer | entries | uncompressed | only in venvstacks' | only in ours | same path, other size |")
        add("|---|---:|---:|---|---|---:|")

        def sample(names: list[str]) -> str:
            if not names:
                return "-"
            shown = ", ".join(f"`{n}`" for n in names[:4])
            return f"{len(names)}: {shown}" + (", …" if len(names) > 4 else "")

        for name, c in contents.items():
            add(f"| {name} | {c['entries'][0]} / {c['entries'][1]} | {fmt_size(c['uncompressed'][0])} / "
                f"{fmt_size(c['uncompressed'][1])} | {sample(c['only_venvstacks'])} | {sample(c['only_ours'])} | "
                f"{len(c['same_name_different_size'])} |")
        add("")

    if contents:
        only_vs = {n for c in contents.values() for n in c["only_venvstacks"]}
        only_ours = {n for c in contents.values() for n in c["only_ours"]}
        reasons = []
        if any(n.startswith("share/venv/dynlib/") or n == "bin/python_" for n in only_vs):
            reasons.append("`share/venv/dynlib/` links and the `bin/python` wrapper script with its "
                           "`bin/python_` symlink are venvstacks' shared-library mechanism across layers, "
                           "which venvstacks-docker does not implement (documented: `dynlib_exclude` is "
                           "accepted but unused, `dynlib_dirs` is always empty); ours has a plain "
                           "`bin/python` symlink instead")
        if any(n.endswith(("/INSTALLER", "/REQUESTED")) for n in only_vs):
            reasons.append("`INSTALLER`/`REQUESTED` files are written by pip, which venvstacks 0.7.0 "
                           "installs with; venvstacks-docker's archives have neither (venvstacks 0.8.0 "
                           "installs with uv and keeps an `INSTALLER` saying `uv`)")
        if any(n.startswith("bin/") for n in only_ours):
            reasons.append("venvstacks deletes everything in a layer's `bin/` whose name does not start "
                           "with `python`, the runtime's own `2to3`/`idle3`/`pydoc3` scripts included; "
                           "venvstacks-docker keeps those (they are relocatable `/bin/sh` trampolines in "
                           "this runtime)")
        if reasons:
            differing = sorted({n.rstrip("/").rsplit("/", 1)[-1] for c in contents.values()
                                for n in c["same_name_different_size"]})
            add("Where the contents differ: " + "; ".join(reasons) + ". Same path, other size: "
                + (", ".join(f"`{n}`" for n in differing[:10]) + (", …" if len(differing) > 10 else "")
                   if differing else "none") + ".")
            add("")

    pins = results.get("locked_packages", {})
    if pins.get("venvstacks") and pins.get("ours"):
        same = pins["venvstacks"] == pins["ours"]
        if same:
            add("Both tools locked exactly the same package versions for every layer, so the archives "
                "hold the same distributions.")
        else:
            add("**The two tools locked different package versions**, so the archive comparison is not "
                "like for like:")
            add("")
            for layer in sorted(set(pins["venvstacks"]) | set(pins["ours"])):
                a, b = set(pins["venvstacks"].get(layer, [])), set(pins["ours"].get(layer, []))
                if a != b:
                    add(f"- {layer}: venvstacks only {sorted(a - b)}, ours only {sorted(b - a)}")
        add("")

    add("## Targets")
    add("")
    t = summary["targets"]
    vs_clean, our_clean = best_wall(results, "venvstacks", "build-clean"), best_wall(results, "ours", "build-clean")
    clean = summary["steps"]["build-clean"]
    clean_cpu = (clean["venvstacks_cpu_s"] / clean["ours_cpu_s"]
                 if clean["venvstacks_cpu_s"] and clean["ours_cpu_s"] else None)
    add("| target | result | verdict |")
    add("|---|---|---|")
    clean_text = "n/a" if clean["speedup"] is None else format(clean["speedup"], ".2f") + "x wall clock"
    if clean_cpu is not None:
        clean_text += f" ({clean_cpu:.2f}x in CPU time)"
    add(f"| clean build + publish at least {TARGET_SPEEDUP}x faster than venvstacks 0.7.0 | "
        f"{clean_text} | {verdict(t['clean_speedup'])} |")
    add(f"| archives (same format) no more than {TARGET_SIZE_PCT:g} % larger | total {pct} | {verdict(t['size'])} |")
    pub = summary["steps"]["publish"]["ours_s"]
    add(f"| publish of an unchanged stack under {TARGET_PUBLISH_S:g} s | {fmt_s(pub)} | {verdict(t['publish_unchanged'])} |")
    add("")
    if vs_clean and our_clean and our_clean.cpu_s > 0:
        n = m["nproc"]
        ideal = vs_clean.cpu_s / (our_clean.cpu_s / n)
        add(f"Where the clean build time goes: venvstacks 0.7.0 used {vs_clean.cpu_s:.0f} s of CPU in "
            f"{vs_clean.wall_s:.0f} s ({vs_clean.cpu_s / vs_clean.wall_s:.2f} cores on average: it compresses "
            f"with one thread), venvstacks-docker {our_clean.cpu_s:.0f} s of CPU in {our_clean.wall_s:.0f} s "
            f"({our_clean.cpu_s / our_clean.wall_s:.2f} cores; its xz writer uses a thread per core), while "
            f"other work took {vs_clean.other_cores:.2f} and {our_clean.other_cores:.2f} cores respectively. "
            f"Most of that CPU goes into xz compression for both; venvstacks 0.7.0 needed "
            f"{vs_clean.cpu_s / our_clean.cpu_s:.2f}x as much CPU in total, and the rest of the speed-up comes from "
            f"compressing on all {n} cores, which only helps while cores are free. "
            f"Estimate, not a measurement: on an otherwise idle {n}-core machine venvstacks needs about "
            f"its CPU time ({vs_clean.cpu_s:.0f} s) and ours about its CPU time / {n} "
            f"({our_clean.cpu_s / n:.0f} s), a ceiling of about {ideal:.2f}x.")
        add("")
    rewrote = results.get("publish_unchanged_rewrote", {})
    for tool in TOOLS:
        if tool in rewrote:
            names = rewrote[tool]
            add(f"- Unchanged publish, {TOOL_LABEL[tool]}: "
                + ("no archive was rewritten." if not names else "rewrote " + ", ".join(names) + "."))
    add("")

    add("## Editing a launch module")
    add("")
    add(f"After the unchanged publish, a comment line was appended to `{EDITED_MODULE}` and "
        f"`build --publish` run again (ours with `--native`). \"Expected hash\" is what the tool's own "
        f"hash function gives for the edited file (the two tools hash modules differently); the edit is "
        f"picked up when the published `{EDITED_APP}` metadata carries it.")
    add("")
    add("| tool | hash before | hash after | expected hash | archive rewritten | picked up |")
    add("|---|---|---|---|---|---|")
    for tool in TOOLS:
        for f in results.get("edit_findings", {}).get(tool, []):
            short = lambda h: f"`{h.split(':')[-1].split('/')[-1][:12]}…`" if h else "n/a"  # noqa: E731
            rewritten = f["archive_sha_before"] != f["archive_sha_after"]
            extra = f" ({', '.join(f['new_or_rewritten'])})" if f["new_or_rewritten"] else ""
            add(f"| {TOOL_LABEL[tool]} | {short(f['hash_before'])} | {short(f['hash_after'])} | "
                f"{short(f['expected_hash'])} | {'yes' if rewritten else 'no'}{extra} | "
                f"{'**yes**' if f['picked_up'] else '**no**'} |")
    add("")
    vs_edit = results.get("edit_findings", {}).get("venvstacks", [])
    if vs_edit and not any(f["picked_up"] for f in vs_edit):
        add("venvstacks 0.7.0 kept publishing the stale application archive and metadata after the edit "
            "(its publish step only compares the layer's lock-derived inputs, so an unversioned app whose "
            "requirements did not change is \"already published\"); only `publish --force` or a clean build "
            "would ship the new module. Its build+publish time for this step is therefore the time of doing "
            "*nothing useful*, so the speed-up in that row is not a like-for-like comparison.")
        add("")
    ours_edit = results.get("edit_findings", {}).get("ours", [])
    if ours_edit and not all(f["picked_up"] for f in ours_edit):
        add("**venvstacks-docker did not publish the edited launch module** — see the table above.")
        add("")

    add("## Method")
    add("")
    add(textwrap.dedent(f"""\
        - Each tool works in its own copy of `sample_project/` (only `venvstacks.toml` and
          `launch_modules/`; venvstacks locks on its own, so our `requirements/` lock files are not
          copied) under `benchmarks/.work/runs/`.
        - venvstacks-docker is measured as committed: by default the script installs the
          checkout's HEAD (via `git archive`, not the working tree) into its own venv under
          `benchmarks/.work/`, so edits or commits others make during the run cannot change the
          tool half-way (`--ours dev` measures the editable `.venv` install instead).
        - venvstacks {VENVSTACKS_VERSION} runs from its own venv (`benchmarks/.work/venvstacks-{VENVSTACKS_VERSION}/`),
          pinned by `benchmarks/venvstacks-{VENVSTACKS_VERSION}-constraints.txt` (same uv as ours).
        - venvstacks cannot download python-build-standalone here (no GitHub access), so the runtime
          archive's `python/` folder is unpacked to `<build-dir>/{STAGE_NAME}/` before its warm-up lock
          and before every clean build (untimed). venvstacks moves that tree into place as its runtime
          layer. Our tool unpacks the same archive from its cache inside the timed command, so this
          favours venvstacks slightly.
        - pbs-installer (which venvstacks asks for a download link before it looks for a staged tree)
          has no CPython {RUNTIME_VERSION} entry, so the venvstacks venv carries a small shim
          (`_vsbench_pbs_shim.py`, loaded by a `.pth` file) that adds an entry with an unreachable
          URL. No download happens; nothing else in venvstacks is changed.
        - Lock: one untimed warm-up lock per tool (fills uv's caches), then the `requirements/`
          folder is deleted and a fresh lock timed (`venvstacks lock` / `venvstacks-docker lock --native`).
        - Clean build + publish: the output folder is deleted first so every archive is really
          written (`venvstacks build --publish --clean` / `venvstacks-docker build --native --publish --clean`).
        - Unchanged publish: `venvstacks publish` / `venvstacks-docker publish --native` right after.
        - Edit: a comment line appended to `{EDITED_MODULE}`, then `build --publish` (ours `--native`).
        - Commands run with the caller's environment minus `PYTHONDONTWRITEBYTECODE`,
          `VIRTUAL_ENV` and `VENVSTACKS_DOCKER_*`; each command's output is in
          `benchmarks/.work/logs/`. With `--repeat N` each step runs N times (tool order
          alternating) and the best wall-clock time is reported."""))
    add("")
    changes = results.get("spec_changes", {})
    add("Spec changes for venvstacks 0.7.0: none to the file itself — 0.7.0 accepts "
        "`sample_project/venvstacks.toml` as it is (`python_implementation` is its own key name; "
        "`fully_versioned_name` is only a legacy alias) and there is no `[tool.venvstacks-docker]` "
        "table to drop. Adjustments made around it:")
    add("")
    for tool, items in changes.items():
        for item in items:
            add(f"- {TOOL_LABEL.get(tool, tool)}: {item}.")
    add("- both copies are `git init`-ed: venvstacks filters launch-module files through the "
        "`.gitignore` rules of the enclosing repository, and `benchmarks/.work/` is ignored in ours, "
        "which would silently publish `report_demo/` as an empty package.")
    add("- the pbs-installer shim described above (not a spec change, but needed for "
        f"`python_implementation = \"cpython@{RUNTIME_VERSION}\"`).")
    add("")

    if results.get("notes"):
        add("## Notes")
        add("")
        for note in results["notes"]:
            add(f"- {note}")
        add("")

    if results["errors"]:
        add("## Errors")
        add("")
        for e in results["errors"]:
            add(f"- {e['tool']} {e['step']}: `{e['command']}` exited {e['exit']} (log `{e['log']}`):")
            add("")
            add("  ```")
            for line in e["tail"].splitlines()[-10:]:
                add("  " + line)
            add("  ```")
        add("")

    add("## Rerunning")
    add("")
    add("```sh")
    add("scripts/setup                                   # dev venv, if not there yet")
    add("scripts/build-python-runtime --version 3.11.2  # only if the runtime archive is not cached (the script does this too)")
    repeat_arg = f" --repeat {results['repeat']}" if results["repeat"] > 1 else ""
    add(f".venv/bin/python benchmarks/run_benchmarks.py{repeat_arg} --output docs/benchmarks.md "
        "--json benchmarks/.work/results.json")
    add("```")
    add("")
    add("Options: `--repeat N` (best of N per step), `--quick` (one run per step, no container "
        "measurement), `--no-container`, `--ours dev` (measure the editable `.venv` install instead of a "
        "snapshot of HEAD), `--note TEXT` (a remark for the Notes section), `--report-only RESULTS_JSON` "
        "(re-render from saved results; every run saves them to `benchmarks/.work/last-results.json`). "
        "The first run creates the venvstacks venv (about a minute). A full run with `--repeat 2` "
        "takes about 15 minutes on an idle 2-core machine, and much longer on a busy one. "
        "The container measurement needs `venvstacks-docker image bootstrap-base` to have been run; "
        "the script builds the builder image itself (untimed). For stable numbers, run on an idle machine.")
    if json_path:
        add("")
        add(f"Raw results of this run: `{json_path}` (not committed).")
    add("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one run per step, skip the container measurement")
    parser.add_argument("--repeat", type=int, default=1, help="run each timed step N times, report the best")
    parser.add_argument("--no-container", action="store_true", help="skip the builder-container measurement")
    parser.add_argument("--ours", choices=("snapshot", "dev"), default="snapshot",
                        help="venvstacks-docker to measure: a snapshot of the committed HEAD installed into "
                             "its own venv (default), or the editable dev install in .venv")
    parser.add_argument("--output", default="docs/benchmarks.md", help="Markdown report (relative to the repo root)")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the raw results as JSON")
    parser.add_argument("--note", action="append", default=[],
                        help="a remark to print in the report's Notes section (repeatable; kept in the results)")
    parser.add_argument("--report-only", metavar="RESULTS_JSON", default=None,
                        help="only re-render the report from saved raw results (no measuring)")
    args = parser.parse_args(argv)

    WORK.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        results = json.loads(Path(args.report_only).read_text())
        results["notes"] = list(results.get("notes", [])) + list(args.note)
    else:
        shutil.rmtree(WORK / "logs", ignore_errors=True)
        bench = Bench(args)
        results = bench.run()
        results["notes"] = list(args.note)
        # saved before rendering, so a rendering problem never costs a measurement run
        (WORK / "last-results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    report = render_report(results, args.json_path)
    output = (ROOT / args.output) if not Path(args.output).is_absolute() else Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(report)
    log(f"report written to {output}")
    if args.json_path:
        json_out = Path(args.json_path)
        json_out = json_out if json_out.is_absolute() else ROOT / json_out
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(results, indent=2, default=str) + "\n")
        log(f"raw results written to {json_out}")
    s = results["summary"]
    for step, data in s["steps"].items():
        log(f"{step}: venvstacks {fmt_s(data['venvstacks_s'])}, ours {fmt_s(data['ours_s'])}, "
            "speed-up " + ("n/a" if data["speedup"] is None else format(data["speedup"], ".2f") + "x"))
    log(f"targets: {s['targets']}")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
