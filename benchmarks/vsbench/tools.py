"""The tools under test (their venvs and versions) and the CPython runtime archive they all use."""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

from .config import RELEASES, ROOT, RUNTIME_PLATFORM, RUNTIME_VERSION, STAGE_NAME, WORK, Release
from .harness import capture, child_env, log
from .pbs_shim import PBS_SHIM


def _extract_all(tar: tarfile.TarFile, into: Path) -> None:
    """Extract every member, with the "tar" filter where this Python has extraction filters."""
    kwds: dict[str, Any] = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}
    tar.extractall(into, **kwds)


def dev_venvstacks_docker() -> Path:
    """The editable dev install's ``venvstacks-docker`` (``--ours dev``)."""
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
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        _extract_all(tar, src)
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
    """Where the tools' executables and Pythons are: a venv per venvstacks release, and ours."""

    def __init__(self, ours: Path) -> None:
        self.venvs = {r.key: WORK / r.key for r in RELEASES}
        self.ours = str(ours)
        self.ours_python = str(Path(self.ours).parent / "python")

    def exe(self, tool: str) -> str:
        """The executable of ``tool`` (a release key, or ``ours``/``ours-container``)."""
        return str(self.venvs[tool] / "bin" / "venvstacks") if tool in self.venvs else self.ours

    def python(self, tool: str) -> str:
        """The Python of ``tool``'s venv."""
        return str(self.venvs[tool] / "bin" / "python") if tool in self.venvs else self.ours_python

    def versions(self) -> dict[str, dict[str, str]]:
        """Per tool: its version and those of the uv and libraries it runs, for the report."""
        dist_version = "import importlib.metadata as m; print(m.version({!r}))"
        out: dict[str, dict[str, str]] = {}
        for key, venv in self.venvs.items():
            py = str(venv / "bin" / "python")
            out[key] = {
                # from the installed distribution: 0.8.0's command line has no --version
                "version": capture([py, "-c", dist_version.format("venvstacks")]),
                "uv": capture([py, "-Im", "uv", "--version"]),
                "pdm": capture([py, "-c", dist_version.format("pdm")]),
                "pbs_installer": capture([py, "-c", dist_version.format("pbs-installer")]),
            }
        out["ours"] = {
            "version": capture([self.ours_python, "-c", dist_version.format("venvstacks-docker")]),
            "uv": capture([self.ours_python, "-c",
                           "import uv, subprocess; subprocess.run([uv.find_uv_bin(), '--version'])"]),
        }
        return out


def _venv_stamp(release: Release) -> str:
    """What a release's venv was made from: constraints, what was installed (a wheel's bytes), the shim."""
    digest = hashlib.sha256(release.constraints.read_bytes() + PBS_SHIM.encode())
    wheel = Path(release.requirement)
    digest.update(wheel.read_bytes() if wheel.suffix == ".whl" else release.requirement.encode())
    return digest.hexdigest()


def ensure_venvstacks_venv(release: Release, venv: Path) -> None:
    """Create ``release``'s venv with the pbs-installer shim (reused while its inputs are unchanged)."""
    for needed in (release.constraints, Path(release.requirement)):
        if needed.suffix in (".txt", ".whl") and not needed.is_file():
            raise SystemExit(f"{release.key}: {needed} is missing (see config.SHARED_080)")
    stamp = venv / "benchmark-stamp.txt"
    want = _venv_stamp(release)
    if stamp.exists() and stamp.read_text().strip() == want and (venv / "bin" / "venvstacks").exists():
        log(f"reusing {venv}")
        return
    log(f"creating {venv} ({release.requirement})")
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "--quiet", "-c", str(release.constraints), release.requirement],
                   check=True, env=child_env())
    site = Path(
        subprocess.run(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    )
    (site / "_vsbench_pbs_shim.py").write_text(PBS_SHIM)
    (site / "_vsbench_pbs_shim.pth").write_text("import _vsbench_pbs_shim\n")
    check = subprocess.run(
        [py, "-c", "from pbs_installer import get_download_link; "
                   f"print(get_download_link('{RUNTIME_VERSION}', arch='x86_64', platform='linux')[0])"],
        capture_output=True, text=True,
    )
    if check.returncode != 0 or STAGE_NAME not in check.stdout:
        raise SystemExit(f"pbs-installer shim did not take effect:\n{check.stdout}{check.stderr}")
    stamp.write_text(want + "\n")


def find_runtime_archive() -> Path:
    """The cached CPython runtime archive this project builds (built first when missing)."""
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
    """Unpack the archive's python/ folder to <build_dir>/cpython@X.Y.Z/ (venvstacks cannot download it here)."""
    target = build_dir / STAGE_NAME
    shutil.rmtree(target, ignore_errors=True)
    build_dir.mkdir(parents=True, exist_ok=True)
    tmp = build_dir / f".{STAGE_NAME}.unpacking"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    with tarfile.open(archive) as tar:
        _extract_all(tar, tmp)
    (tmp / "python").rename(target)
    tmp.rmdir()
