"""Run the tool's own command line inside a builder container.

The host decides *what* runs (argv, mounts, network); the container runs
``python3 -m venvstacks_docker <argv...>`` with the same code the host has.  Host folders
are mounted at the same absolute paths inside the container, so every path the tool
prints or writes into metadata is identical inside and outside.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Final

from venvstacks_docker.errors import ContainerError
from venvstacks_docker.host.container import BuilderContainer, Mount, OutputCallback, VolumeMount
from venvstacks_docker.host.images import CONTAINER_HOME, TOOL_PYTHON, TOOL_ROOT, BuilderImage

if TYPE_CHECKING:
    import docker

#: Environment variables telling the in-container tool which builder image it runs in.
BUILDER_TAG_ENV: Final = "VENVSTACKS_DOCKER_BUILDER_IMAGE"
BUILDER_ID_ENV: Final = "VENVSTACKS_DOCKER_BUILDER_IMAGE_ID"
BUILDER_INPUTS_ENV: Final = "VENVSTACKS_DOCKER_BUILDER_INPUTS"

#: Container paths a same-path mount may not hide or replace.
_PROTECTED: Final = (
    "/bin", "/dev", "/etc", "/lib", "/lib64", "/proc", "/sbin", "/sys", "/usr", "/var",
    "/opt/venvstacks-docker", "/tmp", CONTAINER_HOME,
)  # fmt: skip
#: Mounts may not go *inside* these either (they are the engine's or the tool's own).
_NO_MOUNTS_BELOW: Final = ("/dev", "/proc", "/sys", TOOL_ROOT, CONTAINER_HOME)


class ContainerStepFailed(ContainerError):
    """The tool inside the container exited non-zero.

    It has already printed its own message (relayed through ``on_output``); the exit
    status is carried over, so ``venvstacks-docker lock`` fails with the same code
    whether it ran natively or in a container.
    """

    def __init__(self, message: str, *, exit_code: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code
        self.return_code = exit_code


def _is_within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def same_path_mounts(paths: Mapping[Path, bool]) -> list[Mount]:
    """Bind mounts that show each host folder at the same absolute path in the container.

    :param paths: host path -> ``read_only``.  A path given twice (e.g. once relative)
        is mounted once, writable if any entry wanted it writable.
    :raises ContainerError: for a relative-to-nothing or missing path, or one that would
        hide the container's own system folders (``/``, ``/usr``, ``/tmp``, ...).
    """
    merged: dict[str, bool] = {}
    for raw, read_only in paths.items():
        # lexical, as the mount sees it: Path.resolve() would follow symlinks
        absolute = os.path.normpath(os.path.abspath(os.fspath(raw)))  # noqa: PTH100
        if not Path(absolute).exists():
            raise ContainerError(
                f"cannot mount {absolute} into the builder container: it does not exist",
                hint="create the folder first",
            )
        container_path = PurePosixPath(absolute).as_posix()
        if container_path == "/" or any(_is_within(p, container_path) for p in _PROTECTED):
            raise ContainerError(
                f"cannot mount {absolute} at the same path in the builder container: it "
                "would hide the container's own system files",
                hint="keep the project, its outputs and caches in a folder of their own "
                "(e.g. under your home folder or /srv), not at / or directly in a system folder",
            )
        if any(_is_within(container_path, p) for p in _NO_MOUNTS_BELOW):
            raise ContainerError(
                f"cannot mount {absolute} at the same path in the builder container: "
                "that path belongs to the container itself",
                hint="move the folder somewhere else (e.g. under your home folder)",
            )
        merged[container_path] = merged.get(container_path, True) and bool(read_only)
    return [Mount(Path(path), path, ro) for path, ro in sorted(merged.items())]


def tool_command(argv: Sequence[str]) -> list[str]:
    """The full in-container command for the tool's own CLI arguments."""
    return [TOOL_PYTHON, "-m", "venvstacks_docker", *[str(a) for a in argv]]


