"""``venvstacks-docker image ...``: render, build, bootstrap, list and prune builder images.

Progress goes through :mod:`venvstacks_docker.ui` (a spinner per phase, build output
with ``-v``); results go to stdout, as JSON with ``--json``.  Errors are raised as
:class:`~venvstacks_docker.errors.ContainerError` for the main CLI to report.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from venvstacks_docker import ui
from venvstacks_docker.cli._common import emit_json
from venvstacks_docker.host import images
from venvstacks_docker.host.engine import session

image_app = typer.Typer(
    name="image",
    help=(
        "Manage builder images: the Linux images in which `lock`, `build` and `publish` "
        "run for linux_x86_64 and linux_aarch64 targets. Images are never pulled: "
        "`bootstrap-base` makes a Debian base locally, `build` adds a Python runtime and "
        "this tool (tagged by a hash of every input, so an existing tag is reused)."
    ),
    no_args_is_help=True,
    add_completion=False,
)

TargetOption = Annotated[
    str,
    typer.Option(
        "--target",
        help="Container target: linux_x86_64 or linux_aarch64 (default: this machine's).",
        show_default=False,
    ),
]
BaseImageOption = Annotated[
    str | None,
    typer.Option(
        "--base-image",
        help=(
            "Base image (tag, digest reference or image ID) instead of the default choice: "
            "stack file \\[tool.venvstacks-docker] base_image, then $VENVSTACKS_DOCKER_BASE_IMAGE, "
            "then the bootstrapped venvstacks-docker-base:bookworm, then the pinned "
            "manylinux_2_28 image. It must already be in the local engine."
        ),
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
def _default_target(target: str | None) -> str:
    return images.check_target(target or images.host_target())


def _print_json(kind: str, data: dict[str, Any]) -> None:
    emit_json(f"image-{kind}", data)


@image_app.command(
    "render",
    help=(
        "Print the Dockerfile that `image build` would use.\n\n"
        "Works without a container engine. With one, FROM shows the resolved base image "
        "ID, exactly as a build would use it."
    ),
)
def render_command(
    target: TargetOption = "",
    base_image: BaseImageOption = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the Dockerfile to FILE instead of stdout.", metavar="FILE"),
    ] = None,
) -> None:
    from venvstacks_docker.errors import ContainerError
    from venvstacks_docker.host.engine import connect

    chosen = _default_target(target)
    try:
        client = connect()
    except ContainerError:
        client = None
    try:
        data = images.render_for_target(chosen, base_image=base_image, client=client)
    finally:
        if client is not None:
            client.close()
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        output.write_bytes(data)


@image_app.command(
    "build",
    help=(
        "Build the builder image for a target (or reuse it), then print its tag.\n\n"
        "The tag is venvstacks-docker-builder:<hash of every input>: Dockerfile, base image "
        "ID, this tool's wheel and dependencies, the Python runtime archive, the target. "
        "Needs network access to PyPI on the host (to resolve the tool's dependencies) "
        "and the CPython runtime archive in the local cache; the image build itself runs "
        "with networking off."
    ),
)
def build_command(
    target: TargetOption = "",
    base_image: BaseImageOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Rebuild, without the layer cache, even if the tag exists.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    chosen = _default_target(target)
    reporter = ui.current()
    with reporter.phase(f"builder image for {chosen}"), session() as client:
        built = images.ensure_builder_image(chosen, base_image=base_image, force=force, on_progress=reporter.detail,
                                            client=client)
    if as_json:
        _print_json("build", {"tag": built.tag, "image_id": built.image_id, "inputs": built.inputs})
    else:
        sys.stdout.write(built.tag + "\n")


@image_app.command(
    "bootstrap-base",
    help=(
        "Create a minimal Debian base image with debootstrap; no registry needed.\n\n"
        "Runs `debootstrap --variant=minbase` with bash, ca-certificates, tar, xz-utils "
        "and gzip (no compilers), removes volatile files, and imports the result as "
        "venvstacks-docker-base:<suite>-<hash> and venvstacks-docker-base:<suite>. "
        "Needs root and access to a Debian mirror. Does nothing if the image exists "
        "(unless --force)."
    ),
)
def bootstrap_base_command(
    suite: Annotated[str, typer.Option("--suite", help="Debian suite to bootstrap.")] = images.DEFAULT_SUITE,
    mirror: Annotated[str, typer.Option("--mirror", help="Debian mirror URL.")] = images.DEFAULT_MIRROR,
    target: TargetOption = "",
    force: Annotated[
        bool, typer.Option("--force", help="Bootstrap again even if the image exists, and move its tags.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    chosen = _default_target(target)
    reporter = ui.current()
    with reporter.phase(f"Debian {suite} base image"), session() as client:
        base = images.bootstrap_base(suite=suite, mirror=mirror, target=chosen, force=force,
                                     on_progress=reporter.detail, client=client)
    if as_json:
        _print_json(
            "bootstrap-base",
            {
                "tag": base.tag,
                "alias": base.alias,
                "image_id": base.image_id,
                "inputs": base.inputs,
                "created": base.created,
            }
        )
    else:
        sys.stdout.write(f"{base.tag}\n{base.alias}\n")


@image_app.command(
    "list",
    help="List the builder and base images made by venvstacks-docker (by their labels).",
)
def list_command(as_json: JsonOption = False) -> None:
    with session() as client:
        rows = images.list_tool_images(client)
    if as_json:
        _print_json("list", {"images": rows})
        return
    header = ("ROLE", "TAG", "IMAGE ID", "FOR", "CREATED", "SIZE")
    lines: list[tuple[str, ...]] = [header]
    for row in rows:
        inputs = row["inputs"]
        what = inputs.get("target") or "/".join(filter(None, [inputs.get("suite"), inputs.get("arch")]))
        for tag in row["tags"] or ["<none>"]:
            lines.append(
                (
                    row["role"],
                    tag,
                    row["id"].removeprefix("sha256:")[:12],
                    what,
                    str(row["created"])[:10],
                    f"{row['size'] / 1e6:.0f} MB",
                )
            )
    # Plain columns, never truncated: tags are what people copy from this.
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        sys.stdout.write("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() + "\n")


@image_app.command(
    "prune",
    help=(
        "Remove old builder images, keeping the newest per target. Every change to the "
        "tool's files makes a new builder tag, so old ones pile up during development. "
        "Base images are kept."
    ),
)
def prune_command(
    keep: Annotated[int, typer.Option("--keep", help="How many builder images to keep per target.", min=0)] = 1,
    as_json: JsonOption = False,
) -> None:
    with session() as client:
        removed = images.prune_builder_images(client, keep=keep)
    if as_json:
        _print_json("prune", {"removed": removed})
    else:
        for tag in removed:
            sys.stdout.write(f"removed {tag}\n")


__all__ = ["image_app"]
