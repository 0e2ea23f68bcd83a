"""``bootstrap_base``: a small Debian base image made with ``debootstrap``, for hosts that
cannot pull from any registry.

The root file system is stripped of what differs from one bootstrap to the next, tarred
deterministically and imported into the engine under a tag that hashes the suite, the
packages and the architecture.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from venvstacks_docker import __version__, _tar
from venvstacks_docker._run import run
from venvstacks_docker.errors import ContainerError, VenvstacksDockerError
from venvstacks_docker.host.images.base import DEFAULT_SUITE, bootstrapped_base_tag
from venvstacks_docker.host.images.common import (
    BASE_REPOSITORY,
    ENGINE_ARCH,
    FIXED_MTIME,
    INPUTS_VERSION,
    LABEL_INPUTS,
    LABEL_ROLE,
    LABEL_VERSION,
    ProgressCallback,
    check_target,
    host_target,
    id_of,
    ignore_progress,
    image_or_none,
    remove_images,
)
from venvstacks_docker.locking import cache_lock

if TYPE_CHECKING:
    import docker
    from docker.models.images import Image

DEFAULT_MIRROR: Final = "http://deb.debian.org/debian"
#: What the builder needs from the base: a shell for the umask wrapper, TLS roots for
#: `lock`'s index access, the dynamic loader cache, and tools to unpack archives.
#: No compilers: builder images install wheels only.
BASE_PACKAGES: Final = ("bash", "ca-certificates", "gzip", "libc-bin", "tar", "xz-utils")
#: The base image's ``PATH`` (Debian's for root).
BASE_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True, kw_only=True)
class BaseImage:
    """A Debian base image made by :func:`bootstrap_base`."""

    #: ``venvstacks-docker-base:<suite>-<12 hex>`` (the hash covers suite, packages, arch).
    tag: str
    #: ``venvstacks-docker-base:<suite>`` (``<suite>-<arch>`` for a foreign architecture).
    alias: str
    image_id: str
    inputs: dict[str, Any]
    #: ``False`` when the tag existed and nothing was done.
    created: bool


def base_inputs(
    *, suite: str, packages: tuple[str, ...] = BASE_PACKAGES, target: str | None = None
) -> dict[str, Any]:
    """What identifies a bootstrapped base (the mirror does not: it serves the same suite)."""
    target = check_target(target or host_target())
    return {
        "inputs_version": INPUTS_VERSION,
        "suite": suite,
        "variant": "minbase",
        "packages": sorted(set(packages)),
        "arch": ENGINE_ARCH[target],
    }


def base_tag(inputs: Mapping[str, Any]) -> str:
    """The tag of the base image built from ``inputs``: the suite plus a digest of all inputs."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()
    return f"{BASE_REPOSITORY}:{inputs['suite']}-{hashlib.sha256(canonical).hexdigest()[:12]}"


# --------------------------------------------------------------------------- the root file system


def _mounts_below(root: Path) -> list[str]:
    """Mount points at or below ``root`` (debootstrap mounts /proc and /sys while it works)."""
    prefix = os.path.realpath(root)
    found = []
    try:
        with Path("/proc/self/mounts").open(encoding="utf-8") as fh:
            for line in fh:
                point = line.split()[1].replace("\\040", " ")
                if point == prefix or point.startswith(prefix + "/"):
                    found.append(point)
    except OSError:
        pass
    return sorted(found, key=len, reverse=True)


def _remove_rootfs(root: Path) -> None:
    # Never rmtree through a live /proc or /sys mount: unmount them first.
    for point in _mounts_below(root):
        with contextlib.suppress(VenvstacksDockerError):
            run(["umount", "-l", point], what=f"unmounting {point}", error=ContainerError)
    if _mounts_below(root):
        raise ContainerError(
            f"{root} still has file systems mounted below it; not deleting it",
            hint=f"unmount them (`umount -R {root}`) and remove the folder by hand",
        )
    shutil.rmtree(root, ignore_errors=True)


