"""Assembling the builder image on the host, so the same inputs give the same image ID.

The engine's classic builder stamps every step with the time it ran, so two builds of
one Dockerfile get two image IDs.  Instead, the host carries out the rendered
Dockerfile itself (:mod:`.recipe`): it stages the one new layer (:mod:`.layer`),
compiling the bytecode with the image's own relocatable interpreter at the paths the
image will have, writes the config with a fixed ``created`` time, and loads the result
as a ``docker save``-style archive (:mod:`.imagetar`).  The base image's layers are
taken as the engine saves them.

When the host cannot do that (a foreign-architecture target, a non-Linux host, an
interpreter that will not run here, a template outside the subset), it says why with
:class:`~.recipe.CannotAssemble` and the caller builds from the Dockerfile instead.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from venvstacks_docker.errors import ContainerError
from venvstacks_docker.host.images.common import TOOL_PYTHON, ProgressCallback, host_target, id_of
from venvstacks_docker.host.images.imagetar import image_config, load_image_tar, save_base, write_image_tar
from venvstacks_docker.host.images.layer import Stage, image_rel
from venvstacks_docker.host.images.recipe import (
    CannotAssemble,
    Check,
    Compile,
    CopyDir,
    MakeDirs,
    Step,
    Unpack,
    Workdir,
    read_recipe,
)

if TYPE_CHECKING:
    import docker
    from docker.models.images import Image

_TAIL_LINES = 25


def assembly_refusal(target: str) -> str | None:
    """Why this host cannot assemble a builder image for ``target``, or ``None``."""
    if sys.platform != "linux":
        return f"the image's Linux interpreter cannot run on this {sys.platform} host to compile its bytecode"
    if target != host_target():
        return (f"{target} is not this machine's architecture ({host_target()}), so the image's "
                "interpreter cannot run here to compile its bytecode")
    return None


def assemble_image(
    client: docker.DockerClient,
    *,
    base: Image,
    context: Path,
    dockerfile: bytes,
    target: str,
    tag: str,
    labels: dict[str, str],
    work: Path,
    on_progress: ProgressCallback,
) -> str:
    """Assemble the image ``dockerfile`` describes from the build context ``context``,
    load it into the engine as ``tag`` and return its ID.

    :raises CannotAssemble: before anything is loaded, when this host cannot do it.
    :raises ContainerError: when a step fails (as it would in the engine's build) or the
        engine refuses the image.
    """
    refusal = assembly_refusal(target)
    if refusal is not None:
        raise CannotAssemble(refusal)
    work.mkdir(parents=True, exist_ok=True)
    on_progress("saving the base image's layers from the engine")
    saved = save_base(client, id_of(base), work / "base.tar")
    recipe = read_recipe(dockerfile, python=TOOL_PYTHON, base_config=saved.config)
    if recipe.base != id_of(base):
        raise CannotAssemble(f"FROM {recipe.base} is not the resolved base image {id_of(base)}")
    stage = Stage(work / "stage", saved.index)
    runner = _Runner(stage, context, on_progress)
    for step in recipe.steps:
        runner.run(step)
    on_progress("writing the image layer")
    diff_id = "sha256:" + stage.write_layer(work / "layer.tar")
    shutil.rmtree(stage.root)
    config = image_config(recipe, saved.config, labels=labels, diff_ids=[*saved.diff_ids, diff_id])
    expected = write_image_tar(work / "image.tar", base=saved, layer=work / "layer.tar", diff_id=diff_id,
                               config=config, tag=tag)
    (work / "layer.tar").unlink()
    saved.tar.unlink()
    on_progress(f"loading {tag} ({expected[:19]}) into the engine")
    load_image_tar(client, work / "image.tar")
    image = client.images.get(tag)
    # Tag it again: `docker load` leaves the engine's LastTagTime unset, and with every
    # image created in 1980 that is what tells the newest apart (`image prune`).
    image.tag(*tag.split(":", 1), force=True)
    image_id = id_of(image)
    if image_id != expected:
        on_progress(f"the engine named {tag} {image_id[:19]}, not by its config digest {expected[:19]} "
                    "(an engine with the containerd image store names images by their manifest)")
    return image_id


class _Runner:
    """Carries out the recipe's steps in the stage."""

    def __init__(self, stage: Stage, context: Path, on_progress: ProgressCallback) -> None:
        self.stage = stage
        self.context = context
        self.on_progress = on_progress
        self.python = stage.path(image_rel(TOOL_PYTHON))
        self.probed = False

    def run(self, step: Step) -> None:
        if isinstance(step, Unpack):
            source = self._context_path(step.src)
            self.on_progress(f"unpacking {step.src} into {step.dest}")
            self.stage.unpack(source, step.dest)
        elif isinstance(step, CopyDir):
            source = self._context_path(step.src)
            if not source.is_dir():
                raise CannotAssemble(f"{step.src}/ is not a folder of the build context")
            self.stage.copy_dir(source, step.dest)
        elif isinstance(step, MakeDirs):
            self.stage.make_dirs(step.paths, step.mode)
        elif isinstance(step, Workdir):
            self.stage.workdir(step.path)
        elif isinstance(step, Compile):
            self._compile(step)
        else:
            self._check(step)

    def _context_path(self, name: str) -> Path:
        path = self.context / name
        if not path.exists():
            raise CannotAssemble(f"{name} is not in the build context")
        return path

    def _compile(self, step: Compile) -> None:
        self._probe(step.env)
        for folder in step.dirs:
            staged = self.stage.path(image_rel(folder))
            if not staged.is_dir() or staged.is_symlink():
                raise CannotAssemble(f"compileall {folder}: the Dockerfile did not make that folder")
            self.on_progress(f"compiling {folder} (serially, as {folder})")
            # -d: the .pyc files name the sources by their paths in the image.
            argv = [str(self.python), *step.flags, "-m", "compileall", *step.options, "-d", folder, str(staged)]
            done = self._host_run(argv, step.env)
            if done.returncode != 0:
                tail = (done.stderr or done.stdout or "").strip().splitlines()[-_TAIL_LINES:]
                detail = "\n".join("    " + line for line in tail) or "    (no output)"
                raise ContainerError(
                    f"building the builder image failed: compileall {folder} (run on the host with the "
                    f"image's interpreter) exited with {done.returncode}:\n{detail}",
                    hint="the same step fails in a Dockerfile build: a file does not compile",
                )

    def _check(self, step: Check) -> None:
        """Run the check with the staged files.  A check that fails here may fail only
        here (an older C library than the base's, say), so the engine gets the last
        word: fall back to building the Dockerfile, which runs it in the image."""
        self._probe(step.env)
        self.on_progress(f"checking: python -c {step.code!r}")
        done = self._host_run([str(self.python), *step.flags, "-c", step.code], step.env)
        if done.returncode != 0:
            last = (done.stderr or done.stdout or "").strip().splitlines()[-1:] or ["no output"]
            raise CannotAssemble(f"`python -c {step.code!r}` failed on this host (exit {done.returncode}: {last[0]})")

    def _probe(self, env: tuple[str, ...]) -> None:
        """Can the image's interpreter run here at all?  If not, fall back."""
        if self.probed:
            return
        try:
            done = subprocess.run([str(self.python), "-I", "-B", "-c", "pass"], cwd=self.stage.root,
                                  env=_environ(env), capture_output=True, check=False, umask=0o022)
        except OSError as exc:
            raise CannotAssemble(f"the image's interpreter cannot run on this host ({exc})") from None
        if done.returncode != 0:
            raise CannotAssemble(f"the image's interpreter cannot run on this host (exit {done.returncode})")
        self.probed = True

    def _host_run(self, argv: list[str], env: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
        # Not _run.run: the step must run under umask 022, as in a build container, so
        # the files it makes get the modes they would get there.
        return subprocess.run(argv, cwd=self.stage.root, env=_environ(env), capture_output=True, text=True,
                              check=False, umask=0o022)


def _environ(env: tuple[str, ...]) -> dict[str, str]:
    """The image's environment at that step (``KEY=value`` entries), nothing from ours."""
    pairs = (item.partition("=") for item in env)
    return {key: value for key, _eq, value in pairs}
