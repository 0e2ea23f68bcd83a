"""An air-gapped publish in the builder container, against the real engine.

The connected side bundles sample_project with a builder image made on a base image
only this test uses (the bootstrapped base plus a label naming the test run, so its
builder image has an ID of its own).  That builder image is then removed from the
engine, and the offline side runs ``publish --from-bundle`` in a network namespace of
its own (``unshare -n``) with an empty tool cache and uv cache: it must load the image
from the bundle, build with networking off, and publish archives byte-identical to the
connected publish of the same lock (the ``published_sample`` fixture; that container and
native publishes give the same bytes is shown by tests/docker/test_audit_sample.py).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from _helpers import Published, cli

from venvstacks_docker import bundle_use
from venvstacks_docker.host.images import common

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.runtime, pytest.mark.network]


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tar.xz"))}


@pytest.fixture()
def test_base(docker_client, base_image) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The bootstrapped base under a label and tag only this test uses."""
    tag = f"venvstacks-docker-test-offline-base:{uuid.uuid4().hex[:12]}"
    dockerfile = f"FROM {base_image.image_id}\nLABEL venvstacks-docker.test-offline={tag}\n".encode()
    _image, _logs = docker_client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True, network_mode="none")
    yield tag
    for listed in docker_client.images.list(filters={"label": f"venvstacks-docker.test-offline={tag}"}):
        docker_client.images.remove(listed.id, force=True)


def test_offline_container_publish_loads_the_image_and_gives_the_connected_bytes(
    docker_client, test_base: str, published_sample: Published, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed to run the offline side without a network")
    bundle = tmp_path / "connected" / "sample.bundle.tar"
    bundle.parent.mkdir()
    cli("bundle", published_sample.spec, "-o", bundle, "--base-image", test_base)
    recorded = bundle_use.verify(bundle).manifest["builder_images"][common.host_target()]
    image_id = recorded["image_id"]
    docker_client.images.remove(image_id, force=True)  # made on the test's own base: no one else's
    assert common.image_or_none(docker_client, image_id) is None

    home = tmp_path / "offline home"
    env = {**os.environ, "VENVSTACKS_DOCKER_CACHE": str(home / "cache"), "UV_CACHE_DIR": str(home / "uv"),
           "HOME": str(home), "XDG_CACHE_HOME": str(home / "xdg")}
    out = tmp_path / "offline out"
    proc = subprocess.run(
        ["unshare", "--net", "--", sys.executable, "-m", "venvstacks_docker", "-v", "publish", "--from-bundle",
         str(bundle), "--output-dir", str(out), "--build-dir", str(tmp_path / "offline build")],
        capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "loading the builder image" in proc.stderr and "network off" in proc.stderr
    assert common.image_or_none(docker_client, image_id) is not None  # loaded, with the recorded ID
    assert digests(out) == digests(published_sample.output_dir)
    assert cli("verify", out).returncode == 0
    # a second offline run finds the image and the unpacked bundle in place
    again = subprocess.run(
        ["unshare", "--net", "--", sys.executable, "-m", "venvstacks_docker", "-v", "publish", "--from-bundle",
         str(bundle), "--output-dir", str(out), "--build-dir", str(tmp_path / "offline build")],
        capture_output=True, text=True, env=env, check=False)
    assert again.returncode == 0, again.stderr
    assert "already has the bundle's builder image" in again.stderr
    assert digests(out) == digests(published_sample.output_dir)
