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
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from venvstacks_docker import __version__, _testhooks, ui
from venvstacks_docker import archive as _archive
from venvstacks_docker import build as _build
from venvstacks_docker import lock as _lock
from venvstacks_docker import platforms as _plat
from venvstacks_docker.errors import Interrupted, PublishError, VenvstacksDockerError
from venvstacks_docker.locking import RUN_ID, folder_lock, hold
from venvstacks_docker.metadata import METADATA_DIR, METADATA_VERSION, dumps, hash_strings, read_json, sha256_file
from venvstacks_docker.preflight import source_date_epoch_value
from venvstacks_docker.spec import LayerSpec, StackSpec, module_hash, module_name
from venvstacks_docker.staging import stage_layer
from venvstacks_docker.txn import OutputTransaction, recover


def archive_format(plat: str) -> _archive.ArchiveFormat:
    """The archive format for ``plat``: zip for Windows, else tar.xz."""
    return "zip" if _plat.os_of(plat) == "win" else "tar.xz"


def source_date_epoch(locked_at: str) -> tuple[int, str]:
    """SOURCE_DATE_EPOCH from the environment, else the layer's lock time."""
    value = source_date_epoch_value()
    if value is not None:
        return value, "environment"
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
    """The published metadata file of ``layer``."""
    suffix = f"-{plat}" if tagged else ""
    return out / METADATA_DIR / "env_metadata" / f"{layer.env_name}{suffix}.json"


def manifest_path(out: Path, plat: str, tagged: bool) -> Path:
    """The published manifest of a publish for ``plat``."""
    return out / METADATA_DIR / (f"venvstacks-{plat}.json" if tagged else "venvstacks.json")


# --- publishing -------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PublishedLayer:
    """One layer of a publish: its metadata and archive."""

    layer: LayerSpec
    metadata: dict[str, Any]
    archive: Path
    status: str
    """``"built"``, ``"reused"`` or ``"dry-run"``."""
    note: str | None = None
    """Why an archive whose inputs did not change was rebuilt anyway."""


def _our_metadata(ctx: _build.BuildContext, layer: LayerSpec, epoch: int, epoch_source: str,
                  fmt: str) -> dict[str, Any]:
    rt = ctx.spec.runtime_of(layer)
    rt_meta = _build.runtime_pin(ctx.spec, rt, ctx.platform)
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


@dataclass(frozen=True, kw_only=True)
class _Plan:
    layer: LayerSpec
    metadata: dict[str, Any]
    archive: Path
    reuse: bool
    note: str | None = None
    previous: dict[str, Any] | None = None
    """The layer's previous metadata in this folder (same lock version), if any."""


def _unproven(path: Path, previous: dict[str, Any]) -> str | None:
    """Why the archive at ``path`` cannot be reused as ``previous`` describes it (None: it can)."""
    if not path.is_file():
        return f"{path.name} is missing"
    size = path.stat().st_size
    if size != previous.get("archive_size"):
        return f"{path.name} has {size} bytes, its metadata says {previous.get('archive_size')}"
    expected = (previous.get("archive_hashes") or {}).get("sha256")
    actual = sha256_file(path)
    if actual != expected:
        return f"{path.name} has sha256 {actual}, its metadata says {expected}"
    return None


def _plan_layer(ctx: _build.BuildContext, layer: LayerSpec, out: Path, *, tag_outputs: bool,
                force: bool) -> tuple[_Plan, dict[str, Any] | None]:
    """What publishing ``layer`` means, and the previous metadata if its archive may be reused."""
    plat = ctx.platform
    fmt = archive_format(plat)
    base = layer_metadata(ctx.spec, layer)
    epoch, epoch_source = source_date_epoch(base["locked_at"])
    ours = _our_metadata(ctx, layer, epoch, epoch_source, fmt)
    ours["inputs_hash"] = _inputs_hash(ctx, layer, base, ours)
    previous = read_json(metadata_paths(out, layer, plat, tag_outputs)) or {}
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
    plan = _Plan(layer=layer, metadata=metadata, archive=out / name, reuse=False,
                 previous=previous if same_lock and previous.get("target_platform") == plat else None)
    candidate = same_inputs and not force and previous.get("archive_name") == name
    return plan, (previous if candidate else None)


