"""``ensure_builder_image``: the builder image for a target, built only when its tag is new.

The host gathers every file the image needs into the build context (the tool's wheel
and dependencies, the runtime archive).  The image is then assembled on the host from
the rendered Dockerfile (:mod:`.assemble`), so the same inputs give the same image ID;
where the host cannot do that (a foreign-architecture target), the engine's classic
builder builds the Dockerfile, with networking off.  The tag is a hash over all inputs:
an existing tag is reused as-is, a changed input always yields a new tag.  A memo in
the cache, keyed by cheap fingerprints, finds the image of an unchanged tool without
building its wheel first.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from venvstacks_docker import __version__, ui
from venvstacks_docker.errors import ContainerError
from venvstacks_docker.host.images.assemble import assemble_image
from venvstacks_docker.host.images.base import BaseImageChoice, choose_base_image, resolve_base_image
from venvstacks_docker.host.images.common import (
    BUILDER_INPUTS_VERSION,
    BUILDER_REPOSITORY,
    ENGINE_ARCH,
    LABEL_INPUTS,
    LABEL_ROLE,
    LABEL_VERSION,
    TOOL_PYTHON_VERSION,
    ProgressCallback,
    check_target,
    host_target,
    id_of,
    ignore_progress,
    image_or_none,
    remove_images,
)
from venvstacks_docker.host.images.recipe import CannotAssemble
from venvstacks_docker.host.images.render import builder_context, render_dockerfile, write_context_tar
from venvstacks_docker.host.images.tool import (
    find_runtime_archive,
    find_tool_wheel,
    install_site,
    tool_fingerprint,
    tree_sha256,
)
from venvstacks_docker.locking import cache_lock
from venvstacks_docker.metadata import sha256_file

if TYPE_CHECKING:
    import docker
    from docker.models.images import Image

_BUILD_LOG_TAIL: Final = 40


@dataclass(frozen=True, kw_only=True)
class BuilderImage:
    """A builder image in the local engine, and what went into it."""

    #: ``venvstacks-docker-builder:<16 hex>``.
    tag: str
    #: The engine's image ID (config digest), ``sha256:...``.
    image_id: str
    #: Everything the tag hashes (stored as JSON in the image's
    #: ``venvstacks-docker.inputs`` label); publish records it in metadata.
    inputs: dict[str, Any] = field(default_factory=dict)


def inputs_tag(inputs: Mapping[str, Any]) -> str:
    """``venvstacks-docker-builder:<first 16 hex of sha256(canonical JSON of inputs)>``."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()
    return f"{BUILDER_REPOSITORY}:{hashlib.sha256(canonical).hexdigest()[:16]}"


# --------------------------------------------------------------------------- docker build


def _build_failure(what: str, tail: deque[str]) -> ContainerError:
    log_tail = "\n".join("    " + line for line in tail) or "    (no output)"
    return ContainerError(
        f"building the builder image failed: {what}\nlast lines of the build log:\n{log_tail}",
        hint="rerun with --verbose for the whole log; the build runs without network, so a "
        "step that downloads something cannot work",
    )


class _BuildLog:
    """Follows the classic builder's JSON stream: progress lines, the step images it
    committed, the log's tail and the new image's ID."""

    def __init__(self, on_progress: ProgressCallback) -> None:
        self.on_progress = on_progress
        self.tail: deque[str] = deque(maxlen=_BUILD_LOG_TAIL)
        self.step_images: list[str] = []
        self.image_id: str | None = None
        self.pending = ""
        self.failure: ContainerError | None = None

    def feed(self, chunk: dict[str, Any]) -> None:
        if "stream" in chunk:
            self.pending += str(chunk["stream"])
            *lines, self.pending = self.pending.split("\n")
            for line in lines:
                self._line(line.rstrip())
        elif "status" in chunk:
            self.on_progress(str(chunk["status"]))
        elif "aux" in chunk and isinstance(chunk["aux"], dict):
            self.image_id = chunk["aux"].get("ID", self.image_id)
        if "error" in chunk and self.failure is None:
            if self.pending.strip():
                self.tail.append(self.pending.rstrip())
            self.failure = _build_failure(str(chunk["error"]).strip(), self.tail)

    def _line(self, line: str) -> None:
        if not line:
            return
        self.tail.append(line)
        self.on_progress(line)
        # " ---> 0d3d00151c1a": an image this build committed (or reused).
        if line.startswith(" ---> ") and " " not in line[6:].strip():
            self.step_images.append(line[6:].strip())


