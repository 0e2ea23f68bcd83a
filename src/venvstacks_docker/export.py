"""local-export: copy built layers to a folder on this machine and run their postinstall.

The same filtering as publishing (``staging.stage_layer``), without archives: files are
hard-linked from the build folder where the file system allows it.  Metadata has the
common venvstacks fields only (no archive fields).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from venvstacks_docker import build as _build
from venvstacks_docker import platforms as _plat
from venvstacks_docker._run import run
from venvstacks_docker.errors import PublishError
from venvstacks_docker.locking import folder_lock, hold
from venvstacks_docker.metadata import METADATA_DIR, read_json, write_json_if_changed
from venvstacks_docker.oslayout import layout
from venvstacks_docker.publish import (
    collect_layer_metadata,
    layer_metadata,
    metadata_paths,
)
from venvstacks_docker.spec import LayerSpec
from venvstacks_docker.staging import stage_layer

POSTINSTALL_ORDER = {"runtime": 0, "framework": 1, "application": 2}


def export_layers(
    ctx: _build.BuildContext,
    layers: list[LayerSpec],
    out: Path,
    *,
    force: bool = False,
    on_event: Callable[[str], None] | None = None,
) -> tuple[list[tuple[LayerSpec, Path, str]], Path]:
    """Export ``layers`` into ``out``; returns (layer, folder, status) and the manifest path.

    Holds the build and export folders' locks (waiting for another run that uses them).
    """
    out = out.absolute()
    locks = [folder_lock(ctx.build_dir, "the build folder"), folder_lock(out, "the export folder")]
    with hold(locks, command="local-export", say=on_event or (lambda message: None)):
        return _export_layers(ctx, layers, out, force=force, on_event=on_event)


def _export_layers(
    ctx: _build.BuildContext,
    layers: list[LayerSpec],
    out: Path,
    *,
    force: bool,
    on_event: Callable[[str], None] | None,
) -> tuple[list[tuple[LayerSpec, Path, str]], Path]:
    out.mkdir(parents=True, exist_ok=True)
    results: list[tuple[LayerSpec, Path, str]] = []
    to_postinstall: list[tuple[LayerSpec, Path, Path, dict[str, Any]]] = []
    for layer in sorted(layers, key=lambda layer: POSTINSTALL_ORDER[layer.kind]):
        meta = layer_metadata(ctx.spec, layer)
        record = read_json(ctx.record_path(layer)) or {}
        meta_export = {**meta, "venvstacks_docker": {"build_inputs": record.get("inputs"),
                                                     "modules": record.get("modules")}}
        folder = out / meta["install_target"]
        meta_file = metadata_paths(out, layer, ctx.platform, False)
        if not force and folder.exists() and read_json(meta_file) == meta_export:
            results.append((layer, folder, "unchanged"))
            continue
        if on_event:
            on_event(f"exporting {layer.env_name}")
        tmp = out / f".{meta['install_target']}.exporting"
        if tmp.exists():
            shutil.rmtree(tmp)
        stage_layer(ctx, layer, tmp)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.replace(folder)
        # the metadata is written once the layer's postinstall has run (below)
        to_postinstall.append((layer, folder, meta_file, meta_export))
        results.append((layer, folder, "exported"))
    for layer, folder, meta_file, meta_export in to_postinstall:
        rt = ctx.spec.runtime_of(layer)
        rt_folder = out / layer_metadata(ctx.spec, rt)["install_target"]
        python = rt_folder / layout(_plat.os_of(ctx.platform), "runtime", rt.py_minor).python  # python.exe on Windows
        if not python.exists():
            raise PublishError(f"cannot run postinstall for {layer.env_name}: runtime {rt_folder} not exported",
                               hint="export the runtime layer too (drop --include or add it)")
        run([python, "-X", "utf8", "-I", folder / "postinstall.py"],
            what=f"postinstall of {layer.env_name}", error=PublishError)
        write_json_if_changed(meta_file, meta_export)
    manifest = _write_export_manifest(ctx, out)
    return results, manifest


def _write_export_manifest(ctx: _build.BuildContext, out: Path) -> Path:
    # the combined export manifest has venvstacks' fields only (no build records)
    groups = {
        kind: [{k: v for k, v in data.items() if k != "venvstacks_docker"} for data in entries]
        for kind, entries in collect_layer_metadata(ctx, out, False).items()
    }
    path = out / METADATA_DIR / "venvstacks.json"
    write_json_if_changed(path, {"layers": groups})
    return path
