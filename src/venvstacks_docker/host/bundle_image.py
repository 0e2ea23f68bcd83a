"""Builder images in bundles: saved reproducibly on the connected host, loaded offline.

``docker save`` names members and fills them with content-addressed data (layer tars,
the image config), but the tar around them carries whatever times and owners the
engine chose.  The saved image is therefore re-packed by the one deterministic tar
writer, sorted by name, so the same image always gives the same bytes.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from venvstacks_docker import _tar, ui
from venvstacks_docker.bundle_format import MTIME
from venvstacks_docker.errors import BundleError, ContainerError
from venvstacks_docker.host.images.builder import BuilderImage
from venvstacks_docker.host.images.common import LABEL_INPUTS, id_of, image_or_none
from venvstacks_docker.host.images.imagetar import load_image_tar

if TYPE_CHECKING:
    import docker


def save_image(client: docker.DockerClient, tag: str, dest: Path, work: Path) -> None:
    """Save the image ``tag`` (named by that tag alone) into ``dest``, reproducibly."""
    import docker

    raw = work / "saved.tar"
    unpacked = work / "saved"
    work.mkdir(parents=True, exist_ok=True)
    try:
        with raw.open("wb") as fh:
            for chunk in client.api.get_image(tag, chunk_size=1 << 20):
                fh.write(chunk)
    except docker.errors.APIError as exc:
        raise ContainerError(f"cannot save the builder image {tag}: {exc.explanation or exc}") from None
    with tarfile.open(raw) as tar:
        tar.extractall(unpacked, filter="data")
    raw.unlink()
    with dest.open("wb") as fh:
        _tar.write_tar(fh, _tar.walk(unpacked, order="name", error=BundleError), mtime=MTIME, error=BundleError)
    shutil.rmtree(unpacked)


def ensure_loaded(client: docker.DockerClient, archive: Path, recorded: dict[str, Any]) -> BuilderImage:
    """The bundle's builder image in the engine: loaded from ``archive`` unless the engine
    has it already, and tagged as it was on the connected host.

    :raises BundleError: when loading gives another image than the bundle recorded.
    """
    image_id, tag = str(recorded["image_id"]), str(recorded["tag"])
    image = image_or_none(client, image_id)
    if image is None:
        with ui.current().phase(f"loading the builder image {tag} from the bundle"):
            load_image_tar(client, archive)
        image = image_or_none(client, image_id)
        if image is None:
            raise BundleError(f"loading {archive.name} did not give the builder image the bundle records "
                              f"({image_id[:19]})", hint="verify the bundle (venvstacks-docker bundle verify)")
    else:
        ui.current().detail(f"the engine already has the bundle's builder image {image_id[:19]}")
    if tag not in (image.tags or []):
        repository, _, name = tag.rpartition(":")
        image.tag(repository, name)
    labels = (image.attrs.get("Config") or {}).get("Labels") or {}
    return BuilderImage(tag=tag, image_id=id_of(image), inputs=json.loads(labels.get(LABEL_INPUTS, "{}")))


__all__ = ["ensure_loaded", "save_image"]