def plan_publication(ctx: _build.BuildContext, layers: list[LayerSpec], out: Path, *,
                     tag_outputs: bool = False, force: bool = False) -> list[_Plan]:
    """Decide, for each layer, its metadata and whether its archive is rebuilt or reused.

    An archive is reused only when its inputs are unchanged AND its bytes are proven to
    be the ones the metadata describes (size and sha256; hashing is cheap next to
    compressing).  Anything else (a flipped byte, a leftover of an interrupted run of
    an old version, a missing file) is rebuilt, with a note saying why.
    """
    for layer in layers:
        if _lock.lock_problems(ctx.spec, layer):
            raise PublishError(f"layer {layer.env_name} has no valid lock",
                               hint="run `venvstacks-docker lock` (and build) first")
    drafts = [_plan_layer(ctx, layer, out, tag_outputs=tag_outputs, force=force) for layer in layers]
    checks = [(plan, prev) for plan, prev in drafts if prev is not None]
    with ThreadPoolExecutor(max_workers=max(1, min(4, len(checks)))) as pool:
        verdicts = dict(zip((id(p) for p, _ in checks),
                            pool.map(lambda item: _unproven(item[0].archive, item[1]), checks), strict=True))
    plans = []
    for plan, previous in drafts:
        if previous is None:
            plans.append(plan)
            continue
        why = verdicts[id(plan)]
        if why is not None:
            plans.append(_Plan(layer=plan.layer, metadata=plan.metadata, archive=plan.archive, reuse=False,
                               note=f"rebuilding {plan.layer.env_name}: {why}", previous=plan.previous))
            continue
        ours = {**plan.metadata["venvstacks_docker"],
                "archive_tar_sha256": (previous.get("venvstacks_docker") or {}).get("archive_tar_sha256")}
        metadata = {**plan.metadata, "archive_size": previous["archive_size"],
                    "archive_hashes": previous["archive_hashes"], "venvstacks_docker": ours}
        plans.append(_Plan(layer=plan.layer, metadata=metadata, archive=plan.archive, reuse=True))
    return plans


def _archive_one(ctx: _build.BuildContext, plan: _Plan, txn: OutputTransaction, cancel: threading.Event,
                 say: Callable[[str], None]) -> PublishedLayer:
    if plan.reuse:
        return PublishedLayer(layer=plan.layer, metadata=plan.metadata, archive=plan.archive, status="reused")
    name = plan.layer.env_name
    stage = ctx.build_dir / "_publish" / f"{name}.{RUN_ID}"
    metadata = plan.metadata
    reporter = ui.current()
    started = time.monotonic()
    try:
        stage_layer(ctx, plan.layer, stage)
        total = _tree_size(stage)
        say(f"archiving {name} ({ui.human_size(total)} uncompressed)")
        result = _archive.write_archive(stage, txn.path_for(plan.archive.name),
                                        root_name=metadata["install_target"],
                                        mtime=metadata["venvstacks_docker"]["source_date_epoch"],
                                        fmt=archive_format(ctx.platform), cancel=cancel,
                                        arch=_plat.arch_of(ctx.platform),
                                        progress=reporter.progress(name, f"archiving {name}", total))
    finally:
        reporter.finish_progress(name)
        shutil.rmtree(stage, ignore_errors=True)
    say(f"archived {name}: {ui.human_size(result.size)} in {time.monotonic() - started:.1f}s")
    ours = {**metadata["venvstacks_docker"], "archive_tar_sha256": result.tar_sha256}
    metadata = {**metadata, "archive_size": result.size, "archive_hashes": {"sha256": result.sha256},
                "venvstacks_docker": ours}
    archive = plan.archive
    if _same_bytes_as_before(plan.previous, result.sha256):
        archive = _keep_previous_build(plan, txn, metadata)
    return PublishedLayer(layer=plan.layer, metadata=metadata, archive=archive, status="built", note=plan.note)


def _same_bytes_as_before(previous: dict[str, Any] | None, sha256: str) -> bool:
    return bool(previous) and (previous or {}).get("archive_hashes", {}).get("sha256") == sha256


def _keep_previous_build(plan: _Plan, txn: OutputTransaction, metadata: dict[str, Any]) -> Path:
    """A rebuilt archive with the previous bytes keeps the previous ``archive_build`` and name.

    (A forced or clean rebuild, or one after an input that turned out not to matter,
    is the same archive: numbering it anew would give one content two names.)
    """
    previous = plan.previous or {}
    name = str(previous["archive_name"])
    metadata["archive_build"], metadata["archive_name"] = previous["archive_build"], name
    old = txn.out / name
    if old.is_file() and old.stat().st_size == metadata["archive_size"] and \
            sha256_file(old) == metadata["archive_hashes"]["sha256"]:
        txn.forget(plan.archive.name)  # the file already there is this very archive
    elif name != plan.archive.name:
        txn.rename(plan.archive.name, name)
    return old


def _tree_size(root: Path) -> int:
    """Bytes of the regular files below ``root`` (what the archive writer will read)."""
    total = 0
    for folder, _dirs, files in os.walk(root):
        for file in files:
            path = Path(folder, file)
            if not path.is_symlink():
                total += path.stat().st_size
    return total


