"""What a builder container may do: no root, no capabilities, a read-only root file system.

Real engine.  The tests that matter most run as root (the caller the sandbox user
exists for); as anyone else they skip, loudly.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from docker_helpers import containers_labelled

from venvstacks_docker.errors import ContainerError
from venvstacks_docker.host.container import TMP_SIZE_ENV, BuilderContainer
from venvstacks_docker.host.orchestrator import same_path_mounts
from venvstacks_docker.host.ownership import DEFAULT_SANDBOX_USER, SANDBOX_UID_ENV, sandbox_user

pytestmark = pytest.mark.docker

needs_root = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="NOT ROOT: the sandbox user stands in for a root caller; run these as root "
    "(CI does)",
)


@pytest.fixture(autouse=True)
def _default_sandbox(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv(SANDBOX_UID_ENV, raising=False)
    monkeypatch.delenv(TMP_SIZE_ENV, raising=False)


def _run(client, image: str, script: str, labels, **kwargs) -> tuple[int, list[str], BuilderContainer]:  # type: ignore[no-untyped-def]
    lines: list[str] = []
    with BuilderContainer(
        client, image=image, command=["/bin/sh", "-c", script], labels=labels,
        on_output=lambda line, _stream: lines.append(line), **kwargs,
    ) as box:
        code = box.run()
    return code, lines, box


def test_no_root_no_capabilities_read_only_root(docker_client, base_image, no_dangling_containers) -> None:  # type: ignore[no-untyped-def]
    script = (
        "id -u; id -g; grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs):' /proc/self/status; "
        "(touch /x 2>/dev/null && echo root-fs-writable) || echo root-fs-read-only; "
        "(touch /tmp/y && echo tmp-writable) || echo tmp-read-only; "
        'test -d "$HOME" && test -w "$HOME" && echo home-ready'
    )
    lines: list[str] = []
    with BuilderContainer(
        docker_client, image=base_image.alias, command=["/bin/sh", "-c", script],
        labels=no_dangling_containers, on_output=lambda line, _s: lines.append(line),
    ) as box:
        assert box.container is not None
        host_config = box.container.attrs["HostConfig"]
        assert box.run() == 0, lines
    uid, gid = sandbox_user()
    assert lines[:2] == [str(uid), str(gid)] and uid != 0
    if os.geteuid() == 0:
        assert (uid, gid) == DEFAULT_SANDBOX_USER
    fields = dict(line.split(":\t") for line in lines[2:6])
    assert fields == {"CapEff": "0" * 16, "CapPrm": "0" * 16, "CapBnd": "0" * 16, "NoNewPrivs": "1"}
    assert lines[6:] == ["root-fs-read-only", "tmp-writable", "home-ready"]
    assert host_config["ReadonlyRootfs"] is True
    assert host_config["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in host_config["SecurityOpt"]
    assert host_config["Init"] is True
    assert host_config["Tmpfs"] == {"/tmp": "rw,exec,nosuid,nodev,size=1g,mode=1777"}


def test_root_user_is_refused() -> None:
    for user in ("0", "0:0", "00:1000", "root", "root:root", ""):
        with pytest.raises(ContainerError, match="never run as root"):
            BuilderContainer(None, image="unused", command=["true"], user=user)  # type: ignore[arg-type]


@needs_root
def test_sandbox_uid_and_tmp_size_can_be_chosen(docker_client, base_image, no_dangling_containers, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(SANDBOX_UID_ENV, "4242:4343")
    monkeypatch.setenv(TMP_SIZE_ENV, "64m")
    code, lines, _box = _run(docker_client, base_image.alias, "id -u; id -g; df -k /tmp | tail -n 1",
                             no_dangling_containers)
    assert code == 0 and lines[:2] == ["4242", "4343"]
    assert lines[2].split()[1] == str(64 * 1024)


@needs_root
def test_outputs_end_up_owned_by_root(docker_client, base_image, tmp_path, no_dangling_containers) -> None:  # type: ignore[no-untyped-def]
    outside = tmp_path / "outside.txt"
    outside.write_text("outside\n")
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "existing.txt").write_text("old\n")
    (work / "sub" / "kept.txt").write_text("kept\n")
    (work / "link").symlink_to(outside)
    script = (
        f"cd {work} && id -u && echo new >> existing.txt && echo made > sub/made.txt && "
        "mkdir -p a/b && echo deep > a/b/c && ln -s /etc/passwd a/link-made-inside"
    )
    seen_during: list[tuple[int, int]] = []
    lines: list[str] = []
    with BuilderContainer(
        docker_client, image=base_image.alias, command=["/bin/sh", "-c", script],
        mounts=same_path_mounts({work: False}), working_dir=str(work),
        labels=no_dangling_containers, on_output=lambda line, _s: lines.append(line),
    ) as box:
        # handed over for the run: the sandbox user owns the folder, the symlink's target is untouched
        seen_during = [(os.lstat(p).st_uid, os.lstat(p).st_gid) for p in (work, work / "existing.txt", work / "link")]
        assert (os.lstat(outside).st_uid, os.lstat(outside).st_gid) == (0, 0)
        assert box.run() == 0, lines
    assert lines == [str(DEFAULT_SANDBOX_USER[0])]
    assert set(seen_during) == {DEFAULT_SANDBOX_USER}
    assert (work / "existing.txt").read_text() == "old\nnew\n"
    assert (work / "sub" / "made.txt").read_text() == "made\n"
    assert (work / "a" / "b" / "c").read_text() == "deep\n"
    everything = [work, *work.rglob("*")]
    assert len(everything) == 10
    assert {(os.lstat(p).st_uid, os.lstat(p).st_gid) for p in everything} == {(0, 0)}
    assert stat.S_IMODE(os.lstat(work / "a" / "b" / "c").st_mode) == 0o644
    for target in (outside, Path("/etc/passwd")):
        assert (os.lstat(target).st_uid, os.lstat(target).st_gid) == (0, 0), target


@needs_root
def test_mounts_below_root_home_and_unreadable_files_are_reachable(  # type: ignore[no-untyped-def]
        docker_client, base_image, tmp_path, no_dangling_containers) -> None:
    # root's cache lives in /root/.cache, but the image's /root is 0700 root-only
    project = Path(tempfile.mkdtemp(prefix="venvstacks-docker-test-", dir="/root"))
    secret = tmp_path / "credentials"
    secret.write_text("token\n")
    secret.chmod(0o600)
    copies_before = set(Path(tempfile.gettempdir()).glob("venvstacks-docker-ro-*"))
    try:
        project.chmod(0o755)
        (project / "input.txt").write_text("in\n")
        mounts = [*same_path_mounts({project: True}), (secret, "/run/venvstacks-docker/credentials", True)]
        code, lines, _box = _run(
            docker_client, base_image.alias,
            f"cat {project}/input.txt /run/venvstacks-docker/credentials", no_dangling_containers, mounts=mounts,
        )
        assert (code, lines) == (0, ["in", "token"])
    finally:
        shutil.rmtree(project)
    st = secret.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o600)
    assert set(Path(tempfile.gettempdir()).glob("venvstacks-docker-ro-*")) <= copies_before


@needs_root
def test_handed_over_folders_come_back_when_creating_fails(docker_client, tmp_path, no_dangling_containers) -> None:  # type: ignore[no-untyped-def]
    work = tmp_path / "work"
    work.mkdir()
    (work / "file").write_text("x")
    with pytest.raises(ContainerError, match="venvstacks-docker image build"), BuilderContainer(
        docker_client, image="venvstacks-docker-builder:0000000000000000", command=["true"],
        mounts=same_path_mounts({work: False}), labels=no_dangling_containers,
    ):
        pass
    assert {(os.lstat(p).st_uid, os.lstat(p).st_gid) for p in (work, work / "file")} == {(0, 0)}
    assert containers_labelled(docker_client, no_dangling_containers) == []