def _stream_build(
    client: docker.DockerClient,
    context_tar: Path,
    *,
    tag: str,
    labels: dict[str, str],
    nocache: bool,
    platform_name: str | None,
    keep: set[str],
    on_progress: ProgressCallback,
) -> str:
    """Run the classic-builder build of ``context_tar``; return the new image ID.

    Whatever way it fails, the untagged step images it committed are removed.
    """
    import docker

    log = _BuildLog(on_progress)
    try:
        with context_tar.open("rb") as fh:
            stream = client.api.build(
                fileobj=fh,
                custom_context=True,
                tag=tag,
                labels=labels,
                nocache=nocache,
                pull=False,
                rm=True,
                forcerm=True,
                network_mode="none",
                platform=platform_name,
                decode=True,
                use_config_proxy=False,  # proxy build args would change the image
            )
            for chunk in stream:  # read to the end even after an error: that closes the response
                log.feed(chunk)
        if log.failure is not None:
            raise log.failure
    except docker.errors.APIError as exc:
        remove_images(client, log.step_images, keep)
        raise _build_failure(str(exc.explanation or exc), log.tail) from None
    except BaseException:
        remove_images(client, log.step_images, keep)
        raise
    return log.image_id if log.image_id is not None else id_of(client.images.get(tag))


# --------------------------------------------------------------------------- memo


def memo_dir() -> Path:
    """Where the lookup memos of builder images are (``<cache>/builder-images``)."""
    from venvstacks_docker.runtimes import cache_root

    return cache_root() / "builder-images"


def _memo_path(target: str, base: tuple[str, str], runtime_sha: str, tool: str) -> Path:
    """The memo of the image for these fingerprints; ``base`` is (reference, ID): the
    reference is an input too (it is in the Dockerfile and the inputs label)."""
    fields = [str(BUILDER_INPUTS_VERSION), target, *base, runtime_sha, tool]
    key = hashlib.sha256("\0".join(fields).encode()).hexdigest()
    return memo_dir() / f"{key[:32]}.json"


