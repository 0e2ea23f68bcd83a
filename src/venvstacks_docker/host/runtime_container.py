"""``runtime build --in-container``: the runtime built on an old Debian userland in a container.

A runtime built on the host links against the host's glibc and carries the host's
libraries, so its glibc floor is the host's and its bytes depend on what the host has
installed.  Built here instead, it depends on a *runtime builder image* only
(:mod:`.runtime_images`: an old Debian userland with the build dependencies and a
bootstrap CPython; for another architecture, plus Debian's cross toolchain).

The build itself runs the unchanged :mod:`venvstacks_docker.runtime_build` code with
that bootstrap interpreter, in a :class:`~venvstacks_docker.host.container.BuilderContainer`
(never root, no capabilities, read-only root, no network), the tool's wheel and its
dependencies mounted read-only from the cache, and the archive written into the
runtime cache.  Everything is cached: the base and builder images by tag, the tool's
site by fingerprint, the archive by its build inputs.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from venvstacks_docker import ui
from venvstacks_docker.emulation import require_emulation
from venvstacks_docker.errors import ContainerError, RuntimeArchiveError
from venvstacks_docker.host.container import BuilderContainer, Mount, StreamName
from venvstacks_docker.host.images import host_target
from venvstacks_docker.host.images.tool import find_tool_wheel, install_site, tool_fingerprint
from venvstacks_docker.host.runtime_images import (
    BOOTSTRAP_PYTHON,
    DEFAULT_RUNTIME_SUITE,
    ensure_cross_builder,
    ensure_runtime_builder,
)
from venvstacks_docker.locking import cache_lock
from venvstacks_docker.runtime_build import copy_out, fetch_source
from venvstacks_docker.runtime_build.recipe import check_version, is_cross
from venvstacks_docker.runtimes import cache_root

if TYPE_CHECKING:
    import docker

#: Where the tool's site (wheel + dependencies) is mounted by default.
SITE_MOUNT: Final = "/opt/venvstacks-docker/site"
#: The build folder of :func:`venvstacks_docker.runtime_build.build_root`; a host scratch
#: folder is mounted there.
BUILD_MOUNT: Final = "/var/tmp/venvstacks-docker-build"


@dataclass(frozen=True, kw_only=True)
class BuildSetting:
    """How the build container is set up, beyond what the tool pins (the reproducibility
    test varies these to show they do not matter)."""

    #: Image to build in (default: the runtime builder image of the suite).
    image: str | None = None
    #: Extra environment (e.g. another ``TZ``, ``LANG``, ``LC_ALL``).
    environment: Mapping[str, str] = field(default_factory=dict)
    #: umask of the build (the container wrapper's default is 022).
    umask: str | None = None
    #: Host folder in which the scratch build folder is made (on disk: a build needs
    #: about a gigabyte).
    scratch_parent: Path = Path("/var/tmp")
    #: Where the tool's site is mounted in the container.
    site_mount: str = SITE_MOUNT


def tool_site(cache: Path, target: str) -> Path:
    """The tool's wheel and its dependencies, installed for the bootstrap interpreter
    (cached under ``<cache>/runtime-builder/site-<fingerprint>``)."""
    folder = cache / "runtime-builder" / f"site-{tool_fingerprint()[:16]}"
    if (folder / "venvstacks_docker" / "__init__.py").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with cache_lock(f"runtime-builder-{folder.name}"):
        if (folder / "venvstacks_docker" / "__init__.py").is_file():
            return folder
        work = Path(tempfile.mkdtemp(prefix=".site-", dir=folder.parent))
        try:
            wheel = find_tool_wheel(work / "wheel", on_progress=ui.current().note)
            install_site(wheel, target, work / "site", work / "bin")
            (work / "site").chmod(0o755)
            (work / "site").rename(folder)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return folder


@dataclass
class _Output:
    """Collects the inner command's stdout (its JSON result) and relays its stderr."""

    stdout: list[str] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)

    def __call__(self, line: str, stream: StreamName) -> None:
        if stream == "stdout":
            self.stdout.append(line)
            return
        self.tail = [*self.tail[-39:], line]
        sys.stderr.write(line + "\n")


