"""Helpers shared by the engine tests (imported by name; pytest puts this folder on sys.path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from venvstacks_docker.errors import ContainerError
from venvstacks_docker.host import images

#: Label every container made by these tests carries, so they can check nothing dangles.
TEST_LABEL = "venvstacks-docker.test-session"


def containers_labelled(client: Any, labels: dict[str, str]) -> list[Any]:
    key, value = next(iter(labels.items()))
    return list(client.containers.list(all=True, filters={"label": f"{key}={value}"}))


def runtime_archive(target: str) -> Path:
    """The tool's CPython runtime archive, built from pinned sources on first use."""
    try:
        return images.find_runtime_archive(target)[0]
    except ContainerError:
        # First run on a fresh machine: build the pinned runtime (minutes, then cached).
        from _runtime_fixture import ensure_runtime_archive

        return ensure_runtime_archive(images.TOOL_PYTHON_VERSION)
