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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
import tomllib

from venvstacks_docker import credentials as _credentials
from venvstacks_docker import platforms as _plat
from venvstacks_docker._run import run
from venvstacks_docker.errors import LockError
from venvstacks_docker.metadata import hash_strings, read_json, write_json, write_text_atomic
from venvstacks_docker.spec import LayerSpec, StackSpec, canonical, module_hash

log = logging.getLogger(__name__)

SHARED_CLAUSE = "sys_platform == 'from_lower_layer'"


@dataclass(frozen=True, kw_only=True)
class IndexOptions:
    """Command line index settings (``--index/--no-index``, ``--local-wheels``)."""

    query_default_index: bool = True
    local_wheel_dirs: tuple[Path, ...] = ()


@dataclass(frozen=True, kw_only=True)
class LockPaths:
    folder: Path
    requirements_in: Path
    pylock: Path
    meta: Path
    packages_txt: Path


def lock_paths(spec: StackSpec, layer: LayerSpec) -> LockPaths:
    folder = spec.requirements_dir / layer.env_name
    return LockPaths(
        folder=folder,
        requirements_in=folder / f"requirements-{layer.lock_name}.in",
        pylock=folder / f"pylock.{layer.lock_name}.toml",
        meta=folder / f"pylock.{layer.lock_name}.meta.json",
        packages_txt=folder / f"packages-{layer.env_name}.txt",
    )


# --- hashes that decide lock validity ---------------------------------------------


def lock_input_hash(layer: LayerSpec) -> str:
    return hash_strings(list(layer.requirements))


def other_inputs_hash(spec: StackSpec, layer: LayerSpec) -> str:
    items = [f"py_version={layer.py_minor}"]
    if any(_plat.os_of(p) == "linux" for p in layer.platforms):
        items.append(f"linux_target={layer.linux_target}")
    if any(_plat.os_of(p) == "macosx" for p in layer.platforms):
        items.append(f"macosx_target={layer.macosx_target}")
    if layer.kind != "runtime":
        items.append(f"runtime={layer.runtime}")
        items += [f"framework={fw.name}" for fw in spec.linearised_frameworks(layer)]
    items += [f"platform={p}" for p in layer.platforms]
    return hash_strings(items)


def version_inputs_hash(layer: LayerSpec) -> str:
    items = [f"env_name={layer.env_name}", f"is_versioned_layer={layer.versioned}"]
    if layer.launch_module is not None:
        items.append(f"launch_module={module_hash(layer.launch_module)}")
        items += [f"support_module={module_hash(m)}" for m in layer.support_modules]
    return hash_strings(items)


def pylock_requirements_hash(doc: dict[str, Any]) -> str:
    """Hash of a pylock's content (not its formatting)."""
    items: list[str] = []
    for pkg in doc.get("packages", []):
        line = f"{pkg['name']}=={pkg.get('version', '')}"
        if pkg.get("marker"):
            line += f" ; {pkg['marker']}"
        line += f" from {pkg.get('index', '')}"
        items.append(line)
        for wheel in pkg.get("wheels", []):
            fname = wheel.get("name") or _wheel_name(wheel)
            for algo, value in sorted(wheel.get("hashes", {}).items()):
                items.append(f"{fname}:{algo}:{value}")
    return hash_strings(items)


def _wheel_name(wheel: dict[str, Any]) -> str:
    ref = wheel.get("url") or wheel.get("path") or ""
    return ref.rsplit("/", 1)[-1].split("#", 1)[0]


# --- reading locks --------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class LockedPackage:
    name: str
    version: str
    marker: str | None
    shared: bool
    wheels: tuple[dict[str, Any], ...]


_PYLOCK_CACHE: dict[tuple[str, int, int], dict[str, Any]] = {}


def read_pylock(path: Path) -> dict[str, Any]:
    """Parse a pylock file (cached while the file is unchanged: status checks read
    the same locks many times)."""
    try:
        st = path.stat()
        key = (str(path), st.st_mtime_ns, st.st_size)
        if key not in _PYLOCK_CACHE:
            _PYLOCK_CACHE[key] = tomllib.loads(path.read_text(encoding="utf-8"))
        return _PYLOCK_CACHE[key]
    except FileNotFoundError:
        raise LockError(f"lock file missing: {path}",
                        hint="run `venvstacks-docker lock` for this stack") from None
    except tomllib.TOMLDecodeError as exc:
        raise LockError(f"lock file {path} is not valid TOML: {exc}",
                        hint="relock with `venvstacks-docker lock --reset-lock '*'`") from exc


