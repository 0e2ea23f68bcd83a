"""What a builder image carries: the tool's wheel, its dependencies installed for the
image's interpreter, and the CPython runtime the tool runs on; and the hashes that
identify them."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import stat
from pathlib import Path

from venvstacks_docker import __version__, _tar
from venvstacks_docker._run import run
from venvstacks_docker.errors import ContainerError, VenvstacksDockerError
from venvstacks_docker.host.images.common import (
    FIXED_MTIME,
    TOOL_PY_MINOR,
    TOOL_PYTHON_VERSION,
    ProgressCallback,
    ignore_progress,
)
from venvstacks_docker.metadata import sha256_file
from venvstacks_docker.resources import source_root

#: uv's ``--python-platform`` for each builder target (the builder image's wheels).
UV_PLATFORM = {
    "linux_x86_64": "x86_64-manylinux_2_28",
    "linux_aarch64": "aarch64-manylinux_2_28",
}


def find_runtime_archive(target: str) -> tuple[Path, str]:
    """The CPython runtime archive the tool runs on in the image: ``(path, sha256)``.

    Only archives already on this machine are used (``offline=True``); fetching or
    building one is the runtime step's job.
    """
    from venvstacks_docker.runtimes import RuntimeRequest, acquire_runtime

    request = RuntimeRequest(implementation="cpython", version=TOOL_PYTHON_VERSION, platform=target)
    try:
        found = acquire_runtime(request, offline=True)
    except VenvstacksDockerError as exc:
        raise ContainerError(
            f"builder images need the CPython {TOOL_PYTHON_VERSION} runtime archive for "
            f"{target}, and none is available offline:\n{exc}",
            hint=(
                f"build it with `venvstacks-docker runtime build --target {target}` "
                "(another architecture than this machine's is cross-compiled), or put an install_only "
                "archive in a folder named by VENVSTACKS_DOCKER_RUNTIME_SOURCES"
            ),
        ) from None
    return Path(found.path), str(found.sha256)


def find_tool_wheel(dest: Path, *, on_progress: ProgressCallback = ignore_progress) -> Path:
    """A wheel of the running venvstacks-docker, written into ``dest``.

    From a source checkout it is built with ``uv build --wheel`` (hatchling writes
    reproducible wheels); from an installed wheel it is re-packed from the installed
    files listed in ``RECORD``.
    """
    import uv

    dest.mkdir(parents=True, exist_ok=True)
    root = source_root()
    if root is not None:
        on_progress(f"building the venvstacks-docker wheel from {root}")
        env = dict(os.environ)
        env.setdefault("SOURCE_DATE_EPOCH", str(FIXED_MTIME))
        run(
            [uv.find_uv_bin(), "build", "--wheel", "--quiet", "--out-dir", dest, root],
            env=env,
            what="building the venvstacks-docker wheel",
            error=ContainerError,
        )
        wheels = sorted(dest.glob("venvstacks_docker-*.whl"))
        if len(wheels) != 1:
            raise ContainerError(f"`uv build` produced {len(wheels)} wheels in {dest}, expected one")
        return wheels[0]
    return _repack_installed_wheel(dest)


def _repack_installed_wheel(dest: Path) -> Path:
    """Rebuild the wheel of the installed distribution from its ``RECORD``."""
    import zipfile
    from importlib import metadata

    try:
        dist = metadata.distribution("venvstacks-docker")
    except metadata.PackageNotFoundError:
        raise ContainerError(
            "venvstacks-docker is neither running from a source checkout nor installed as a "
            "distribution, so its wheel cannot be put into the builder image",
            hint="install it with pip or uv (not by copying files)",
        ) from None
    files = [f for f in dist.files or [] if not str(f).startswith("..")]
    dist_info = next((f.parts[0] for f in files if f.parts[0].endswith(".dist-info")), None)
    if dist_info is None:
        raise ContainerError("the installed venvstacks-docker has no RECORD; reinstall it")
    skip = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json", "uv_cache.json"}
    target = dest / f"venvstacks_docker-{dist.version}-py3-none-any.whl"
    record: list[str] = []
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for item in sorted(files, key=str):
            rel = item.as_posix() if hasattr(item, "as_posix") else str(item)
            if "__pycache__" in item.parts or (item.parts[0] == dist_info and item.name in skip):
                continue
            path = Path(str(item.locate()))
            if not path.is_file():
                continue
            data = path.read_bytes()
            info = zipfile.ZipInfo(rel, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (0o755 if os.access(path, os.X_OK) else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
            b64 = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{rel},sha256={b64},{len(data)}")
        record.append(f"{dist_info}/RECORD,,")
        info = zipfile.ZipInfo(f"{dist_info}/RECORD", date_time=(1980, 1, 1, 0, 0, 0))
        info.external_attr = 0o644 << 16
        zf.writestr(info, "\n".join(record) + "\n")
    return target


def install_site(wheel: Path, target: str, site: Path, bin_dir: Path) -> None:
    """Install ``wheel`` and its dependencies for the image's interpreter into ``site``.

    Native executables the packages ship (uv) go to ``bin_dir``; other scripts are
    dropped (their shebangs would name a host interpreter).
    """
    import uv

    scratch = site.parent / "site-install"
    run(
        [
            uv.find_uv_bin(), "pip", "install", "--quiet",
            "--target", scratch,
            "--python-platform", UV_PLATFORM[target],
            "--python-version", TOOL_PY_MINOR,
            "--only-binary", ":all:",
            "--link-mode", "copy",
            "--no-compile",
            wheel,
        ],
        what="installing venvstacks-docker and its dependencies for the builder image",
        error=ContainerError,
    )  # fmt: skip
    _keep_native_scripts(scratch / "bin", bin_dir)
    # Installer records that name host paths would make the image depend on where the
    # host happened to build the wheel.
    for dist_info in scratch.glob("*.dist-info"):
        for name in ("direct_url.json", "uv_cache.json"):
            _drop_recorded_file(dist_info, name)
    for pycache in sorted(scratch.rglob("__pycache__"), reverse=True):
        shutil.rmtree(pycache)
    scratch.rename(site)


def _keep_native_scripts(scripts: Path, bin_dir: Path) -> None:
    """Move the ELF executables of ``scripts`` to ``bin_dir``; drop the folder."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    if not scripts.is_dir():
        return
    for script in sorted(scripts.iterdir()):
        with script.open("rb") as fh:
            is_native = fh.read(4) == b"\x7fELF"
        if is_native:
            shutil.move(script, bin_dir / script.name)
    shutil.rmtree(scripts)


