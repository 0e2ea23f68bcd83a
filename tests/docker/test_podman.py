"""podman's Docker-compatible API, for real (issue 11, point 3).

The test starts podman services of its own, never the machine's: rootful, on a socket
of its own, its storage and configuration under the tool's cache (``<cache>/podman-test``,
so images survive between runs); and, where the machine allows, rootless, as a user the
test creates (``vsd-podman``).  Through each the base is bootstrapped or loaded and the
builder image assembled and loaded (no registry), then part of sample_project is built
and published: its archives must be byte for byte a native publish's (which are a Docker
publish's: tests/docker/test_audit_sample.py).  podman comes from the distribution: when
it is missing and we are root, the fixture installs it (``apt-get install
--no-install-recommends podman catatonit``; ``uidmap`` for rootless) and says so.
Rootless is skipped, loudly and with the reason, only when this machine cannot run it.
Warm: about 45 s (a changed checkout adds about 20 s per engine for its builder image);
cold, on 2 busy cores: about 4 minutes (debootstrap, the user's venv, both builder images).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import uv as uv_package
from _helpers import REPO, cli, copy_sample
from docker_helpers import runtime_archive

from venvstacks_docker.host import images
from venvstacks_docker.host.container import BuilderContainer
from venvstacks_docker.host.container_settings import container_user
from venvstacks_docker.host.engine import check_engine
from venvstacks_docker.host.images.bootstrap import _Bootstrap, _import_rootfs
from venvstacks_docker.host.images.builder import memo_dir
from venvstacks_docker.host.images.common import image_or_none
from venvstacks_docker.host.images.imagetar import load_image_tar, save_base, write_image_tar
from venvstacks_docker.locking import cache_lock
from venvstacks_docker.runtimes import cache_root

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.runtime, pytest.mark.network]

ROOTLESS_USER = "vsd-podman"
#: Small layers of sample_project: publishing them builds the whole stack under them.
LAYERS = ("framework-reporting", "app-report-demo")


# --------------------------------------------------------------------------- podman itself


def _apt_install(packages: Sequence[str], why: str) -> str | None:
    """Install ``packages`` from the distribution; return why that was impossible, or None."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "installing it needs root and apt-get"
    sys.stderr.write(f"\n*** test_podman: installing {' '.join(packages)} with apt-get ({why}) ***\n")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]
    done = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:  # stale package lists: update once, then try again
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
        done = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
    return None if done.returncode == 0 else f"`{' '.join(install)}` failed: {done.stderr.strip()[-500:]}"


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PODMAN NOT USABLE ON CI: {reason}")
    pytest.skip(f"PODMAN NOT USABLE: {reason}")


@pytest.fixture(scope="module")
def podman_exe() -> str:
    """The podman binary, with catatonit (builder containers run with an init)."""
    if os.geteuid() != 0:  # a rootful service, a bootstrapped base, a user made for rootless
        pytest.skip("PODMAN NOT TESTED: the podman tests need root")
    has_init = Path("/usr/libexec/podman/catatonit").exists() or shutil.which("catatonit")
    if (shutil.which("podman") is None or not has_init) and (why := _apt_install(["podman", "catatonit"],
                                                                                 "podman is missing")):
        _skip_or_fail(f"podman is not installed and {why}")
    return str(shutil.which("podman"))


def _root_limits() -> tuple[int, int] | None:
    """Open files and processes for the rootful service and its containers when root lacks
    CAP_SYS_RESOURCE (some VMs and sandboxes): podman asks runc for 1048576 open files,
    which runc cannot grant there; ask for what we have (podman lowers its nproc to 32768)."""
    import resource

    eff = next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
               if line.startswith("CapEff:"))
    if int(eff, 16) >> 24 & 1:  # CAP_SYS_RESOURCE
        return None
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1], min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 32768)


