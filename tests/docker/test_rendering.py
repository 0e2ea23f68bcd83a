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


# --------------------------------------------------------------------------- the Dockerfile as host steps

_BASE_CONFIG = {"config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/bash"], "Labels": {"a": "b"}}}


def test_the_template_is_a_recipe_the_host_can_carry_out() -> None:
    from venvstacks_docker.host.images import recipe as r

    base = _context()["base_image"]
    found = images.read_recipe(images.render_dockerfile(_context()), python=images.TOOL_PYTHON,
                               base_config=_BASE_CONFIG)
    site = "/opt/venvstacks-docker/python/lib/python3.11/site-packages"
    assert found.base == base
    assert [type(step) for step in found.steps] == [r.Unpack, r.CopyDir, r.CopyDir, r.Compile, r.MakeDirs,
                                                    r.Check, r.Workdir]
    unpack, site_copy, _bin_copy, compile_step, mkdir, check, _workdir = found.steps
    assert unpack == r.Unpack("runtime/cpython-3.11.2-x86_64-unknown-linux-gnu-install_only.tar.gz",
                              "/opt/venvstacks-docker/")
    assert site_copy == r.CopyDir("site", f"{site}/")
    assert compile_step.dirs == (site,) and {"-I", "-B"} <= set(compile_step.flags)
    assert compile_step.options == ("-q", "-j", "1", "--invalidation-mode", "unchecked-hash")
    assert compile_step.env == ("PATH=/usr/bin:/bin",)  # ENV comes later in the template
    assert mkdir == r.MakeDirs(("/tmp/home",), 0o1777)
    assert check.code == "import venvstacks_docker" and "HOME=/tmp/home" in check.env
    config = found.config
    assert config["Env"][0].startswith("PATH=/opt/venvstacks-docker/python/bin:")
    assert "PYTHONDONTWRITEBYTECODE=1" in config["Env"]
    assert config["Entrypoint"] == [images.TOOL_PYTHON, "-m", "venvstacks_docker"]
    assert (config["Cmd"], config["WorkingDir"], config["Labels"]) == (["--help"], "/tmp", {"a": "b"})
    # ADD, COPY, COPY, RUN compileall, RUN mkdir change files; ENV, RUN check, WORKDIR,
    # ENTRYPOINT, CMD do not
    assert [changes for _text, changes in found.history] == [True] * 5 + [False] * 5


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ('RUN ["/bin/sh", "-c", "echo hi"]', "only runs mkdir"),
        ("RUN echo hi", "exec form"),
        (f'RUN ["{images.TOOL_PYTHON}", "-I", "-c", "pass"]', "-I and -B"),
        ("USER nobody", "`USER` is not an instruction"),
        ("COPY --chown=1:1 site/ /x/", "without options"),
        ("ADD https://example.org/x.tar.gz /x/", "inside the build context"),
        ("ENV A=$B", "no quotes, escapes or $"),
        ('CMD echo', "exec form"),
    ],
)
def test_steps_outside_the_subset_fall_back_to_a_dockerfile_build(line: str, why: str) -> None:
    dockerfile = images.render_dockerfile(_context()) + line.encode() + b"\n"
    with pytest.raises(images.CannotAssemble, match=re.escape(why)):
        images.read_recipe(dockerfile, python=images.TOOL_PYTHON, base_config=_BASE_CONFIG)


def test_a_base_that_is_not_root_falls_back() -> None:
    config = {"config": {"User": "1000"}}
    with pytest.raises(images.CannotAssemble, match="runs as user '1000'"):
        images.read_recipe(images.render_dockerfile(_context()), python=images.TOOL_PYTHON, base_config=config)


def test_entrypoint_drops_the_base_cmd_as_the_engine_does() -> None:
    dockerfile = b'FROM x\nADD a.tar /opt/\nENTRYPOINT ["/bin/x"]\n'
    found = images.read_recipe(dockerfile, python=images.TOOL_PYTHON, base_config=_BASE_CONFIG)
    assert found.config["Entrypoint"] == ["/bin/x"] and found.config["Cmd"] is None


def test_a_foreign_architecture_is_built_from_the_dockerfile() -> None:
    other = "linux_aarch64" if images.host_target() == "linux_x86_64" else "linux_x86_64"
    assert images.assembly_refusal(images.host_target()) is None
    assert "not this machine's architecture" in (images.assembly_refusal(other) or "")


