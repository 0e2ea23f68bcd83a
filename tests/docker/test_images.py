"""Base and builder images against the real engine."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import tarfile
import time
import uuid
from pathlib import Path

import pytest

from venvstacks_docker import __version__
from venvstacks_docker.errors import ContainerError
from venvstacks_docker.host import images
from venvstacks_docker.host.container import BuilderContainer
from venvstacks_docker.host.orchestrator import ContainerStepFailed, run_in_builder

pytestmark = pytest.mark.docker


def test_bootstrap_base_creates_and_reuses_the_image(docker_client, base_image) -> None:  # type: ignore[no-untyped-def]
    image = docker_client.images.get(base_image.tag)
    assert image.id == base_image.image_id
    assert docker_client.images.get(base_image.alias).id == image.id
    assert image.labels[images.LABEL_ROLE] == "base"
    inputs = json.loads(image.labels[images.LABEL_INPUTS])
    assert inputs["suite"] == images.DEFAULT_SUITE
    assert inputs["packages"] == sorted(images.BASE_PACKAGES)
    assert image.attrs["Architecture"] == {"linux_x86_64": "amd64", "linux_aarch64": "arm64"}[images.host_target()]

    started = time.monotonic()
    again = images.bootstrap_base(client=docker_client)
    assert time.monotonic() - started < 10
    assert again.created is False
    assert again.image_id == base_image.image_id


def test_bootstrapped_base_is_stripped(docker_client, base_image, no_dangling_containers) -> None:  # type: ignore[no-untyped-def]
    lines: list[str] = []
    script = (
        "ls /var/lib/apt/lists | tr '\\n' ' '; echo; "
        "test -e /var/cache/ldconfig/aux-cache && echo aux-cache; "
        "find /var/log -type f -size +0 | head -3; "
        "ls /var/cache/apt/archives | grep -c deb; "
        "command -v gcc cc || echo no-compiler"
    )
    with BuilderContainer(
        docker_client,
        image=base_image.image_id,
        command=["/bin/sh", "-c", script],
        on_output=lambda line, _stream: lines.append(line),
        labels=no_dangling_containers,
    ) as box:
        assert box.run() in (0, 1)
    assert lines[0].split() == ["partial"]
    assert "aux-cache" not in lines
    assert "0" in lines
    assert lines[-1] == "no-compiler"


def test_bootstrap_needs_root(docker_client, base_image, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ContainerError, match="bootstrap-base needs root"):
        images.bootstrap_base(client=docker_client, force=True)


def test_missing_base_image_names_bootstrap(docker_client) -> None:  # type: ignore[no-untyped-def]
    choice = images.BaseImageChoice(reference=f"venvstacks-docker-test-missing:{uuid.uuid4().hex}", source="cli")
    with pytest.raises(ContainerError) as info:
        images.resolve_base_image(docker_client, choice, "linux_x86_64")
    assert "venvstacks-docker image bootstrap-base" in str(info.value)


def test_builder_image_is_labelled_with_its_inputs(docker_client, builder_image) -> None:  # type: ignore[no-untyped-def]
    image = docker_client.images.get(builder_image.tag)
    assert image.id == builder_image.image_id
    assert json.loads(image.labels[images.LABEL_INPUTS]) == builder_image.inputs
    assert images.inputs_tag(builder_image.inputs) == builder_image.tag
    inputs = builder_image.inputs
    assert inputs["target"] == images.host_target()
    assert inputs["tool"]["version"] == __version__
    assert len(inputs["runtime"]["sha256"]) == 64
    assert inputs["base_image"]["id"].startswith("sha256:")
    assert image.attrs["Config"]["Entrypoint"] == [images.TOOL_PYTHON, "-m", "venvstacks_docker"]


def test_existing_builder_tag_is_reused(docker_client, builder_image, builder_files) -> None:  # type: ignore[no-untyped-def]
    lines: list[str] = []
    started = time.monotonic()
    again = images.ensure_builder_image(
        images.host_target(),
        base_image=builder_image.inputs["base_image"]["reference"],
        client=docker_client,
        on_progress=lines.append,
        **builder_files,
    )
    assert time.monotonic() - started < 60
    assert again.tag == builder_image.tag
    assert again.image_id == builder_image.image_id
    assert any("already exists" in line for line in lines)
    assert not any(line.startswith("Step ") for line in lines)


def test_tool_runs_in_the_builder(docker_client, builder_image, no_dangling_containers) -> None:  # type: ignore[no-untyped-def]
    lines: list[tuple[str, str]] = []
    code = ("import sys, uv, venvstacks_docker; "
            "print(venvstacks_docker.__version__, uv.find_uv_bin(), sys.version_info[:2])")
    started = time.monotonic()
    with BuilderContainer(
        docker_client,
        image=builder_image.tag,
        command=[images.TOOL_PYTHON, "-c", code],
        on_output=lambda line, stream: lines.append((stream, line)),
        labels=no_dangling_containers,
    ) as box:
        assert box.run() == 0, lines
    elapsed = time.monotonic() - started
    assert lines == [("stdout", f"{__version__} /opt/venvstacks-docker/python/bin/uv (3, 11)")]
    assert elapsed < 30


def test_run_in_builder_runs_the_cli(docker_client, builder_image) -> None:  # type: ignore[no-untyped-def]
    if importlib.util.find_spec("venvstacks_docker.cli") is None:
        pytest.skip("venvstacks_docker.cli is not written yet")
    lines: list[str] = []
    run_in_builder(
        ["--version"], image=builder_image, client=docker_client, on_output=lambda line, _s: lines.append(line)
    )
    assert any(__version__ in line for line in lines)


def test_run_in_builder_carries_the_exit_status(docker_client, builder_image) -> None:  # type: ignore[no-untyped-def]
    lines: list[str] = []
    with pytest.raises(ContainerStepFailed) as info:
        run_in_builder(
            ["--no-such-option-anywhere"],
            image=builder_image,
            client=docker_client,
            on_output=lambda line, _s: lines.append(line),
        )
    assert info.value.exit_code != 0
    assert info.value.return_code == info.value.exit_code
    assert "inside the builder container" in str(info.value)


def _context_tar(tmp_path: Path, dockerfile: str) -> Path:
    out = tmp_path / "context.tar"
    data = dockerfile.encode()
    with tarfile.open(out, "w") as tf:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return out


def test_failed_build_reports_the_log_and_leaves_no_images(docker_client, base_image, tmp_path) -> None:  # type: ignore[no-untyped-def]
    marker = uuid.uuid4().hex
    dockerfile = (
        f"FROM {base_image.image_id}\n"
        f'RUN ["/bin/sh", "-c", "echo {marker} > /marker"]\n'
        f'RUN ["/bin/sh", "-c", "echo failing-step-{marker}; exit 3"]\n'
    )
    lines: list[str] = []
    tag = f"venvstacks-docker-test-failed:{marker[:12]}"
    with pytest.raises(ContainerError) as info:
        images._stream_build(
            docker_client,
            _context_tar(tmp_path, dockerfile),
            tag=tag,
            labels={},
            nocache=True,
            platform_name=None,
            keep={base_image.image_id},
            on_progress=lines.append,
        )
    message = str(info.value)
    assert f"failing-step-{marker}" in message
    assert "returned a non-zero code: 3" in message
    step_images = [line[6:].strip() for line in lines if line.startswith(" ---> ") and " " not in line[6:].strip()]
    assert len(step_images) >= 2  # the base, and the layer the first RUN committed
    for short_id in step_images[1:]:
        with pytest.raises(Exception, match=r"(?i)no such image"):
            docker_client.images.get(short_id)
    docker_client.images.get(base_image.image_id)  # the base is never touched
    assert not docker_client.containers.list(all=True, filters={"ancestor": base_image.image_id, "status": "exited"})


def test_list_shows_tool_images(docker_client, base_image, builder_image) -> None:  # type: ignore[no-untyped-def]
    rows = images.list_tool_images(docker_client)
    by_id = {row["id"]: row for row in rows}
    assert by_id[base_image.image_id]["role"] == "base"
    assert base_image.alias in by_id[base_image.image_id]["tags"]
    assert by_id[builder_image.image_id]["role"] == "builder"
    assert builder_image.tag in by_id[builder_image.image_id]["tags"]
    # Assembled builder images are all created in 1980; prune orders them by this.
    assert by_id[builder_image.image_id]["tagged"] > "2000"


def test_image_cli_list_json(docker_client, builder_image) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from venvstacks_docker.cli.image import image_app

    result = CliRunner().invoke(image_app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["images"]
    assert any(builder_image.tag in row["tags"] for row in rows)


def test_prune_keeps_the_newest(docker_client, builder_image) -> None:  # type: ignore[no-untyped-def]
    # Keeping more than exist removes nothing (a real prune would disturb parallel runs).
    assert images.prune_builder_images(docker_client, keep=10_000) == []
    docker_client.images.get(builder_image.tag)
