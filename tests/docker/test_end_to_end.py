"""The CLI in the builder container, end to end, against the real engine: a container
killed mid-publish must leave the output folder as it was.  (That container and native
publishes are bit-identical is shown by the audit: tests/docker/test_audit_sample.py.)
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _helpers import Published, cli, copy_sample

from venvstacks_docker.host.container import LABEL_ROLE

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.runtime]


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tar.xz"))}


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """The publication's files (not the tool's lock and staging folder)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file() and ".venvstacks-docker" not in p.parts}


def test_killed_container_leaves_the_output_folder_as_it_was(
    published_sample: Published, docker_client, base_image, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    spec = copy_sample(tmp_path / "killed")
    out = tmp_path / "out"
    cli("publish", "--native", "--include", "app-*", "--build-dir", published_sample.build_dir,
        "--output-dir", out, published_sample.spec)
    before = snapshot(out)
    proc = subprocess.Popen(
        [sys.executable, "-m", "venvstacks_docker", "build", "--publish", "--clean",
         "--output-dir", str(out), str(spec)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # kill the builder container once it has started archiving (a staged file appears)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not list(out.glob(".venvstacks-docker/staging-*/*")):
        time.sleep(0.1)
    for container in docker_client.containers.list(filters={"label": f"{LABEL_ROLE}=builder"}):
        if any(m["Destination"] == str(out) for m in container.attrs.get("Mounts", [])):
            container.kill()
    _stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 6, stderr
    assert "killed" in stderr.lower()
    assert "Traceback" not in stderr
    assert snapshot(out) == before
    # the host cleared what the killed container staged
    assert list(out.glob(".venvstacks-docker/staging-*")) == []
    assert cli("verify", out).returncode == 0
    leftover = [c.name for c in docker_client.containers.list(all=True, filters={"label": f"{LABEL_ROLE}=builder"})
                if any(m["Destination"] == str(out) for m in c.attrs.get("Mounts", []))]
    assert leftover == []
