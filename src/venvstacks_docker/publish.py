"""Publish built layers: one reproducible archive per layer plus venvstacks metadata.

Layout of the output folder (venvstacks-compatible)::

    <deploy>[-<plat>-<build>].tar.xz | .zip
    __venvstacks__/venvstacks[-<plat>].json          combined manifest
    __venvstacks__/env_metadata/<env>[-<plat>].json   one per layer

An archive is rebuilt only when something that goes into it changed (the lock, the
launch modules, the runtime archive, the tool or uv version, SOURCE_DATE_EPOCH); an
unchanged stack republishes in well under a second and rewrites nothing.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from venvstacks_docker import __version__
from venvstacks_docker import archive as _archive
from venvstacks_docker import build as _build
from venvstacks_docker import lock as _lock
from venvstacks_docker import platforms as _plat
from venvstacks_docker.errors import PublishError, SpecError
from venvstacks_docker.metadata import METADATA_VERSION, hash_strings, read_json, write_json_if_changed
from venvstacks_docker.spec import LayerSpec, StackSpec, module_hash, module_name

POSTINSTALL = Path(__file__).parent / "_injected" / "postinstall.py"
METADATA_DIR = "__venvstacks__"


def archive_format(plat: str) -> str:
    return "zip" if _plat.os_of(plat) == "win" else "tar.xz"


def source_date_epoch(locked_at: str) -> tuple[int, str]:
    """SOURCE_DATE_EPOCH from the environment, else the layer's lock time."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is not None and value != "":
        if not value.isdigit():
            raise SpecError(f"SOURCE_DATE_EPOCH must be a whole number of seconds, not {value!r}",
                            hint="unset it, or set it to e.g. the last commit time: git log -1 --pretty=%ct")
        return int(value), "environment"
    when = _dt.datetime.fromisoformat(locked_at)
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    return max(int(when.timestamp()), 315532800), "locked_at"


# --- metadata ---------------------------------------------------------------------


def layer_metadata(spec: StackSpec, layer: LayerSpec) -> dict[str, Any]:
    """The venvstacks metadata fields every publication (and export) has."""
    meta = _lock.read_meta(spec, layer) or {}
    rt = spec.runtime_of(layer)
    data: dict[str, Any] = {
        "layer_name": layer.env_name,
        "install_target": _build.deployed_name(spec, layer),
        "requirements_hash": meta.get("requirements_hash"),
        "lock_version": meta.get("lock_version", 1),
        "locked_at": meta.get("locked_at"),
        "runtime_layer": _build.deployed_name(spec, rt),
        "python_implementation": layer.python_implementation,
        "bound_to_implementation": layer.kind == "runtime",
    }
    if layer.kind != "runtime":
        data["required_layers"] = [_build.deployed_name(spec, fw) for fw in spec.linearised_frameworks(layer)]
    if layer.launch_module is not None:
        data["app_launch_module"] = module_name(layer.launch_module)
        data["app_launch_module_hash"] = module_hash(layer.launch_module)
        if layer.support_modules:
            data["app_support_modules"] = [{"name": module_name(m), "hash": module_hash(m)}
                                           for m in layer.support_modules]
    return data


def metadata_paths(out: Path, layer: LayerSpec, plat: str, tagged: bool) -> Path:
    suffix = f"-{plat}" if tagged else ""
    return out / METADATA_DIR / "env_metadata" / f"{layer.env_name}{suffix}.json"


def manifest_path(out: Path, plat: str, tagged: bool) -> Path:
    return out / METADATA_DIR / (f"venvstacks-{plat}.json" if tagged else "venvstacks.json")


# --- staging (shared with local-export) --------------------------------------------


def stage_layer(ctx: _build.BuildContext, layer: LayerSpec, dest: Path, *, hardlink: bool = True) -> None:
    """Copy a built environment to ``dest`` the way it is shipped.

    Drops ``__pycache__``/``.pyc``, the build-time ``sitecustomize.py`` and
    ``pyvenv.cfg`` (absolute paths), top-level hidden files; re-points the layered
    ``python`` link at the runtime's deployed folder; adds ``postinstall.py``.
    Files are hard-linked where possible (they are never modified in place).
    """
    src = ctx.env_dir(layer)
    if not src.exists():
        raise PublishError(f"layer {layer.env_name} is not built ({src} is missing)",
                           hint="run `venvstacks-docker build` first (or `build --publish`)")
    site_rel = ctx.site_packages(layer).relative_to(src)
    rt_deploy = _build.deployed_name(ctx.spec, ctx.spec.runtime_of(layer))
    dest.mkdir(parents=True)
    for root, dirs, files in os.walk(src):
        rel_root = Path(root).relative_to(src)
        dirs.sort()
        keep_dirs = []
        for d in dirs:
            if d == "__pycache__" or (rel_root == Path(".") and d.startswith(".")):
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
            if rel_root == Path(".") and (name.startswith(".") or name == "pyvenv.cfg"):
                continue
            if name.endswith((".pyc", ".pyo")):
                continue
            if layer.kind != "runtime" and rel == site_rel / "sitecustomize.py":
                continue
            source = Path(root) / name
            target = dest / rel
            if layer.kind != "runtime" and rel == Path("bin/python"):
                os.symlink(f"../../{rt_deploy}/bin/python", target)
            elif source.is_symlink():
                link = os.readlink(source)
                if os.path.isabs(link):
                    resolved = Path(link)
                    if src in resolved.parents:
                        os.symlink(os.path.relpath(resolved, source.parent), target)
                    else:
                        shutil.copy2(resolved, target)
                else:
                    os.symlink(link, target)
            elif hardlink:
                try:
                    os.link(source, target)
                except OSError:
                    shutil.copy2(source, target)
            else:
                shutil.copy2(source, target)
    shutil.copyfile(POSTINSTALL, dest / "postinstall.py")
    os.chmod(dest / "postinstall.py", 0o644)


