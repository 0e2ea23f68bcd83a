"""Container mode under faults: a signalled or SIGKILLed host, and index credentials.

The real CLI drives the real engine.  A publish in the builder container is stopped at
a chosen moment with the tool's pause points (``VENVSTACKS_DOCKER_TEST_PAUSE``, passed
into the container); the pause file lives in the build folder, which the container
mounts at the same path.  Afterwards the output folder must hold exactly its old or
its new publication, ``verify`` must pass, and no container may be left behind.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from _helpers import Published, cli
from _private_index import PrivateIndex, assert_secret_nowhere, private_index

from venvstacks_docker.host.container import LABEL_ROLE

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.runtime]

OLD_EPOCH, NEW_EPOCH = "1700000000", "1700000100"


def state(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*"))
            if p.is_file() and ".venvstacks-docker" not in p.relative_to(out).parts}


def staging(out: Path) -> list[Path]:
    return list(out.glob(".venvstacks-docker/staging-*")) + list(out.glob(".venvstacks-docker/journal.json"))


def our_containers(client, marker: str) -> list:  # type: ignore[no-untyped-def]
    """Builder containers that mount something at or below ``marker`` (a test's own path)."""
    return [c for c in client.containers.list(all=True, filters={"label": f"{LABEL_ROLE}=builder"})
            if any(m["Destination"] == marker or m["Destination"].startswith(marker + "/")
                   for m in c.attrs.get("Mounts", []))]


def publish_args(pub: Published, out: Path, *extra: str) -> list[str]:
    return ["publish", "--include", "app-*", "--build-dir", str(pub.build_dir), "--output-dir", str(out),
            *extra, str(pub.spec)]


def env_with(epoch: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "SOURCE_DATE_EPOCH": epoch, **extra}


@pytest.fixture
def old_out(published_sample: Published, tmp_path: Path) -> Iterator[Path]:
    out = tmp_path / "out"
    cli(*publish_args(published_sample, out, "--native"), env=env_with(OLD_EPOCH))
    yield out


def start_paused(pub: Published, out: Path, point: str) -> tuple[subprocess.Popen[str], Path]:
    """Start a container publish of NEW content that stops at ``point``."""
    flag = pub.build_dir / f"pause-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "venvstacks_docker", *publish_args(pub, out)],
        env=env_with(NEW_EPOCH, VENVSTACKS_DOCKER_TEST_PAUSE=f"{point}:{flag}"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 600  # the first run may build the builder image
    while not flag.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the container publish never reached its pause point"
        time.sleep(0.1)
    return proc, flag


def test_ctrl_c_on_the_host_keeps_the_old_publication_and_removes_the_container(
    published_sample: Published, docker_client, old_out: Path  # type: ignore[no-untyped-def]
) -> None:
    before = state(old_out)
    proc, flag = start_paused(published_sample, old_out, "publish-staged")
    assert staging(old_out)  # the container staged its archives
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    flag.unlink(missing_ok=True)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert "still holds its previous publication" in stderr
    assert state(old_out) == before
    assert staging(old_out) == []
    assert our_containers(docker_client, str(old_out)) == []
    assert cli("verify", old_out).returncode == 0


def test_sigkill_of_the_host_mid_commit_stops_the_container_and_the_next_reader_finishes(
    published_sample: Published, docker_client, old_out: Path, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    before = state(old_out)
    proc, flag = start_paused(published_sample, old_out, "publish-commit")
    assert (old_out / ".venvstacks-docker" / "journal.json").exists()
    os.killpg(proc.pid, signal.SIGKILL)  # the host process, as `kill -9` would
    proc.communicate(timeout=60)
    # the container notices its host is gone and stops (SIGTERM, then SIGKILL after 5 s)
    deadline = time.monotonic() + 60
    while any(c.status == "running" for c in our_containers(docker_client, str(old_out))):
        assert time.monotonic() < deadline, "the builder container outlived its host"
        time.sleep(0.2)
        for c in our_containers(docker_client, str(old_out)):
            c.reload()
    flag.unlink(missing_ok=True)
    # the next command settles the folder: the committed publication is finished
    result = cli("verify", old_out)
    assert "finished an interrupted publication" in result.stderr
    after = state(old_out)
    assert after != before and after.keys() == before.keys()
    assert staging(old_out) == []
    # and the next container run removes the dead host's container
    cli(*publish_args(published_sample, old_out), env=env_with(NEW_EPOCH))
    assert our_containers(docker_client, str(old_out)) == []
    assert cli("verify", old_out).returncode == 0
    # and what the killed container's sandbox user left belongs to the caller again
    assert {p.lstat().st_uid for p in old_out.rglob("*")} == {os.getuid()}


STACK = """
[[runtimes]]
name = "cpython-3.11"
python_implementation = "cpython@3.11.2"
requirements = []
platforms = ["linux_x86_64"]

[[applications]]
name = "app"
launch_module = "app.py"
runtime = "cpython-3.11"
requirements = ["tabulate==0.9.0"]

[[tool.uv.index]]
name = "private"
url = "{url}"
default = true
"""


@pytest.fixture
def index() -> Iterator[PrivateIndex]:
    with private_index() as idx:
        yield idx


def test_private_index_credentials_reach_the_container_only_as_a_mounted_file(
    docker_client, index: PrivateIndex, runtime_archive: Path, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    folder = tmp_path / "private stack"
    folder.mkdir()
    (folder / "app.py").write_text("import tabulate\nprint(tabulate.tabulate([[1, 2]]))\n")
    spec = folder / "venvstacks.toml"
    spec.write_text(textwrap.dedent(STACK).format(url=index.gateway_url()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("UV_INDEX") and k != "NETRC"}
    env.update(UV_INDEX_PRIVATE_USERNAME=index.username, UV_INDEX_PRIVATE_PASSWORD=index.password,
               VENVSTACKS_DOCKER_RUNTIME_SOURCES=str(runtime_archive), VENVSTACKS_DOCKER_KEEP_CONTAINER="1")
    locked = cli("-v", "lock", spec, env=env)
    assert "in the container (network on)" in locked.stderr  # a detail, shown with -v
    assert any(r.authorized for r in index.requests if r.agent.startswith("uv/"))
    kept = our_containers(docker_client, str(folder))
    assert len(kept) == 1
    try:
        attrs = kept[0].attrs
        inspected = repr(attrs["Config"]) + repr(attrs["HostConfig"]) + repr(attrs["Mounts"])
        assert index.password not in inspected
        assert "NETRC=/run/venvstacks-docker/netrc" in attrs["Config"]["Env"]
        assert not any(e.startswith("UV_INDEX_PRIVATE_") for e in attrs["Config"]["Env"])
        # nothing of the caller's but what the command needs is mounted
        sources = {m["Source"] for m in attrs["Mounts"]}
        assert str(folder) not in sources and str(Path.home()) not in sources and str(Path.cwd()) not in sources
        assert str(spec) in sources
    finally:
        kept[0].remove(force=True, v=True)
    env.pop("VENVSTACKS_DOCKER_KEEP_CONTAINER")
    built = cli("-v", "build", "--publish", spec, env=env)
    assert list((folder / "_artifacts").glob("app-app*.tar.xz"))
    assert cli("verify", folder / "_artifacts").returncode == 0
    # the secret is in no lock, build file, metadata, archive or log
    assert_secret_nowhere(index.password, folder, locked.stdout, locked.stderr, built.stdout, built.stderr)
