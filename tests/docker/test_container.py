"""BuilderContainer and same-path mounts against the real engine."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from docker_helpers import TEST_LABEL, containers_labelled

from venvstacks_docker.errors import ContainerError
from venvstacks_docker.host.container import KEEP_CONTAINER_ENV, BuilderContainer
from venvstacks_docker.host.orchestrator import same_path_mounts

pytestmark = pytest.mark.docker


def _collect(lines: list[tuple[str, str]]):  # type: ignore[no-untyped-def]
    return lambda line, stream: lines.append((stream, line))


def test_removed_after_success(docker_client, base_image, no_dangling_containers) -> None:  # type: ignore[no-untyped-def]
    lines: list[tuple[str, str]] = []
    with BuilderContainer(
        docker_client,
        image=base_image.alias,
        command=["/bin/sh", "-c", "echo out; echo err >&2"],
        on_output=_collect(lines),
        labels=no_dangling_containers,
    ) as box:
        assert len(containers_labelled(docker_client, no_dangling_containers)) == 1
        assert box.run() == 0
    assert sorted(lines) == [("stderr", "err"), ("stdout", "out")]
    assert containers_labelled(docker_client, no_dangling_containers) == []


def test_removed_after_failing_command(docker_client, base_image, no_dangling_containers) -> None:  # type: ignore[no-untyped-def]
    with BuilderContainer(
        docker_client,
        image=base_image.alias,
        command=["/bin/sh", "-c", "exit 7"],
        on_output=lambda *_: None,
        labels=no_dangling_containers,
    ) as box:
        assert box.run() == 7


def test_removed_after_an_exception_in_the_host(docker_client, base_image, no_dangling_containers) -> None:  # type: ignore[no-untyped-def]
    def interrupt(line: str, stream: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), BuilderContainer(
        docker_client,
        image=base_image.alias,
        command=["/bin/sh", "-c", "echo started; sleep 60"],
        on_output=interrupt,
        labels=no_dangling_containers,
    ) as box:
        box.run()


def test_killed_container_is_reported_and_removed(docker_client, base_image, no_dangling_containers) -> None:  # type: ignore[no-untyped-def]
    def kill_when_running() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for container in containers_labelled(docker_client, no_dangling_containers):
                if container.status == "running":
                    docker_client.api.kill(container.id)
                    return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_when_running)
    with pytest.raises(ContainerError, match=r"was killed \(SIGKILL, exit 137\)"), BuilderContainer(
        docker_client,
        image=base_image.alias,
        command=["/bin/sh", "-c", "sleep 60"],
        on_output=lambda *_: None,
        labels=no_dangling_containers,
    ) as box:
        killer.start()
        box.run()
    killer.join()


def test_sigterm_to_the_host_process_removes_the_container(docker_client, base_image, test_labels) -> None:  # type: ignore[no-untyped-def]
    key, value = next(iter(test_labels.items()))
    script = textwrap.dedent(
        f"""
        import sys
        from venvstacks_docker.host.engine import connect
        from venvstacks_docker.host.container import BuilderContainer
        with BuilderContainer(connect(), image={base_image.alias!r},
                              command=["/bin/sh", "-c", "echo ready; sleep 60"],
                              labels={{{key!r}: {value!r}}},
                              on_output=lambda line, stream: print(line, flush=True)) as box:
            box.run()
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        assert len(containers_labelled(docker_client, test_labels)) == 1
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "terminated by SIGTERM" in err
    assert containers_labelled(docker_client, test_labels) == []


