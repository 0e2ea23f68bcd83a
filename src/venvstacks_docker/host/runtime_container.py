"""``runtime build --in-container``: the runtime built on an old Debian userland in a container.

A runtime built on the host links against the host's glibc and carries the host's
libraries, so its glibc floor is the host's and its bytes depend on what the host has
installed.  Built here instead, it depends on a *runtime builder image* only:

1. the Debian base of ``suite`` (:func:`~venvstacks_docker.host.images.bootstrap_base`,
   debootstrap + ``docker import``; no registry);
2. plus the recipe's build dependencies from the suite's repositories (main and
   security), installed with apt-get in a networked root container, and a bootstrap
   CPython (the tool needs Python 3.11, the suite has an older one) compiled in place
   from the same pinned source; the container is committed as
   ``venvstacks-docker-runtime-builder:<suite>-<12 hex>`` (a hash of those inputs), and
   the installed package versions are kept in its labels.

The build itself runs the unchanged :mod:`venvstacks_docker.runtime_build` code with
that bootstrap interpreter, in a :class:`~venvstacks_docker.host.container.BuilderContainer`
(never root, no capabilities, read-only root, no network), the tool's wheel and its
dependencies mounted read-only from the cache, and the archive written into the
runtime cache.  Everything is cached: the base and builder images by tag, the tool's
site by fingerprint, the archive by its build inputs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from venvstacks_docker.errors import ContainerError, RuntimeArchiveError
from venvstacks_docker.host.container import BuilderContainer, Mount, StreamName
from venvstacks_docker.host.images import bootstrap_base, host_target
from venvstacks_docker.host.images.common import LABEL_INPUTS, LABEL_ROLE, TOOL_PYTHON_VERSION, id_of, image_or_none
from venvstacks_docker.host.images.tool import find_tool_wheel, install_site, tool_fingerprint
from venvstacks_docker.host.orphans import LABEL_OWNER, ROLE_BUILDER, Owner
from venvstacks_docker.locking import cache_lock
from venvstacks_docker.runtime_build import BUILD_DEPENDENCIES, PINS, copy_out, fetch_source
from venvstacks_docker.runtime_build.recipe import check_version
from venvstacks_docker.runtimes import cache_root

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

#: The oldest Debian suite deb.debian.org still serves (buster answers 404 there, and
#: archive.debian.org is not reachable from hosts that may only reach Debian's mirrors).
DEFAULT_RUNTIME_SUITE: Final = "bullseye"
RUNTIME_BUILDER_REPOSITORY: Final = "venvstacks-docker-runtime-builder"
LABEL_PACKAGES: Final = "venvstacks-docker.packages"
#: Bump when the preparation script changes (it is part of the image tag anyway).
RUNTIME_BUILDER_VERSION: Final = 1
#: Where the bootstrap interpreter is compiled (and runs from, in its build tree).
BOOTSTRAP_DIR: Final = "/opt/venvstacks-docker/bootstrap-python"
BOOTSTRAP_PYTHON: Final = f"{BOOTSTRAP_DIR}/python"
#: Where the tool's site (wheel + dependencies) is mounted by default.
SITE_MOUNT: Final = "/opt/venvstacks-docker/site"
#: The build folder of :func:`venvstacks_docker.runtime_build.build_root`; a host scratch
#: folder is mounted there.
BUILD_MOUNT: Final = "/var/tmp/venvstacks-docker-build"

#: Run as root, with network, in a container of the base image; then committed.
_PREPARE_SCRIPT: Final = r"""
set -eu
export DEBIAN_FRONTEND=noninteractive
if [ -n "$VSD_SECURITY" ]; then echo "deb $VSD_SECURITY $VSD_SUITE-security main" \
  > /etc/apt/sources.list.d/security.list; fi
