"""The builder image's Dockerfile (from the Jinja2 templates in ``Dockerfiles/``) and its
build context (a deterministic tar of the folder holding the Dockerfile, the tool and
the runtime)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final

from venvstacks_docker import __version__, _tar
from venvstacks_docker.errors import ContainerError
from venvstacks_docker.host.images.common import (
    CONTAINER_HOME,
    FIXED_MTIME,
    TOOL_PY_MINOR,
    TOOL_PYTHON,
    TOOL_PYTHON_VERSION,
    TOOL_ROOT,
    check_target,
    id_of,
    image_or_none,
)
from venvstacks_docker.resources import dockerfiles_dir

if TYPE_CHECKING:
    import docker

TEMPLATE: Final = "builder.Dockerfile.j2"


def builder_context(
    *, target: str, base_image: str, base_image_ref: str | None = None, runtime_archive: str
) -> dict[str, str]:
    """The template context for ``builder.Dockerfile.j2`` (see ``Dockerfiles/README.md``).

    :param target: container target, e.g. ``"linux_x86_64"``.
    :param base_image: what ``FROM`` uses (an image ID for real builds).
    :param base_image_ref: the human-readable reference, for a comment; defaults to
        ``base_image``.
    :param runtime_archive: file name of the runtime archive in the build context.
    """
    return {
        "target": check_target(target),
        "tool_version": __version__,
        "base_image": base_image,
        "base_image_ref": base_image_ref or base_image,
        "tool_root": TOOL_ROOT,
        "python": TOOL_PYTHON,
        "site_packages": f"{TOOL_ROOT}/python/lib/python{TOOL_PY_MINOR}/site-packages",
        "runtime_archive": f"runtime/{runtime_archive}",
        "site_dir": "site",
        "bin_dir": "bin",
        "home": CONTAINER_HOME,
    }


def render_dockerfile(context: Mapping[str, object], *, template: str = TEMPLATE) -> bytes:
    r"""Render a template from ``Dockerfiles/`` to bytes (UTF-8, ``\n`` line ends).

    The same context always gives the same bytes.  A variable the template uses but the
    context lacks raises :class:`ContainerError` instead of rendering as empty text.
    """
    import jinja2

    folder = dockerfiles_dir()
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    try:
        text = str(env.get_template(template).render(**context))
    except jinja2.TemplateNotFound:
        raise ContainerError(
            f"Dockerfile template {template!r} not found in {folder}",
            hint="the installation is incomplete; reinstall venvstacks-docker",
        ) from None
    except jinja2.UndefinedError as exc:
        raise ContainerError(
            f"cannot render {template}: {exc.message}",
            hint="the template and its context disagree; see Dockerfiles/README.md for "
            "the variables a template may use",
        ) from None
    return text.replace("\r\n", "\n").encode("utf-8")


def render_for_target(
    target: str,
    *,
    base_image: str | None = None,
    spec_base_image: str | None = None,
    client: docker.DockerClient | None = None,
) -> bytes:
    """The Dockerfile ``image build`` would use, for showing to people.

    Without an engine (``client`` is ``None``) the base reference is shown as chosen; the
    real build puts the resolved image ID into ``FROM`` and the actual runtime file name.
    """
    from venvstacks_docker.host.images.base import choose_base_image

    choice = choose_base_image(target, cli=base_image, spec=spec_base_image, client=client)
    from_ref = choice.reference
    if client is not None:
        image = image_or_none(client, choice.reference)
        if image is not None:
            from_ref = id_of(image)
    arch = {"linux_x86_64": "x86_64", "linux_aarch64": "aarch64"}[target]
    context = builder_context(
        target=target,
        base_image=from_ref,
        base_image_ref=choice.reference,
        runtime_archive=f"cpython-{TOOL_PYTHON_VERSION}-{arch}-unknown-linux-gnu-install_only.tar.gz",
    )
    return render_dockerfile(context)


def write_context_tar(context_dir: Path, out: Path) -> None:
    """Tar a build context deterministically (:mod:`venvstacks_docker._tar`: sorted by
    name, uid/gid 0 without names, one fixed mtime, normalised modes)."""
    members = _tar.walk(context_dir, order="name", error=ContainerError)
    with out.open("wb") as fh:
        _tar.write_tar(fh, members, mtime=FIXED_MTIME, error=ContainerError)
