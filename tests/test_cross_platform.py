"""Building for another architecture, without building: the cross recipe (configure
arguments, packages, compiler, library folders), what ``emulation`` reports and advises,
and ``--platform`` on the stage commands.  In-process and fast.

The real cross build, emulated builder and publish are in
``tests/docker/test_aarch64_emulated.py``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path

import pytest
from _helpers import copy_sample

from venvstacks_docker import emulation
from venvstacks_docker.cli import run
from venvstacks_docker.platforms import current_platform
from venvstacks_docker.runtime_build import recipe

HERE = current_platform()
OTHER = "linux_aarch64" if HERE == "linux_x86_64" else "linux_x86_64"
needs_linux = pytest.mark.skipif(HERE not in recipe.BUILD_PLATFORMS, reason="runtimes are built on Linux")


@pytest.fixture(autouse=True)
def no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing here may reach a container engine."""
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/venvstacks-docker-test.sock")


def cli(capsys: pytest.CaptureFixture[str], *args: str | os.PathLike[str]) -> tuple[int, str, str]:
    code = run([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@needs_linux
def test_a_native_build_is_configured_as_before() -> None:
    assert not recipe.is_cross(None) and not recipe.is_cross(HERE)
    args = recipe.configure_args("3.11.2")
    assert args == recipe.configure_args("3.11.2", HERE, "/ignored/python")
    assert not any(arg.startswith(("--host=", "--build=", "--with-build-python")) for arg in args)
    assert recipe.build_dependencies(HERE) == recipe.BUILD_DEPENDENCIES
    assert recipe.compiler(HERE) == "gcc"


@needs_linux
def test_a_cross_build_names_both_machines_and_the_build_interpreter() -> None:
    assert recipe.is_cross(OTHER)
    args = recipe.configure_args("3.11.2", OTHER, "/opt/bootstrap/python")
    assert f"--host={recipe.GNU_TRIPLET[OTHER]}" in args
    assert f"--build={recipe.GNU_TRIPLET[HERE]}" in args
    assert "--with-build-python=/opt/bootstrap/python" in args
    # configure cannot look at the target's /dev: the answers are given
    assert {"ac_cv_file__dev_ptmx=yes", "ac_cv_file__dev_ptc=no"} <= set(args)
    assert recipe.compiler(OTHER) == f"{recipe.GNU_TRIPLET[OTHER]}-gcc"
    assert recipe.library_dirs(OTHER)[0] == Path("/usr/lib") / recipe.GNU_TRIPLET[OTHER]


@needs_linux
def test_cross_packages_are_the_target_architectures_libraries() -> None:
    arch = recipe.DEBIAN_ARCH[OTHER]
    packages = recipe.build_dependencies(OTHER)
    assert f"crossbuild-essential-{arch}" in packages
    for library in recipe.LIBRARY_DEPENDENCIES:
        assert f"{library}:{arch}" in packages and library not in packages
    assert f"libc6-dev:{arch}" in recipe.recorded_packages(OTHER)


@needs_linux
def test_the_compat_header_binds_to_each_architectures_base_version() -> None:
    header = recipe.compat_header(recipe.host_triple("linux_aarch64"))
    assert '".symver pow,pow@GLIBC_2.17"' in header
    assert "GLIBC_2.2.5" in recipe.compat_header(recipe.host_triple("linux_x86_64"))


def test_runtimes_are_built_for_linux_only(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "runtime", "build", "--target", "win_amd64")
    assert code == 2
    assert "--target 'win_amd64'" in err and "linux_aarch64" in err


def _state(**changes: object) -> emulation.Emulation:
    usable = emulation.Emulation(target="linux_aarch64", native=False, mounted=True, registered=True,
                                 enabled=True, fix_binary=True, interpreter="/usr/libexec/qemu-binfmt/x",
                                 rule_file="/usr/lib/binfmt.d/qemu-aarch64.conf")
    return dataclasses.replace(usable, **changes)  # type: ignore[arg-type]


def test_emulation_advice_names_the_missing_piece_and_its_fix() -> None:
    assert _state().usable and _state().problem() is None
    missing = _state(registered=False, enabled=False, fix_binary=False, rule_file=None).problem()
    assert missing is not None and "not installed" in missing[0] and "apt-get install qemu-user-static" in missing[1]
    unregistered = _state(registered=False, enabled=False, fix_binary=False).problem()
    assert unregistered is not None and "not registered" in unregistered[0]
    assert "emulation enable --target linux_aarch64" in unregistered[1]
    no_f = _state(fix_binary=False).problem()
    assert no_f is not None and "F flag" in no_f[0]
    assert _state(native=True, registered=False, mounted=False).usable


def test_emulation_status_reads_this_machine(capsys: pytest.CaptureFixture[str]) -> None:
    found = emulation.status(OTHER)
    code, out, _ = cli(capsys, "emulation", "status", "--target", OTHER, "--json")
    body = json.loads(out)
    assert body["usable"] == found.usable and body["native"] is False
    assert code == (0 if found.usable else 15)
    code, out, _ = cli(capsys, "emulation", "status", "--target", HERE, "--json")
    assert code == 0 and json.loads(out)["native"] is True


def test_emulation_of_a_non_linux_platform_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "emulation", "status", "--target", "win_amd64")
    assert code == 2 and "use linux_x86_64 or linux_aarch64" in err


@pytest.mark.parametrize("command", ["lock", "build", "publish"])
def test_platform_of_another_os_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                           command: str) -> None:
    stack = copy_sample(tmp_path / "sample")
    code, _, err = cli(capsys, command, stack, "--platform", "macosx_arm64")
    assert code == 2
    assert "--platform 'macosx_arm64'" in err and "ci github" in err