apt-get update -q
apt-get install -y -q --no-install-recommends $VSD_PACKAGES
apt-get clean
rm -rf /var/lib/apt/lists/*
mkdir -p "$VSD_BOOTSTRAP"
cd "$VSD_BOOTSTRAP"
tar -xf /run/vsd-source --strip-components=1
echo "configuring the bootstrap interpreter"
./configure -q --without-ensurepip --disable-test-modules OPT=-O1 > /dev/null
echo "compiling the bootstrap interpreter (make -j$VSD_JOBS)"
make -s -j"$VSD_JOBS" > /dev/null
find . -name '*.o' -delete
./python -c 'import zlib, hashlib, json, fcntl, subprocess, select, bz2, lzma'
dpkg-query -W -f='VSD-PACKAGE ${Package} ${Version}\n'
"""


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


def builder_inputs(base_id: str, suite: str) -> dict[str, Any]:
    """What the runtime builder image is made of (its tag hashes this)."""
    pin = PINS[TOOL_PYTHON_VERSION]
    return {
        "runtime_builder_version": RUNTIME_BUILDER_VERSION,
        "suite": suite,
        "base_image_id": base_id,
        "packages": list(BUILD_DEPENDENCIES),
        "security_updates": True,
        "bootstrap_source_sha256": pin.sha256,
        "script_sha256": hashlib.sha256(_PREPARE_SCRIPT.encode()).hexdigest(),
    }


def builder_tag(inputs: Mapping[str, Any]) -> str:
    """``venvstacks-docker-runtime-builder:<suite>-<12 hex of the inputs>``."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()
    return f"{RUNTIME_BUILDER_REPOSITORY}:{inputs['suite']}-{hashlib.sha256(canonical).hexdigest()[:12]}"


def _progress(message: str) -> None:
    from venvstacks_docker import ui

    ui.current().note(message)


def _detail(message: str) -> None:
    from venvstacks_docker import ui

    ui.current().detail(message)


def ensure_runtime_builder(
    client: docker.DockerClient, *, suite: str = DEFAULT_RUNTIME_SUITE, jobs: int = 2, cache: Path | None = None
) -> str:
    """The tag of the runtime builder image for ``suite``, made once (minutes) and then reused.

    :raises ContainerError: when the base cannot be bootstrapped (not root, no
        debootstrap, unknown suite) or the preparation fails.
    """
    base = bootstrap_base(suite=suite, client=client, on_progress=_progress)
    inputs = builder_inputs(base.image_id, suite)
    tag = builder_tag(inputs)
    if image_or_none(client, tag) is not None:
        return tag
    with cache_lock(f"runtime-builder-{tag.split(':', 1)[1]}"):
        if image_or_none(client, tag) is not None:
            return tag
        source = fetch_source(PINS[TOOL_PYTHON_VERSION], cache or cache_root())
        _progress(f"preparing {tag}: build dependencies from Debian {suite}, and a bootstrap "
                  "CPython (minutes, once)")
        _prepare(client, base.image_id, tag, inputs, source, jobs)
    return tag


def _prepare(client: docker.DockerClient, base_id: str, tag: str, inputs: dict[str, Any], source: Path,
             jobs: int) -> None:
    """Run the preparation script in a root container of the base, then commit it as ``tag``."""
    import docker

    environment = {
        "VSD_SUITE": str(inputs["suite"]),
        "VSD_SECURITY": "http://deb.debian.org/debian-security",
        "VSD_PACKAGES": " ".join(BUILD_DEPENDENCIES),
        "VSD_BOOTSTRAP": BOOTSTRAP_DIR,
        "VSD_JOBS": str(jobs),
    }
    container: Container | None = None
    try:
        container = client.containers.create(
            base_id, command=["/bin/sh", "-c", _PREPARE_SCRIPT], environment=environment,
            mounts=[docker.types.Mount(target="/run/vsd-source", source=str(source), type="bind", read_only=True)],
            labels={LABEL_ROLE: ROLE_BUILDER, LABEL_OWNER: Owner.current().label()},
            network_mode="host", init=True,  # like debootstrap before it: trusted, and needs no docker0
        )
        container.start()
        packages, tail = _follow(container)
        code = int(container.wait().get("StatusCode", -1))
        if code != 0:
            log_tail = "\n".join("    " + line for line in tail[-30:])
            raise ContainerError(
                f"preparing the runtime builder image {tag} failed (exit {code}):\n{log_tail}",
                hint=f"check that the Debian mirror serves {inputs['suite']} and its security "
                "updates (deb.debian.org), then run the command again",
            )
        labels = {LABEL_ROLE: "runtime-builder", LABEL_INPUTS: json.dumps(inputs, sort_keys=True),
                  LABEL_PACKAGES: json.dumps(packages, sort_keys=True)}
        changes = [f"LABEL {key}={json.dumps(value)}" for key, value in labels.items()]
        repository, name = tag.split(":", 1)
        container.commit(repository=repository, tag=name, changes=[*changes, 'CMD ["/bin/bash"]'])
    except docker.errors.APIError as exc:
        raise ContainerError(f"preparing the runtime builder image failed: {exc.explanation or exc}") from None
    finally:
        if container is not None:
            try:
                container.remove(force=True, v=True)
            except docker.errors.APIError:
                sys.stderr.write(f"venvstacks-docker: could not remove container {container.name}\n")


def _follow(container: Container) -> tuple[dict[str, str], list[str]]:
    """Relay the preparation's output; return the package versions it printed and its tail."""
    packages: dict[str, str] = {}
    tail: list[str] = []
    pending = b""
    for chunk in container.logs(stream=True, follow=True):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace").rstrip()
            if line.startswith("VSD-PACKAGE "):
                _, name, version = line.split(" ", 2)
                packages[name] = version
                continue
            tail = [*tail[-99:], line]
            if line.startswith(("configuring", "compiling")):
                _progress(line)
            else:
                _detail(line)
    return packages, tail


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
            wheel = find_tool_wheel(work / "wheel", on_progress=_progress)
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
    client = client or connect()
    image = setting.image or ensure_runtime_builder(client, suite=suite, jobs=jobs or 2, cache=cache)
    site = tool_site(cache, host_target())
    fetch_source(pin, cache)  # the build container has no network
    (cache / "runtimes").mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="venvstacks-docker-runtime-", dir=setting.scratch_parent))
    try:
        scratch.chmod(0o755)
        argv = ["runtime", "build", "--python-version", version, "--cache-dir", str(cache), "--json",
                *(["--jobs", str(jobs)] if jobs else []), *(["--force"] if force else [])]
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


def runtime_builder_packages(client: docker.DockerClient, tag: str) -> dict[str, str]:
    """The Debian package versions installed in the runtime builder image ``tag``."""
    image = client.images.get(tag)
    labels = image.labels or {}
    packages: dict[str, str] = json.loads(labels.get(LABEL_PACKAGES, "{}"))
    return packages


def image_id(client: docker.DockerClient, tag: str) -> str:
    """The ID of a local image."""
    return id_of(client.images.get(tag))


__all__ = [
    "BOOTSTRAP_PYTHON", "BUILD_MOUNT", "DEFAULT_RUNTIME_SUITE", "RUNTIME_BUILDER_REPOSITORY", "SITE_MOUNT",
    "BuildSetting", "build_runtime_in_container", "builder_inputs", "builder_tag", "ensure_runtime_builder",
    "image_id", "runtime_builder_packages", "tool_site",
]
