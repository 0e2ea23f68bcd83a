"""What every part of :mod:`venvstacks_docker.host.images` shares: targets, names, labels."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from venvstacks_docker.errors import ContainerError
from venvstacks_docker.platforms import arch_of, current_platform

if TYPE_CHECKING:
    import docker
    from docker.models.images import Image
    from docker.models.resource import Model

ProgressCallback = Callable[[str], None]

#: Targets a builder container can build for.
CONTAINER_TARGETS: Final = ("linux_x86_64", "linux_aarch64")
#: Engine / Debian architecture names per target.
ENGINE_ARCH: Final = {"linux_x86_64": "amd64", "linux_aarch64": "arm64"}

#: Where the tool's runtime lives inside builder images.
TOOL_ROOT: Final = "/opt/venvstacks-docker"
TOOL_PYTHON: Final = f"{TOOL_ROOT}/python/bin/python3"
#: The interpreter the tool itself runs on inside the container.
TOOL_PYTHON_VERSION: Final = "3.11.2"
TOOL_PY_MINOR: Final = ".".join(TOOL_PYTHON_VERSION.split(".")[:2])
CONTAINER_HOME: Final = "/tmp/home"

BUILDER_REPOSITORY: Final = "venvstacks-docker-builder"
BASE_REPOSITORY: Final = "venvstacks-docker-base"
#: Label keys on every image the tool makes.
LABEL_ROLE: Final = "venvstacks-docker.role"
LABEL_INPUTS: Final = "venvstacks-docker.inputs"
LABEL_VERSION: Final = "venvstacks-docker.version"
#: Version of the JSON stored in ``LABEL_INPUTS`` of base images; bump when its shape changes.
INPUTS_VERSION: Final = 1
#: Version of the builder images' inputs JSON; bump when its shape, or the way the
#: inputs become an image, changes.  2: images are assembled on the host, reproducibly.
BUILDER_INPUTS_VERSION: Final = 2

#: Fixed mtime for every file in build contexts and bootstrapped root filesystems:
#: 1980-01-01, the earliest date a zip (wheel) can hold.
FIXED_MTIME: Final = 315532800


def id_of(model: Model) -> str:
    """The engine's id of an image (or container) it returned: always set, though the
    SDK's types say it may be missing."""
    found = model.id
    if found is None:
        raise ContainerError(f"the container engine returned {model!r} without an id")
    return found


def ignore_progress(_line: str) -> None:
    """A progress callback that shows nothing."""


def check_target(target: str) -> str:
    """Return ``target`` if a builder container can build it.

    :raises ContainerError: for macOS/Windows targets (they need a native machine) and
        for unknown names.
    """
    if target in CONTAINER_TARGETS:
        return target
    if target.startswith(("macosx", "win")):
        os_name = "macOS" if target.startswith("macosx") else "Windows"
        raise ContainerError(
            f"containers can't build {target}; run `venvstacks-docker ... --native` on a "
            f"{os_name} machine",
            hint=f"builder containers are Linux-only ({', '.join(CONTAINER_TARGETS)})",
        )
    raise ContainerError(
        f"unknown container target {target!r}",
        hint=f"use one of {', '.join(CONTAINER_TARGETS)}",
    )


def host_target() -> str:
    """The container target matching this machine's CPU (whatever its OS): the Linux
    target of :func:`~venvstacks_docker.platforms.current_platform`'s architecture."""
    return "linux_aarch64" if arch_of(current_platform()) == "aarch64" else "linux_x86_64"


def image_or_none(client: docker.DockerClient, reference: str) -> Image | None:
    """The engine's image for ``reference``, or ``None`` (also for an invalid reference,
    which :func:`~venvstacks_docker.host.images.base.resolve_base_image` reports)."""
    import docker

    try:
        return client.images.get(reference)
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.APIError as exc:
        if exc.status_code == 400:
            return None
        raise ContainerError(f"cannot inspect image {reference}: {exc.explanation}") from None


def remove_images(client: docker.DockerClient, image_ids: list[str], keep: set[str]) -> None:
    """Best-effort removal of untagged images (a failed build's steps, a replaced image)."""
    import docker

    for image_id in reversed(image_ids):
        if image_id in keep:
            continue
        try:
            image = client.images.get(image_id)
            if image.tags:
                continue
            client.images.remove(id_of(image), noprune=False)
        except docker.errors.DockerException:
            # In use as a cached layer of another image, or already gone: leave it.
            pass
