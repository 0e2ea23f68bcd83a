"""Listing and pruning the images the tool made (found by their ``venvstacks-docker.role`` label)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from venvstacks_docker.host.images.builder import memo_dir
from venvstacks_docker.host.images.common import LABEL_INPUTS, LABEL_ROLE, LABEL_VERSION

if TYPE_CHECKING:
    import docker

#: What podman puts before the names the tool gives images: a loaded image
#: ``venvstacks-docker-builder:<tag>`` is ``localhost/venvstacks-docker-builder:<tag>``
#: there, an imported one ``docker.io/library/...``.  Both engines find an image by the
#: short name, so that is the name shown (and removed by), whatever the engine.
_PODMAN_PREFIXES: Final = ("localhost/", "docker.io/library/")


def short_name(tag: str) -> str:
    """``tag`` without the registry prefix podman adds to a short name."""
    for prefix in _PODMAN_PREFIXES:
        if tag.startswith(prefix):
            return tag.removeprefix(prefix)
    return tag


def list_tool_images(client: docker.DockerClient) -> list[dict[str, Any]]:
    """Builder and base images this tool made (by their ``venvstacks-docker.role`` label)."""
    rows = []
    for image in client.images.list(filters={"label": LABEL_ROLE}):
        labels = image.labels or {}
        try:
            inputs = json.loads(labels.get(LABEL_INPUTS, "{}"))
        except json.JSONDecodeError:
            inputs = {}
        rows.append(
            {
                "role": labels.get(LABEL_ROLE, ""),
                "tags": sorted(short_name(tag) for tag in image.tags),
                "id": image.id,
                "created": image.attrs.get("Created", ""),
                "tagged": _last_tag_time(image.attrs),
                "size": int(image.attrs.get("Size", 0)),
                "version": labels.get(LABEL_VERSION, ""),
                "inputs": inputs,
            }
        )
    rows.sort(key=lambda r: (r["role"], r["tags"], r["id"]))
    return rows


def _last_tag_time(attrs: dict[str, Any]) -> str:
    """When the engine last tagged the image (``""`` if it never did, or does not say)."""
    found = str((attrs.get("Metadata") or {}).get("LastTagTime") or "")
    return "" if found.startswith("0001-") else found


def _built_here() -> dict[str, str]:
    """Image ID -> when this machine last built (or found) that builder image: the time
    of its lookup memo, ISO 8601 UTC.  podman does not record when it tagged an image,
    and assembled images are all created in 1980: this is what tells them apart there."""
    built: dict[str, str] = {}
    for memo in sorted(memo_dir().glob("*.json")):
        try:
            image_id = str(json.loads(memo.read_text(encoding="utf-8"))["image_id"])
            when = datetime.fromtimestamp(memo.stat().st_mtime, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        except (OSError, ValueError, KeyError, TypeError):
            continue
        built[image_id] = max(when, built.get(image_id, ""))
    return built


def prune_builder_images(client: docker.DockerClient, *, keep: int = 1) -> list[str]:
    """Remove old builder images, keeping the ``keep`` newest per target (newest by the
    time the engine last tagged them; where the engine does not say, as podman does not,
    by when this machine last built them; else by their creation time).

    Base images are never touched.  An image a container still uses is left alone.
    Returns the tags removed.
    """
    import docker

    by_target: dict[str, list[dict[str, Any]]] = {}
    for row in list_tool_images(client):
        if row["role"] == "builder":
            by_target.setdefault(str(row["inputs"].get("target", "")), []).append(row)
    removed: list[str] = []
    built = _built_here()
    for rows in by_target.values():
        # Newest by when the image was made here: assembled builder images are all
        # created at the same fixed time (so that their IDs are reproducible).
        rows.sort(key=lambda r: str(r["tagged"] or built.get(r["id"]) or r["created"]), reverse=True)
        for row in rows[max(keep, 0):]:
            for tag in row["tags"]:
                try:
                    client.images.remove(tag)
                    removed.append(tag)
                except docker.errors.APIError:
                    pass  # in use by a container: keep it
    return sorted(removed)