def _memo_lookup(client: docker.DockerClient, memo: Path) -> BuilderImage | None:
    try:
        data = json.loads(memo.read_text(encoding="utf-8"))
        tag, image_id = str(data["tag"]), str(data["image_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    image = image_or_none(client, tag)
    if image is None or image.id != image_id:
        return None
    return BuilderImage(tag=tag, image_id=image_id, inputs=dict(data.get("inputs", {})))


def _memo_store(memo: Path, image: BuilderImage) -> None:
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_suffix(f".tmp-{uuid.uuid4().hex[:16]}")
    payload = {"tag": image.tag, "image_id": image.image_id, "inputs": image.inputs}
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(memo)


def _existing_builder(client: docker.DockerClient, tag: str) -> BuilderImage | None:
    image = image_or_none(client, tag)
    if image is None:
        return None
    try:
        inputs = json.loads(image.labels.get(LABEL_INPUTS, "{}"))
    except json.JSONDecodeError:
        inputs = {}
    return BuilderImage(tag=tag, image_id=id_of(image), inputs=inputs)


# --------------------------------------------------------------------------- ensure_builder_image


@dataclass(frozen=True, kw_only=True)
class _Plan:
    """The inputs of one builder image that are known before its context is made."""

    target: str
    choice: BaseImageChoice
    base: Image
    runtime_path: Path
    runtime_sha: str
    force: bool
    on_progress: ProgressCallback


def ensure_builder_image(
    target: str = "linux_x86_64",
    *,
    base_image: str | None = None,
    spec_base_image: str | None = None,
    force: bool = False,
    client: docker.DockerClient | None = None,
    runtime_archive: Path | None = None,
    tool_wheel: Path | None = None,
    on_progress: ProgressCallback = ignore_progress,
) -> BuilderImage:
    """Return the builder image for ``target``, building it only when its tag is missing.

    :param target: ``"linux_x86_64"`` or ``"linux_aarch64"``.
    :param base_image: ``--base-image`` from the command line (wins over everything).
    :param spec_base_image: ``[tool.venvstacks-docker] base_image`` from the stack file.
    :param force: rebuild (without the layer cache) even if the tag exists.
    :param client: engine client; :func:`~venvstacks_docker.host.engine.connect` by default.
    :param runtime_archive: use this install_only archive instead of looking one up.
    :param tool_wheel: use this venvstacks-docker wheel instead of building one.
    :param on_progress: called with each line of progress and build output.
    :raises ContainerError: for every failure, with the build log's tail when the build
        itself fails.
    """
    from venvstacks_docker.host.engine import connect

    check_target(target)
    client = client or connect()
    choice = choose_base_image(target, cli=base_image, spec=spec_base_image, client=client)
    base = resolve_base_image(client, choice, target)
    on_progress(f"base image: {choice.reference} ({choice.source}, {id_of(base)[:19]})")
    if runtime_archive is not None:
        runtime_path, runtime_sha = Path(runtime_archive), sha256_file(Path(runtime_archive))
    else:
        runtime_path, runtime_sha = find_runtime_archive(target)
    plan = _Plan(target=target, choice=choice, base=base, runtime_path=runtime_path,
                 runtime_sha=runtime_sha, force=force, on_progress=on_progress)

    # Fast path: the same tool files, base and runtime were turned into an image before.
    # (Skipped with an explicit wheel: its bytes are the input then.)
    memo = None
    if tool_wheel is None:
        memo = _memo_path(target, (choice.reference, id_of(base)), runtime_sha, tool_fingerprint())
        known = None if force else _memo_lookup(client, memo)
        if known is not None:
            on_progress(f"builder image {known.tag} already exists ({known.image_id[:19]})")
            return known
    # One build per target at a time; the second waits, then finds the tag made.
    with cache_lock(f"builder-{target}"), tempfile.TemporaryDirectory(prefix="venvstacks-docker-ctx-") as tmp:
        built = _make_image(client, plan, Path(tmp), tool_wheel)
    if memo is not None:
        _memo_store(memo, built)
    return built


def _make_image(client: docker.DockerClient, plan: _Plan, work: Path, tool_wheel: Path | None) -> BuilderImage:
    """Make the context in ``work``; build it unless an image with its tag exists."""
    ctx = work / "context"
    (ctx / "runtime").mkdir(parents=True)
    wheel = Path(tool_wheel) if tool_wheel is not None else find_tool_wheel(work / "wheel",
                                                                            on_progress=plan.on_progress)
    plan.on_progress("resolving venvstacks-docker's dependencies for the image")
    install_site(wheel, plan.target, ctx / "site", ctx / "bin")
    dockerfile = render_dockerfile(builder_context(
        target=plan.target,
        base_image=id_of(plan.base),
        base_image_ref=plan.choice.reference,
        runtime_archive=plan.runtime_path.name,
    ))
    inputs = _inputs(plan, dockerfile, wheel, ctx)
    tag = inputs_tag(inputs)
    existing = _existing_builder(client, tag)
    if existing is not None and not plan.force:
        plan.on_progress(f"builder image {tag} already exists ({existing.image_id[:19]})")
        return existing
    plan.on_progress(f"building {tag}")
    (ctx / "Dockerfile").write_bytes(dockerfile)
    shutil.copyfile(plan.runtime_path, ctx / "runtime" / plan.runtime_path.name)
    labels = {
        LABEL_ROLE: "builder",
        LABEL_VERSION: __version__,
        LABEL_INPUTS: json.dumps(inputs, sort_keys=True),
        "venvstacks-docker.target": plan.target,
    }
    image_id = _assemble_or_build(client, plan, work, dockerfile=dockerfile, tag=tag, labels=labels)
    if existing is not None and existing.image_id != image_id:
        # A forced rebuild moved the tag; drop the old image if nothing else uses it.
        remove_images(client, [existing.image_id], keep=set())
    plan.on_progress(f"built {tag} ({image_id[:19]})")
    return BuilderImage(tag=tag, image_id=image_id, inputs=inputs)


def _assemble_or_build(client: docker.DockerClient, plan: _Plan, work: Path, *, dockerfile: bytes, tag: str,
                       labels: dict[str, str]) -> str:
    """Assemble the image on the host (same inputs, same ID); where the host cannot,
    build the Dockerfile with the engine's classic builder, and say so."""
    try:
        return assemble_image(client, base=plan.base, context=work / "context", dockerfile=dockerfile,
                              target=plan.target, tag=tag, labels=labels, work=work / "assemble",
                              on_progress=plan.on_progress)
    except CannotAssemble as why:
        message = (f"building {tag} from its Dockerfile with the engine's classic builder, because {why}: "
                   "its image ID will differ from one build to the next (its tag still names its inputs)")
        plan.on_progress(message)
        ui.current().note(message)
    shutil.rmtree(work / "assemble", ignore_errors=True)
    context_tar = work / "context.tar"
    write_context_tar(work / "context", context_tar)
    return _stream_build(
        client,
        context_tar,
        tag=tag,
        labels=labels,
        nocache=plan.force,
        platform_name=None if plan.target == host_target() else f"linux/{ENGINE_ARCH[plan.target]}",
        keep={id_of(plan.base), plan.base.short_id.removeprefix("sha256:")},
        on_progress=plan.on_progress,
    )


def _inputs(plan: _Plan, dockerfile: bytes, wheel: Path, ctx: Path) -> dict[str, Any]:
    """Everything the builder tag hashes (and the image's inputs label holds)."""
    return {
        "inputs_version": BUILDER_INPUTS_VERSION,
        "target": plan.target,
        "dockerfile_sha256": hashlib.sha256(dockerfile).hexdigest(),
        "base_image": {"reference": plan.choice.reference, "id": plan.base.id},
        "tool": {
            "name": "venvstacks-docker",
            "version": __version__,
            "wheel": wheel.name,
            "wheel_sha256": sha256_file(wheel),
            "site_sha256": tree_sha256(ctx / "site"),
            "bin_sha256": tree_sha256(ctx / "bin"),
        },
        "runtime": {
            "implementation": "cpython",
            "version": TOOL_PYTHON_VERSION,
            "archive": plan.runtime_path.name,
            "sha256": plan.runtime_sha,
        },
    }