def _write_conf(path: Path, run: Path, *, rootless: bool) -> None:
    """The service's own containers.conf (``CONTAINERS_CONF``: no other file is read)."""
    containers = []
    if rootless:
        # the caller's uid is the same inside, or what it writes would be a subordinate uid's
        containers.append('userns = "keep-id"')
    elif (limits := _root_limits()) is not None:
        nofile, nproc = limits
        containers.append(f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]')
    path.write_text("[containers]\n" + "\n".join(containers) + "\n[engine]\n"
                    'cgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
                    f'tmp_dir = "{run / "libpod" / "tmp"}"\n')
    path.chmod(0o644)


@dataclass
class Service:
    """One ``podman system service`` we started, and a client of it."""

    proc: subprocess.Popen[bytes]
    url: str
    client: Any
    pause_pid: Path | None = None  # rootless: podman's pause process
    overlay: Path | None = None  # rootful: podman leaves its storage's overlay folder mounted

    def stop(self) -> None:
        self.client.close()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, sig)  # its own session, started by us
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=15)
        if self.pause_pid is not None and self.pause_pid.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(self.pause_pid.read_text().strip()), signal.SIGTERM)
        if self.overlay is not None and str(self.overlay) in Path("/proc/self/mounts").read_text().split():
            _root_run(["umount", str(self.overlay)])  # a bind mount on itself: is_mount() cannot tell


def _start(podman: str, state: Path, run: Path, *, user: pwd.struct_passwd | None, env: dict[str, str]) -> Service:
    """Start ``podman system service`` with its storage and configuration in ``state``, its
    run root (at most 50 characters, podman says) and socket in ``run``."""
    import docker

    conf, sock = state / "containers.conf", run / "podman.sock"
    run.mkdir(mode=0o700, exist_ok=True)
    _write_conf(conf, run, rootless=user is not None)
    argv = [podman, "--root", str(state / "storage"), "--runroot", str(run / "containers"), "--storage-driver",
            "overlay", "system", "service", "--time=0", f"unix://{sock}"]
    log = state / "service.log"
    if user is None and (limits := _root_limits()) is not None:
        argv = ["prlimit", f"--nofile={limits[0]}:{limits[0]}", f"--nproc={limits[1]}:{limits[1]}", *argv]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env={**env, "CONTAINERS_CONF": str(conf)}, stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=state,
                                user=user.pw_uid if user else None, group=user.pw_gid if user else None,
                                extra_groups=[] if user else None)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if sock.exists():
            client = docker.DockerClient(base_url=f"unix://{sock}", timeout=300)
            try:
                client.ping()
            except Exception:  # noqa: BLE001 - not listening yet
                client.close()
            else:
                return Service(proc, f"unix://{sock}", client)
        time.sleep(0.2)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    raise RuntimeError(f"podman system service did not start: {log.read_text(errors='replace')[-2000:]}")


@pytest.fixture(scope="module")
def podman(podman_exe: str) -> Iterator[Service]:
    """A rootful podman service of our own; one test session at a time uses its storage."""
    state = cache_root() / "podman-test" / "rootful"
    state.mkdir(parents=True, exist_ok=True)
    with cache_lock("podman-test"):
        try:
            service = _start(podman_exe, state, Path("/run/venvstacks-docker-podman-test"), user=None,
                             env=dict(os.environ))
        except RuntimeError as exc:
            _skip_or_fail(str(exc))
        service.overlay = state / "storage" / "overlay"
        try:
            yield service
            images.prune_builder_images(service.client, keep=1)  # the storage keeps only the newest builder
        finally:
            service.stop()


@pytest.fixture(scope="module")
def podman_base(podman: Service) -> images.BaseImage:
    """The bootstrapped Debian base, made with ``docker import`` through podman (once per machine)."""
    return images.bootstrap_base(client=podman.client)


@pytest.fixture(scope="module")
def podman_builder(podman: Service, podman_base: images.BaseImage) -> images.BuilderImage:
    """The builder image, assembled on the host and loaded through podman's images API."""
    target = images.host_target()
    return images.ensure_builder_image(target, base_image=podman_base.alias, client=podman.client,
                                       runtime_archive=runtime_archive(target))


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tar.xz"))}