def _drop_recorded_file(dist_info: Path, name: str) -> None:
    volatile = dist_info / name
    if not volatile.exists():
        return
    volatile.unlink()
    record = dist_info / "RECORD"
    if record.exists():
        kept = [
            line
            for line in record.read_text(encoding="utf-8").splitlines()
            if not line.startswith(f"{dist_info.name}/{name},")
        ]
        record.write_text("\n".join(kept) + "\n", encoding="utf-8")


def tree_sha256(root: Path) -> str:
    """Hash a folder by relative path, kind, executable bit and content (a builder tag input)."""
    digest = hashlib.sha256()
    for member in _tar.walk(root, order="name", keep_owners=True, error=ContainerError):
        if member.kind == "symlink":
            digest.update(f"L {member.name} {member.linkname}\n".encode())
        elif member.kind == "dir":
            digest.update(f"D {member.name}\n".encode())
        else:
            exe = "x" if member.mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH) else "-"
            digest.update(f"F {member.name} {exe} {sha256_file(Path(member.path))}\n".encode())
    return digest.hexdigest()


def tool_fingerprint() -> str:
    """A cheap hash of the tool's own files: source tree, or the installed RECORD.

    It stands in for the wheel hash when looking up an already-built image, so the
    common case (nothing changed) needs neither `uv build` nor a dependency resolution.
    """
    digest = hashlib.sha256(__version__.encode())
    root = source_root()
    if root is not None:
        for folder in (root / "src" / "venvstacks_docker", root / "Dockerfiles"):
            if not folder.is_dir():
                continue
            for member in _tar.walk(folder, order="name", keep_owners=True, error=ContainerError):
                path = Path(member.path)
                if "__pycache__" in member.name or path.is_dir() or path.suffix == ".pyc":
                    continue
                digest.update(f"{folder.name}/{member.name}\0".encode())
                digest.update(hashlib.sha256(path.read_bytes()).digest())
        digest.update((root / "pyproject.toml").read_bytes())
        return digest.hexdigest()
    from importlib import metadata

    try:
        record = metadata.distribution("venvstacks-docker").read_text("RECORD") or ""
    except metadata.PackageNotFoundError:
        record = ""
    digest.update(record.encode())
    return digest.hexdigest()
