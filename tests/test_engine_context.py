"""Which engine a run talks to (``--engine``, DOCKER_HOST, DOCKER_CONTEXT, the docker CLI's
current context, read from a fake ``~/.docker`` in a temporary folder), whether it is
local, and the parts of copy mode that need no engine: the tar streams, the folders
mounted as volumes and the ``--engine``/``--transfer`` options."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import tarfile
from pathlib import Path, PurePosixPath

import pytest
from _helpers import cli

from venvstacks_docker.cli._common import Engines
from venvstacks_docker.errors import ContainerError, SpecError
from venvstacks_docker.host import endpoints
from venvstacks_docker.host.endpoints import resolve
from venvstacks_docker.host.transfer import anchors
from venvstacks_docker.host.transfer_tar import Entry, members, tar_stream, tree_entries


def _context(config: Path, name: str, host: str | None, *, skip_tls: bool = False, tls: bool = False) -> None:
    key = hashlib.sha256(name.encode()).hexdigest()
    meta = config / "contexts" / "meta" / key
    meta.mkdir(parents=True)
    endpoint = {"Host": host, "SkipTLSVerify": skip_tls} if host else {}
    (meta / "meta.json").write_text(json.dumps({"Name": name, "Metadata": {}, "Endpoints": {"docker": endpoint}}))
    if tls:
        folder = config / "contexts" / "tls" / key / "docker"
        folder.mkdir(parents=True)
        for pem in ("ca.pem", "cert.pem", "key.pem"):
            (folder / pem).write_text("-----BEGIN X-----\n")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME with an empty ``.docker`` and none of the engine variables set."""
    for name in ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".docker").mkdir()
    return tmp_path


def test_nothing_set_means_the_default_socket(home: Path) -> None:
    endpoint = resolve()
    assert endpoint.url == "unix:///var/run/docker.sock"
    assert endpoint.origin == "the default socket"
    assert endpoint.context is None


def test_the_current_context_of_config_json_is_used(home: Path) -> None:
    _context(home / ".docker", "builder", "tcp://10.1.2.3:2376", tls=True)
    (home / ".docker" / "config.json").write_text(json.dumps({"currentContext": "builder", "auths": {}}))
    endpoint = resolve()
    assert (endpoint.url, endpoint.context, endpoint.origin) == ("tcp://10.1.2.3:2376", "builder",
                                                                 "the current docker context")
    assert endpoint.tls_dir == home / ".docker" / "contexts" / "tls" / hashlib.sha256(b"builder").hexdigest() / "docker"
    assert endpoint.tls_verify is True
    assert not endpoint.local
    assert "docker context 'builder'" in endpoint.describe()


