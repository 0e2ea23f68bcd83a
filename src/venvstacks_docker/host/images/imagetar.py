"""Image tarballs: the base image as the engine saves it, and the builder image as a
deterministic ``docker load`` archive (the ``docker save`` layout: ``manifest.json``,
the config as ``<sha256>.json``, each layer as ``<diff_id>/layer.tar``).

An image's ID is the sha256 of its config JSON, and the config names every layer by
the sha256 of its uncompressed tar (``rootfs.diff_ids``).  So the same base, the same
layer bytes and the same config bytes (sorted keys, a fixed ``created`` time, no
engine version or container ID) give the same ID on every machine.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

from venvstacks_docker.errors import ContainerError
from venvstacks_docker.host.images.common import FIXED_MTIME
from venvstacks_docker.host.images.layer import BaseEntry, index_layers
from venvstacks_docker.host.images.recipe import CannotAssemble, Recipe
from venvstacks_docker.metadata import sha256_file

if TYPE_CHECKING:
    import docker

#: ``created`` of the builder image and of each history entry it adds.
CREATED: Final = datetime.fromtimestamp(FIXED_MTIME, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
#: Top-level config fields taken over from the base image.
_PLATFORM_FIELDS: Final = ("architecture", "os", "os.version", "os.features", "variant")
_LAYER_COMMENT: Final = "venvstacks-docker: one layer with the changes of every ADD, COPY and RUN above"


@dataclass(frozen=True)
class SavedBase:
    """The base image as ``docker save`` wrote it into ``tar``."""

    tar: Path
    config: dict[str, Any]
    #: Member names of its layers in ``tar``, bottom first.
    layers: list[str]
    diff_ids: list[str]
    #: Its file system: path -> kind and metadata.
    index: dict[str, BaseEntry]


def save_base(client: docker.DockerClient, image_id: str, dest: Path) -> SavedBase:
    """``docker save`` the base image into ``dest`` and read its config, layers and files."""
    import docker

    try:
        with dest.open("wb") as fh:
            for chunk in client.images.get(image_id).save(chunk_size=1 << 20):
                fh.write(chunk)
    except docker.errors.APIError as exc:
        raise ContainerError(f"cannot save the base image {image_id}: {exc.explanation or exc}") from None
    with tarfile.open(dest) as tar:
        manifest = json.loads(_read(tar, "manifest.json"))
        if not isinstance(manifest, list) or len(manifest) != 1:
            raise CannotAssemble("the engine saved the base image without a one-image manifest.json")
        config = json.loads(_read(tar, str(manifest[0]["Config"])))
        layers = [str(name) for name in manifest[0]["Layers"]]
        diff_ids = [str(d) for d in config.get("rootfs", {}).get("diff_ids", [])]
        if len(diff_ids) != len(layers):
            raise CannotAssemble("the base image's config and its saved layers disagree")
        index = index_layers(_open(tar, name) for name in layers)
    return SavedBase(tar=dest, config=config, layers=layers, diff_ids=diff_ids, index=index)


def _open(tar: tarfile.TarFile, name: str) -> IO[bytes]:
    try:
        fileobj = tar.extractfile(name)
    except KeyError:
        fileobj = None
    if fileobj is None:
        raise CannotAssemble(f"the engine's save of the base image lacks {name}")
    return fileobj


def _read(tar: tarfile.TarFile, name: str) -> bytes:
    with _open(tar, name) as fh:
        return fh.read()


def image_config(recipe: Recipe, base_config: Mapping[str, Any], *, labels: Mapping[str, str],
                 diff_ids: list[str]) -> bytes:
    """The builder image's config JSON: the base's platform and config with the
    Dockerfile's changes and ``labels``, the base's history plus one fixed-time entry per
    instruction, and the layers; canonical JSON (sorted keys, no spaces)."""
    config = dict(recipe.config)
    config.pop("Image", None)  # the classic builder's parent ID; nothing here needs it
    config["Labels"] = {**(config.get("Labels") or {}), **labels}
    changed = [i for i, (_text, changes) in enumerate(recipe.history) if changes]
    history = list(base_config.get("history") or [])
    for i, (text, _changes) in enumerate(recipe.history):
        entry: dict[str, Any] = {"created": CREATED, "created_by": text}
        if i == changed[-1]:
            entry["comment"] = _LAYER_COMMENT
        else:
            entry["empty_layer"] = True
        history.append(entry)
    for key in sorted(labels):
        history.append({"created": CREATED, "created_by": f"LABEL {key}={labels[key]}", "empty_layer": True})
    document: dict[str, Any] = {key: base_config[key] for key in _PLATFORM_FIELDS if key in base_config}
    document.update({
        "config": config,
        "created": CREATED,
        "history": history,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    })
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode("utf-8")


def write_image_tar(out: Path, *, base: SavedBase, layer: Path, diff_id: str, config: bytes, tag: str) -> str:
    """Write a ``docker load`` archive of the base's layers, ``layer`` and ``config``,
    tagged ``tag``; deterministically (sorted members, one mtime, root, ``0644``).
    Return the image ID the engine will give it: ``sha256:`` + the config's sha256."""
    config_hex = hashlib.sha256(config).hexdigest()
    layer_names = [f"{d.removeprefix('sha256:')}/layer.tar" for d in [*base.diff_ids, diff_id]]
    manifest = [{"Config": f"{config_hex}.json", "RepoTags": [tag], "Layers": layer_names}]
    manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode("utf-8")
    # name -> where its bytes come from: bytes, a member of the base's tar, a file, or
    # None for a folder
    sources: dict[str, bytes | str | Path | None] = {f"{config_hex}.json": config, "manifest.json": manifest_bytes}
    for name, member in zip(layer_names, base.layers, strict=False):
        sources.setdefault(name.split("/")[0], None)
        sources.setdefault(name, member)
    sources.setdefault(layer_names[-1].split("/")[0], None)
    sources.setdefault(layer_names[-1], layer)
    with tarfile.open(base.tar) as saved:
        _write_sorted(out, sources, saved)
    return f"sha256:{config_hex}"


