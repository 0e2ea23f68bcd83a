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

import contextlib
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from packaging.markers import Environment, Marker
from packaging.pylock import PackageWheel, Pylock, PylockSelectError, PylockValidationError
from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

from venvstacks_docker import credentials as _credentials
from venvstacks_docker import platforms as _plat
from venvstacks_docker.errors import LockError
from venvstacks_docker.metadata import hash_sequence, read_json
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
#
# These are venvstacks 0.8's formulas, exactly, so that lock metadata written by either
# tool is valid for the other (tests/test_lock_parity.py checks them against venvstacks'
# own committed locks).

_SHARED_SUFFIX = f" and {SHARED_CLAUSE}"


def _declared(requirements: Iterable[str]) -> list[str]:
    """Requirement lines as venvstacks hashes them: normalised by ``packaging``, then
    cut at ``#``, hash options dropped, sorted."""
    lines = []
    for raw in requirements:
        line = str(Requirement(raw)).rstrip("\\").strip().partition("#")[0].strip()
        if line and "--hash" not in line:
            lines.append(line)
    return sorted(lines)


def lock_input_hash(layer: LayerSpec) -> str:
    """The hash of ``layer``'s declared requirements."""
    return hash_sequence(_declared(layer.requirements))


def other_inputs_hash(spec: StackSpec, layer: LayerSpec) -> str:
    """The hash of the lock's other inputs: Python version, targets, runtime and frameworks.

    (The layer's ``platforms`` are not among them, as in venvstacks: a lock that lacks
    wheels for a newly added platform fails when that platform is built, asking to relock.)
    """
    items = [f"py_version={layer.py_minor}"]
    if any(_plat.os_of(p) == "linux" for p in layer.platforms):
        items.append(f"linux_target=glibc@{layer.linux_target}")
    if any(_plat.os_of(p) == "macosx" for p in layer.platforms):
        items.append(f"macosx_target={layer.macosx_target}")
    if layer.kind != "runtime":
        items.append(layer.runtime)
        items += list(layer.frameworks)
    return hash_sequence(items)


def version_inputs_hash(layer: LayerSpec) -> str:
    """The hash of what makes a new version of a versioned layer: its name, its being
    versioned, and its launch and support modules' content."""
    items = [f"env_name={layer.env_name}", f"is_versioned_layer={layer.versioned}"]
    if layer.launch_module is not None:
        items += [module_hash(m) for m in (layer.launch_module, *layer.support_modules)]
    return hash_sequence(items)


def locked_requirement(pkg: dict[str, Any]) -> str:
    """``name==version[ ; marker]`` as venvstacks writes it (shared-layer clause removed)."""
    marker = str(pkg.get("marker") or "")
    if marker:
        marker = str(Marker(marker)).replace('"', "'")
        if marker == SHARED_CLAUSE:
            marker = ""
        elif SHARED_CLAUSE in marker:
            marker = marker.removeprefix("(").removesuffix(_SHARED_SUFFIX).removesuffix(")")
    version = str(pkg.get("version", ""))
    with contextlib.suppress(InvalidVersion):  # not PEP 440: kept as written
        version = str(Version(version))
    return f"{pkg['name']}=={version}" + (f" ; {marker}" if marker else "")


def pylock_requirements_hash(doc: dict[str, Any]) -> str:
    """Hash of a pylock's content (not its formatting)."""
    items: list[str] = []
    for pkg in doc.get("packages", []):
        items.append(f"{locked_requirement(pkg)} from {pkg.get('index', 'unspecified index')}")
        for wheel in pkg.get("wheels", []):
            name = wheel.get("name") or _wheel_name(wheel)
            items += [f"{name}:{algo}:{value}" for algo, value in wheel.get("hashes", {}).items()]
    return hash_sequence(sorted(items))


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
        if layer.kind == "runtime" and meta.get("python_implementation", layer.python_implementation) \
                != layer.python_implementation:  # venvstacks' locks do not record it
            problems.append("runtime python_implementation changed")
    for lower in spec.lower_layers(layer):
        if lock_problems(spec, lower, seen):
            problems.append(f"lower layer {lower.env_name} needs locking")
    seen[layer.env_name] = problems
    return problems


def _installable(path: Path, doc: dict[str, Any]) -> tuple[Pylock, list[LockedPackage]] | None:
    """The packages of a lock that a layer installs itself, validated by
    :class:`packaging.pylock.Pylock` (PEP 751), with their :class:`LockedPackage` rows.

    Packages a lower layer provides are left out first: venvstacks marks them with an
    unsatisfiable marker and removes their wheels, which PEP 751 does not allow for a
    package (it must name a source), so the whole document cannot be validated as such.
    ``None`` when the layer installs nothing.

    :raises LockError: naming the file and the entry, when the lock is malformed.
    """
    raw = [pkg for pkg in doc.get("packages", []) if SHARED_CLAUSE not in str(pkg.get("marker") or "")]
    if not raw:
        return None
    try:
        pylock = Pylock.from_dict({**doc, "packages": raw})
    except PylockValidationError as exc:
        raise LockError(f"lock file {path} is not a valid pylock file: {exc}",
                        hint="relock the layer (`venvstacks-docker lock --reset-lock LAYER`)") from None
    return pylock, locked_packages({"packages": raw})


def install_requirements(spec: StackSpec, layer: LayerSpec, plat: str) -> list[tuple[LockedPackage, PackageWheel]]:
    """Packages to install in ``layer`` on ``plat``, each with the wheel chosen for it.

    The choice is PEP 751's, made by :meth:`packaging.pylock.Pylock.select`: the markers
    evaluated for ``plat`` and the layer's Python, and of each package's wheels the one
    with the most preferred of the tags that Python accepts there
    (:func:`venvstacks_docker.platforms.supported_tags`).  Packages a lower layer
    provides are not installed again.

    :raises LockError: when the lock has no wheel of a package for ``plat`` (or only a
        source, which is never built), or is malformed.
    """
    _credentials.remember_indexes(spec.uv_config)  # the wheel fetcher needs the stack's named indexes
    path = lock_paths(spec, layer).pylock
    installable = _installable(path, read_pylock(path))
    if installable is None:
        return []
    pylock, rows = installable
    row_of = {id(pkg): row for pkg, row in zip(pylock.packages, rows, strict=True)}
    environment = cast(Environment, _plat.marker_environment(plat, layer.py_version))
    tags = _plat.supported_tags(plat, layer.py_version, layer.linux_target, layer.macosx_target)
    chosen: list[tuple[LockedPackage, PackageWheel]] = []
    try:
        for pkg, dist in pylock.select(environment=environment, tags=tags):
            if not isinstance(dist, PackageWheel):
                raise _no_wheel(layer, plat, row_of[id(pkg)])
            chosen.append((row_of[id(pkg)], dist))
    except PylockSelectError as exc:
        # packaging names the entry as ``packages[N]``: N indexes ``rows``
        where = re.search(r"packages\[(\d+)\]", str(exc))
        if where and str(exc).startswith("No wheel") and int(where[1]) < len(rows):
            raise _no_wheel(layer, plat, rows[int(where[1])]) from None
        raise LockError(f"layer {layer.env_name}: the lock cannot be installed on {plat}: {exc}",
                        hint="relock the layer") from None
    return chosen


def _no_wheel(layer: LayerSpec, plat: str, pkg: LockedPackage) -> LockError:
    return LockError(f"layer {layer.env_name}: the lock has no wheel of {pkg.name}=={pkg.version} for {plat}",
                     hint="relock, or restrict the layer's platforms")