def test_docker_context_wins_over_the_current_context(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _context(home / ".docker", "builder", "tcp://10.1.2.3:2376")
    _context(home / ".docker", "other", "ssh://me@build-box", skip_tls=True, tls=True)
    (home / ".docker" / "config.json").write_text(json.dumps({"currentContext": "builder"}))
    monkeypatch.setenv("DOCKER_CONTEXT", "other")
    endpoint = resolve()
    assert (endpoint.url, endpoint.context, endpoint.origin) == ("ssh://me@build-box", "other", "DOCKER_CONTEXT")
    assert endpoint.ssh and endpoint.tls_verify is False  # SkipTLSVerify


def test_docker_host_wins_over_every_context(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _context(home / ".docker", "builder", "tcp://10.1.2.3:2376")
    (home / ".docker" / "config.json").write_text(json.dumps({"currentContext": "builder"}))
    monkeypatch.setenv("DOCKER_CONTEXT", "builder")
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2399")
    endpoint = resolve()
    assert (endpoint.url, endpoint.origin, endpoint.context) == ("tcp://127.0.0.1:2399", "DOCKER_HOST", None)
    assert endpoint.tls_dir is None


def test_docker_host_with_tls_variables(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://build:2376")
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(home / "certs"))
    endpoint = resolve()
    assert (endpoint.tls_dir, endpoint.tls_verify) == (home / "certs", True)


def test_engine_option_wins_over_everything(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _context(home / ".docker", "arm", "ssh://arm-box")
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2399")
    assert resolve("arm").url == "ssh://arm-box"
    assert resolve("arm").origin == "--engine"
    assert resolve("tcp://10.0.0.9:2375").url == "tcp://10.0.0.9:2375"
    # the default context is DOCKER_HOST, or the default socket, as for the docker CLI
    assert resolve("default").url == "tcp://127.0.0.1:2399"
    monkeypatch.delenv("DOCKER_HOST")
    assert resolve("default").url == "unix:///var/run/docker.sock"


def test_docker_config_names_the_configuration_folder(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = home / "elsewhere"
    _context(elsewhere, "ci", "tcp://ci:2375")
    (elsewhere / "config.json").write_text(json.dumps({"currentContext": "ci"}))
    monkeypatch.setenv("DOCKER_CONFIG", str(elsewhere))
    assert resolve().url == "tcp://ci:2375"


def test_a_context_without_a_docker_host_is_the_default_socket(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _context(home / ".docker", "bare", None)
    monkeypatch.setenv("DOCKER_CONTEXT", "bare")
    assert resolve().url == "unix:///var/run/docker.sock"


def test_an_unknown_context_is_one_clear_error(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONTEXT", "nope")
    with pytest.raises(ContainerError) as caught:
        resolve()
    assert "there is no docker context 'nope' (named by DOCKER_CONTEXT)" in caught.value.message
    assert "docker context ls" in (caught.value.hint or "")
    assert caught.value.return_code == 6


def test_a_broken_config_or_context_is_one_clear_error(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (home / ".docker" / "config.json").write_text("{not json")
    with pytest.raises(ContainerError, match="is not valid JSON"):
        resolve()
    (home / ".docker" / "config.json").write_text(json.dumps({"currentContext": "broken"}))
    meta = home / ".docker" / "contexts" / "meta" / hashlib.sha256(b"broken").hexdigest()
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text("][")
    with pytest.raises(ContainerError, match="cannot read docker context 'broken'"):
        resolve()


def test_the_store_layout_is_the_docker_sdks(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK (docker-py's ContextAPI) reads the same store the same way."""
    context_api = pytest.importorskip("docker.context").ContextAPI
    _context(home / ".docker", "builder", "tcp://10.1.2.3:2376")
    (home / ".docker" / "config.json").write_text("{}")  # the SDK finds the store next to it
    monkeypatch.setenv("DOCKER_CONFIG", str(home / ".docker"))
    assert context_api.get_context("builder").Host == resolve("builder").url


def test_locality(tmp_path: Path) -> None:
    sock_path = tmp_path / "engine.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    try:
        assert endpoints.is_local_url(f"unix://{sock_path}")
    finally:
        server.close()
    assert not endpoints.is_local_url(f"unix://{tmp_path / 'missing.sock'}")
    for remote in ("tcp://127.0.0.1:2375", "ssh://builder", "https://engine:2376"):
        assert not endpoints.is_local_url(remote)


def test_connect_names_the_context_of_a_missing_socket(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from venvstacks_docker.host.engine import connect

    _context(home / ".docker", "gone", f"unix://{home}/gone.sock")
    monkeypatch.setenv("DOCKER_CONTEXT", "gone")
    with pytest.raises(ContainerError) as caught:
        connect()
    assert f"unix://{home}/gone.sock (docker context 'gone', from DOCKER_CONTEXT)" in caught.value.message


# --- --engine and --transfer -------------------------------------------------------------


def test_engine_option_per_platform() -> None:
    engines = Engines("auto", ("linux_aarch64=arm-box", "local"))
    assert engines.for_platform("linux_aarch64") == "arm-box"
    assert engines.for_platform("linux_x86_64") == "local"
    assert Engines("auto", ("linux_x86_64=ssh://u@x86",)).for_platform("linux_x86_64") == "ssh://u@x86"
    assert Engines("auto", ("linux_x86_64=ssh://u@x86",)).for_platform("linux_aarch64") is None
    assert Engines("auto", ("tcp://h:2375",)).for_platform("linux_aarch64") == "tcp://h:2375"
    for bad in (("macosx_arm64=mac",), ("a", "b"), ("linux_x86_64=a", "linux_x86_64=b"), ("linux_x86_64=",)):
        with pytest.raises(SpecError):
            Engines("auto", bad).for_platform("linux_x86_64")


def test_bad_engine_and_transfer_options_are_refused_before_anything_runs(sample_spec: Path) -> None:
    result = cli("build", "--show-only", "--engine", "win_amd64=x", sample_spec, check=False)
    assert result.returncode == 2 and "is not a platform builder containers build for" in result.stderr
    result = cli("build", "--show-only", "--transfer", "teleport", sample_spec, check=False)
    assert result.returncode == 2 and "teleport" in result.stderr


# --- the tar streams and volumes of copy mode ---------------------------------------------


def test_tar_streams_are_deterministic_and_carry_what_they_should(tmp_path: Path) -> None:
    root = tmp_path / "project"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "run.sh").write_text("#!/bin/sh\n")
    (root / "pkg" / "run.sh").chmod(0o700)
    (root / "data.txt").write_text("x" * 1000)
    (root / "data.txt").chmod(0o600)
    (root / "link").symlink_to("data.txt")
    entries = [*tree_entries(root), Entry(name="run/plan.json", kind="file", data=b"{}", mode=0o644)]
    first = b"".join(tar_stream(entries, uid=1000, gid=1000))
    assert first == b"".join(tar_stream(list(reversed(entries)), uid=1000, gid=1000))
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        found = {m.name: m for m in tar.getmembers()}
        rel = str(root).lstrip("/")
        assert [m.name for m in tar.getmembers()] == sorted(found)
        assert found[f"{rel}/pkg/run.sh"].mode == 0o755 and found[f"{rel}/data.txt"].mode == 0o644
        assert found[f"{rel}/link"].issym() and found[f"{rel}/link"].linkname == "data.txt"
        assert {(m.uid, m.gid) for m in found.values()} == {(1000, 1000)}
        extracted = tar.extractfile(f"{rel}/data.txt")
        assert extracted is not None and extracted.read() == b"x" * 1000


def _tar(*members_: tuple[str, bytes | None, bytes]) -> list[bytes]:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data, kind in members_:
            info = tarfile.TarInfo(name)
            info.type = kind
            if data is not None:
                info.size = len(data)
            else:
                info.linkname = "/etc/passwd"
            tar.addfile(info, io.BytesIO(data or b""))
    raw = buffer.getvalue()
    return [raw[i:i + 700] for i in range(0, len(raw), 700)]  # chunked as a response would be


def test_what_comes_back_is_plain_files_and_folders_only() -> None:
    chunks = _tar(("out", None, tarfile.DIRTYPE), ("out/a.json", b"{}", tarfile.REGTYPE))
    got = [(rel, handle.read() if handle else None) for rel, handle in members(iter(chunks), "x")]
    assert got == [(PurePosixPath("."), None), (PurePosixPath("a.json"), b"{}")]
    for bad in (("out/evil", None, tarfile.SYMTYPE), ("out/../../etc/x", b"", tarfile.REGTYPE)):
        with pytest.raises(ContainerError, match="refusing"):
            list(members(iter(_tar(bad)), "the publication"))
    with pytest.raises(ContainerError, match="damaged tar stream"):
        list(members(iter(_tar(("out/a", b"0123456789" * 100, tarfile.REGTYPE))[:1]), "the publication"))


def test_inputs_are_mounted_as_few_folders(tmp_path: Path) -> None:
    spec_dir = tmp_path / "stack"
    (spec_dir / "requirements").mkdir(parents=True)
    (spec_dir / "venvstacks.toml").write_text("")
    shared = tmp_path / "shared" / "mod.py"
    shared.parent.mkdir()
    shared.write_text("")
    found = anchors([spec_dir / "venvstacks.toml", spec_dir / "requirements", shared, spec_dir])
    assert found == [tmp_path / "shared", spec_dir]


# --- several engines: one run per platform ------------------------------------------------


def test_one_run_per_platform_each_on_its_engine(sample_spec: Path, home: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """``--engine PLATFORM=ENGINE`` once per platform: the runs happen one after the other,
    each planned for its platform and handed its engine (no engine is reached here)."""
    from venvstacks_docker.cli import run
    from venvstacks_docker.execute import Outcome

    calls: list[tuple[str, str | None, str]] = []

    def fake_run(plan, spec, *, base_image, transfer, engine):  # type: ignore[no-untyped-def]
        calls.append((plan.platform, engine, transfer))
        return Outcome()

    monkeypatch.setattr("venvstacks_docker.host.dispatch.run_plan_in_container", fake_run)
    _context(home / ".docker", "arm-box", "ssh://builder@arm-box")
    engines = ["--engine", "linux_aarch64=arm-box", "--engine", "linux_x86_64=tcp://x86-box:2375"]
    assert run(["publish", "--tag-outputs", *engines, str(sample_spec)]) == 0
    assert calls == [("linux_aarch64", "arm-box", "auto"), ("linux_x86_64", "tcp://x86-box:2375", "auto")]
    calls.clear()
    assert run(["lock", *engines, "--transfer", "copy", str(sample_spec)]) == 0  # lock: this machine's platform
    assert [c[0] for c in calls] == ["linux_x86_64"] and calls[0][1] == "tcp://x86-box:2375"
    capsys.readouterr()
    # one output folder for both: the names must differ
    assert run(["publish", *engines, str(sample_spec)]) == 2
    assert "add --tag-outputs" in capsys.readouterr().err
    # both on engines that see this machine's files: one build folder for two platforms
    both_local = ["--engine", "linux_aarch64=unix:///var/run/docker.sock",
                  "--engine", "linux_x86_64=unix:///var/run/docker.sock"]
    monkeypatch.setattr("venvstacks_docker.host.endpoints.is_local_url", lambda url: True)
    assert run(["build", "--tag-outputs", *both_local, str(sample_spec)]) == 2
    assert "would share the build folder" in capsys.readouterr().err
    assert run(["build", "--native", "--engine", "linux_aarch64=x", str(sample_spec)]) == 2
