"""Lock files on disk: where they are, what they pin, and whether they are still valid.

The files venvstacks 0.8 writes next to a stack file, per layer::

    requirements/<env>/requirements-<env'>.in
    requirements/<env>/pylock.<env'>.toml
    requirements/<env>/pylock.<env'>.meta.json
    requirements/<env>/packages-<env>.txt

A lock is valid while the hashes recorded in its metadata still match the layer's
declared requirements, the pylock's content, the other inputs (Python version, targets,
layer dependencies) and, for versioned layers, the version inputs.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from venvstacks_docker import credentials as _credentials
from venvstacks_docker import platforms as _plat
from venvstacks_docker.errors import LockError
from venvstacks_docker.metadata import hash_strings, read_json
from venvstacks_docker.spec import LayerSpec, StackSpec, canonical, module_hash

SHARED_CLAUSE = "sys_platform == 'from_lower_layer'"


@dataclass(frozen=True, kw_only=True)
class LockPaths:
    """The files of one layer's lock, in ``requirements/<layer>/``."""

    folder: Path
    requirements_in: Path
    pylock: Path
    meta: Path
    packages_txt: Path


def lock_paths(spec: StackSpec, layer: LayerSpec) -> LockPaths:
    """The lock files of ``layer``."""
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
    """The hash of ``layer``'s requirements, as venvstacks records it."""
    return hash_strings(list(layer.requirements))


def other_inputs_hash(spec: StackSpec, layer: LayerSpec) -> str:
    """The hash of the other lock inputs of ``layer`` (Python version, targets,
    runtime and lower layers), as venvstacks records it."""
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
    """The hash of the inputs that make a new layer version (name, versioning and
    modules), as venvstacks records it."""
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
    """One package of a pylock file."""

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
    """The packages of a parsed pylock file, with canonical names."""
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
    """The lock metadata (``*.meta.json``) of ``layer``, ``None`` when missing or invalid."""
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
