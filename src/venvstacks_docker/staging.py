"""A built environment copied the way it is shipped: what publish archives and local-export copies."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from venvstacks_docker import build as _build
from venvstacks_docker import platforms as _plat
from venvstacks_docker.dynlib import BYPASS_NAME
from venvstacks_docker.errors import PublishError
from venvstacks_docker.oslayout import layout
from venvstacks_docker.spec import LayerSpec

POSTINSTALL = Path(__file__).parent / "_injected" / "postinstall.py"


def stage_layer(ctx: _build.BuildContext, layer: LayerSpec, dest: Path, *, hardlink: bool = True) -> None:
    """Copy a built environment to ``dest`` the way it is shipped.

    Drops ``__pycache__``/``.pyc``, the build-time ``sitecustomize.py`` and
    ``pyvenv.cfg`` (absolute paths), top-level hidden files; remakes the layered
    ``bin/python`` (and ``bin/python_``) for the lower layers' deployed folders; adds
    ``postinstall.py``.  Windows layers (see :mod:`.oslayout`) hold no links: a link to
    a file of the layer is shipped as a copy of that file, any other is refused, and
    ``Scripts/python.exe`` (the venv launcher, a copy already) is shipped as built.
    Files are hard-linked where possible (they are never modified in place).
    """
    src = ctx.env_dir(layer)
    if not src.exists():
        raise PublishError(f"layer {layer.env_name} is not built ({src} is missing)",
                           hint="run `venvstacks-docker build` first (or `build --publish`)")
    target_os = _plat.os_of(ctx.platform)
    windows = target_os == "win"
    site_rel = Path(layout(target_os, layer.kind, layer.py_minor).site_dir)
    lower = [_build.deployed_name(ctx.spec, low) for low in ctx.spec.lower_layers(layer)]
    remade = {Path("bin/python"), Path("bin") / BYPASS_NAME} if layer.kind != "runtime" and not windows else set()
    dest.mkdir(parents=True)
    for root, dirs, files in os.walk(src):
        rel_root = Path(root).relative_to(src)
        dirs.sort()
        keep_dirs = []
        for d in dirs:
            if d == "__pycache__" or (rel_root == Path() and d.startswith(".")):
                continue
            full = Path(root) / d
            if full.is_symlink():
                files.append(d)
                continue
            keep_dirs.append(d)
            (dest / rel_root / d).mkdir()
        dirs[:] = keep_dirs
        for name in sorted(files):
            rel = rel_root / name
            if rel_root == Path() and (name.startswith(".") or name == "pyvenv.cfg"):
                continue
            if name.endswith((".pyc", ".pyo")):
                continue
            if layer.kind != "runtime" and rel == site_rel / "sitecustomize.py":
                continue
            source = Path(root) / name
            target = dest / rel
            if rel in remade:
                continue  # made below, for the deployed names
            if source.is_symlink():
                _stage_link(source, target, src, layer, copy=windows)
            elif hardlink:
                try:
                    os.link(source, target)
                except OSError:
                    shutil.copy2(source, target)
            else:
                shutil.copy2(source, target)
    if remade:
        _build.link_python(dest / "bin", ctx.platform, lower[-1], lower)
    shutil.copyfile(POSTINSTALL, dest / "postinstall.py")
    (dest / "postinstall.py").chmod(0o644)


def _stage_link(source: Path, target: Path, src: Path, layer: LayerSpec, *, copy: bool) -> None:
    """A symlink of the built layer ``src``: kept as a relative link, or (``copy``:
    Windows layers) shipped as a copy of the file inside the layer it points at."""
    if copy:
        resolved = source.resolve()
        if not resolved.is_file() or src.resolve() not in resolved.parents:
            what = ("a folder" if resolved.is_dir() else "a file outside the layer" if resolved.exists()
                    else "nothing (a broken link)")
            raise PublishError(
                f"layer {layer.env_name}: {source.relative_to(src).as_posix()} is a symlink to {what}, "
                "and a Windows layer can hold no links",
                hint="make Windows environments with `venv --copies` (Scripts/python.exe is then "
                "the venv launcher) and remove other links from the build")
        shutil.copy2(resolved, target)
        return
    # the link's text, copied verbatim (Path would normalise it)
    link = os.readlink(source)  # noqa: PTH115
    if os.path.isabs(link):  # noqa: PTH117
        resolved = Path(link)
        if src in resolved.parents:
            target.symlink_to(os.path.relpath(resolved, source.parent))
        else:
            shutil.copy2(resolved, target)
    else:
        target.symlink_to(link)


__all__ = ["POSTINSTALL", "stage_layer"]
