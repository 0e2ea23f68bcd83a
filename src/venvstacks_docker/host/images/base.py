"""Which base image a builder image starts from: the command line, the stack file, the
environment, a bootstrapped Debian base, or the pinned default; and finding it locally
(images are never pulled)."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from venvstacks_docker.errors import ContainerError
from venvstacks_docker.host.images.common import (
    BASE_REPOSITORY,
    ENGINE_ARCH,
    check_target,
    host_target,
    image_or_none,
)
from venvstacks_docker.resources import PINNED_IMAGES

if TYPE_CHECKING:
    import docker
    from docker.models.images import Image

BASE_IMAGE_ENV: Final = "VENVSTACKS_DOCKER_BASE_IMAGE"
DEFAULT_SUITE: Final = "bookworm"


@dataclass(frozen=True, kw_only=True)
class BaseImageChoice:
    """Which base image a builder image starts from, and why."""

    reference: str
    #: Where the choice came from: ``"cli"``, ``"spec"``, ``"env"``, ``"bootstrapped"``
    #: or ``"pinned"``.
    source: Literal["cli", "spec", "env", "bootstrapped", "pinned"]


def pinned_base_image(target: str) -> str:
    """The default manylinux_2_28 base for ``target`` from ``resources/pinned_images.toml``."""
    check_target(target)
    try:
        table = tomllib.loads(PINNED_IMAGES.read_text(encoding="utf-8"))
        return str(table[target]["reference"])
    except (OSError, tomllib.TOMLDecodeError, KeyError) as exc:
        raise ContainerError(
            f"no pinned base image for {target} in {PINNED_IMAGES} ({exc})",
            hint="reinstall venvstacks-docker, or pass --base-image",
        ) from None


def bootstrapped_base_tag(target: str, suite: str = DEFAULT_SUITE) -> str:
    """The alias tag ``bootstrap-base`` gives a base for ``target``.

    The base for this machine's own architecture is ``venvstacks-docker-base:<suite>``;
    a foreign-architecture one gets the architecture appended.
    """
    check_target(target)
    if target == host_target():
        return f"{BASE_REPOSITORY}:{suite}"
    return f"{BASE_REPOSITORY}:{suite}-{ENGINE_ARCH[target]}"


def choose_base_image(
    target: str,
    *,
    cli: str | None = None,
    spec: str | None = None,
    env: Mapping[str, str] | None = None,
    client: docker.DockerClient | None = None,
) -> BaseImageChoice:
    """Pick the base image for ``target``.

    Order: ``cli`` (``--base-image``) > ``spec`` (``[tool.venvstacks-docker] base_image``)
    > ``$VENVSTACKS_DOCKER_BASE_IMAGE`` > the bootstrapped Debian base, if the engine has
    it > the pinned manylinux_2_28 default.  Without a ``client`` the bootstrapped base
    is not considered.
    """
    check_target(target)
    environ = os.environ if env is None else env
    if cli:
        return BaseImageChoice(reference=cli, source="cli")
    if spec:
        return BaseImageChoice(reference=spec, source="spec")
    if environ.get(BASE_IMAGE_ENV):
        return BaseImageChoice(reference=environ[BASE_IMAGE_ENV], source="env")
    if client is not None:
        tag = bootstrapped_base_tag(target)
        if image_or_none(client, tag) is not None:
            return BaseImageChoice(reference=tag, source="bootstrapped")
    return BaseImageChoice(reference=pinned_base_image(target), source="pinned")


def resolve_base_image(client: docker.DockerClient, choice: BaseImageChoice, target: str) -> Image:
    """The local image for ``choice``; images are never pulled implicitly.

    :raises ContainerError: when the engine does not have it (naming
        ``venvstacks-docker image bootstrap-base``) or it is for another architecture.
    """
    image = image_or_none(client, choice.reference)
    if image is None:
        via = {
            "cli": "--base-image",
            "spec": "[tool.venvstacks-docker] base_image",
            "env": BASE_IMAGE_ENV,
            "bootstrapped": "the bootstrapped base",
            "pinned": "the pinned default",
        }[choice.source]
        raise ContainerError(
            f"base image {choice.reference} (from {via}) is not available in the local "
            "container engine, and venvstacks-docker never pulls images by itself",
            hint=(
                "create a local Debian base without any registry with "
                "`venvstacks-docker image bootstrap-base`, or make the image available "
                f"yourself (`docker pull {choice.reference}` where a registry is reachable, "
                "or `docker load`) and pass its ID or local tag with --base-image; see "
                "`venvstacks-docker image bootstrap-base --help`"
            ),
        )
    arch = str(image.attrs.get("Architecture", ""))
    wanted = ENGINE_ARCH[target]
    if arch and arch != wanted:
        raise ContainerError(
            f"base image {choice.reference} is built for {arch}, but {target} needs {wanted}",
            hint=f"choose a {wanted} base image with --base-image",
        )
    return image
