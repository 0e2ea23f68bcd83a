"""Builder images: choose a base, render the Dockerfile, build it offline, tag by content.

A builder image is ``base userland + one relocatable CPython + venvstacks-docker``.  The
host gathers every file the image needs (runtime archive, the tool's wheel and its
dependencies) into the build context, so ``docker build`` itself runs with networking
off.  The image tag is a hash over all of those inputs, so an existing tag is reused
as-is and a changed input always yields a new tag.

``bootstrap_base`` makes a small Debian base image with ``debootstrap`` for hosts that
cannot pull from any registry.

One module per concern: :mod:`.common` (targets, names, labels), :mod:`.base` (which
base image), :mod:`.bootstrap` (the debootstrapped base), :mod:`.render` (Dockerfile
and build context), :mod:`.tool` (the tool's wheel, site and runtime),
:mod:`.builder` (:func:`ensure_builder_image`), :mod:`.listing`, and the deterministic
assembly of builder images: :mod:`.recipe` (the rendered Dockerfile as steps),
:mod:`.layer` (the new layer), :mod:`.imagetar` (image tarballs) and :mod:`.assemble`.  Callers import
every name from this package.
"""

from __future__ import annotations

from venvstacks_docker.host.images.assemble import assembly_refusal
from venvstacks_docker.host.images.base import (
    BASE_IMAGE_ENV,
    DEFAULT_SUITE,
    BaseImageChoice,
    bootstrapped_base_tag,
    choose_base_image,
    pinned_base_image,
    resolve_base_image,
)
from venvstacks_docker.host.images.bootstrap import (
    BASE_PACKAGES,
    DEFAULT_MIRROR,
    BaseImage,
    base_inputs,
    base_tag,
    bootstrap_base,
    strip_volatile_files,
    write_rootfs_tar,
)
from venvstacks_docker.host.images.builder import BuilderImage, _stream_build, ensure_builder_image, inputs_tag
from venvstacks_docker.host.images.common import (
    BASE_REPOSITORY,
    BUILDER_INPUTS_VERSION,
    BUILDER_REPOSITORY,
    CONTAINER_HOME,
    CONTAINER_TARGETS,
    INPUTS_VERSION,
    LABEL_INPUTS,
    LABEL_ROLE,
    LABEL_VERSION,
    TOOL_PYTHON,
    TOOL_PYTHON_VERSION,
    TOOL_ROOT,
    ProgressCallback,
    check_target,
    host_target,
)
from venvstacks_docker.host.images.listing import list_tool_images, prune_builder_images, short_name
from venvstacks_docker.host.images.recipe import CannotAssemble, read_recipe
from venvstacks_docker.host.images.render import (
    TEMPLATE,
    builder_context,
    render_dockerfile,
    render_for_target,
    write_context_tar,
)
from venvstacks_docker.host.images.tool import find_runtime_archive, find_tool_wheel, install_site

__all__ = [
    "BASE_IMAGE_ENV",
    "BASE_PACKAGES",
    "BASE_REPOSITORY",
    "BUILDER_INPUTS_VERSION",
    "BUILDER_REPOSITORY",
    "CONTAINER_HOME",
    "CONTAINER_TARGETS",
    "DEFAULT_MIRROR",
    "DEFAULT_SUITE",
    "INPUTS_VERSION",
    "LABEL_INPUTS",
    "LABEL_ROLE",
    "LABEL_VERSION",
    "TEMPLATE",
    "TOOL_PYTHON",
    "TOOL_PYTHON_VERSION",
    "TOOL_ROOT",
    "BaseImage",
    "BaseImageChoice",
    "BuilderImage",
    "CannotAssemble",
    "ProgressCallback",
    "_stream_build",
    "assembly_refusal",
    "base_inputs",
    "base_tag",
    "bootstrap_base",
    "bootstrapped_base_tag",
    "builder_context",
    "check_target",
    "choose_base_image",
    "ensure_builder_image",
    "find_runtime_archive",
    "find_tool_wheel",
    "host_target",
    "inputs_tag",
    "install_site",
    "list_tool_images",
    "pinned_base_image",
    "prune_builder_images",
    "read_recipe",
    "render_dockerfile",
    "render_for_target",
    "resolve_base_image",
    "short_name",
    "strip_volatile_files",
    "write_context_tar",
    "write_rootfs_tar",
]