def rootfs_image_tar(out: Path, *, rootfs: Path, arch: str, config: Mapping[str, Any], tag: str) -> str:
    """Write a ``docker load`` archive of one layer, the root file system tar ``rootfs``,
    for the architecture ``arch`` (what ``docker import`` does, except that the engine's
    import records its own architecture); ``config`` is the image's run configuration
    (``Env``, ``Cmd``, ``Labels``).  Return the image ID the engine will give it."""
    diff_id = f"sha256:{sha256_file(rootfs)}"
    document: dict[str, Any] = {
        "architecture": arch, "os": "linux", "created": CREATED, "config": dict(config),
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": CREATED, "comment": "venvstacks-docker: debootstrap root file system"}],
    }
    if arch == "arm64":
        document["variant"] = "v8"
    config_bytes = json.dumps(document, sort_keys=True, separators=(",", ":")).encode("utf-8")
    config_hex = hashlib.sha256(config_bytes).hexdigest()
    layer_name = f"{diff_id.removeprefix('sha256:')}/layer.tar"
    manifest = [{"Config": f"{config_hex}.json", "RepoTags": [tag], "Layers": [layer_name]}]
    sources: dict[str, bytes | str | Path | None] = {
        f"{config_hex}.json": config_bytes, layer_name.split("/")[0]: None, layer_name: rootfs,
        "manifest.json": json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode("utf-8"),
    }
    _write_sorted(out, sources, None)
    return f"sha256:{config_hex}"


def _write_sorted(out: Path, sources: Mapping[str, bytes | str | Path | None], saved: tarfile.TarFile | None) -> None:
    """Write ``sources`` (name -> bytes, a member of ``saved``, a file, or ``None`` for a
    folder) into the tar ``out``, sorted by name, each member as :func:`_info` makes it."""
    with out.open("wb") as fh:
        tar = tarfile.TarFile(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8")
        with tar:
            for name in sorted(sources):
                _add(tar, saved, name, sources[name])


def _info(name: str, kind: bytes, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mtime = kind, size, FIXED_MTIME
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add(tar: tarfile.TarFile, saved: tarfile.TarFile | None, name: str, source: bytes | str | Path | None) -> None:
    if source is None:
        tar.addfile(_info(name, tarfile.DIRTYPE, 0))
    elif isinstance(source, bytes):
        tar.addfile(_info(name, tarfile.REGTYPE, len(source)), io.BytesIO(source))
    elif isinstance(source, Path):
        with source.open("rb") as fh:
            tar.addfile(_info(name, tarfile.REGTYPE, source.stat().st_size), fh)
    else:
        assert saved is not None
        member = saved.getmember(source)
        with _open(saved, source) as fh:
            tar.addfile(_info(name, tarfile.REGTYPE, member.size), fh)


def load_image_tar(client: docker.DockerClient, archive: Path) -> None:
    """``docker load`` the archive through the Engine API (it tags the image itself)."""
    import docker

    try:
        with archive.open("rb") as fh:
            for chunk in client.api.load_image(fh, quiet=True):  # type: ignore[no-untyped-call]
                if isinstance(chunk, dict) and chunk.get("error"):
                    raise ContainerError(f"loading the assembled builder image failed: {chunk['error']}")
    except docker.errors.APIError as exc:
        raise ContainerError(f"loading the assembled builder image failed: {exc.explanation or exc}") from None
