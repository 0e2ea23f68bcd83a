"""Fixtures for tests that drive the REAL container engine (no mocks of it).

Engine tests skip only when no engine answers, and say so loudly.  The bootstrapped
base and the builder image are cached by tag in the engine, so the first run on a
machine pays for debootstrap (~2 min) and the image build (~1.5 min); later runs reuse
them in seconds.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker_helpers import TEST_LABEL, containers_labelled, runtime_archive

from venvstacks_docker.errors import ContainerError
from venvstacks_docker.host import images
from venvstacks_docker.host.engine import connect


@pytest.fixture(scope="session")
def docker_client():  # type: ignore[no-untyped-def]
    try:
        client = connect()
    except ContainerError as exc:
        if os.environ.get("CI"):
            # CI machines have an engine: a missing one is a failure, never a skip
            pytest.fail(f"DOCKER ENGINE NOT REACHABLE ON CI: {exc}")
        pytest.skip(f"DOCKER ENGINE NOT REACHABLE: {exc}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def test_session_id() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture()
def test_labels(test_session_id: str) -> dict[str, str]:
    """Labels for one test's containers: unique per test, so checks can't see others'."""
    return {TEST_LABEL: f"{test_session_id}-{uuid.uuid4().hex[:8]}"}


@pytest.fixture(scope="session")
def base_image(docker_client) -> images.BaseImage:  # type: ignore[no-untyped-def]
    """The bootstrapped Debian base (made once per machine, then reused by tag)."""
    return images.bootstrap_base(client=docker_client)


@pytest.fixture(scope="session")
def builder_files(tmp_path_factory) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    """The tool wheel and runtime archive, fixed for the session.

    Pinning them keeps the builder tag stable even while someone edits the source tree
    during the run (a changed wheel rightly means a new tag).
    """
    target = images.host_target()
    wheel = images.find_tool_wheel(tmp_path_factory.mktemp("tool-wheel"))
    return {"tool_wheel": wheel, "runtime_archive": runtime_archive(target)}


@pytest.fixture(scope="session")
def builder_image(docker_client, base_image, builder_files) -> images.BuilderImage:  # type: ignore[no-untyped-def]
    """The builder image for this machine's target, on the bootstrapped base."""
    return images.ensure_builder_image(
        images.host_target(), base_image=base_image.alias, client=docker_client, **builder_files
    )


@pytest.fixture()
def no_dangling_containers(docker_client, test_labels) -> Iterator[dict[str, str]]:  # type: ignore[no-untyped-def]
    """Yield labels to put on containers; afterwards, assert none of them is left."""
    yield test_labels
    left = containers_labelled(docker_client, test_labels)
    for container in left:  # clean up before failing, so one failure doesn't cascade
        container.remove(force=True, v=True)
    assert not left, f"containers left behind: {[c.name for c in left]}"