def _archive_all(ctx: _build.BuildContext, plans: list[_Plan], txn: OutputTransaction, jobs: int | None,
                 say: Callable[[str], None]) -> list[PublishedLayer]:
    # Layers are archived concurrently and each archive compresses its chunks on a
    # thread pool; output bytes do not depend on either.
    cancel = threading.Event()
    workers = max(1, min(len(plans), jobs or _plat.usable_cpus()))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="publish")
    try:
        results = list(pool.map(lambda plan: _archive_one(ctx, plan, txn, cancel, say), plans))
    except BaseException:
        # Ctrl-C or a failed layer: stop the other archive writers
        cancel.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results


def _stage_metadata(ctx: _build.BuildContext, out: Path, results: list[PublishedLayer], txn: OutputTransaction,
                    tagged: bool) -> None:
    """Stage the per-layer metadata files and the manifest that changed."""
    plat = ctx.platform
    fresh = {item.layer.env_name: item.metadata for item in results}
    for item in results:
        path = metadata_paths(out, item.layer, plat, tagged)
        text = dumps(item.metadata)
        if _read_text(path) != text:
            txn.stage_text(path.relative_to(out).as_posix(), text)
    manifest = manifest_path(out, plat, tagged)
    text = dumps(_manifest(ctx, out, tagged, fresh))
    if _read_text(manifest) != text:
        txn.stage_text(manifest.relative_to(out).as_posix(), text)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


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
    """Archive ``layers`` into ``out`` and write their metadata, as one transaction.

    Holds the build and output folders' locks (waiting for another run), finishes or
    clears what an interrupted run left (:func:`venvstacks_docker.txn.recover`), then
    stages every new archive and metadata file and commits them together: ``out`` holds
    either the previous publication or the new one, whatever happens to this run.

    :returns: the published layers and the manifest path.
    :raises Interrupted: on Ctrl-C or SIGTERM (``out`` is left as it was).
    """
    out = out.absolute()
    say = on_event or (lambda message: None)
    manifest = manifest_path(out, ctx.platform, tag_outputs)
    if dry_run:
        plans = plan_publication(ctx, layers, out, tag_outputs=tag_outputs, force=force)
        return [PublishedLayer(layer=p.layer, metadata=p.metadata, archive=p.archive, status="dry-run",
                               note=p.note) for p in plans], manifest
    locks = [folder_lock(ctx.build_dir, "the build folder"), folder_lock(out, "the output folder")]
    with hold(locks, command="publish", say=say):
        for note in recover(out):
            say(note)
        plans = plan_publication(ctx, layers, out, tag_outputs=tag_outputs, force=force)
        for plan in plans:
            if plan.note:
                say(plan.note)
        txn = OutputTransaction(out)
        try:
            results = _archive_all(ctx, plans, txn, jobs, say)
            _testhooks.pause("publish-staged")
            _stage_metadata(ctx, out, results, txn, tag_outputs)
            txn.commit()
        except KeyboardInterrupt:
            if txn.committed:  # the signal was held back until the commit was done
                raise Interrupted(f"interrupted just after publishing finished: {out} holds the new "
                                  "publication") from None
            txn.abort()
            raise Interrupted(f"publishing was interrupted: {out} still holds its previous publication "
                              "(nothing of this run was kept)") from None
        except VenvstacksDockerError as exc:
            txn.abort()
            kept = f"{out} still holds its previous publication"
            exc.hint = f"{exc.hint}; {kept}" if exc.hint else kept
            raise
        except BaseException:
            txn.abort()
            raise
    return results, manifest


def collect_layer_metadata(ctx: _build.BuildContext, out: Path, tagged: bool,
                           fresh: dict[str, dict[str, Any]] | None = None) -> dict[str, list[dict[str, Any]]]:
    """The per-layer metadata of this stack's layers in ``out``, grouped by kind.

    ``fresh`` (env name -> metadata) takes the place of what is on disk for the layers
    being published now.
    """
    groups: dict[str, list[dict[str, Any]]] = {"runtimes": [], "frameworks": [], "applications": []}
    key = {"runtime": "runtimes", "framework": "frameworks", "application": "applications"}
    for layer in ctx.spec.all_layers():
        data = (fresh or {}).get(layer.env_name) or read_json(metadata_paths(out, layer, ctx.platform, tagged))
        if data and data.get("layer_name") == layer.env_name:
            groups[key[layer.kind]].append(data)
    return groups


def _manifest(ctx: _build.BuildContext, out: Path, tagged: bool,
              fresh: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The combined manifest: every layer of the stack that has per-layer metadata.

    Built from the per-layer files, so publishing with ``--include`` keeps the other
    layers in the manifest (venvstacks 0.8 drops them).
    """
    return {
        "layers": collect_layer_metadata(ctx, out, tagged, fresh),
        "venvstacks_docker": {"metadata_version": METADATA_VERSION, "tool_version": __version__,
                              "target_platform": ctx.platform, "spec_name": ctx.spec.path.name},
    }
