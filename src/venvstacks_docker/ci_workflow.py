"""``ci github``: the GitHub Actions workflow that publishes a stack on every platform it targets.

Containers can build Linux targets only; macOS and Windows targets must be built on such
a machine.  The workflow is a matrix of runners, one job per target platform of the
stack (the union of its layers' ``platforms``), each publishing with ``--tag-outputs``
and uploading its output folder; a last job downloads them all, combines them with
``venvstacks-docker merge`` and verifies the result.

It is rendered from the Jinja2 template ``github-workflow.yml.j2``, kept and shipped with
the builder image templates (``Dockerfiles/``, see :mod:`venvstacks_docker.resources`),
with ``StrictUndefined``: the same stack, options and tool version always give the same
bytes.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final

from venvstacks_docker import __version__
from venvstacks_docker.errors import SpecError, VenvstacksDockerError
from venvstacks_docker.resources import dockerfiles_dir
from venvstacks_docker.runtime_build.recipe import BUILD_DEPENDENCIES
from venvstacks_docker.spec import StackSpec

TEMPLATE: Final = "github-workflow.yml.j2"
DEFAULT_OUTPUT: Final = Path(".github") / "workflows" / "venvstacks.yml"
#: Where each job's publish goes, relative to the stack file's folder.
OUTPUT_DIR: Final = "_artifacts"
#: The Python each job installs the tool into (the tool needs 3.11 or newer).
PYTHON_VERSION: Final = "3.11"
TIMEOUT_MINUTES: Final = 90
MERGE_RUNNER: Final = "ubuntu-24.04"
ARTIFACT_PREFIX: Final = "venvstacks-publish-"
#: The CPython the tool runs on in builder images (``host.images.TOOL_PYTHON_VERSION``;
#: a stage module may not import the host side, and a test keeps the two equal).
BUILDER_PYTHON: Final = "3.11.2"


@dataclass(frozen=True)
class Runner:
    """Where a target platform is published on GitHub Actions."""

    label: str
    container: bool
    """Whether the job runs the builder container (Linux) or publishes natively."""


#: Target platform -> GitHub-hosted runner, in the order the jobs are written.
RUNNERS: Final[dict[str, Runner]] = {
    "linux_x86_64": Runner("ubuntu-24.04", container=True),
    "linux_aarch64": Runner("ubuntu-24.04-arm", container=True),
    "macosx_arm64": Runner("macos-14", container=False),
    "macosx_x86_64": Runner("macos-13", container=False),
    "win_amd64": Runner("windows-2022", container=False),
    "win_arm64": Runner("windows-11-arm", container=False),
}


def target_platforms(spec: StackSpec) -> list[str]:
    """The platforms some layer of ``spec`` targets, in :data:`RUNNERS` order."""
    wanted = {plat for layer in spec.all_layers() for plat in layer.platforms}
    unknown = sorted(wanted - set(RUNNERS))
    if unknown:
        raise SpecError(f"no GitHub runner is known for {', '.join(unknown)}")
    if not wanted:
        raise SpecError(f"{spec.path.name} has no layer that targets a platform",
                        hint="give the runtime a `platforms` list")
    return [plat for plat in RUNNERS if plat in wanted]


def repository_root(workflow: Path | None, spec: StackSpec) -> Path:
    """The checkout the workflow runs in: the folder holding ``.github/workflows/``.

    When the workflow is written elsewhere (or printed: ``workflow`` is ``None``), the
    nearest folder above the stack file that holds ``.git``; failing that, the stack
    file's folder.
    """
    if workflow is not None:
        workflow = workflow.absolute()
        if workflow.parent.name == "workflows" and workflow.parent.parent.name == ".github":
            return workflow.parent.parent.parent
    for folder in (spec.spec_dir, *spec.spec_dir.parents):
        if (folder / ".git").exists():
            return folder
    return spec.spec_dir


_UNSAFE = re.compile(r"[\x00-\x1f\x7f]|\$\{\{")


def _checked(value: str, what: str) -> str:
    """``value`` unless it could break the YAML or be read as a GitHub expression."""
    if _UNSAFE.search(value):
        raise SpecError(f"{what} {value!r} cannot go into a workflow (control characters or '${{{{')",
                        hint="rename it, or pass another value")
    return value


def _sh(value: str) -> str:
    return shlex.quote(value)


def _q(value: str) -> str:
    """A YAML double-quoted scalar (JSON string syntax is valid YAML)."""
    return json.dumps(value, ensure_ascii=False)


def workflow_context(spec: StackSpec, *, workflow: Path | None, install: str | None = None,
                     command: str | None = None) -> dict[str, Any]:
    """The template context for the stack ``spec`` and the workflow file ``workflow``.

    :param workflow: where the file goes (``None``: printed), which tells the repository root.
    :param install: what ``pip install`` installs in every job (default
        ``venvstacks-docker==<this version>``: a release on the index; a Git URL or a
        wheel path also works).
    :param command: the command named in the header (default: the ``ci github`` command
        that makes this file, with paths relative to the repository root).
    """
    root = repository_root(workflow, spec)
    try:
        spec_rel = PurePosixPath(spec.path.absolute().relative_to(root).as_posix())
    except ValueError:
        raise SpecError(f"the stack file {spec.path} is outside the repository {root}",
                        hint="write the workflow into .github/workflows/ of the repository holding the "
                        "stack file") from None
    spec_text = _checked(str(spec_rel), "the stack file path")
    artifacts = str(spec_rel.parent / OUTPUT_DIR) if str(spec_rel.parent) != "." else OUTPUT_DIR
    install = _checked(install or f"venvstacks-docker=={__version__}", "the --install requirement")
    if command is None:
        try:
            shown = "-" if workflow is None else workflow.absolute().relative_to(root).as_posix()
        except ValueError:
            shown = str(workflow)
        command = f"venvstacks-docker ci github {_sh(spec_text)}"
        if Path(shown) != DEFAULT_OUTPUT:
            command += f" -o {_sh(shown)}"
        if install != f"venvstacks-docker=={__version__}":
            command += f" --install {_sh(install)}"
    jobs = [{"id": f"publish-{plat}", "name": f"publish {plat}", "platform": plat,
             "runner": RUNNERS[plat].label, "container": RUNNERS[plat].container,
             "artifact": f"{ARTIFACT_PREFIX}{plat}"} for plat in target_platforms(spec)]
    return {
        "command": _checked(command, "the command"),
        "tool_version": __version__,
        "spec": spec_text,
        "spec_sh": _sh(spec_text),
        "install": install,
        "install_sh": _sh(install),
        "output_dir_sh": _sh(OUTPUT_DIR),
        "artifacts": artifacts,
        "artifacts_sh": _sh(artifacts),
        "artifact_pattern": f"{ARTIFACT_PREFIX}*",
        "python_version": PYTHON_VERSION,
        "builder_python": BUILDER_PYTHON,
        "runtime_build_packages": " ".join(BUILD_DEPENDENCIES),
        "timeout_minutes": TIMEOUT_MINUTES,
        "merge_runner": MERGE_RUNNER,
        "jobs": jobs,
    }


def render_workflow(context: dict[str, Any], *, template: str = TEMPLATE) -> str:
    r"""Render the workflow template (``\n`` line ends, deterministic).

    :raises VenvstacksDockerError: (exit 1) the template is missing (a broken
        installation) or uses a variable the context lacks (a bug).
    """
    import jinja2

    folder = dockerfiles_dir()
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(folder), undefined=jinja2.StrictUndefined,
                             autoescape=False, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["q"] = _q
    env.filters["sh"] = _sh
    try:
        text = str(env.get_template(template).render(**context))
    except jinja2.TemplateNotFound:
        raise VenvstacksDockerError(f"workflow template {template!r} not found in {folder}",
                                    hint="the installation is incomplete; reinstall venvstacks-docker") from None
    except jinja2.UndefinedError as exc:
        raise VenvstacksDockerError(f"cannot render {template}: {exc.message}",
                                    hint="the template and its context disagree (a bug: please report it)") from None
    return text.replace("\r\n", "\n")


def github_workflow(spec: StackSpec, *, workflow: Path | None = None, install: str | None = None) -> str:
    """The workflow text for ``spec``, to be written at ``workflow`` (``None``: printed).

    The repository root comes from ``workflow`` (the folder above ``.github/workflows/``)
    or else from the stack file (:func:`repository_root`).
    """
    return render_workflow(workflow_context(spec, workflow=workflow, install=install))


__all__ = ["DEFAULT_OUTPUT", "RUNNERS", "TEMPLATE", "Runner", "github_workflow", "render_workflow",
           "repository_root", "target_platforms", "workflow_context"]