def locked_packages(doc: dict[str, Any]) -> list[LockedPackage]:
    result = []
    for pkg in doc.get("packages", []):
        marker = pkg.get("marker") or None
        shared = bool(marker and SHARED_CLAUSE in marker)
        result.append(LockedPackage(
            name=canonical(pkg["name"]),
            version=str(pkg.get("version", "")),
            marker=marker,
            shared=shared,
            wheels=tuple(pkg.get("wheels", [])),
        ))
    return result


def read_meta(spec: StackSpec, layer: LayerSpec) -> dict[str, Any] | None:
    meta = read_json(lock_paths(spec, layer).meta)
    return meta if isinstance(meta, dict) else None


# --- validity ---------------------------------------------------------------------


def lock_problems(spec: StackSpec, layer: LayerSpec, _seen: dict[str, list[str]] | None = None) -> list[str]:
    """Why ``layer``'s lock is not valid (empty list: it is valid)."""
    seen = {} if _seen is None else _seen
    if layer.env_name in seen:
        return seen[layer.env_name]
    paths = lock_paths(spec, layer)
    problems: list[str] = []
    meta = read_meta(spec, layer)
    if meta is None:
        problems.append("no lock metadata")
    elif not paths.pylock.exists():
        problems.append("no pylock file")
    else:
        if meta.get("lock_input_hash") != lock_input_hash(layer):
            problems.append("declared requirements changed")
        try:
            doc = read_pylock(paths.pylock)
            if meta.get("requirements_hash") != pylock_requirements_hash(doc):
                problems.append("pylock content changed")
        except LockError:
            problems.append("pylock is not valid TOML")
        if meta.get("other_inputs_hash") != other_inputs_hash(spec, layer):
            problems.append("python version, targets or layer dependencies changed")
        if layer.versioned and meta.get("version_inputs_hash") != version_inputs_hash(layer):
            problems.append("versioned layer inputs changed")
        if layer.kind == "runtime" and meta.get("python_implementation") != layer.python_implementation:
            problems.append("runtime python_implementation changed")
    for lower in spec.lower_layers(layer):
        if lock_problems(spec, lower, seen):
            problems.append(f"lower layer {lower.env_name} needs locking")
    seen[layer.env_name] = problems
    return problems


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
    config: dict[str, Any] = {k: v for k, v in spec.uv_config.items()}
    config["no-build"] = True
    if not index.query_default_index:
        config["no-index"] = True
    if index.local_wheel_dirs:
        config["find-links"] = [*config.get("find-links", []), *map(str, index.local_wheel_dirs)]
    sources = dict(config.get("sources", {}))
    merged: dict[str, str] = {}
    for lower in reversed(spec.lower_layers(layer)):
        merged.update(dict(lower.package_indexes))
    merged.update(dict(layer.package_indexes))
    known_indexes = {i.get("name") for i in config.get("index", []) if isinstance(i, dict)}
    for dist, index_name in merged.items():
        if index_name not in known_indexes:
            raise LockError(f"layer {layer.env_name}: package_indexes names unknown index {index_name!r}",
                            hint="define it as a named [[tool.uv.index]] entry")
        sources[dist] = {"index": index_name}
    if sources:
        config["sources"] = sources
    if layer.priority_indexes and "index" in config:
        first = [dict(i, explicit=False) for i in config["index"] if i.get("name") in layer.priority_indexes]
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
        for pkg in locked_packages(read_pylock(lock_paths(spec, lower).pylock)):
            if not pkg.shared:
                lower_pkgs.setdefault(pkg.name, []).append(pkg)
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
            wheels = []
            for wheel in pkg.get("wheels", []):
                wheel = dict(wheel)
                if isinstance(wheel.get("url"), str):
                    wheel["url"] = _credentials.strip_userinfo(wheel["url"])
                if "path" in wheel and Path(wheel["path"]).is_absolute():
                    wheel["path"] = Path(os.path.relpath(wheel["path"], lock_dir)).as_posix()
                wheels.append(wheel)
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
    if reset:
        for p in (paths.pylock, paths.meta):
            p.unlink(missing_ok=True)
    resolve_dir = build_dir / f"{layer.env_name}_resolve"
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
    try:
        run([uv, "lock", "--upgrade", *common], cwd=resolve_dir, env=env,
            what=f"resolving {layer.env_name} (uv lock)", error=LockError)
        exported = resolve_dir / "pylock.toml"
        run([uv, "export", *common, "--locked", "--format", "pylock.toml", "--no-header",
             "--no-emit-project", "--no-annotate", "-o", str(exported)],
            cwd=resolve_dir, env=env, what=f"exporting {layer.env_name} (uv export)", error=LockError)
    except LockError as exc:
        text = _credentials.redact(exc.message)
        hint = None
        if _credentials.refused_for_credentials(text):
            hint = "the index wants credentials, none or wrong ones were given: " + (
                _credentials.where_to_put_credentials())
        elif "No solution found" in text or "unsatisfiable" in text:
            hint = "the requirements conflict with each other or with pins of lower layers; relax them"
        elif "Failed to fetch" in text or "error sending request" in text or "dns" in text.lower():
            hint = "the package index is unreachable; check the network, or use --no-index with --local-wheels"
        elif "not found in the package registry" in text or "was not found" in text:
            hint = "check the package name and the index settings"
        raise LockError(text, hint=hint) from None
    doc = postprocess_pylock(spec, layer, tomllib.loads(exported.read_text("utf-8")), paths.folder)
    req_hash = pylock_requirements_hash(doc)
    old_meta = read_meta(spec, layer) or {}
    changed = old_meta.get("requirements_hash") != req_hash or not paths.pylock.exists()
    header = (
        "# This file was autogenerated by venvstacks-docker (uv export --format pylock.toml)\n"
        f"# for the {layer.env_name} layer; relock instead of editing it:\n"
        f"#    venvstacks-docker lock {spec.path.name}\n"
    )
    pylock_text = header + tomli_w.dumps(doc)
    if not paths.pylock.exists() or paths.pylock.read_text("utf-8") != pylock_text:
        write_text_atomic(paths.pylock, pylock_text)
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

    lock_version = int(old_meta.get("lock_version", 1) or 1)
    v_hash = version_inputs_hash(layer)
    if layer.versioned and old_meta and (changed or old_meta.get("version_inputs_hash") != v_hash
                                         or old_meta.get("other_inputs_hash") != other_inputs_hash(spec, layer)):
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
    if meta != old_meta:
        write_json(paths.meta, meta)
        return True
    return changed


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text("utf-8") != text:
        write_text_atomic(path, text)