def test_the_image_config_is_canonical_and_fixed_in_time() -> None:
    import json

    from venvstacks_docker.host.images.imagetar import image_config

    found = images.read_recipe(images.render_dockerfile(_context()), python=images.TOOL_PYTHON,
                               base_config=_BASE_CONFIG)
    base = {**_BASE_CONFIG, "architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z",
            "docker_version": "28.0", "history": [{"created": "2026-01-01T00:00:00Z"}]}
    data = image_config(found, base, labels={"z": "1", "role": "builder"}, diff_ids=["sha256:a", "sha256:b"])
    assert data == image_config(found, dict(reversed(list(base.items()))), labels={"role": "builder", "z": "1"},
                                diff_ids=["sha256:a", "sha256:b"])
    config = json.loads(data)
    assert data == json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    assert set(config) == {"architecture", "os", "config", "created", "history", "rootfs"}
    assert config["created"] == "1980-01-01T00:00:00Z"
    assert {entry["created"] for entry in config["history"][1:]} == {"1980-01-01T00:00:00Z"}
    assert sum(not entry.get("empty_layer") for entry in config["history"]) == 2
    assert config["config"]["Labels"] == {"a": "b", "role": "builder", "z": "1"}


def test_the_layer_and_image_tar_do_not_depend_on_where_or_how_they_are_made(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import hashlib
    import os
    import tarfile

    from venvstacks_docker.host.images.common import FIXED_MTIME
    from venvstacks_docker.host.images.imagetar import SavedBase, write_image_tar
    from venvstacks_docker.host.images.layer import BaseEntry, Meta, Stage

    source = tmp_path / "site"
    (source / "pkg").mkdir(parents=True)
    (source / "pkg" / "mod.py").write_text("x = 1\n")
    (source / "tool").write_text("#!/bin/sh\n")
    (source / "tool").chmod(0o700)
    (source / "link").symlink_to("tool")
    base = {"tmp": BaseEntry("dir", Meta(0o1777, mtime=1)), "opt": BaseEntry("dir", Meta(0o755))}
    digests = []
    for i, umask in enumerate((0o022, 0o077)):  # another folder, another umask
        old = os.umask(umask)
        try:
            stage = Stage(tmp_path / f"scratch-{i}" / "stage", base)
            stage.copy_dir(source, "/opt/venvstacks-docker/site/")
            stage.make_dirs(["/tmp/home"], 0o1777)
            digests.append(stage.write_layer(tmp_path / f"layer-{i}.tar"))
        finally:
            os.umask(old)
    assert digests[0] == digests[1] == hashlib.sha256((tmp_path / "layer-1.tar").read_bytes()).hexdigest()
    with tarfile.open(tmp_path / "layer-0.tar") as tar:
        found = {m.name: (m.type, m.mode, m.uid, m.gid, m.mtime) for m in tar}
    assert list(found) == sorted(found)
    assert found["tmp"] == (tarfile.DIRTYPE, 0o1777, 0, 0, 1)  # the base's folder, unchanged
    assert found["tmp/home"] == (tarfile.DIRTYPE, 0o1777, 0, 0, FIXED_MTIME)
    assert found["opt/venvstacks-docker"] == (tarfile.DIRTYPE, 0o755, 0, 0, FIXED_MTIME)
    assert found["opt/venvstacks-docker/site/tool"] == (tarfile.REGTYPE, 0o755, 0, 0, FIXED_MTIME)
    assert found["opt/venvstacks-docker/site/pkg/mod.py"] == (tarfile.REGTYPE, 0o644, 0, 0, FIXED_MTIME)
    assert found["opt/venvstacks-docker/site/link"][:2] == (tarfile.SYMTYPE, 0o777)

    saved_tar = tmp_path / "saved.tar"
    with tarfile.open(saved_tar, "w") as tar:
        tar.add(tmp_path / "layer-1.tar", arcname="0123/layer.tar")
    saved = SavedBase(tar=saved_tar, config={}, layers=["0123/layer.tar"], diff_ids=["sha256:0123"], index={})
    made = []
    for i in range(2):
        image_id = write_image_tar(tmp_path / f"image-{i}.tar", base=saved, layer=tmp_path / f"layer-{i}.tar",
                                   diff_id=f"sha256:{digests[i]}", config=b'{"a":1}', tag="x:1")
        assert image_id == "sha256:" + hashlib.sha256(b'{"a":1}').hexdigest()
        made.append((tmp_path / f"image-{i}.tar").read_bytes())
    assert made[0] == made[1]
    with tarfile.open(tmp_path / "image-0.tar") as tar:
        names = tar.getnames()
        manifest = tar.extractfile("manifest.json").read()  # type: ignore[union-attr]
    assert names == sorted(names)
    assert f"{digests[0]}/layer.tar" in names and "0123/layer.tar" in names
    assert b'"RepoTags":["x:1"]' in manifest
