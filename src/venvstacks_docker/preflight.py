"""Checks made before a command writes anything: folders and environment settings.

Every problem found here is a :class:`~venvstacks_docker.errors.SpecError` (exit code
2) naming the option, the problem and the fix, raised before any folder is created,
natively and (because the host runs these checks too) before a container starts.
"""

from __future__ import annotations

import os
from pathlib import Path

from venvstacks_docker.errors import SpecError
from venvstacks_docker.spec import StackSpec


def source_date_epoch_value() -> int | None:
    """``SOURCE_DATE_EPOCH`` from the environment (None when unset or empty).

    :raises SpecError: when it is not a whole number of seconds.
    """
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return None
    if not value.isdigit() or int(value) > 8**11 - 1:
        raise SpecError(f"SOURCE_DATE_EPOCH must be a whole number of seconds, not {value!r}",
                        hint="unset it, or set it to e.g. the last commit time: git log -1 --pretty=%ct")
    return int(value)


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _inside(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def _not_a_file(path: Path, option: str) -> None:
    if path.exists() and not path.is_dir():
        raise SpecError(f"{option} {path} is a file, not a folder",
                        hint=f"choose another {option}, or move the file out of the way")


def check_work_folders(spec: StackSpec, build_dir: Path, output_dir: Path | None, *,
                       output_option: str = "--output-dir") -> None:
    """Refuse build and output folders that are files or nested in each other.

    Nesting is refused because it feeds outputs back into inputs: an output folder in
    the build folder (or in a layer's folder there) puts earlier archives into later
    ones; a build folder in the output folder ships the whole build tree with the
    publication; either one inside a launch or support module package gets copied into
    the application layer.
    """
    _not_a_file(build_dir, "--build-dir")
    build = _real(build_dir)
    modules = [(layer.env_name, _real(m)) for layer in spec.applications
               for m in (layer.launch_module, *layer.support_modules) if m is not None and m.is_dir()]
    for name, module in modules:
        if _inside(build, module):
            raise SpecError(f"the build folder {build_dir} is inside the module {module} of layer {name}",
                            hint="put the build folder outside the launch/support module packages")
    if output_dir is None:
        return
    _not_a_file(output_dir, output_option)
    out = _real(output_dir)
    if out == build:
        raise SpecError(f"{output_option} and --build-dir are the same folder ({output_dir})",
                        hint="use separate folders, e.g. the defaults _build and _artifacts")
    if _inside(out, build):
        raise SpecError(f"the output folder {output_dir} is inside the build folder {build_dir}",
                        hint="archives would end up inside later archives; choose an output folder "
                        "outside the build folder")
    if _inside(build, out):
        raise SpecError(f"the build folder {build_dir} is inside the output folder {output_dir}",
                        hint="the whole build tree would be shipped with the publication; choose "
                        "folders side by side, e.g. the defaults _build and _artifacts")
    for name, module in modules:
        if _inside(out, module):
            raise SpecError(f"the output folder {output_dir} is inside the module {module} of layer {name}",
                            hint="put the output folder outside the launch/support module packages")


__all__ = ["check_work_folders", "source_date_epoch_value"]