def _includes() -> list[str]:
    return [arg for layer in LAYERS for arg in ("--include", layer)]


@pytest.fixture(scope="module")
def native_layers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The reference: LAYERS published natively."""
    spec = copy_sample(tmp_path_factory.mktemp("native") / "sample project")
    cli("build", "--native", "--publish", *_includes(), spec)
    found = digests(spec.parent / "_artifacts")
    assert sorted(found) == sorted(f"{layer}.tar.xz" for layer in LAYERS)
    return found


def test_publish_through_rootful_podman_matches_native(
    podman: Service, podman_builder: images.BuilderImage, native_layers: dict[str, str], tmp_path: Path
) -> None:
    assert check_engine(podman.client).name == "podman"
    spec = copy_sample(tmp_path / "sample project")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}, "DOCKER_HOST": podman.url}
    result = cli("-v", "build", "--publish", *_includes(), spec, env=env, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    out = spec.parent / "_artifacts"
    assert digests(out) == native_layers
    meta = json.loads((out / "__venvstacks__" / "env_metadata" / f"{LAYERS[0]}.json").read_text())
    builder = meta["venvstacks_docker"]["builder_image"]
    assert builder["tag"] == podman_builder.tag and builder["id"] == podman_builder.image_id
    assert podman.client.images.get(builder["tag"]).id == builder["id"]
    assert {p.lstat().st_uid for p in out.rglob("*")} == {os.getuid()}
    assert cli("verify", out).returncode == 0
    assert podman.client.containers.list(all=True) == []


# --------------------------------------------------------------------------- images, containers


@pytest.mark.parametrize("engine", ["podman", "docker_client"])
def test_import_keeps_the_tag_and_the_json_label(engine: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """podman's import ignores ``tag`` and takes a LABEL's value literally; Docker unquotes it."""
    found = request.getfixturevalue(engine)
    client = found.client if isinstance(found, Service) else found
    rootfs = _one_file_tar(tmp_path / "rootfs.tar", "etc/hostname", b"localhost\n")
    name = f"venvstacks-docker-base:import-test-{uuid.uuid4().hex[:8]}"
    inputs = {"packages": ["bash", "tar"], "quote": 'a "b" \\c', "suite": "bookworm"}
    job = _Bootstrap(suite="bookworm", mirror="http://deb.example/debian", packages=("bash", "tar"),
                     inputs=inputs, tag=name, alias=f"{name}-alias")
    image = _import_rootfs(client, rootfs, job)
    try:
        assert client.images.get(name).id == image.id == client.images.get(job.alias).id
        image.reload()
        assert sorted(images.short_name(t) for t in image.tags) == sorted([name, job.alias])
        labels = image.labels
        assert json.loads(labels[images.LABEL_INPUTS]) == {**inputs, "mirror": job.mirror}
        assert labels[images.LABEL_ROLE] == "base"
        assert image.attrs["Config"]["Cmd"] == ["/bin/bash"]
    finally:
        client.images.remove(image.id, force=True)


def _one_file_tar(path: Path, name: str, data: bytes) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mtime = len(data), 315532800
        tar.addfile(info, io.BytesIO(data))
    return path


def test_loaded_image_is_named_by_its_config_digest(podman: Service, podman_base: images.BaseImage,
                                                    tmp_path: Path) -> None:
    """The assembler's ``docker load`` archive: podman gives it the ID Docker gives it."""
    saved = save_base(podman.client, podman_base.image_id, tmp_path / "base.tar")
    layer = _one_file_tar(tmp_path / "layer.tar", "probe", b"ok\n")
    diff_id = "sha256:" + hashlib.sha256(layer.read_bytes()).hexdigest()
    config = json.dumps({
        "architecture": saved.config["architecture"], "os": "linux", "created": "1980-01-01T00:00:00Z",
        "config": {**saved.config["config"], "Labels": {images.LABEL_ROLE: "podman-test"}},
        "rootfs": {"type": "layers", "diff_ids": [*saved.diff_ids, diff_id]},
        "history": [*saved.config.get("history", []), {"created": "1980-01-01T00:00:00Z", "created_by": "test"}],
    }, sort_keys=True, separators=(",", ":")).encode()
    tag = f"venvstacks-docker-builder:podman-test-{uuid.uuid4().hex[:8]}"
    expected = write_image_tar(tmp_path / "image.tar", base=saved, layer=layer, diff_id=diff_id, config=config,
                               tag=tag)
    load_image_tar(podman.client, tmp_path / "image.tar")
    try:
        assert podman.client.images.get(tag).id == expected
        assert podman.client.images.get(tag).attrs["Metadata"]["LastTagTime"].startswith("0001-")  # none kept
    finally:
        podman.client.images.remove(tag, force=True)


