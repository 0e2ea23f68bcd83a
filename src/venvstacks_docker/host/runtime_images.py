"""The runtime builder images: an old Debian userland with the recipe's build dependencies
and a bootstrap CPython (for ``runtime build --in-container``), and its cross variant.

1. the Debian base of ``suite`` (:func:`~venvstacks_docker.host.images.bootstrap_base`,
   debootstrap + ``docker import``; no registry);
2. plus the recipe's build dependencies from the suite's repositories (main and
   security), installed with apt-get in a networked root container, and a bootstrap
   CPython (the tool needs Python 3.11, the suite has an older one) compiled in place
   from the same pinned source; the container is committed as
   ``venvstacks-docker-runtime-builder:<suite>-<12 hex>`` (a hash of those inputs), and
   the installed package versions are kept in its labels;
3. for another architecture, the *cross* runtime builder: that image plus the target
   architecture in dpkg (multiarch), ``crossbuild-essential-<arch>`` and the ``-dev``
   packages of the recipe's libraries for that architecture.  Crossing takes as long
   as a native build (compiling under qemu would run every compiler process emulated),
   and the bootstrap CPython is the build interpreter a cross build of the same
   version runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from venvstacks_docker.errors import ContainerError
from venvstacks_docker.host.images import bootstrap_base
from venvstacks_docker.host.images.common import LABEL_INPUTS, LABEL_ROLE, TOOL_PYTHON_VERSION, id_of, image_or_none
from venvstacks_docker.host.orphans import LABEL_OWNER, ROLE_BUILDER, Owner
from venvstacks_docker.locking import cache_lock
from venvstacks_docker.runtime_build import BUILD_DEPENDENCIES, PINS, fetch_source
from venvstacks_docker.runtime_build.recipe import DEBIAN_ARCH, build_dependencies
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


def _recipe_inputs(base_id: str, suite: str, packages: Sequence[str], *, security: bool, script: str) -> dict[str, Any]:
    """What every runtime builder image is made of: base, packages, script, bootstrap source."""
    return {
        "suite": suite,
        "base_image_id": base_id,
        "packages": list(packages),
        "security_updates": security,
        "bootstrap_source_sha256": PINS[TOOL_PYTHON_VERSION].sha256,
        "script_sha256": hashlib.sha256(script.encode()).hexdigest(),
    }


def builder_inputs(base_id: str, suite: str) -> dict[str, Any]:
    """What the runtime builder image is made of (its tag hashes this)."""
    return {"runtime_builder_version": RUNTIME_BUILDER_VERSION,
            **_recipe_inputs(base_id, suite, BUILD_DEPENDENCIES, security=True, script=_PREPARE_SCRIPT)}


def _tag(inputs: Mapping[str, Any], name: str) -> str:
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()
    return f"{RUNTIME_BUILDER_REPOSITORY}:{name}-{hashlib.sha256(canonical).hexdigest()[:12]}"


def builder_tag(inputs: Mapping[str, Any]) -> str:
    """``venvstacks-docker-runtime-builder:<suite>-<12 hex of the inputs>``."""
    return _tag(inputs, str(inputs["suite"]))


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
    environment = {"VSD_SUITE": suite, "VSD_SECURITY": "http://deb.debian.org/debian-security",
                   "VSD_PACKAGES": " ".join(BUILD_DEPENDENCIES)}
    return _make_once(client, Preparation(image=base.image_id, tag=builder_tag(inputs), inputs=inputs,
                                          script=_PREPARE_SCRIPT, environment=environment, mounts={},
                                          cmd=["/bin/bash"]),
                      what=f"build dependencies from Debian {suite}, and a bootstrap CPython", jobs=jobs, cache=cache)


def _make_once(client: docker.DockerClient, job: Preparation, *, what: str, jobs: int, cache: Path | None) -> str:
    """``job.tag``, prepared unless the engine has it (one preparation at a time per tag).

    Every runtime builder image compiles the bootstrap CPython from the pinned source,
    which is fetched first and mounted; ``jobs`` is its ``make -j``.
    """
    if image_or_none(client, job.tag) is not None:
        return job.tag
    with cache_lock(f"runtime-builder-{job.tag.split(':', 1)[1]}"):
        if image_or_none(client, job.tag) is not None:
            return job.tag
        source = fetch_source(PINS[TOOL_PYTHON_VERSION], cache or cache_root())
        _progress(f"preparing {job.tag}: {what} (minutes, once)")
        environment = {**job.environment, "VSD_BOOTSTRAP": BOOTSTRAP_DIR, "VSD_JOBS": str(jobs)}
        prepare_image(client, dataclasses.replace(job, environment=environment,
                                                  mounts={**job.mounts, "/run/vsd-source": source}))
    return job.tag


@dataclass(frozen=True)
class Preparation:
    """A root container (with network) of ``image`` that runs ``script``, committed as ``tag``."""

    image: str
    tag: str
    inputs: Mapping[str, Any]
    script: str
    environment: Mapping[str, str]
    #: read-only files or folders: ``{path in the container: host path}``.
    mounts: Mapping[str, Path]
    cmd: Sequence[str]


def prepare_image(client: docker.DockerClient, job: Preparation) -> None:
    """Run ``job.script`` as root in a container of ``job.image``, then commit it as ``job.tag``
    (labels: the role, the inputs and the Debian package versions the script printed as
    ``VSD-PACKAGE name version`` lines)."""
    import docker

    container: Container | None = None
    try:
        container = client.containers.create(
            job.image, command=["/bin/sh", "-c", job.script], environment=dict(job.environment),
            mounts=[docker.types.Mount(target=target, source=str(source), type="bind", read_only=True)
                    for target, source in job.mounts.items()],
            labels={LABEL_ROLE: ROLE_BUILDER, LABEL_OWNER: Owner.current().label()},
            network_mode="host", init=True,  # like debootstrap before it: trusted, and needs no docker0
        )
        container.start()
        packages, tail = _follow(container)
        code = int(container.wait().get("StatusCode", -1))
        if code != 0:
            log_tail = "\n".join("    " + line for line in tail[-30:])
            raise ContainerError(
                f"preparing the runtime builder image {job.tag} failed (exit {code}):\n{log_tail}",
                hint=f"check that the Debian mirror serves {job.inputs['suite']} and its security "
                "updates (deb.debian.org), then run the command again",
            )
        labels = {LABEL_ROLE: "runtime-builder", LABEL_INPUTS: json.dumps(job.inputs, sort_keys=True),
                  LABEL_PACKAGES: json.dumps(packages, sort_keys=True)}
        changes = [f"LABEL {key}={json.dumps(value)}" for key, value in labels.items()]
        repository, name = job.tag.split(":", 1)
        container.commit(repository=repository, tag=name, changes=[*changes, f"CMD {json.dumps(list(job.cmd))}"])
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


def runtime_builder_packages(client: docker.DockerClient, tag: str) -> dict[str, str]:
    """The Debian package versions installed in the runtime builder image ``tag``."""
    image = client.images.get(tag)
    labels = image.labels or {}
    packages: dict[str, str] = json.loads(labels.get(LABEL_PACKAGES, "{}"))
    return packages


def image_id(client: docker.DockerClient, tag: str) -> str:
    """The ID of a local image."""
    return id_of(client.images.get(tag))


# --------------------------------------------------------------------------- the cross image

#: Bump when the script changes (it is part of the tag anyway).
CROSS_BUILDER_VERSION: Final = 1

#: The runtime builder's preparation, for two architectures: the target's is added to
#: dpkg first, and the package list names ``binary:Package`` (``libssl-dev:arm64``).
_CROSS_SCRIPT: Final = 'dpkg --add-architecture "$VSD_ARCH"\n' + _PREPARE_SCRIPT.replace(
    "${Package} ${Version}", "${binary:Package} ${Version}").replace("import zlib,", "import ctypes, zlib,")


#: This machine's libraries the bootstrap CPython of a cross image needs (only those:
#: some ``-dev`` packages, libgdbm-compat-dev for one, cannot be installed for two
#: architectures at once).
BOOTSTRAP_LIBRARIES: Final = ("zlib1g-dev", "libbz2-dev", "liblzma-dev", "libffi-dev")


def _cross_packages(target: str) -> list[str]:
    """What a cross image installs: the bootstrap CPython's needs, and the cross build's."""
    return list(dict.fromkeys((*BOOTSTRAP_LIBRARIES, *build_dependencies(target))))


def cross_inputs(base_id: str, suite: str, target: str) -> dict[str, Any]:
    """What the cross builder image of ``target`` is made of (its tag hashes this).

    No security updates: a multiarch system needs the same version of a package on both
    architectures, and Debian's security archive no longer serves bullseye for arm64
    (its pool answers 404), so both come from the suite's last point release.
    """
    return {"cross_builder_version": CROSS_BUILDER_VERSION, "target": target,
            **_recipe_inputs(base_id, suite, _cross_packages(target), security=False, script=_CROSS_SCRIPT)}


def cross_tag(inputs: dict[str, Any]) -> str:
    """``venvstacks-docker-runtime-builder:<suite>-cross-<arch>-<12 hex of the inputs>``."""
    return _tag(inputs, f"{inputs['suite']}-cross-{DEBIAN_ARCH[inputs['target']]}")


def ensure_cross_builder(client: docker.DockerClient, *, suite: str, target: str, jobs: int = 2,
                         cache: Path | None = None) -> str:
    """The tag of the cross runtime builder image for ``target``, made once and then reused.

    :raises ContainerError: when the base image or the cross packages cannot be had.
    """
    base = bootstrap_base(suite=suite, client=client, on_progress=_progress)
    inputs = cross_inputs(base.image_id, suite, target)
    environment = {"VSD_ARCH": DEBIAN_ARCH[target], "VSD_SUITE": suite, "VSD_SECURITY": "",
                   "VSD_PACKAGES": " ".join(_cross_packages(target))}
    return _make_once(client, Preparation(image=base.image_id, tag=cross_tag(inputs), inputs=inputs,
                                          script=_CROSS_SCRIPT, environment=environment, mounts={},
                                          cmd=["/bin/bash"]),
                      what=f"Debian {suite}'s cross toolchain, {DEBIAN_ARCH[target]} libraries and a bootstrap CPython",
                      jobs=jobs, cache=cache)


__all__ = [
    "BOOTSTRAP_DIR", "BOOTSTRAP_PYTHON", "CROSS_BUILDER_VERSION", "DEFAULT_RUNTIME_SUITE", "LABEL_PACKAGES",
    "RUNTIME_BUILDER_REPOSITORY", "RUNTIME_BUILDER_VERSION", "Preparation", "builder_inputs", "builder_tag",
    "cross_inputs", "cross_tag", "ensure_cross_builder", "ensure_runtime_builder", "image_id", "prepare_image",
    "runtime_builder_packages",
]
