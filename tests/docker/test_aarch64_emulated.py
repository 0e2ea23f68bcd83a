"""linux_aarch64 on an x86_64 machine: qemu user-mode emulation, a cross-built runtime,
an emulated builder, and a small stack published, reproduced and run.

What the first run on a machine does (all of it cached afterwards, by image tag and in
the runtime cache): registers qemu-user-static with binfmt_misc (installing it with
apt-get when missing, as root), bootstraps an arm64 Debian base (debootstrap's second
stage runs under qemu), prepares the cross runtime builder image (bullseye, Debian's
cross toolchain, arm64 libraries) and cross-compiles CPython for aarch64.  Every run
then locks, builds and publishes ``tests/data/aarch64_stack`` twice in the emulated
builder (two build folders), compares the archives byte for byte, verifies them, and
deploys and runs the application in an arm64 container.

On an aarch64 machine nothing is emulated and the same steps run natively.  The test
skips only when the kernel has no binfmt_misc at all (said loudly); on CI it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _helpers import cli
from elftools.elf.elffile import ELFFile
from packaging.version import Version

from venvstacks_docker import emulation, runtime_build
from venvstacks_docker.host.images import bootstrap_base, ensure_builder_image
from venvstacks_docker.host.runtime_container import build_runtime_in_container
from venvstacks_docker.metadata import sha256_file
from venvstacks_docker.runtimes import extract_runtime

TARGET = "linux_aarch64"
STACK = Path(__file__).parent.parent / "data" / "aarch64_stack"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.network,
    pytest.mark.skipif(sys.platform != "linux", reason="builder containers are Linux containers"),
]


def _install_qemu() -> None:
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return
    sys.stderr.write("\n*** test_aarch64_emulated: installing qemu-user-static with apt-get ***\n")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "qemu-user-static"]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
        subprocess.run(install, env=env, capture_output=True, check=True)


@pytest.fixture(scope="module")
def emulated() -> emulation.Emulation:
    """aarch64 programs run here (registering qemu's rule with binfmt_misc if needed)."""
    found = emulation.status(TARGET)
    if found.usable:
        return found
    if not found.mounted and "binfmt_misc" not in Path("/proc/filesystems").read_text():
        message = f"THIS KERNEL HAS NO binfmt_misc: {TARGET} CANNOT BE EMULATED HERE"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    if found.rule_file is None:
        _install_qemu()
    return emulation.enable(TARGET)


@pytest.fixture(scope="module")
def runtime(emulated: emulation.Emulation, docker_client: Any) -> Path:
    """CPython 3.11.2 for aarch64, cross-compiled in the bullseye cross image (cached)."""
    return build_runtime_in_container("3.11.2", target=TARGET, jobs=2, client=docker_client)


@pytest.fixture(scope="module")
def base(emulated: emulation.Emulation, docker_client: Any) -> Any:
    """The arm64 Debian base (debootstrap's second stage runs under qemu; cached by tag)."""
    return bootstrap_base(target=TARGET, client=docker_client)


@pytest.fixture(scope="module")
def builder_tag(runtime: Path, base: Any, docker_client: Any) -> str:
    return ensure_builder_image(TARGET, client=docker_client).tag


def test_the_arm64_base_is_an_arm64_image(base: Any, docker_client: Any) -> None:
    """Loaded with its architecture: ``docker import`` would have recorded amd64."""
    attrs = docker_client.images.get(base.tag).attrs
    assert (attrs["Architecture"], attrs["Os"]) == ("arm64", "linux")
    assert docker_client.images.get(base.alias).id == base.image_id


def test_emulation_status_command_says_usable(emulated: emulation.Emulation) -> None:
    result = cli("emulation", "status", "--target", TARGET, "--json")
    body = json.loads(result.stdout)
    assert body["usable"] is True and body["problem"] is None
    assert body["native"] or (body["fix_binary"] and body["enabled"])


def test_cross_runtime_is_aarch64_with_a_low_floor(runtime: Path, tmp_path: Path) -> None:
    meta = runtime_build.read_sidecar(runtime)
    assert "aarch64-unknown-linux-gnu" in runtime.name
    assert meta["target_triple"] == "aarch64-unknown-linux-gnu"
    assert Version(str(meta["glibc_floor"])) <= Version(runtime_build.GLIBC_TARGET)
    inputs = meta["build_inputs"]
    assert isinstance(inputs, dict)
    assert inputs["compiler"].startswith("aarch64-linux-gnu-gcc")
    assert "--host=aarch64-linux-gnu" in inputs["configure_args"]
    tree = tmp_path / "python"
    extract_runtime(runtime, tree)
    with (tree / "bin" / "python3.11").open("rb") as stream:
        assert ELFFile(stream)["e_machine"] == "EM_AARCH64"
    carried = meta["carried_libraries"]
    assert isinstance(carried, dict) and any(name.startswith("libssl") for name in carried)
    assert all("/aarch64-linux-gnu/" in source for source in carried.values())


def _publish(stack: Path, build: str, out: str) -> Path:
    cli("build", stack / "venvstacks.toml", "--platform", TARGET, "--build-dir", build, "--publish",
        "--output-dir", out)
    return stack / out


def _archives(out: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(out.glob("*.tar.xz"))}


def test_stack_publishes_reproducibly_and_its_app_runs(builder_tag: str, docker_client: Any, tmp_path: Path,
                                                       test_labels: dict[str, str]) -> None:
    stack = tmp_path / "stack"
    shutil.copytree(STACK, stack)
    cli("lock", stack / "venvstacks.toml", "--platform", TARGET)
    first = _publish(stack, "_build1", "_out1")
    second = _publish(stack, "_build2", "_out2")
    archives = _archives(first)
    assert len(archives) == 3, archives
    assert archives == _archives(second)
    manifest = json.loads((first / "__venvstacks__" / "venvstacks.json").read_text())
    layers = [layer for kind in manifest["layers"].values() for layer in kind]
    assert {layer["target_platform"] for layer in layers} == {TARGET}
    builder = layers[0]["venvstacks_docker"]["builder_image"]
    assert builder["inputs"]["target"] == TARGET and "aarch64" in builder["inputs"]["runtime"]["archive"]
    # the ELF policy check passes for glibc@2.28, strictly: the cross-built runtime too
    report = json.loads(cli("verify", first, "--json", "--strict-elf").stdout)
    assert report["ok"] and report["elf_policy"]["violations"] == 0, report
    runtime_scan = next(layer for layer in report["elf_policy"]["layers"] if layer["layer_name"] == "cpython-3.11")
    assert runtime_scan["elf_files"] > 50 and runtime_scan["policy"] == "manylinux_2_28"

    uid, gid = os.getuid(), os.getgid()
    script = ("set -e; python -m venvstacks_docker deploy /out /tmp/deployed >&2; "
              "exec /tmp/deployed/app-hello-arm/bin/python -m hello_arm")
    output = docker_client.containers.run(
        builder_tag, entrypoint=["/bin/sh", "-c", script], user=f"{uid}:{gid}", network_disabled=True,
        volumes={str(first): {"bind": "/out", "mode": "ro"}}, labels=test_labels, remove=True, stderr=False)
    result = json.loads(output.decode().strip().splitlines()[-1])
    assert result["machine"] == "aarch64"
    assert result["python"] == "3.11.2"
    assert result["escaped"] == "&lt;arm64 &amp; friends&gt;"
    assert result["speedups"].endswith("-aarch64-linux-gnu.so")