def test_prune_keeps_the_builder_image_built_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the engine keeps no tag time (podman), and every assembled image is created in
    1980, the builder image this machine built last is the one kept."""
    monkeypatch.setenv("VENVSTACKS_DOCKER_CACHE", str(tmp_path))
    made: list[SimpleNamespace] = []
    removed: list[str] = []
    memo_dir().mkdir(parents=True)
    for when, name in enumerate(("a", "b")):  # b was built last
        made.append(SimpleNamespace(
            id=f"sha256:{name * 64}", tags=[f"localhost/venvstacks-docker-builder:{name}"],
            labels={images.LABEL_ROLE: "builder", images.LABEL_INPUTS: '{"target": "linux_x86_64"}'},
            attrs={"Created": "1980-01-01T00:00:00Z", "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"}}))
        (memo_dir() / f"{name}.json").write_text(json.dumps({"tag": made[-1].tags[0], "image_id": made[-1].id}))
        os.utime(memo_dir() / f"{name}.json", (1e9 + when, 1e9 + when))
    client: Any = SimpleNamespace(images=SimpleNamespace(list=lambda filters: made, remove=removed.append))
    assert images.prune_builder_images(client, keep=1) == removed == ["venvstacks-docker-builder:a"]


_PROBE = r"""id -u; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; cat /proc/1/comm
stat -c %a /tmp; umask; echo $(ls /sys/class/net); touch /probe 2>/dev/null || echo read-only
awk '{print $1, $2, $3}' /proc/self/uid_map; touch "$HOME/probe" 2>/dev/null && echo home-writable || :"""


def _probe(service: Service, image: str) -> list[str]:
    lines: list[str] = []
    with BuilderContainer(service.client, image=image, command=["/bin/sh", "-c", _PROBE],
                          on_output=lambda line, _stream: lines.append(line)) as box:
        assert box.run() == 0, lines
    return lines


def test_builder_container_is_sandboxed_in_podman(podman: Service, podman_builder: images.BuilderImage) -> None:
    """What the container may do under podman is what it may do under Docker."""
    lines = _probe(podman, podman_builder.tag)
    expected_uid = container_user(None)[0].split(":")[0]  # the sandbox user: we are root
    assert lines[:4] == [expected_uid, "CapEff:\t0000000000000000", "CapBnd:\t0000000000000000", "NoNewPrivs:\t1"]
    assert lines[4] in {"catatonit", "podman-init", "docker-init", "tini"}  # an init is PID 1
    assert lines[5:10] == ["1777", "0022", "lo", "read-only", "0 0 4294967295"]
    assert podman.client.containers.list(all=True) == []


def test_home_is_writable_in_podman(podman: Service, podman_builder: images.BuilderImage) -> None:
    assert _probe(podman, podman_builder.tag)[-1] == "home-writable"


# --------------------------------------------------------------------------- rootless


@dataclass
class Rootless:  # a rootless podman service of ``user``, and what the user runs the tool with
    service: Service
    user: pwd.struct_passwd
    state: Path
    python: Path
    env: dict[str, str]

    def run(self, argv: Sequence[str | Path]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(a) for a in argv], user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[],
                              env=self.env, cwd=self.state, capture_output=True, text=True, check=False)


def _root_run(argv: Sequence[str]) -> str | None:
    done = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    return None if done.returncode == 0 else f"`{' '.join(argv)}` failed: {done.stderr.strip()[-300:]}"


def _rootless_user() -> tuple[pwd.struct_passwd | None, str | None]:
    """The test's unprivileged user (created once), with subordinate uids and gids."""
    if Path("/proc/sys/user/max_user_namespaces").read_text().strip() == "0":
        return None, "user namespaces are disabled (user.max_user_namespaces = 0)"
    if shutil.which("newuidmap") is None and (why := _apt_install(["uidmap"], "rootless podman")):
        return None, f"newuidmap (package uidmap) is missing and {why}"
    if ROOTLESS_USER not in {u.pw_name for u in pwd.getpwall()} and (why := _root_run(
            ["useradd", "--create-home", "--user-group", "--shell", "/usr/sbin/nologin", ROOTLESS_USER])):
        return None, why
    for kind in ("uid", "gid"):
        table = Path(f"/etc/sub{kind}")
        rows = [line.split(":") for line in (table.read_text() if table.exists() else "").splitlines()]
        start = max([100000, *(int(row[1]) + int(row[2]) for row in rows if len(row) == 3)])
        if all(row[0] != ROOTLESS_USER for row in rows) and (why := _root_run(
                ["usermod", f"--add-sub{kind}s", f"{start}-{start + 65535}", ROOTLESS_USER])):
            return None, why
    return pwd.getpwnam(ROOTLESS_USER), None