def build_runtime_in_container(
    version: str = "3.11.2",
    *,
    suite: str = DEFAULT_RUNTIME_SUITE,
    cache: Path | None = None,
    jobs: int | None = None,
    force: bool = False,
    output_dir: Path | None = None,
    setting: BuildSetting | None = None,
    client: docker.DockerClient | None = None,
    target: str | None = None,
) -> Path:
    """Build (or reuse from the cache) the runtime archive of ``version`` in a container
    of the ``suite`` runtime builder image; return its path in ``<cache>/runtimes/``.

    :raises RuntimeArchiveError: for a version without a pinned source, or a failed build.
    :raises ContainerError: when no engine answers or the builder image cannot be made.
    """
    from venvstacks_docker.host.engine import connect

    pin = check_version(version)
    cache = (Path(cache) if cache is not None else cache_root()).absolute()
    setting = setting or BuildSetting()
    if client is None:
        try:
            client = connect()
        except ContainerError as exc:  # (connect's hint names --native, which this command lacks)
            raise ContainerError(exc.message, hint="start the engine (e.g. `systemctl start docker`) or set "
                                 "DOCKER_HOST to its socket; or build on this machine instead: "
                                 "venvstacks-docker runtime build --on-host") from None
    if is_cross(target):
        assert target is not None
        require_emulation(target)  # checked here: binfmt_misc is not visible in the container
        image = setting.image or ensure_cross_builder(client, suite=suite, target=target, jobs=jobs or 2, cache=cache)
    else:
        image = setting.image or ensure_runtime_builder(client, suite=suite, jobs=jobs or 2, cache=cache)
    site = tool_site(cache, host_target())
    fetch_source(pin, cache)  # the build container has no network
    (cache / "runtimes").mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="venvstacks-docker-runtime-", dir=setting.scratch_parent))
    try:
        scratch.chmod(0o755)
        argv = ["runtime", "build", "--on-host", "--python-version", version, "--cache-dir", str(cache), "--json",
                *(["--jobs", str(jobs)] if jobs else []), *(["--force"] if force else []),
                *(["--target", target] if target else [])]
        archive = _run_build(client, image, argv, mounts=[
            Mount(site, setting.site_mount, True),
            Mount(cache / "sources", str(cache / "sources"), True),
            Mount(cache / "runtimes", str(cache / "runtimes"), False),
            Mount(scratch, BUILD_MOUNT, False),
        ], setting=setting)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return copy_out(archive, output_dir)


def _run_build(client: docker.DockerClient, image: str, argv: Sequence[str], *, mounts: Sequence[Mount],
               setting: BuildSetting) -> Path:
    """Run ``venvstacks-docker <argv>`` with the bootstrap interpreter; the archive it reports."""
    command = [BOOTSTRAP_PYTHON, "-m", "venvstacks_docker", *argv]
    if setting.umask:
        command = ["/bin/sh", "-c", f'umask {setting.umask}; exec "$@"', "sh", *command]
    environment = {"PYTHONPATH": setting.site_mount, "PYTHONDONTWRITEBYTECODE": "1",
                   "VENVSTACKS_DOCKER_IN_CONTAINER": "1", **setting.environment}
    output = _Output()
    with BuilderContainer(client, image=image, command=command, environment=environment, mounts=mounts,
                          working_dir="/tmp", on_output=output,
                          labels={"venvstacks-docker.image-tag": image}) as box:
        code = box.run()
    if code != 0:
        raise RuntimeArchiveError(
            f"building the runtime in a container of {image} failed (exit {code}); its message is above",
            hint="rerun with --verbose for more detail",
        )
    try:
        result = json.loads("\n".join(output.stdout))
        return Path(result["path"])
    except (ValueError, KeyError, TypeError):
        raise RuntimeArchiveError(
            f"the runtime build in {image} reported no archive; its output ended with:\n"
            + "\n".join(output.stdout[-10:] or output.tail[-10:])
        ) from None


__all__ = ["BUILD_MOUNT", "SITE_MOUNT", "BuildSetting", "build_runtime_in_container", "tool_site"]