def _clear_dir(folder: Path, keep: tuple[str, ...] = ()) -> None:
    if not folder.is_dir():
        return
    for child in folder.iterdir():
        if child.name in keep:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def strip_volatile_files(root: Path) -> None:
    """Remove what differs from one bootstrap to the next and is useless in an image."""
    _clear_dir(root / "var/lib/apt/lists", keep=("partial", "lock"))
    _clear_dir(root / "var/lib/apt/lists/partial")
    _clear_dir(root / "var/cache/apt/archives", keep=("partial", "lock"))
    _clear_dir(root / "var/cache/apt/archives/partial")
    for binary in (root / "var/cache/apt").glob("*.bin"):
        binary.unlink()
    for name in ("var/cache/ldconfig/aux-cache", "etc/machine-id", "var/lib/dbus/machine-id"):
        path = root / name
        if path.exists() or path.is_symlink():
            path.unlink()
    # Logs: keep the files (their modes and owners matter to some tools), drop the text.
    log_dir = root / "var/log"
    if log_dir.is_dir():
        for path in log_dir.rglob("*"):
            if path.is_file() and not path.is_symlink():
                path.write_bytes(b"")
    for pattern in ("var/cache/debconf/*-old", "var/lib/dpkg/*-old", "etc/*-"):
        for path in root.glob(pattern):
            if path.is_file():
                path.unlink()
    # debootstrap copies these from the host; the engine provides its own at run time.
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    (root / "etc/resolv.conf").write_text("")
    (root / "etc/hostname").unlink(missing_ok=True)
    (root / "etc/hostname").write_text("localhost\n")
    for folder in ("dev", "proc", "sys", "tmp", "var/tmp", "run"):
        _clear_dir(root / folder)
    for history in root.glob("root/.*_history"):
        history.unlink()


def write_rootfs_tar(root: Path, out: Path) -> None:
    """Tar a root file system deterministically: sorted names, one fixed mtime, numeric
    owners and permission bits kept, no user/group names, hard links kept, device nodes,
    FIFOs and sockets left out (:mod:`venvstacks_docker._tar` with ``keep_owners``)."""
    members = _tar.walk(root, order="name", keep_owners=True, error=ContainerError)
    with out.open("wb") as fh:
        _tar.write_tar(fh, members, mtime=FIXED_MTIME, error=ContainerError)


# --------------------------------------------------------------------------- bootstrapping


def _check_bootstrap_prerequisites(target: str) -> str:
    if os.geteuid() != 0:
        raise ContainerError(
            "bootstrap-base needs root: debootstrap unpacks packages with their owners, "
            "creates device nodes and runs maintainer scripts in a chroot",
            hint="run it as root (e.g. `sudo venvstacks-docker image bootstrap-base`), or "
            "use an existing image with --base-image",
        )
    exe = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")
    if exe is None:
        raise ContainerError(
            "debootstrap is not installed",
            hint="install it (`apt-get install debootstrap`; on Fedora `dnf install debootstrap`)",
        )
    if target != host_target():
        # debootstrap's second stage runs the target's programs in a chroot
        from venvstacks_docker.emulation import require_emulation

        require_emulation(target)
    return exe


@dataclass(frozen=True, kw_only=True)
class _Bootstrap:
    """One bootstrap: what to make, and under which names."""

    suite: str
    mirror: str
    packages: tuple[str, ...]
    inputs: dict[str, Any]
    tag: str
    alias: str

    def result(self, image_id: str, *, created: bool, inputs: dict[str, Any] | None = None) -> BaseImage:
        return BaseImage(tag=self.tag, alias=self.alias, image_id=image_id,
                         inputs=self.inputs if inputs is None else inputs, created=created)


def bootstrap_base(
    *,
    suite: str = DEFAULT_SUITE,
    mirror: str = DEFAULT_MIRROR,
    target: str | None = None,
    packages: tuple[str, ...] = BASE_PACKAGES,
    force: bool = False,
    client: docker.DockerClient | None = None,
    on_progress: ProgressCallback = ignore_progress,
) -> BaseImage:
    """Create a minimal Debian base image with debootstrap and import it into the engine.

    Needs root and network access to ``mirror``, but no container registry.  Nothing is
    done when the tag already exists, unless ``force``.

    :param suite: Debian suite (``bookworm``).
    :param mirror: Debian mirror URL.
    :param target: container target whose architecture to bootstrap (default: this
        machine's).
    :param packages: extra packages on top of ``minbase``.
    :param force: bootstrap again and move the tags to the new image.
    :raises ContainerError: when not root, debootstrap is missing or fails, or the
        import fails.
    """
    from venvstacks_docker.host.engine import connect

    target = check_target(target or host_target())
    client = client or connect()
    inputs = base_inputs(suite=suite, packages=packages, target=target)
    job = _Bootstrap(suite=suite, mirror=mirror, packages=packages, inputs=inputs, tag=base_tag(inputs),
                     alias=bootstrapped_base_tag(target, suite))
    existing = image_or_none(client, job.tag)
    if existing is not None and not force:
        if image_or_none(client, job.alias) is None:
            existing.tag(*job.alias.split(":", 1))
        on_progress(f"{job.tag} already exists ({id_of(existing)[:19]}); nothing to do")
        return job.result(id_of(existing), created=False)

    debootstrap = _check_bootstrap_prerequisites(target)
    # One bootstrap of a tag at a time; the second waits, then finds the image made.
    with cache_lock(f"base-{job.tag.split(':', 1)[1]}"):
        existing = image_or_none(client, job.tag)
        if existing is not None and not force:
            return job.result(id_of(existing), created=False)
        image = _bootstrap_and_import(client, job, debootstrap, on_progress)
        if existing is not None and existing.id != image.id:
            remove_images(client, [id_of(existing)], keep=set())
        on_progress(f"created {job.tag} and {job.alias} ({id_of(image)[:19]})")
        return job.result(id_of(image), created=True, inputs={**inputs, "mirror": mirror})