def test_platform_of_another_architecture_needs_a_container(capsys: pytest.CaptureFixture[str],
                                                            tmp_path: Path) -> None:
    stack = copy_sample(tmp_path / "sample")
    code, _, err = cli(capsys, "build", stack, "--platform", OTHER, "--native")
    assert code == 2
    assert f"--platform {OTHER} is not this machine's platform" in err and "drop --native" in err


def test_a_runtime_pin_holds_for_its_own_platform_only(tmp_path: Path) -> None:
    """sample_project's lock pins the x86-64 archive: a build for aarch64 takes its own."""
    from venvstacks_docker import build
    from venvstacks_docker.spec import load

    spec = load(copy_sample(tmp_path / "sample"))
    runtime = spec.runtimes[0]
    pin = build.runtime_pin(spec, runtime)
    assert pin["name"].endswith("-x86_64-unknown-linux-gnu-install_only.tar.gz")
    assert build.runtime_pin(spec, runtime, "linux_x86_64") == pin
    assert build.runtime_pin(spec, runtime, "linux_aarch64") == {}
    assert build.pinned_runtime_sha(spec, runtime, "linux_aarch64") is None


def test_a_foreign_base_image_archive_names_its_architecture(tmp_path: Path) -> None:
    """What ``bootstrap-base --target linux_aarch64`` loads: one layer, a config naming
    arm64, an ID that is the config's sha256; the same bytes from the same root tar."""
    import hashlib
    import tarfile

    from venvstacks_docker.host.images.imagetar import rootfs_image_tar

    rootfs = tmp_path / "rootfs.tar"
    with tarfile.open(rootfs, "w") as tar:
        info = tarfile.TarInfo("etc/hostname")
        info.size = 10
        tar.addfile(info, io.BytesIO(b"localhost\n"))
    config = {"Cmd": ["/bin/bash"], "Labels": {"venvstacks-docker.role": "base"}}
    first = rootfs_image_tar(tmp_path / "a.tar", rootfs=rootfs, arch="arm64", config=config, tag="t:arm64")
    again = rootfs_image_tar(tmp_path / "b.tar", rootfs=rootfs, arch="arm64", config=config, tag="t:arm64")
    assert first == again and (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    with tarfile.open(tmp_path / "a.tar") as image:
        manifest = json.loads(image.extractfile("manifest.json").read())  # type: ignore[union-attr]
        (entry,) = manifest
        raw = image.extractfile(entry["Config"]).read()  # type: ignore[union-attr]
        layer = image.extractfile(entry["Layers"][0]).read()  # type: ignore[union-attr]
    document = json.loads(raw)
    assert (document["architecture"], document["variant"], document["os"]) == ("arm64", "v8", "linux")
    assert first == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert document["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()]
    assert layer == rootfs.read_bytes() and entry["RepoTags"] == ["t:arm64"]
    assert document["config"] == config
