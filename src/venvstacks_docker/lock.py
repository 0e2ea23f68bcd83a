"""Integrated locking across layers with uv (``uv lock`` + ``uv export --format pylock.toml``).

Each layer is resolved with the exact pins of every lower layer as constraints, and
packages a lower layer already provides are marked in the upper layer's pylock with an
unsatisfiable ``sys_platform == 'from_lower_layer'`` clause so they are never installed
twice.  Files are written next to the spec, exactly where venvstacks 0.8 writes them::

    requirements/<env>/requirements-<env'>.in
    requirements/<env>/pylock.<env'>.toml
    requirements/<env>/pylock.<env'>.meta.json
    requirements/<env>/packages-<env>.txt
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import re
import threading
import tomllib
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from venvstacks_docker import credentials as _credentials
from venvstacks_docker import platforms as _plat
from venvstacks_docker._run import run
from venvstacks_docker.errors import LockError
from venvstacks_docker.lockfiles import (  # the lock API other modules use (see __all__)
    SHARED_CLAUSE,
    LockedPackage,
    LockPaths,
    _wheel_name,
    install_requirements,
    lock_input_hash,
    lock_paths,
    lock_problems,
    locked_packages,
    other_inputs_hash,
    pylock_requirements_hash,
    read_meta,
    read_pylock,
    version_inputs_hash,
)
from venvstacks_docker.metadata import write_json, write_text_atomic
from venvstacks_docker.spec import LayerSpec, StackSpec, canonical
from venvstacks_docker.wheels import portable_wheel_entry

#: Layers resolved at once: resolving waits on the index and on uv, more than on the CPU.
_LOCK_WORKERS = max(2, min(4, 2 * _plat.usable_cpus()))

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class IndexOptions:
    """Command line index settings (``--index/--no-index``, ``--local-wheels``)."""

    query_default_index: bool = True
    local_wheel_dirs: tuple[Path, ...] = ()


# --- locking ----------------------------------------------------------------------


def _uv() -> str:
    import uv

    return uv.find_uv_bin()


def uv_env() -> dict[str, str]:
    """Environment for uv: the caller's, with Python-related variables neutralised."""
    env = dict(os.environ)
    for key in ("PYTHONPATH", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONHOME", "CONDA_PREFIX"):
        env.pop(key, None)
    env.update({"PYTHONNOUSERSITE": "1", "PYTHONSAFEPATH": "1", "PYTHONUTF8": "1",
                "UV_NO_PROGRESS": "1", "NO_COLOR": "1"})
    return env


def _resolve_project_name(env_name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", env_name.lower()).strip("-") or "layer"


def _constraints(spec: StackSpec, layer: LayerSpec) -> list[str]:
    constraints: list[str] = []
    seen: set[str] = set()
    for lower in spec.lower_layers(layer):
        for pkg in locked_packages(read_pylock(lock_paths(spec, lower).pylock)):
            if pkg.shared:
                continue
            line = f"{pkg.name}=={pkg.version}" + (f" ; {pkg.marker}" if pkg.marker else "")
            if line not in seen:
                seen.add(line)
                constraints.append(line)
    return constraints


def _uv_config(spec: StackSpec, layer: LayerSpec, index: IndexOptions) -> dict[str, Any]:
    """The ``[tool.uv]`` table of ``layer``'s resolve project.

    The stack's uv settings, with ``sources`` holding one entry per normalised
    distribution name: ``[tool.uv.sources]``, overridden by the layer's package indexes
    (its own and inherited ones, as the spec settled them at load, index names checked).
    """
    config: dict[str, Any] = dict(spec.uv_config)
    config["no-build"] = True
    if not index.query_default_index:
        config["no-index"] = True
    if index.local_wheel_dirs:
        config["find-links"] = [*config.get("find-links", []), *map(str, index.local_wheel_dirs)]
    sources = dict(config.get("sources", {}))  # names normalised at load
    for dist, index_name in spec.package_indexes_of(layer).items():
        sources[dist] = {"index": index_name}
    if sources:
        config["sources"] = dict(sorted(sources.items()))
    if layer.priority_indexes and "index" in config:
        # in the order the layer lists them, and usable for every package (as in venvstacks)
        named = {i.get("name"): i for i in config["index"]}
        first = [dict(named[name], explicit=False) for name in layer.priority_indexes]
        rest = [i for i in config["index"] if i.get("name") not in layer.priority_indexes]
        config["index"] = first + rest
    return config


def _locked_at(spec: StackSpec, layer: LayerSpec, requirements_hash: str) -> str:
    exclude_newer = os.environ.get("UV_EXCLUDE_NEWER") or spec.uv_config.get("exclude-newer")
    if exclude_newer:
        try:
            when = _dt.datetime.fromisoformat(str(exclude_newer).replace("Z", "+00:00"))
        except ValueError:
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=_dt.UTC)
            return when.astimezone(_dt.UTC).replace(microsecond=0).isoformat()
    meta = read_meta(spec, layer)
    if meta and meta.get("requirements_hash") == requirements_hash and meta.get("locked_at"):
        return str(meta["locked_at"])
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


def postprocess_pylock(spec: StackSpec, layer: LayerSpec, doc: dict[str, Any], lock_dir: Path) -> dict[str, Any]:
    """Filter markers to the layer's platforms, mark shared packages, keep wheels only."""
    lower_pkgs: dict[str, list[LockedPackage]] = {}
    for lower in spec.lower_layers(layer):
        for locked in locked_packages(read_pylock(lock_paths(spec, lower).pylock)):
            if not locked.shared:
                lower_pkgs.setdefault(locked.name, []).append(locked)
    py = layer.py_version
    packages = []
    missing: list[str] = []
    for pkg in doc.get("packages", []):
        marker = pkg.get("marker") or None
        applies = [p for p in layer.platforms if _plat.marker_applies(marker, p, py)]
        if not applies:
            continue
        pkg = dict(pkg)
        if isinstance(pkg.get("index"), str):  # uv leaves no credentials here; never let any through
            pkg["index"] = _credentials.strip_userinfo(pkg["index"])
        if len(applies) == len(layer.platforms):
            pkg.pop("marker", None)
            marker = None
        for key in ("sdist", "vcs", "directory", "archive"):
            pkg.pop(key, None)
        provided = lower_pkgs.get(canonical(pkg["name"]), [])
        lower_platforms = {
            p for low in provided if low.version == str(pkg.get("version"))
            for p in layer.platforms if _plat.marker_applies(low.marker, p, py)
        }
        if provided and set(applies) <= lower_platforms:
            pkg["marker"] = f"({marker}) and {SHARED_CLAUSE}" if marker else SHARED_CLAUSE
            pkg.pop("index", None)
            pkg.pop("wheels", None)
        else:
            wheels = [portable_wheel_entry(wheel, lock_dir) for wheel in pkg.get("wheels", [])]
            pkg["wheels"] = wheels
            for plat in applies:
                tags = _plat.supported_tags(plat, py, layer.linux_target, layer.macosx_target)
                if _plat.best_wheel((_wheel_name(w) for w in wheels), tags) is None:
                    missing.append(f"{pkg['name']}=={pkg.get('version')} on {plat}")
        packages.append(pkg)
    if missing:
        by_plat = sorted({m.rsplit(" on ", 1)[1] for m in missing})
        ok = [p for p in layer.platforms if p not in by_plat]
        raise LockError(
            f"layer {layer.env_name}: no binary wheel for " + ", ".join(sorted(missing)),
            hint=f"restrict the layer with platforms = {ok!r}, or provide wheels (--local-wheels)"
            if ok else "provide wheels for these packages (--local-wheels or a private index)",
        )
    result = {k: v for k, v in doc.items() if k != "packages"}
    result["packages"] = packages
    return result


def lock_layer(
    spec: StackSpec,
    layer: LayerSpec,
    *,
    build_dir: Path,
    runtime_python: Path,
    index: IndexOptions,
    reset: bool = False,
    runtime_archive: tuple[str, str] | None = None,
) -> bool:
    """Lock one layer (its lower layers must already be locked).

    :param runtime_python: interpreter of the layer's runtime, given to uv.
    :param runtime_archive: for runtime layers, ``(file name, sha256)`` to pin.
    :returns: whether any lock file changed.
    """
    for lower in spec.lower_layers(layer):
        if lock_problems(spec, lower):
            raise LockError(f"cannot lock {layer.env_name}: lower layer {lower.env_name} needs locking first")
    paths = lock_paths(spec, layer)
    paths.folder.mkdir(parents=True, exist_ok=True)
    # read before a reset removes it: a reset must never lower a layer's lock_version
    # (one deployed name for two different contents)
    old_meta = read_meta(spec, layer) or {}
    if reset:
        paths.pylock.unlink(missing_ok=True)
    exported = _resolve(spec, layer, build_dir / f"{layer.env_name}_resolve", runtime_python, index)
    doc = postprocess_pylock(spec, layer, tomllib.loads(exported.read_text("utf-8")), paths.folder)
    req_hash = pylock_requirements_hash(doc)
    changed = old_meta.get("requirements_hash") != req_hash or not paths.pylock.exists()
    _write_lock_files(spec, layer, paths, doc)
    meta = _lock_meta(spec, layer, old_meta, req_hash, changed=changed, runtime_archive=runtime_archive)
    if meta != old_meta:
        write_json(paths.meta, meta)
        return True
    return changed


def _resolve(spec: StackSpec, layer: LayerSpec, resolve_dir: Path, runtime_python: Path,
             index: IndexOptions) -> Path:
    """Run ``uv lock`` and ``uv export`` for ``layer`` in ``resolve_dir``; the exported pylock."""
    resolve_dir.mkdir(parents=True, exist_ok=True)
    tool_uv, index_auth_env = _credentials.move_userinfo_to_env(_uv_config(spec, layer, index))
    constraints = _constraints(spec, layer)
    if constraints:
        tool_uv["constraint-dependencies"] = constraints
    project = {
        "project": {
            "name": _resolve_project_name(layer.env_name),
            "version": "0",
            "requires-python": f"=={layer.py_minor}.*",
            "dependencies": list(layer.requirements),
        },
        "tool": {"uv": tool_uv},
    }
    (resolve_dir / "pyproject.toml").write_text(tomli_w.dumps(project), encoding="utf-8")
    uv = _uv()
    env = {**index_auth_env, **uv_env()}  # UV_INDEX_<NAME>_* already set win, as in uv
    common = ["--project", str(resolve_dir), "--python", str(runtime_python),
              "--no-python-downloads", "--quiet", "--color", "never"]
    exported = resolve_dir / "pylock.toml"
    try:
        run([uv, "lock", "--upgrade", *common], cwd=resolve_dir, env=env,
            what=f"resolving {layer.env_name} (uv lock)", error=LockError)
        run([uv, "export", *common, "--locked", "--format", "pylock.toml", "--no-header",
             "--no-emit-project", "--no-annotate", "-o", str(exported)],
            cwd=resolve_dir, env=env, what=f"exporting {layer.env_name} (uv export)", error=LockError)
    except LockError as exc:
        text = _credentials.redact(exc.message)
        raise LockError(text, hint=_resolve_hint(text)) from None
    return exported


def _resolve_hint(text: str) -> str | None:
    """What to do about a failed resolution, from uv's message."""
    if _credentials.refused_for_credentials(text):
        return "the index wants credentials, none or wrong ones were given: " + (
            _credentials.where_to_put_credentials())
    if "No solution found" in text or "unsatisfiable" in text:
        return "the requirements conflict with each other or with pins of lower layers; relax them"
    if "Failed to fetch" in text or "error sending request" in text or "dns" in text.lower():
        return "the package index is unreachable; check the network, or use --no-index with --local-wheels"
    if "not found in the package registry" in text or "was not found" in text:
        return "check the package name and the index settings"
    return None


def _write_lock_files(spec: StackSpec, layer: LayerSpec, paths: LockPaths, doc: dict[str, Any]) -> None:
    """The pylock, the ``.in`` file of declared requirements and the package summary."""
    header = (
        "# This file was autogenerated by venvstacks-docker (uv export --format pylock.toml)\n"
        f"# for the {layer.env_name} layer; relock instead of editing it:\n"
        f"#    venvstacks-docker lock {spec.path.name}\n"
    )
    _write_if_changed(paths.pylock, header + tomli_w.dumps(doc))
    in_text = (
        "# DO NOT EDIT. Automatically generated by venvstacks-docker from the stack file.\n"
        + "".join(f"{r}\n" for r in layer.requirements)
    )
    _write_if_changed(paths.requirements_in, in_text)
    pkgs = locked_packages(doc)
    own = sorted(f"{p.name}=={p.version}" + (f" ; {p.marker}" if p.marker else "") for p in pkgs if not p.shared)
    shared = sorted(f"{p.name}=={p.version}" for p in pkgs if p.shared)
    summary = "".join(f"{line}\n" for line in own)
    if shared:
        summary += "\n# Shared packages inherited from other layers\n" + "".join(f"{s}\n" for s in shared)
    _write_if_changed(paths.packages_txt, summary)


def _lock_meta(spec: StackSpec, layer: LayerSpec, old_meta: dict[str, Any], req_hash: str, *, changed: bool,
               runtime_archive: tuple[str, str] | None) -> dict[str, Any]:
    """The lock metadata: validity hashes, ``lock_version`` and ``locked_at``.

    A versioned layer's ``lock_version`` goes up when what it deploys changes (the
    locked content, or its version inputs); relocking to the same content keeps it,
    whichever tool wrote the previous lock.
    """
    lock_version = int(old_meta.get("lock_version", 1) or 1)
    v_hash = version_inputs_hash(layer)
    if layer.versioned and old_meta and (changed or old_meta.get("version_inputs_hash") != v_hash):
        lock_version += 1
    if not layer.versioned:
        lock_version = 1
    meta: dict[str, Any] = {
        "lock_input_hash": lock_input_hash(layer),
        "requirements_hash": req_hash,
        "other_inputs_hash": other_inputs_hash(spec, layer),
        "version_inputs_hash": v_hash,
        "lock_version": lock_version,
        "locked_at": _locked_at(spec, layer, req_hash),
    }
    if layer.kind == "runtime":
        meta["python_implementation"] = layer.python_implementation
        if runtime_archive is not None:
            meta["runtime_archive"] = {"name": runtime_archive[0], "sha256": runtime_archive[1]}
        elif "runtime_archive" in old_meta:
            meta["runtime_archive"] = old_meta["runtime_archive"]
    return meta


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text("utf-8") != text:
        write_text_atomic(path, text)


def lock_stack(
    spec: StackSpec,
    layers: list[LayerSpec],
    *,
    build_dir: Path,
    index: IndexOptions,
    runtime_python_for: Callable[[LayerSpec], tuple[Path, tuple[str, str] | None]],
    if_needed: bool = False,
    reset: set[str] | None = None,
    on_layer: Callable[[LayerSpec, str], None] | None = None,
) -> dict[str, str]:
    """Lock ``layers``, each once every selected layer below it is locked.

    Layers that do not depend on each other (the frameworks on one runtime, most
    applications) are locked concurrently: resolving is mostly waiting for the index
    and for uv, so a few at a time finish sooner than one after another.  The lock
    files are the same either way: each layer's inputs are its own spec and the locks
    below it, which are complete before it starts.

    :param runtime_python_for: gives the runtime interpreter for a layer (and, for
        runtime layers, the archive pin); it may unpack the runtime (calls are serialised).
    :returns: env name -> "locked" | "unchanged" | "skipped", in stack order.
    """
    order = [layer for layer in spec.all_layers() if layer in layers]
    selected = {layer.env_name for layer in order}
    interpreter = threading.Lock()

    def one(layer: LayerSpec) -> str:
        if if_needed and not lock_problems(spec, layer):
            if on_layer:
                on_layer(layer, "valid")
            return "skipped"
        if on_layer:
            on_layer(layer, "locking")
        with interpreter:
            python, pin = runtime_python_for(layer)
        changed = lock_layer(spec, layer, build_dir=build_dir, runtime_python=python, index=index,
                             reset=bool(reset and layer.env_name in reset), runtime_archive=pin)
        result = "locked" if changed else "unchanged"
        if on_layer:
            on_layer(layer, result)
        return result

    results: dict[str, str] = {}
    waiting = list(order)
    with ThreadPoolExecutor(max_workers=_LOCK_WORKERS) as pool:
        running: dict[Future[str], LayerSpec] = {}
        while waiting or running:
            for layer in [w for w in waiting if all(low.env_name in results or low.env_name not in selected
                                                    for low in spec.lower_layers(w))]:
                waiting.remove(layer)
                running[pool.submit(one, layer)] = layer
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                layer = running.pop(future)
                try:
                    results[layer.env_name] = future.result()
                except BaseException:
                    waiting.clear()  # start nothing new; let the running ones finish, then fail
                    for other in running:
                        other.cancel()
                    raise
    return {layer.env_name: results[layer.env_name] for layer in order}


__all__ = [
    "SHARED_CLAUSE", "IndexOptions", "LockPaths", "LockedPackage", "install_requirements", "lock_input_hash",
    "lock_layer", "lock_paths", "lock_problems", "lock_stack", "locked_packages", "other_inputs_hash",
    "postprocess_pylock", "pylock_requirements_hash", "read_meta", "read_pylock", "uv_env", "version_inputs_hash",
]