def run_in_builder(
    argv: Sequence[str],
    *,
    image: BuilderImage,
    mounts: Sequence[Mount | tuple[Path | str, str, bool]] = (),
    network: bool = False,
    env: Mapping[str, str] | None = None,
    on_output: OutputCallback | None = None,
    working_dir: str | Path | None = None,
    source_date_epoch: int | str | None = None,
    user: str | None = None,
    client: docker.DockerClient | None = None,
    volumes: Sequence[VolumeMount] = (),
) -> None:
    """Run ``python3 -m venvstacks_docker <argv...>`` in a fresh builder container.

    ``argv`` is passed through unchanged: the caller adds ``--native`` (or whatever
    keeps the inner run from starting containers of its own).  The container also sees
    ``VENVSTACKS_DOCKER_IN_CONTAINER=1`` and the builder image's tag, ID and inputs
    (JSON) in ``VENVSTACKS_DOCKER_BUILDER_IMAGE``, ``VENVSTACKS_DOCKER_BUILDER_IMAGE_ID``
    and ``VENVSTACKS_DOCKER_BUILDER_INPUTS``, for publish metadata.

    :param argv: the tool's CLI arguments.
    :param image: the builder image to use (:func:`~venvstacks_docker.host.images.ensure_builder_image`).
    :param mounts: bind mounts, usually from :func:`same_path_mounts`.
    :param network: ``True`` only for steps that must reach a package index (``lock``);
        everything else runs with ``network_mode="none"``.
    :param env: extra environment variables for the container.
    :param on_output: per-line callback ``(line, "stdout" | "stderr")``; default relays
        to our own stdout/stderr.
    :param working_dir: working directory inside the container (defaults to the current
        directory when it is mounted, else ``/tmp``).
    :param source_date_epoch: passed on as ``SOURCE_DATE_EPOCH`` (default: the host's).
    :param user: ``"uid:gid"`` (default: ours).
    :param client: engine client (default: :func:`~venvstacks_docker.host.engine.connect`).
    :param volumes: named volumes of the engine (copy mode: :mod:`~venvstacks_docker.host.transfer`).
    :raises ContainerStepFailed: when the tool exits non-zero (same exit status).
    :raises ContainerError: when the container cannot run or is killed.
    """
    from venvstacks_docker.host.engine import connect

    client = client or connect()
    mount_list = [Mount(Path(m[0]), str(m[1]), bool(m[2])) for m in mounts]
    if working_dir is None:
        cwd = str(Path.cwd())
        inside = [m.container_path for m in mount_list] + [v.container_path for v in volumes]
        working_dir = cwd if any(_is_within(cwd, path) for path in inside) else "/tmp"
    environment = {
        "VENVSTACKS_DOCKER_IN_CONTAINER": "1",
        # So publish can record which builder made the archives.
        BUILDER_TAG_ENV: image.tag,
        BUILDER_ID_ENV: image.image_id,
        BUILDER_INPUTS_ENV: json.dumps(image.inputs, sort_keys=True, separators=(",", ":")),
        **(env or {}),
    }
    command = tool_command(argv)
    with BuilderContainer(
        client,
        image=image.image_id,
        command=command,
        environment=environment,
        source_date_epoch=source_date_epoch,
        mounts=mount_list,
        network=network,
        working_dir=str(working_dir),
        user=user,
        on_output=on_output,
        labels={"venvstacks-docker.image-tag": image.tag},
        volumes=volumes,
    ) as box:
        code = box.run()
    if code != 0:
        shown = " ".join(str(a) for a in argv[:3])
        raise ContainerStepFailed(
            f"`venvstacks-docker {shown}` failed inside the builder container {image.tag} "
            f"(exit {code})",
            exit_code=code,
            hint="its own message is above; rerun with --verbose for more detail",
        )


__all__ = [
    "BUILDER_ID_ENV",
    "BUILDER_INPUTS_ENV",
    "BUILDER_TAG_ENV",
    "ContainerStepFailed",
    "run_in_builder",
    "same_path_mounts",
    "tool_command",
]