# --- publishing -------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PublishedLayer:
    layer: LayerSpec
    metadata: dict[str, Any]
    archive: Path
    status: str
    """``"built"``, ``"reused"`` or ``"dry-run"``."""


def _our_metadata(ctx: _build.BuildContext, layer: LayerSpec, epoch: int, epoch_source: str,
                  fmt: str) -> dict[str, Any]:
    rt = ctx.spec.runtime_of(layer)
    rt_meta = (_lock.read_meta(ctx.spec, rt) or {}).get("runtime_archive") or {}
    ours: dict[str, Any] = {
        "metadata_version": METADATA_VERSION,
        "tool_version": __version__,
        "uv_version": _build.uv_version(),
        "source_date_epoch": epoch,
        "source_date_epoch_from": epoch_source,
        "runtime_archive_name": rt_meta.get("name"),
        "runtime_archive_sha256": rt_meta.get("sha256"),
        "archive_format": fmt,
        "compression": (_archive.xz_description(_plat.arch_of(ctx.platform))
                        if fmt == "tar.xz" else f"deflate level {_archive.ZIP_LEVEL}"),
    }
    # set by the host when this runs inside a builder container (host/orchestrator.py)
    tag = os.environ.get("VENVSTACKS_DOCKER_BUILDER_IMAGE")
    if tag:
        builder: dict[str, Any] = {"tag": tag, "id": os.environ.get("VENVSTACKS_DOCKER_BUILDER_IMAGE_ID")}
        try:
            builder["inputs"] = json.loads(os.environ.get("VENVSTACKS_DOCKER_BUILDER_INPUTS") or "null")
        except json.JSONDecodeError:
            builder["inputs"] = None
        ours["builder_image"] = builder
    return ours


def _inputs_hash(ctx: _build.BuildContext, layer: LayerSpec, base: dict[str, Any], ours: dict[str, Any]) -> str:
    record = read_json(ctx.record_path(layer)) or {}
    items = [f"{k}={base[k]}" for k in sorted(base)]
    items += [f"ours.{k}={ours[k]}" for k in sorted(ours) if k not in ("builder_image", "source_date_epoch_from")]
    # where the build folder is does not change archive bytes, so it is not an input here
    build_inputs = {k: v for k, v in (record.get("inputs") or {}).items() if k != "build_dir"}
    items.append(f"build_inputs={build_inputs}")
    items.append(f"modules={record.get('modules')}")
    return hash_strings(items)