def _bootstrap_and_import(client: docker.DockerClient, job: _Bootstrap, debootstrap: str,
                          on_progress: ProgressCallback) -> Image:
    """debootstrap into a scratch folder, strip it, tar it and import the tar as ``job.tag``."""
    work = Path(tempfile.mkdtemp(prefix="venvstacks-docker-bootstrap-"))
    try:
        rootfs = work / "rootfs"
        cmd: list[str | Path] = [
            debootstrap,
            "--variant=minbase",
            f"--include={','.join(job.inputs['packages'])}",
            f"--arch={job.inputs['arch']}",
            job.suite,
            rootfs,
            job.mirror,
        ]
        on_progress(f"debootstrap {job.suite} ({job.inputs['arch']}, minbase + {len(job.packages)} "
                    f"packages) from {job.mirror}")
        run(cmd, what=f"debootstrap {job.suite} from {job.mirror}", error=ContainerError)
        on_progress("removing volatile files (apt lists and caches, logs, ldconfig aux-cache)")
        strip_volatile_files(rootfs)
        rootfs_tar = work / "rootfs.tar"
        on_progress("writing a deterministic root file system tar")
        write_rootfs_tar(rootfs, rootfs_tar)
        on_progress(f"importing {rootfs_tar.stat().st_size / 1e6:.0f} MB as {job.tag}")
        return _import_rootfs(client, rootfs_tar, job)
    finally:
        _remove_rootfs(work)


def _label_change(key: str, value: str, *, podman: bool) -> str:
    """A ``LABEL`` change for ``docker import``.  Docker reads its value as a Dockerfile
    does (quotes and backslash escapes), podman takes everything after the ``=``
    literally, only dropping one pair of enclosing double quotes: so a JSON value is
    quoted for Docker and given as it is to podman."""
    return f"LABEL {key}={value}" if podman else f"LABEL {key}={json.dumps(value)}"


def _load_foreign(client: docker.DockerClient, rootfs_tar: Path, job: _Bootstrap, labels: dict[str, str]) -> None:
    """Load the root file system as an image of the target's architecture.

    ``docker import`` records the engine's own architecture (Docker 20.10 ignores the
    import's ``platform``), so an arm64 base made on an x86-64 machine would claim amd64
    and the engine would refuse to run it as arm64.  For another architecture than the
    engine's, the image archive is written here instead (one layer, a config naming the
    architecture) and loaded: its ID is then the same wherever the same root file system
    is bootstrapped.
    """
    from venvstacks_docker.host.images.imagetar import load_image_tar, rootfs_image_tar

    config = {"Env": [f"PATH={BASE_PATH}"], "Cmd": ["/bin/bash"], "Labels": labels}
    archive = rootfs_tar.with_name("image.tar")
    rootfs_image_tar(archive, rootfs=rootfs_tar, arch=str(job.inputs["arch"]), config=config, tag=job.tag)
    load_image_tar(client, archive)


def _import_rootfs(client: docker.DockerClient, rootfs_tar: Path, job: _Bootstrap) -> Image:
    import docker

    from venvstacks_docker.host.engine import engine_info

    info = engine_info(client)
    podman = info.name == "podman"
    label_inputs = json.dumps({**job.inputs, "mirror": job.mirror}, sort_keys=True)
    changes = [
        f"LABEL {LABEL_ROLE}=base",
        f"LABEL {LABEL_VERSION}={__version__}",
        _label_change(LABEL_INPUTS, label_inputs, podman=podman),
        f"ENV PATH={BASE_PATH}",
        'CMD ["/bin/bash"]',
    ]
    try:
        if job.inputs.get("arch", info.arch) != info.arch:
            _load_foreign(client, rootfs_tar, job, {LABEL_ROLE: "base", LABEL_VERSION: __version__,
                                                    LABEL_INPUTS: label_inputs})
        else:
            # The tag goes in `repo` (the API allows it there): podman ignores `tag` on import.
            client.api.import_image_from_file(str(rootfs_tar), repository=job.tag, changes=changes)
        image = client.images.get(job.tag)
        image.tag(*job.alias.split(":", 1), force=True)
    except docker.errors.APIError as exc:
        raise ContainerError(
            f"importing the bootstrapped root file system failed: {exc.explanation or exc}"
        ) from None
    return image