def test_keep_container_env_keeps_it(docker_client, base_image, test_labels, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(KEEP_CONTAINER_ENV, "1")
    try:
        with BuilderContainer(
            docker_client, image=base_image.alias, command=["true"], on_output=lambda *_: None, labels=test_labels
        ) as box:
            box.run()
        kept = containers_labelled(docker_client, test_labels)
        assert len(kept) == 1
        assert "kept container" in capsys.readouterr().err
    finally:
        for container in containers_labelled(docker_client, test_labels):
            container.remove(force=True, v=True)


def test_environment_and_umask(docker_client, base_image, no_dangling_containers) -> None:  # type: ignore[no-untyped-def]
    lines: list[tuple[str, str]] = []
    with BuilderContainer(
        docker_client,
        image=base_image.alias,
        command=["/bin/sh", "-c", "umask; env | sort"],
        environment={"EXTRA": "yes"},
        source_date_epoch=1700000000,
        on_output=_collect(lines),
        labels=no_dangling_containers,
    ) as box:
        assert box.run() == 0
    out = [line for _stream, line in lines]
    assert out[0] == "0022"
    for expected in (
        "SOURCE_DATE_EPOCH=1700000000",
        "TZ=UTC",
        "LC_ALL=C.UTF-8",
        "HOME=/tmp/home",
        "PYTHONHASHSEED=0",
        "EXTRA=yes",
    ):
        assert expected in out


def _interfaces(docker_client, image: str, network: bool, labels) -> list[str]:  # type: ignore[no-untyped-def]
    lines: list[tuple[str, str]] = []
    with BuilderContainer(
        docker_client,
        image=image,
        command=["/bin/sh", "-c", "tail -n +3 /proc/net/dev | cut -d: -f1"],
        network=network,
        on_output=_collect(lines),
        labels=labels,
    ) as box:
        assert box.run() == 0
    return sorted(line.strip() for _s, line in lines)


def test_network_is_really_disabled(docker_client, builder_image, no_dangling_containers) -> None:  # type: ignore[no-untyped-def]
    assert _interfaces(docker_client, builder_image.tag, False, no_dangling_containers) == ["lo"]
    assert "eth0" in _interfaces(docker_client, builder_image.tag, True, no_dangling_containers)
    # And a program that tries anyway fails at once: no route, no name resolution.
    probe = textwrap.dedent(
        """
        import socket
        try:
            socket.getaddrinfo("pypi.org", 443)
        except OSError as exc:
            print("resolve failed:", type(exc).__name__)
        try:
            socket.create_connection(("pypi.org", 443), timeout=5)
        except OSError as exc:
            print("connect failed:", type(exc).__name__)
        """
    )
    lines: list[tuple[str, str]] = []
    with BuilderContainer(
        docker_client,
        image=builder_image.tag,
        command=["/opt/venvstacks-docker/python/bin/python3", "-c", probe],
        network=False,
        on_output=_collect(lines),
        labels=no_dangling_containers,
    ) as box:
        assert box.run() == 0
    out = [line for _s, line in lines]
    assert out[0].startswith("resolve failed:")
    assert out[1].startswith("connect failed:")


def test_same_path_mount_files_belong_to_the_caller(  # type: ignore[no-untyped-def]
        docker_client, base_image, tmp_path, no_dangling_containers) -> None:
    uid, gid = (1234, 1234) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    work = tmp_path / "work"
    work.mkdir()
    os.chown(work, uid, gid) if os.geteuid() == 0 else None
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    (readonly / "input.txt").write_text("in\n")
    mounts = same_path_mounts({work: False, readonly: True})
    assert [(m.container_path, m.read_only) for m in mounts] == [(str(readonly), True), (str(work), False)]
    script = (
        f"cd {work} && mkdir -p d/e && echo x > d/e/f && echo y > g && pwd && "
        f"cat {readonly}/input.txt && ( (echo z > {readonly}/nope) 2>/dev/null && echo WROTE || echo read-only)"
    )
    lines: list[tuple[str, str]] = []
    with BuilderContainer(
        docker_client,
        image=base_image.alias,
        command=["/bin/sh", "-c", script],
        mounts=mounts,
        user=f"{uid}:{gid}",
        working_dir=str(work),
        on_output=_collect(lines),
        labels=no_dangling_containers,
    ) as box:
        assert box.run() == 0, lines
    assert [line for _s, line in lines] == [str(work), "in", "read-only"]
    for path, mode in ((work / "d", 0o755), (work / "d/e", 0o755), (work / "d/e/f", 0o644), (work / "g", 0o644)):
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (uid, gid), path
        assert stat.S_IMODE(st.st_mode) == mode, (path, oct(st.st_mode))
    assert not (readonly / "nope").exists()


def test_same_path_mounts_refuse_system_folders(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for bad in (Path("/"), Path("/usr"), Path("/tmp"), Path("/etc")):
        with pytest.raises(ContainerError, match="system files"):
            same_path_mounts({bad: True})
    with pytest.raises(ContainerError, match="does not exist"):
        same_path_mounts({tmp_path / "missing": True})
    # The same folder twice is one mount, writable if either asked for it.
    (mount,) = same_path_mounts({tmp_path: True, tmp_path / "." / "": False})
    assert mount.read_only is False


def test_missing_image_is_a_clear_error(docker_client, no_dangling_containers) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ContainerError, match="venvstacks-docker image build"), BuilderContainer(
        docker_client, image="venvstacks-docker-builder:0000000000000000", command=["true"],
        labels=no_dangling_containers,
    ):
        pass


def test_test_label_is_on_every_container(docker_client, base_image, test_labels) -> None:  # type: ignore[no-untyped-def]
    with BuilderContainer(
        docker_client, image=base_image.alias, command=["true"], on_output=lambda *_: None, labels=test_labels
    ) as box:
        labels = docker_client.containers.get(box.id).labels
        assert labels[TEST_LABEL] == test_labels[TEST_LABEL]
        assert labels["venvstacks-docker.role"] == "builder"
        box.run()