def _user_env(user: pwd.struct_passwd, xdg: Path) -> dict[str, str]:
    """Ours (proxies, CA bundles...) without what points at root's files, plus the user's own."""
    drop = ("XDG_", "VENVSTACKS_DOCKER_", "UV_", "DOCKER_", "PYTHON", "VIRTUAL_ENV", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return {**env, "HOME": user.pw_dir, "USER": user.pw_name, "LOGNAME": user.pw_name,
            "XDG_RUNTIME_DIR": str(xdg), "PATH": "/usr/local/bin:/usr/bin:/bin"}


def _give(paths: Sequence[Path], user: pwd.struct_passwd) -> None:
    for path in paths:
        os.lchown(path, user.pw_uid, user.pw_gid)


def _user_dirs(folder: Path, user: pwd.struct_passwd) -> None:
    """``mkdir -p`` as if ``user`` did it (never touching what is already there)."""
    missing = [p for p in [folder, *folder.parents] if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    _give(missing, user)


def _copy_missing(src: Path, dest: Path, user: pwd.struct_passwd) -> None:
    _user_dirs(dest, user)  # then what it lacks of src (not other runs' hidden lock files)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".*"), dirs_exist_ok=True,
                    copy_function=lambda a, b: b if Path(b).exists() else shutil.copy2(a, b))
    _give([dest, *dest.rglob("*")], user)


def _user_tool(rootless: Rootless) -> None:
    """The tool in a venv of the user's (ours may sit below /root), and the caches it needs."""
    uv = Path(shutil.copy2(uv_package.find_uv_bin(), rootless.state / "uv"))
    _give([uv], rootless.user)
    venv = rootless.python.parent.parent
    steps: list[list[str | Path]] = [] if rootless.python.exists() else [[uv, "venv", "-q", "-p", ">=3.11", venv]]
    steps.append([uv, "pip", "install", "--quiet", "--python", rootless.python, "--reinstall-package",
                  "venvstacks-docker", REPO])
    for argv in steps:
        if (done := rootless.run(argv)).returncode != 0:
            pytest.skip(f"ROOTLESS PODMAN NOT TESTED: the unprivileged user cannot install this checkout "
                        f"({' '.join(map(str, argv))}): {done.stderr.strip()[-500:]}")
    for name in ("runtimes", "wheels"):
        _copy_missing(cache_root() / name, Path(rootless.user.pw_dir) / ".cache" / "venvstacks-docker" / name,
                      rootless.user)


def _load_base(src: Service, dest: Service, base: images.BaseImage, tmp: Path) -> None:
    if image_or_none(dest.client, base.image_id) is None:
        archive = tmp / "base.tar"
        with archive.open("wb") as fh:
            fh.writelines(src.client.images.get(base.image_id).save(named=False))
        load_image_tar(dest.client, archive)
    dest.client.images.get(base.image_id).tag(*base.alias.split(":", 1), force=True)


def _run_true(service: Service, image: str) -> None:
    """Run ``true`` in a rootless container: created, started, waited for and removed one
    call at a time (``containers.run`` also follows the logs, and a CI run once saw that
    stream hang under load after the container had exited 0)."""
    probe = service.client.containers.create(image, ["true"], network_mode="none")
    try:
        probe.start()
        code = probe.wait(timeout=600).get("StatusCode")
        if code != 0:
            raise RuntimeError(f"`true` exited with {code}")
    finally:
        probe.remove(force=True)


@pytest.fixture(scope="module")
def rootless(podman_exe: str, podman: Service, podman_base: images.BaseImage,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rootless]:
    """A rootless podman service of the test's unprivileged user, its storage in that user's home."""
    user, why = _rootless_user()
    if user is None:
        pytest.skip(f"ROOTLESS PODMAN NOT POSSIBLE ON THIS MACHINE: {why}")
    state = Path(user.pw_dir) / ".cache" / "venvstacks-docker-podman-test"
    _user_dirs(state, user)
    Path("/run/user").mkdir(mode=0o755, exist_ok=True)
    _user_dirs(xdg := Path("/run/user") / str(user.pw_uid), user)  # short enough for podman's run root
    xdg.chmod(0o700)
    env = _user_env(user, xdg)
    try:
        service = _start(podman_exe, state, xdg, user=user, env=env)
    except RuntimeError as exc:
        pytest.skip(f"ROOTLESS PODMAN NOT POSSIBLE ON THIS MACHINE: {exc}")
    service.pause_pid = xdg / "libpod" / "tmp" / "pause.pid"
    try:
        _load_base(podman, service, podman_base, tmp_path_factory.mktemp("rootless-base"))
        try:  # can this machine run a rootless container at all?
            _run_true(service, podman_base.image_id)
        except Exception as exc:  # noqa: BLE001 - any failure here is the machine's
            pytest.skip(f"ROOTLESS PODMAN NOT POSSIBLE ON THIS MACHINE: a plain container fails: {exc}")
        found = Rootless(service, user, state, state / "venv" / "bin" / "python", {**env, "DOCKER_HOST": service.url})
        _user_tool(found)
        yield found
        found.run([found.python, "-m", "venvstacks_docker", "-q", "image", "prune"])  # by the user's memos
    finally:
        service.stop()


def test_publish_through_rootless_podman_matches_native(rootless: Rootless, native_layers: dict[str, str]) -> None:
    work = rootless.state / "work" / uuid.uuid4().hex[:8]
    spec = copy_sample(work / "sample project")
    _give([work, *work.rglob("*")], rootless.user)
    try:
        result = rootless.run([rootless.python, "-m", "venvstacks_docker", "-v", "build", "--publish",
                               *_includes(), spec])
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "Traceback" not in result.stderr
        out = spec.parent / "_artifacts"
        assert digests(out) == native_layers
        # keep-id: what the container wrote belongs to the user, not to a subordinate uid
        assert {p.lstat().st_uid for p in out.rglob("*")} == {rootless.user.pw_uid}
        assert rootless.service.client.containers.list(all=True) == []
    finally:
        shutil.rmtree(work, ignore_errors=True)
