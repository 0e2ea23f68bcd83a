"""A builder container never outlives the host command, even when the host is SIGKILLed.

Real engine, real signals: the host is a separate Python process killed with SIGKILL,
so it cannot clean up; the container must stop by itself, and remove_orphans must
remove it, while leaving alone every container it cannot prove is an orphan.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest
from docker_helpers import TEST_LABEL, containers_labelled

from venvstacks_docker.host.container import BuilderContainer
from venvstacks_docker.host.orphans import (
    LABEL_KEEP,
    LABEL_OWNER,
    LABEL_ROLE,
    Owner,
    process_start_time,
    remove_orphans,
)

pytestmark = pytest.mark.docker


def _wait_for(predicate, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
    """Poll until predicate() is true; return the seconds it took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.1)
    return time.monotonic() - start


def _status(client, labels) -> str | None:  # type: ignore[no-untyped-def]
    found = containers_labelled(client, labels)
    return found[0].status if found else None


@pytest.mark.parametrize(
    ("command", "exit_code"),
    [
        ("echo ready; sleep 300", 143),  # stops on the SIGTERM
        ("trap '' TERM; echo ready; sleep 300", 137),  # ignores it: SIGKILL after the grace
    ],
    ids=["sigterm", "sigkill-after-grace"],
)
def test_sigkilled_host_its_container_stops_and_the_next_run_removes_it(  # type: ignore[no-untyped-def]
    docker_client, base_image, no_dangling_containers, tmp_path, command, exit_code
) -> None:
    script = tmp_path / "host.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from venvstacks_docker.host.engine import connect
            from venvstacks_docker.host.container import BuilderContainer
            with BuilderContainer(connect(), image={base_image.alias!r}, command=["/bin/sh", "-c", {command!r}],
                                  labels={no_dangling_containers!r},
                                  on_output=lambda line, stream: print(line, flush=True)) as box:
                box.run()
            """
        )
    )
    host = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert host.stdout is not None and host.stdout.readline().strip() == "ready"
        assert _status(docker_client, no_dangling_containers) == "running"
    finally:
        os.kill(host.pid, signal.SIGKILL)
        host.communicate()  # reaps it and closes its pipe
    (container,) = containers_labelled(docker_client, no_dangling_containers)
    took = _wait_for(lambda: _status(docker_client, no_dangling_containers) != "running", 15, "container stopped")
    print(f"stopped {took:.1f} s after the host was SIGKILLed")
    container.reload()
    assert container.attrs["State"]["ExitCode"] == exit_code
    # what the next run does first: its owner is provably dead, so it goes
    assert container.name in remove_orphans(docker_client)
    assert containers_labelled(docker_client, no_dangling_containers) == []


@pytest.fixture()
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live host process of ours, to own containers."""
    proc = subprocess.Popen(["sleep", "300"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _labelled_container(client, image: str, labels: dict[str, str], owner: str, **extra: str) -> Any:  # type: ignore[no-untyped-def]
    """A created (never started) container carrying the builder labels and ``owner``."""
    created = client.api.create_container(
        image,
        command=["true"],
        labels={LABEL_ROLE: "builder", LABEL_OWNER: owner, **labels, **extra},
    )
    return client.containers.get(created["Id"])


def test_remove_orphans_removes_only_what_it_can_prove(docker_client, base_image, test_labels, sleeper) -> None:  # type: ignore[no-untyped-def]
    here = Owner.current()
    start = process_start_time(sleeper.pid)
    assert start is not None and Owner.parse(here.label()) == here
    live = here._replace(pid=sleeper.pid, start_time=start)
    cases = {
        "this test process": (here.label(), {}),
        "a live sleeper": (live.label(), {}),
        "another host": (here._replace(hostname="elsewhere", pid=2**22 + 1).label(), {}),
        "another boot": (here._replace(boot_id="0" * 8, pid=2**22 + 1).label(), {}),
        "another pid namespace": (here._replace(pid_namespace="1", pid=2**22 + 1).label(), {}),
        "an old-style label": (f"{here.hostname}:{2**22 + 1}", {}),
        "a malformed label": ("not a label at all", {}),
        "kept for debugging": (here._replace(pid=2**22 + 1).label(), {LABEL_KEEP: "1"}),
    }
    made = {what: _labelled_container(docker_client, base_image.alias, test_labels, owner, **extra)
            for what, (owner, extra) in cases.items()}
    # pid reuse: our own pid, but a process that started at another time
    reused = _labelled_container(docker_client, base_image.alias, test_labels, here._replace(start_time="1").label())
    try:
        removed = remove_orphans(docker_client)
        assert reused.name in removed
        left = {c.name for c in containers_labelled(docker_client, test_labels)}
        assert left == {c.name for c in made.values()}, "removed something it could not prove dead"
        # the sleeper dies: now its container is an orphan
        sleeper.kill()
        sleeper.wait()
        assert made["a live sleeper"].name in remove_orphans(docker_client)
        assert {c.name for c in containers_labelled(docker_client, test_labels)} == {
            c.name for what, c in made.items() if what != "a live sleeper"
        }
    finally:
        for container in containers_labelled(docker_client, test_labels):
            container.remove(force=True, v=True)


def test_a_live_runs_container_is_never_removed(  # type: ignore[no-untyped-def]
        docker_client, base_image, no_dangling_containers) -> None:
    with BuilderContainer(
        docker_client, image=base_image.alias, command=["true"], on_output=lambda *_: None,
        labels=no_dangling_containers,
    ) as box:
        assert box.container is not None
        assert box.container.name not in remove_orphans(docker_client)
        assert len(containers_labelled(docker_client, no_dangling_containers)) == 1
        assert box.run() == 0


def test_owner_is_provably_dead() -> None:
    here = Owner.current()
    assert not here.is_provably_dead()
    proc = subprocess.Popen(["sleep", "300"])
    start = process_start_time(proc.pid)
    assert start is not None
    owner = here._replace(pid=proc.pid, start_time=start)
    assert not owner.is_provably_dead()
    proc.kill()
    proc.wait()
    assert owner.is_provably_dead()
    assert here._replace(start_time=str(int(here.start_time) + 1)).is_provably_dead()  # pid reused
    assert not owner._replace(hostname="elsewhere").is_provably_dead()
    assert not owner._replace(start_time="-").is_provably_dead()
    assert Owner.parse("a:b:c:d:e") is None and Owner.parse("host:12") is None and Owner.parse(None) is None


def test_test_label_pattern_still_applies(docker_client, base_image, test_labels) -> None:  # type: ignore[no-untyped-def]
    with BuilderContainer(
        docker_client, image=base_image.alias, command=["true"], on_output=lambda *_: None, labels=test_labels
    ) as box:
        labels = docker_client.containers.get(box.id).labels
        assert labels[TEST_LABEL] == test_labels[TEST_LABEL]
        assert Owner.parse(labels[LABEL_OWNER]) == Owner.current()
        box.run()
