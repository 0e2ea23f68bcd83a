"""Builder images are assembled on the host: the same inputs give the same image ID, and
the image holds what a Dockerfile build of the rendered template holds.

Every image here is built on a private alias of the bootstrapped base, so its tag (a
hash of the inputs, the base reference among them) is this module's own: removing and
rebuilding it never disturbs the builder image other tests use.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from venvstacks_docker.host import images
from venvstacks_docker.host.images import builder as builder_module

pytestmark = pytest.mark.docker

FIXED_CREATED = "1980-01-01T00:00:00Z"
#: Config fields a Dockerfile build and the assembled image must agree on.
CONFIG_FIELDS = ("Env", "Entrypoint", "Cmd", "WorkingDir", "User", "Volumes", "ExposedPorts", "OnBuild",
                 "StopSignal", "Shell")


@pytest.fixture(scope="module")
def private_base(docker_client, base_image) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    """Makes aliases of the bootstrapped base; removes them and every builder image
    built on them afterwards."""
    made: list[str] = []
    image = docker_client.images.get(base_image.image_id)

    def alias() -> str:
        name = f"venvstacks-docker-test-base:{uuid.uuid4().hex[:12]}"
        image.tag(*name.split(":"))
        made.append(name)
        return name

    yield alias
    for row in images.list_tool_images(docker_client):
        if row["inputs"].get("base_image", {}).get("reference") in made:
            for tag in row["tags"]:
                docker_client.images.remove(tag)
    for name in made:
        docker_client.images.remove(name)


def _ensure(client: Any, base: str, files: dict[str, Path], lines: list[str] | None = None,
            force: bool = False) -> images.BuilderImage:
    return images.ensure_builder_image(images.host_target(), base_image=base, client=client, force=force,
                                       on_progress=(lines if lines is not None else []).append, **files)


@pytest.fixture(scope="module")
def assembled(docker_client, private_base, builder_files) -> images.BuilderImage:  # type: ignore[no-untyped-def]
    lines: list[str] = []
    built = _ensure(docker_client, private_base(), builder_files, lines)
    assert any(line.startswith("loading ") for line in lines), lines
    assert not any(line.startswith("Step ") for line in lines), "the classic builder ran"
    return built


def test_the_image_is_created_at_a_fixed_time(docker_client, assembled) -> None:  # type: ignore[no-untyped-def]
    image = docker_client.images.get(assembled.tag)
    assert image.id == assembled.image_id
    assert image.attrs["Created"] == FIXED_CREATED
    assert len(image.attrs["RootFS"]["Layers"]) == len(assembled_base_layers(docker_client, assembled)) + 1
    ours = docker_client.api.history(assembled.tag)[:-1]  # newest first; the last is the base's
    assert ours and {entry["Created"] for entry in ours} == {315532800}
    # Still told apart from older images by when it was tagged here (image prune).
    row = next(r for r in images.list_tool_images(docker_client) if r["id"] == assembled.image_id)
    assert row["tagged"] and not row["tagged"].startswith("1980")


def assembled_base_layers(client: Any, built: images.BuilderImage) -> list[str]:
    return list(client.images.get(built.inputs["base_image"]["id"]).attrs["RootFS"]["Layers"])


def test_a_rebuild_gives_the_same_image_id(docker_client, assembled, builder_files) -> None:  # type: ignore[no-untyped-def]
    base = assembled.inputs["base_image"]["reference"]
    docker_client.images.remove(assembled.tag)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(assembled.image_id)
    old_umask = os.umask(0o077)  # another umask, another scratch folder: the same bytes
    try:
        again = _ensure(docker_client, base, builder_files)
    finally:
        os.umask(old_umask)
    assert (again.tag, again.image_id, again.inputs) == (assembled.tag, assembled.image_id, assembled.inputs)

    lines: list[str] = []
    forced = _ensure(docker_client, base, builder_files, lines, force=True)
    assert forced.image_id == assembled.image_id
    assert any(line.startswith("loading ") for line in lines), "--force did not rebuild"
    assert docker_client.images.get(assembled.tag).id == assembled.image_id


def _filesystem(client: Any, image: str, scratch: Path) -> dict[str, tuple[Any, ...]]:
    """Every path of a container of ``image``: kind, mode, owner, link target, content hash."""
    container = client.containers.create(image, command=["--version"])
    try:
        with scratch.open("wb") as fh:
            for chunk in container.export(chunk_size=1 << 20):
                fh.write(chunk)
    finally:
        container.remove(v=True)
    found: dict[str, tuple[Any, ...]] = {}
    with tarfile.open(scratch) as tar:
        for member in tar:
            digest = ""
            if member.isreg():
                source = tar.extractfile(member)
                assert source is not None
                digest = hashlib.sha256(source.read()).hexdigest()
            found[member.name.rstrip("/")] = (member.type, member.mode & 0o7777, member.uid, member.gid,
                                              member.linkname, member.size, digest)
    scratch.unlink()
    return found


def test_the_assembled_image_matches_a_dockerfile_build(  # type: ignore[no-untyped-def]
    docker_client, assembled, private_base, builder_files, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    def refuse(*_args: object, **_kwargs: object) -> str:
        raise images.CannotAssemble("this test wants the Dockerfile built by the engine")

    monkeypatch.setattr(builder_module, "assemble_image", refuse)
    lines: list[str] = []
    classic = _ensure(docker_client, private_base(), builder_files, lines)
    assert any(line.startswith("Step ") for line in lines), "the classic builder did not run"
    assert classic.inputs["tool"] == assembled.inputs["tool"], "the tool's dependencies resolved differently"
    assert classic.inputs["runtime"] == assembled.inputs["runtime"]

    theirs = _filesystem(docker_client, classic.tag, tmp_path / "classic.tar")
    ours = _filesystem(docker_client, assembled.tag, tmp_path / "assembled.tar")
    differ = sorted(path for path in theirs.keys() | ours.keys() if theirs.get(path) != ours.get(path))
    report = [f"{path}: dockerfile {theirs.get(path)} / assembled {ours.get(path)}" for path in differ[:20]]
    assert not differ, f"{len(differ)} paths differ:\n" + "\n".join(report)
    pycs = [path for path in ours if path.endswith(".pyc")]
    assert len(pycs) > 1000 and all("site-packages/" in path for path in pycs)

    classic_attrs = docker_client.images.get(classic.tag).attrs
    our_attrs = docker_client.images.get(assembled.tag).attrs
    for key in CONFIG_FIELDS:
        assert classic_attrs["Config"].get(key) == our_attrs["Config"].get(key), key
    assert our_attrs["Config"]["WorkingDir"] == "/tmp"
    classic_labels, our_labels = dict(classic_attrs["Config"]["Labels"]), dict(our_attrs["Config"]["Labels"])
    classic_inputs = json.loads(classic_labels.pop(images.LABEL_INPUTS))
    our_inputs = json.loads(our_labels.pop(images.LABEL_INPUTS))
    assert classic_labels == our_labels
    for inputs in (classic_inputs, our_inputs):  # the base's alias is in the Dockerfile's comment
        del inputs["base_image"]["reference"], inputs["dockerfile_sha256"]
    assert classic_inputs == our_inputs
    assert (classic_attrs["Architecture"], classic_attrs["Os"]) == (our_attrs["Architecture"], our_attrs["Os"])
    assert classic_attrs["RootFS"]["Layers"][0] == our_attrs["RootFS"]["Layers"][0]
    assert classic_attrs["Created"] != FIXED_CREATED
