"""The runtime built in a container of an old Debian userland: its glibc floor, measured
and recorded; and the same bytes from two differently set-up containers.

The first run on a machine bootstraps the bullseye base (~2 min), prepares the runtime
builder image (apt-get + a bootstrap interpreter, several minutes) and builds the
runtime (a few minutes); all three are cached (image tags, the runtime cache).  The
reproducibility test always builds once more, from scratch, in the other container.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from packaging.version import Version

from venvstacks_docker import runtime_build
from venvstacks_docker.host.container import BuilderContainer
from venvstacks_docker.host.container_settings import HOSTNAME_ENV
from venvstacks_docker.host.images.common import image_or_none
from venvstacks_docker.host.orphans import LABEL_OWNER, ROLE_BUILDER, Owner
from venvstacks_docker.host.runtime_container import BuildSetting, build_runtime_in_container
from venvstacks_docker.host.runtime_images import (
    DEFAULT_RUNTIME_SUITE,
    ensure_runtime_builder,
    runtime_builder_packages,
)
from venvstacks_docker.runtimes import RuntimeRequest, archive_name_pattern, extract_runtime, sha256_file

pytestmark = [
    pytest.mark.slow,
    pytest.mark.network,
    pytest.mark.skipif(sys.platform != "linux", reason="runtimes are built on Linux only"),
]

VERSION = "3.11.2"
PYVER = "3.11"
#: Unrelated packages the second container has and the first does not.
EXTRA_PACKAGES = ("file", "less", "bsdextrautils")

IMPORT_EVERYTHING = (
    "import sys, ssl, hashlib, sqlite3, ctypes, lzma, bz2, zlib, readline, curses, dbm.gnu, uuid, "
    "decimal, json, math; assert math.pow(2, 10) == 1024 and round(math.exp(math.log(7)), 9) == 7; "
    "print(json.dumps({'prefix': sys.prefix, 'openssl': ssl.OPENSSL_VERSION}))"
)


@pytest.fixture(scope="module")
def builder_tag(docker_client: Any) -> str:
    return ensure_runtime_builder(docker_client, suite=DEFAULT_RUNTIME_SUITE, jobs=2)


@pytest.fixture(scope="module")
def archive(docker_client: Any, builder_tag: str) -> Path:
    """The default in-container build (cached in the runtime cache after the first run)."""
    return build_runtime_in_container(VERSION, jobs=2, client=docker_client)


@pytest.fixture(scope="module")
def other_image(docker_client: Any, builder_tag: str) -> str:
    """The runtime builder image plus unrelated packages (made once, cached by tag)."""
    digest = hashlib.sha256(json.dumps([builder_tag, EXTRA_PACKAGES]).encode()).hexdigest()[:12]
    tag = f"venvstacks-docker-runtime-builder:test-other-{digest}"
    if image_or_none(docker_client, tag) is not None:
        return tag
    script = ("set -eu; export DEBIAN_FRONTEND=noninteractive; apt-get update -q; "
              f"apt-get install -y -q --no-install-recommends {' '.join(EXTRA_PACKAGES)}; "
              "rm -rf /var/lib/apt/lists/*")
    container = docker_client.containers.create(
        builder_tag, command=["/bin/sh", "-c", script], network_mode="host",
        labels={"venvstacks-docker.role": ROLE_BUILDER, LABEL_OWNER: Owner.current().label()})
    try:
        container.start()
        result = container.wait()
        assert result["StatusCode"] == 0, container.logs().decode()[-3000:]
        repository, name = tag.split(":", 1)
        container.commit(repository=repository, tag=name, changes=['CMD ["/bin/bash"]'])
    finally:
        container.remove(force=True, v=True)
    return tag


def _sidecar(archive: Path) -> dict[str, Any]:
    return runtime_build.read_sidecar(archive)


def test_archive_is_named_and_cached_the_install_only_way(archive: Path) -> None:
    meta = _sidecar(archive)
    request = RuntimeRequest(implementation="cpython", version=VERSION, platform="linux_x86_64"
                             if "x86_64" in archive.name else "linux_aarch64")
    match = archive_name_pattern(request).match(archive.name)
    assert match, archive.name
    assert match.group("tag") == f"{runtime_build.BUILD_TAG}.glibc{meta['glibc_floor']}"
    assert archive.parent.name == sha256_file(archive) == meta["sha256"]


def test_floor_is_measured_from_the_built_files(archive: Path, tmp_path: Path) -> None:
    meta = _sidecar(archive)
    tree = tmp_path / "python"
    extract_runtime(archive, tree)
    needs = runtime_build.glibc_needs(tree)
    assert meta["glibc_needs"] == needs
    assert meta["glibc_floor"] == runtime_build.floor_of(needs)
    assert f"glibc-max-symbol-version:{meta['glibc_floor']}" in meta["crt_features"]
    print("floor", meta["glibc_floor"], "set by", meta["glibc_floor_set_by"])
    # built on Debian 11: never above its glibc, and at the recipe's target
    assert Version(meta["glibc_floor"]) <= Version("2.31")
    assert Version(meta["glibc_floor"]) <= Version(runtime_build.GLIBC_TARGET)
    inputs = meta["build_inputs"]
    assert inputs["userland"].startswith("Debian GNU/Linux 11 (bullseye)")
    assert inputs["host_packages"]["libc6-dev"].startswith("2.31-")
    assert inputs["compiler"].startswith("gcc (Debian 10.")


def test_builder_image_records_the_package_versions(docker_client: Any, builder_tag: str,
                                                    archive: Path) -> None:
    packages = runtime_builder_packages(docker_client, builder_tag)
    recorded = _sidecar(archive)["build_inputs"]["host_packages"]
    for name in runtime_build.BUILD_DEPENDENCIES:
        assert packages[name] == recorded[name], name


def test_runtime_runs_on_the_plain_suite_userland(docker_client: Any, archive: Path, tmp_path: Path,
                                                  no_dangling_containers: dict[str, str]) -> None:
    """The bare bullseye base (no build dependencies): only its glibc is used."""
    tree = tmp_path / "rt" / "python"
    extract_runtime(archive, tree)
    lines: list[str] = []
    with BuilderContainer(docker_client, image=f"venvstacks-docker-base:{DEFAULT_RUNTIME_SUITE}",
                          command=["/opt/rt/bin/python3", "-I", "-B", "-c", IMPORT_EVERYTHING],
                          mounts=[(tree, "/opt/rt", True)], labels=no_dangling_containers,
                          on_output=lambda line, _stream: lines.append(line)) as box:
        code = box.run()
    assert code == 0, "\n".join(lines)
    info = json.loads(lines[-1])
    assert info["prefix"] == "/opt/rt"
    assert info["openssl"].startswith("OpenSSL 1.1.1")


def test_two_differently_set_up_containers_give_the_same_bytes(
    archive: Path, other_image: str, docker_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another image (extra packages), host name, time zone, locale, umask, cache path, build
    folder and tool mount path: the same archive, byte for byte."""
    pin = runtime_build.PINS[VERSION]
    cache = tmp_path / "another cache"
    source = runtime_build.fetch_source(pin, archive.parents[2])
    (cache / "sources" / pin.sha256).mkdir(parents=True)
    shutil.copyfile(source, cache / "sources" / pin.sha256 / source.name)
    (tmp_path / "scratch elsewhere").mkdir()
    monkeypatch.setenv(HOSTNAME_ENV, "elsewhere.example.org")
    setting = BuildSetting(
        image=other_image,
        environment={"TZ": "Pacific/Chatham", "LANG": "de_DE.UTF-8", "LC_ALL": "de_DE.UTF-8"},
        umask="077",
        scratch_parent=tmp_path / "scratch elsewhere",
        site_mount="/srv/somewhere else/tool",
    )
    rebuilt = build_runtime_in_container(VERSION, cache=cache, jobs=2, setting=setting, client=docker_client)
    print("default container:", sha256_file(archive), archive.name)
    print("other container:  ", sha256_file(rebuilt), rebuilt.name)
    first, second = _sidecar(archive), _sidecar(rebuilt)
    assert second["build_inputs_digest"] == first["build_inputs_digest"]
    assert rebuilt.name == archive.name
    assert sha256_file(rebuilt) == sha256_file(archive), (
        f"explain with: venvstacks-docker diff {archive} {rebuilt}")