def install_requirements(spec: StackSpec, layer: LayerSpec, plat: str) -> list[tuple[LockedPackage, dict[str, Any]]]:
    """Packages to install in ``layer`` on ``plat`` with the wheel chosen for each."""
    _credentials.remember_indexes(spec.uv_config)  # the wheel fetcher needs the stack's named indexes
    doc = read_pylock(lock_paths(spec, layer).pylock)
    tags = _plat.supported_tags(plat, layer.py_version, layer.linux_target, layer.macosx_target)
    chosen = []
    for pkg in locked_packages(doc):
        if pkg.shared or not _plat.marker_applies(pkg.marker, plat, layer.py_version):
            continue
        names = {_wheel_name(w): w for w in pkg.wheels}
        best = _plat.best_wheel(names, tags)
        if best is None:
            raise LockError(f"layer {layer.env_name}: the lock has no wheel of {pkg.name}=={pkg.version} "
                            f"for {plat}", hint="relock, or restrict the layer's platforms")
        chosen.append((pkg, names[best]))
    return chosen


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
    """Lock ``layers`` in order (runtimes, frameworks, applications).

    :param runtime_python_for: gives the runtime interpreter for a layer (and, for
        runtime layers, the archive pin); it may unpack the runtime.
    :returns: env name -> "locked" | "unchanged" | "skipped".
    """
    results: dict[str, str] = {}
    order = [l for l in spec.all_layers() if l in layers]
    for layer in order:
        if if_needed and not lock_problems(spec, layer):
            results[layer.env_name] = "skipped"
            if on_layer:
                on_layer(layer, "valid")
            continue
        if on_layer:
            on_layer(layer, "locking")
        python, pin = runtime_python_for(layer)
        changed = lock_layer(spec, layer, build_dir=build_dir, runtime_python=python, index=index,
                             reset=bool(reset and layer.env_name in reset), runtime_archive=pin)
        results[layer.env_name] = "locked" if changed else "unchanged"
        if on_layer:
            on_layer(layer, results[layer.env_name])
    return results
