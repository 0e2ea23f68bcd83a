"""A remote engine, for real: a second dockerd of its own, reached over TCP on loopback.

The fixture starts ``dockerd`` with its own data root, exec root, pidfile and
containerd, a bridge of its own (made and removed by the fixture: a second daemon given
``--bridge=none`` deletes the host's ``docker0``, breaking the first engine's network)
and no iptables rules, listening on ``tcp://127.0.0.1:<free port>``, and loads the
bootstrapped base image into it through the API (the first engine's ``docker save``,
the second's ``load``; no registry).  To the tool that engine
is remote (it is not a socket on this machine), so everything travels in copy mode.

One small stack (sample_project's runtime layer) is published twice: in mount mode on
the local engine, and in copy mode on the second one; the archives and metadata must be
byte-identical, and the second engine's builder container must mount nothing of this
machine.  On the way, the failures copy mode must survive: a full volume, the engine
killed while inputs are sent, Ctrl-C while they are sent, and the engine killed while a
publication comes back.  Each leaves the host's output folder exactly as it was, with
one clear message and exit code 6 (engine) or 130 (interrupted); the volumes are then
reused or cleaned.  The engine is stopped and its data root removed at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _helpers import cli, copy_sample

from venvstacks_docker.host.orphans import LABEL_ROLE
from venvstacks_docker.host.volumes import LABEL_VOLUME, STORE_VOLUME

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.runtime]

#: The small stack: sample_project's runtime layer (locked, no network needed).
SUBSET = ("--include", "cpython-3.11")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SecondEngine:
    """A dockerd of our own: started, killed, restarted and removed by its pid."""

    def __init__(self, root: Path, storage_driver: str) -> None:
        self.root = root
        self.url = f"tcp://127.0.0.1:{_free_port()}"
        self.bridge = f"vsd{uuid.uuid4().hex[:8]}"
        (root / "daemon.json").write_text(f'{{"storage-driver": "{storage_driver}"}}\n')
        self.proc: subprocess.Popen[bytes] | None = None
        self._make_bridge()

    def _make_bridge(self) -> None:
        """A bridge of its own, on a /24 nothing here uses."""
        used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
        subnet = next(f"10.231.{n}" for n in range(1, 255) if f" 10.231.{n}." not in used)
        for command in (["ip", "link", "add", "name", self.bridge, "type", "bridge"],
                        ["ip", "addr", "add", f"{subnet}.1/24", "dev", self.bridge],
                        ["ip", "link", "set", self.bridge, "up"]):
            subprocess.run(command, check=True, capture_output=True)

    def start(self) -> None:
        import docker

        with (self.root / "dockerd.log").open("ab") as log:
            self.proc = subprocess.Popen(
                ["dockerd", "--config-file", str(self.root / "daemon.json"), "--data-root", str(self.root / "data"),
                 "--exec-root", str(self.root / "exec"), "--pidfile", str(self.root / "docker.pid"), "-H", self.url,
                 f"--bridge={self.bridge}", "--iptables=false", "--ip-masq=false", "--ip-forward=false"],
                stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, (self.root / "dockerd.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the second dockerd did not start"
            try:
                probe = docker.DockerClient(base_url=self.url, timeout=5)  # asks the engine its version
            except docker.errors.DockerException:
                time.sleep(0.5)
                continue
            probe.close()
            return

    def client(self) -> Any:
        import docker

        return docker.DockerClient(base_url=self.url, timeout=120)

    def kill(self) -> None:
        """SIGKILL, as an engine that disappears (then its containerd, by its pidfile)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)
        self._stop_containerd(signal.SIGKILL)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._stop_containerd(signal.SIGTERM)

    def _stop_containerd(self, sig: int) -> None:
        pidfile = self.root / "exec" / "containerd" / "containerd.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text().strip())
            os.kill(pid, sig)
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.1)

    def remove(self) -> None:
        """Unmount whatever the daemon left mounted below its roots, then remove them."""
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for point in sorted((m for m in mounts if m.startswith(str(self.root))), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
        subprocess.run(["ip", "link", "del", self.bridge], check=False, capture_output=True)


@pytest.fixture(scope="module")
def engine2(docker_client, base_image, tmp_path_factory) -> Iterator[SecondEngine]:  # type: ignore[no-untyped-def]
    if os.geteuid() != 0 or shutil.which("dockerd") is None or shutil.which("ip") is None:
        pytest.skip("a second dockerd needs root, the dockerd binary and iproute2")
    root = Path(f"/tmp/vsd-engine2-{uuid.uuid4().hex[:8]}")  # short: unix socket paths are limited
    root.mkdir()
    engine = SecondEngine(root, docker_client.info().get("Driver") or "overlay2")
    host_bridge = Path("/sys/class/net/docker0").exists()
    try:
        engine.start()
        second = engine.client()
        second.api.load_image(docker_client.images.get(base_image.alias).save(named=True))
        second.close()
        yield engine
    finally:
        engine.stop()
        engine.remove()
        assert Path("/sys/class/net/docker0").exists() == host_bridge, "the second engine touched docker0"


def publication(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and ".venvstacks-docker" not in p.relative_to(out).parts}


def leftovers(out: Path) -> list[Path]:
    return [p for p in out.glob(".venvstacks-docker/*") if p.name not in {"lock", "lock.owner"}]


def per_run_volumes(engine: SecondEngine) -> list[str]:
    second = engine.client()
    listed = second.api.volumes(filters={"label": LABEL_VOLUME}).get("Volumes") or []
    second.close()
    return [v["Name"] for v in listed if (v.get("Labels") or {}).get(LABEL_VOLUME) in ("input", "run")]


def publish(spec: Path, engine: SecondEngine, *extra: str, env: dict[str, str] | None = None,
            check: bool = True) -> Any:
    return cli("-v", "build", "--publish", *SUBSET, "--engine", engine.url, *extra, spec,
               env={**os.environ, **(env or {})}, check=check)


def start_paused(spec: Path, engine: SecondEngine, point: str) -> tuple[subprocess.Popen[str], Path]:
    flag = spec.parent / f"pause-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "venvstacks_docker", "build", "--publish", *SUBSET, str(spec)],
        env={**os.environ, "DOCKER_HOST": engine.url, "VENVSTACKS_DOCKER_TEST_PAUSE": f"{point}:{flag}"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 600  # the first run assembles the builder image on the engine
    while not flag.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"the run never reached {point}"
        time.sleep(0.1)
    return proc, flag


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """The local engine's mount-mode publish of the small stack."""
    spec = copy_sample(tmp_path_factory.mktemp("mount") / "stack")
    cli("build", "--publish", *SUBSET, "--transfer", "mount", spec)
    return spec.parent / "_artifacts"


@pytest.fixture(scope="module")
def remote_spec(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    return copy_sample(tmp_path_factory.mktemp("copy") / "stack")


def test_a_full_volume_is_one_clear_error(engine2: SecondEngine, remote_spec: Path) -> None:
    second = engine2.client()  # the engine's store, given 1 MiB: the runtime archive cannot fit
    second.volumes.create(STORE_VOLUME, driver="local",
                          driver_opts={"type": "tmpfs", "device": "tmpfs", "o": "size=1m"})
    result = publish(remote_spec, engine2, check=False)
    assert result.returncode == 6, result.stderr
    assert f"a volume of the container engine at {engine2.url}" in result.stderr and "is full" in result.stderr
    assert "docker volume" in result.stderr and "Traceback" not in result.stderr
    assert publication(remote_spec.parent / "_artifacts") == {}
    assert per_run_volumes(engine2) == []
    second.volumes.get(STORE_VOLUME).remove()  # what the hint says: give it room (here: a real volume)
    second.close()


def test_an_engine_killed_while_inputs_are_sent(engine2: SecondEngine, remote_spec: Path) -> None:
    proc, flag = start_paused(remote_spec, engine2, "transfer-upload")
    engine2.kill()
    flag.unlink()
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 6, stderr
    assert f"lost the connection to the container engine at {engine2.url}" in stderr
    assert "while copying the inputs to the engine" in stderr and "Traceback" not in stderr
    out = remote_spec.parent / "_artifacts"
    assert publication(out) == {} and leftovers(out) == []
    engine2.start()  # its volumes are still there; the dead run's own are removed by the next run


def test_copy_mode_publishes_the_same_bytes_and_mounts_nothing_of_this_machine(
    engine2: SecondEngine, remote_spec: Path, reference: Path
) -> None:
    started = time.monotonic()
    result = publish(remote_spec, engine2, env={"VENVSTACKS_DOCKER_KEEP_CONTAINER": "1"})
    assert "remote, inputs and outputs copied through the Engine API" in result.stderr
    out = remote_spec.parent / "_artifacts"
    assert publication(out) == publication(reference) != {}
    assert cli("verify", out).returncode == 0
    second = engine2.client()
    kept = second.containers.list(all=True, filters={"label": f"{LABEL_ROLE}=builder"})
    for container in kept:
        container.remove(force=True)
    second.close()
    assert len(kept) == 1, [c.name for c in kept]
    mounts = kept[0].attrs["Mounts"]
    assert mounts and {m["Type"] for m in mounts} == {"volume"}, mounts
    assert any(m["Destination"] == str(out) for m in mounts)
    print(f"copy-mode publish on the second engine: {time.monotonic() - started:.0f}s")


def test_ctrl_c_while_inputs_are_sent(engine2: SecondEngine, remote_spec: Path) -> None:
    out = remote_spec.parent / "_artifacts"
    before = publication(out)
    proc, flag = start_paused(remote_spec, engine2, "transfer-upload")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    flag.unlink(missing_ok=True)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "still holds its previous publication" in stderr
    assert "Traceback" not in stderr
    assert publication(out) == before and leftovers(out) == []
    assert per_run_volumes(engine2) == []  # this run's, and those the killed runs left
    again = publish(remote_spec, engine2)  # the volumes are reused as they are
    assert "reused" in again.stdout and "making it anew" not in again.stderr


def test_an_engine_killed_while_the_publication_comes_back(engine2: SecondEngine, remote_spec: Path,
                                                          tmp_path: Path) -> None:
    """The copy-back itself, against the volume the publish above left: the engine is
    killed after the first MiB of the archive has arrived."""
    from venvstacks_docker.host.ownership import sandbox_user
    from venvstacks_docker.host.volumes import project_volume

    volume = project_volume("output", remote_spec.parent / "_artifacts", sandbox_user()[0])
    target = tmp_path / "elsewhere"
    target.mkdir()
    flag = tmp_path / "pause"
    script = textwrap.dedent(f"""
        from pathlib import Path
        from venvstacks_docker.errors import VenvstacksDockerError
        from venvstacks_docker.host.container import VolumeMount
        from venvstacks_docker.host.engine import connect
        from venvstacks_docker.host.transfer_output import bring_back_publication
        from venvstacks_docker.host.volumes import porter
        client = connect(engine={engine2.url!r})
        image = client.images.list(name="venvstacks-docker-builder")[0].id
        try:
            with porter(client, image, [VolumeMount({volume!r}, {str(target)!r}, False)], {engine2.url!r}) as box:
                bring_back_publication(box, Path({str(target)!r}), print, {{}})
        except VenvstacksDockerError as exc:
            raise SystemExit(f"error: {{exc.message}} / {{exc.hint}}")
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "VENVSTACKS_DOCKER_TEST_PAUSE": f"transfer-download:{flag}"})
    deadline = time.monotonic() + 120
    while not flag.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert list(target.glob(".venvstacks-docker/staging-*/*.tar.xz"))  # an archive was arriving
    engine2.kill()
    flag.unlink()
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "lost the connection to the container engine" in stderr, stderr
    assert f"{target} still holds its previous publication" in stderr
    assert publication(target) == {} and leftovers(target) == []


@pytest.mark.network
def test_lock_and_local_export_in_copy_mode_on_the_local_engine(docker_client, base_image,  # type: ignore[no-untyped-def]
                                                                tmp_path: Path) -> None:
    """``--transfer copy`` works on any engine: lock files and exported environments come back."""
    from venvstacks_docker.host.volumes import LABEL_PATH

    spec = copy_sample(tmp_path / "stack")
    lock_file = spec.parent / "requirements" / "cpython-3.11" / "pylock.cpython-3_11.toml"
    expected = lock_file.read_bytes()
    lock_file.unlink()
    try:
        cli("lock", *SUBSET, "--transfer", "copy", spec)
        assert lock_file.read_bytes() == expected
        cli("build", *SUBSET, "--transfer", "copy", spec)
        result = cli("-v", "local-export", *SUBSET, "--transfer", "copy", spec)
        assert "copying the exported cpython-3.11 back from the engine" in result.stderr
        python = spec.parent / "_export" / "cpython-3.11" / "bin" / "python"
        run = subprocess.run([str(python), "-c", "import numpy, sys; print(sys.prefix)"], capture_output=True,
                             text=True, check=True)
        assert run.stdout.strip() == str(spec.parent / "_export" / "cpython-3.11")
    finally:  # this project's volumes (the store and others' stay)
        for volume in docker_client.volumes.list(filters={"label": LABEL_PATH}):
            if str(volume.attrs.get("Labels", {}).get(LABEL_PATH, "")).startswith(str(tmp_path)):
                volume.remove(force=True)