def publish_layers(
    ctx: _build.BuildContext,
    layers: list[LayerSpec],
    out: Path,
    *,
    tag_outputs: bool = False,
    force: bool = False,
    dry_run: bool = False,
    jobs: int | None = None,
    on_event: Callable[[str], None] | None = None,
) -> tuple[list[PublishedLayer], Path]:
    """Archive ``layers`` into ``out`` and write their metadata.

    :returns: the published layers and the manifest path.
    """
    spec = ctx.spec
    plat = ctx.platform
    fmt = archive_format(plat)
    out = out.absolute()
    work = ctx.build_dir / "_publish"
    plans: list[tuple[LayerSpec, dict[str, Any], Path, bool]] = []
    for layer in layers:
        if _lock.lock_problems(spec, layer):
            raise PublishError(f"layer {layer.env_name} has no valid lock",
                               hint="run `venvstacks-docker lock` (and build) first")
        base = layer_metadata(spec, layer)
        epoch, epoch_source = source_date_epoch(base["locked_at"])
        ours = _our_metadata(ctx, layer, epoch, epoch_source, fmt)
        ours["inputs_hash"] = _inputs_hash(ctx, layer, base, ours)
        meta_file = metadata_paths(out, layer, plat, tag_outputs)
        previous = read_json(meta_file) or {}
        prev_ours = previous.get("venvstacks_docker") or {}
        same_lock = previous.get("lock_version") == base["lock_version"]
        archive_build = int(previous.get("archive_build", 0)) if same_lock else 0
        same_inputs = (
            same_lock
            and prev_ours.get("inputs_hash") == ours["inputs_hash"]
            and all(previous.get(k) == v for k, v in base.items())
            and previous.get("target_platform") == plat
        )
        if not same_inputs or force:
            archive_build += 1
        archive_build = max(archive_build, 1)
        suffix = _archive.archive_suffix(fmt)
        name = f"{base['install_target']}-{plat}-{archive_build}{suffix}" if tag_outputs \
            else f"{base['install_target']}{suffix}"
        metadata = {**base, "archive_build": archive_build, "archive_name": name, "target_platform": plat,
                    "venvstacks_docker": ours}
        archive_path = out / name
        reuse = (
            same_inputs and not force and previous.get("archive_name") == name
            and archive_path.exists() and archive_path.stat().st_size == previous.get("archive_size")
        )
        if reuse:
            metadata["archive_size"] = previous["archive_size"]
            metadata["archive_hashes"] = previous["archive_hashes"]
            ours["archive_tar_sha256"] = prev_ours.get("archive_tar_sha256")
        plans.append((layer, metadata, archive_path, reuse))

    if dry_run:
        return [PublishedLayer(layer=l, metadata=m, archive=p, status="dry-run") for l, m, p, _ in plans], \
            manifest_path(out, plat, tag_outputs)

    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    cancel = threading.Event()

    def do(plan: tuple[LayerSpec, dict[str, Any], Path, bool]) -> PublishedLayer:
        layer, metadata, archive_path, reuse = plan
        if reuse:
            return PublishedLayer(layer=layer, metadata=metadata, archive=archive_path, status="reused")
        if on_event:
            on_event(f"archiving {layer.env_name}")
        stage = work / layer.env_name
        if stage.exists():
            shutil.rmtree(stage)
        try:
            stage_layer(ctx, layer, stage)
            result = _archive.write_archive(stage, archive_path, root_name=metadata["install_target"],
                                            mtime=metadata["venvstacks_docker"]["source_date_epoch"],
                                            fmt=fmt, cancel=cancel, arch=_plat.arch_of(plat))
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        ours = {**metadata["venvstacks_docker"], "archive_tar_sha256": result.tar_sha256}
        metadata = {**metadata, "archive_size": result.size, "archive_hashes": {"sha256": result.sha256},
                    "venvstacks_docker": ours}
        return PublishedLayer(layer=layer, metadata=metadata, archive=archive_path, status="built")

    # Layers are archived concurrently and each archive compresses its chunks on a
    # thread pool; output bytes do not depend on either.
    workers = max(1, min(len(plans), jobs or os.cpu_count() or 1))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="publish")
    try:
        results = list(pool.map(do, plans))
    except BaseException:
        # Ctrl-C or a failed layer: stop the other archive writers; each removes its
        # temporary file, so no archive appears and no metadata is written
        cancel.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    for item in results:
        write_json_if_changed(metadata_paths(out, item.layer, plat, tag_outputs), item.metadata)
    manifest = write_manifest(ctx, out, tag_outputs)
    return results, manifest


def remove_stale_temporaries(out: Path, *, any_pid: bool = False) -> None:
    """Remove temporary files a killed earlier run left (only our own naming patterns).

    Temporaries of a process that is still alive are kept, unless ``any_pid`` (used
    after a builder container died: its process ids mean nothing on the host).
    """
    for folder in (out, out / METADATA_DIR, out / METADATA_DIR / "env_metadata"):
        if not folder.is_dir():
            continue
        for item in folder.iterdir():
            name = item.name
            if item.is_file() and name.startswith(".") and (".tmp-" in name or name.endswith(".tmp")):
                pid = name.rsplit(".tmp-", 1)[-1] if ".tmp-" in name else ""
                if not any_pid and pid.isdigit() and _alive(int(pid)):
                    continue
                item.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def collect_layer_metadata(ctx: _build.BuildContext, out: Path, tagged: bool) -> dict[str, list[dict[str, Any]]]:
    """The per-layer metadata files in ``out`` of this stack's layers, grouped by kind."""
    groups: dict[str, list[dict[str, Any]]] = {"runtimes": [], "frameworks": [], "applications": []}
    key = {"runtime": "runtimes", "framework": "frameworks", "application": "applications"}
    for layer in ctx.spec.all_layers():
        data = read_json(metadata_paths(out, layer, ctx.platform, tagged))
        if data and data.get("layer_name") == layer.env_name:
            groups[key[layer.kind]].append(data)
    return groups


def write_manifest(ctx: _build.BuildContext, out: Path, tagged: bool) -> Path:
    """The combined manifest: every layer of the stack that has per-layer metadata.

    Built from the per-layer files, so publishing with ``--include`` keeps the other
    layers in the manifest (venvstacks 0.8 drops them).
    """
    plat = ctx.platform
    manifest = {
        "layers": collect_layer_metadata(ctx, out, tagged),
        "venvstacks_docker": {"metadata_version": METADATA_VERSION, "tool_version": __version__,
                              "target_platform": plat, "spec_name": ctx.spec.path.name},
    }
    path = manifest_path(out, plat, tagged)
    write_json_if_changed(path, manifest)
    return path
