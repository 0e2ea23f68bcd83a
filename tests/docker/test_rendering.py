"""Template rendering, base-image choice and target checks: no engine needed."""

from __future__ import annotations

import re
import tomllib

import pytest

from venvstacks_docker.errors import ContainerError
from venvstacks_docker.host import images
from venvstacks_docker.host.engine import connect
from venvstacks_docker.resources import PINNED_IMAGES, dockerfiles_dir


def _context(**overrides: str) -> dict[str, str]:
    context = images.builder_context(
        target="linux_x86_64",
        base_image="sha256:" + "ab" * 32,
        base_image_ref="venvstacks-docker-base:bookworm",
        runtime_archive="cpython-3.11.2-x86_64-unknown-linux-gnu-install_only.tar.gz",
    )
    context.update(overrides)
    return context


def test_templates_are_found() -> None:
    folder = dockerfiles_dir()
    assert (folder / images.TEMPLATE).is_file()
    assert (folder / "README.md").is_file()


def test_rendering_is_deterministic() -> None:
    first = images.render_dockerfile(_context())
    second = images.render_dockerfile(dict(reversed(list(_context().items()))))
    assert first == second
    assert b"\r" not in first
    assert first.endswith(b"\n")
    assert b"FROM sha256:" + b"ab" * 32 + b"\n" in first
    assert images.render_dockerfile(_context(target="linux_aarch64")) != first


def test_every_documented_variable_is_used_and_vice_versa() -> None:
    readme = (dockerfiles_dir() / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", readme, flags=re.MULTILINE))
    assert documented == set(_context())


def test_missing_variable_fails_loudly() -> None:
    context = _context()
    del context["home"]
    with pytest.raises(ContainerError, match="'home' is undefined"):
        images.render_dockerfile(context)


def test_missing_template_is_a_clear_error() -> None:
    with pytest.raises(ContainerError, match="not found"):
        images.render_dockerfile(_context(), template="nope.Dockerfile.j2")


@pytest.mark.parametrize(
    ("target", "os_name"),
    [("macosx_arm64", "macOS"), ("macosx_11_0_x86_64", "macOS"), ("win_amd64", "Windows")],
)
def test_non_linux_targets_are_refused(target: str, os_name: str) -> None:
    with pytest.raises(ContainerError) as info:
        images.check_target(target)
    message = str(info.value)
    assert f"containers can't build {target}" in message
    assert "--native" in message
    assert f"on a {os_name} machine" in message


def test_unknown_target_is_refused() -> None:
    with pytest.raises(ContainerError, match="unknown container target"):
        images.check_target("linux_riscv64")


def test_base_image_precedence_without_engine() -> None:
    env = {images.BASE_IMAGE_ENV: "from-env:1"}
    assert images.choose_base_image("linux_x86_64", cli="cli:1", spec="spec:1", env=env).source == "cli"
    assert images.choose_base_image("linux_x86_64", spec="spec:1", env=env).reference == "spec:1"
    assert images.choose_base_image("linux_x86_64", env=env).reference == "from-env:1"
    pinned = images.choose_base_image("linux_x86_64", env={})
    assert pinned.source == "pinned"
    assert pinned.reference.startswith("quay.io/pypa/manylinux_2_28_x86_64@sha256:")


def test_pinned_images_are_digests() -> None:
    table = tomllib.loads(PINNED_IMAGES.read_text(encoding="utf-8"))
    assert set(table) == set(images.CONTAINER_TARGETS)
    for target, entry in table.items():
        arch = target.removeprefix("linux_")
        assert re.fullmatch(
            rf"quay\.io/pypa/manylinux_2_28_{arch}@sha256:[0-9a-f]{{64}}", entry["reference"]
        )
        assert entry["tag"]


def test_builder_tag_hashes_inputs() -> None:
    inputs = {"target": "linux_x86_64", "tool": {"wheel_sha256": "0" * 64}}
    tag = images.inputs_tag(inputs)
    assert re.fullmatch(r"venvstacks-docker-builder:[0-9a-f]{16}", tag)
    assert images.inputs_tag(dict(reversed(list(inputs.items())))) == tag
    assert images.inputs_tag({**inputs, "target": "linux_aarch64"}) != tag


def test_bad_docker_host_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    with pytest.raises(ContainerError) as info:
        connect()
    message = str(info.value)
    assert "unix:///nonexistent.sock" in message
    assert "is Docker installed and running?" in message
    assert "DOCKER_HOST" in message
    assert "Traceback" not in message


def test_image_cli_render_matches_library(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from venvstacks_docker.cli.image import image_app

    # No engine: the rendering must not need one.
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    monkeypatch.delenv(images.BASE_IMAGE_ENV, raising=False)
    out = tmp_path / "Dockerfile"
    result = CliRunner().invoke(
        image_app, ["render", "--target", "linux_aarch64", "--base-image", "x:1", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == images.render_for_target("linux_aarch64", base_image="x:1")
    assert b"FROM x:1\n" in out.read_bytes()


def test_only_locking_gets_the_network(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from _helpers import copy_sample

    from venvstacks_docker import plan, spec

    stack = spec.load(copy_sample(tmp_path / "s"))
    where = plan.Where(platform="linux_x86_64", build_dir=tmp_path / "b", output_dir=tmp_path / "o")
    everything = plan.Selection()
    assert plan.plan_lock(stack, everything, where).needs_network
    assert not plan.plan_build(stack, everything, where, publish=True).needs_network
    assert plan.plan_build(stack, everything, where, lock_if_needed=True).needs_network
    assert not plan.plan_publish(stack, everything, where).needs_network
    assert not plan.plan_export(stack, everything, where).needs_network


def test_tool_command_runs_the_package_with_the_image_python() -> None:
    from venvstacks_docker.host.orchestrator import tool_command

    assert tool_command(["lock", "x.toml", "--native"]) == [
        "/opt/venvstacks-docker/python/bin/python3", "-m", "venvstacks_docker", "lock", "x.toml", "--native",
    ]  # fmt: skip


def test_networked_steps_trust_the_hosts_ca_bundle(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from venvstacks_docker.host.dispatch import CONTAINER_CA_FILE, network_passthrough

    bundle = tmp_path / "ca.crt"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    env, mounts = network_passthrough({"SSL_CERT_FILE": str(bundle), "https_proxy": "http://proxy:3128"})
    assert env == {"SSL_CERT_FILE": CONTAINER_CA_FILE, "https_proxy": "http://proxy:3128"}
    assert [(m.host_path, m.container_path, m.read_only) for m in mounts] == [(bundle, CONTAINER_CA_FILE, True)]
    assert network_passthrough({}) == ({}, [])
