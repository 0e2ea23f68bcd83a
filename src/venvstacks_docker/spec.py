"""Stack specification: ``venvstacks.toml`` -> frozen dataclasses, validated once.

The file format is venvstacks' (0.8): ``[[runtimes]]``, ``[[frameworks]]`` and
``[[applications]]`` arrays of tables plus an optional ``[tool.uv]`` table.  A spec
written for venvstacks loads here unchanged.  Unlike venvstacks, every mistake is
reported as a :class:`~venvstacks_docker.errors.SpecError` naming the layer and key,
with a did-you-mean suggestion for misspelt keys.

Our own optional settings live under ``[tool.venvstacks-docker]``, which venvstacks
ignores, so a spec using them still works with venvstacks.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from venvstacks_docker.errors import SpecError

LayerKind = Literal["runtime", "framework", "application"]

PLATFORMS: tuple[str, ...] = (
    "win_amd64",
    "win_arm64",
    "linux_x86_64",
    "linux_aarch64",
    "macosx_arm64",
    "macosx_x86_64",
)
IMPLEMENTATIONS = ("cpython", "pypy")
DEFAULT_LINUX_TARGET = "2.28"
DEFAULT_MACOSX_TARGET = "13.0"

_COMMON_KEYS = {
    "name",
    "requirements",
    "platforms",
    "versioned",
    "linux_target",
    "macosx_target",
    "dynlib_exclude",
    "package_indexes",
    "index_overrides",
    "priority_indexes",
    "build_requirements",  # deprecated in venvstacks, accepted and ignored
}
_KEYS: dict[LayerKind, set[str]] = {
    "runtime": _COMMON_KEYS | {"python_implementation", "fully_versioned_name"},
    "framework": _COMMON_KEYS | {"runtime", "frameworks"},
    "application": _COMMON_KEYS | {"runtime", "frameworks", "launch_module", "support_modules"},
}
_TABLES: dict[str, LayerKind] = {
    "runtimes": "runtime",
    "frameworks": "framework",
    "applications": "application",
}
_TOOL_KEYS = {"runtime_sources", "base_image"}


@dataclass(frozen=True, kw_only=True)
class LayerSpec:
    """One layer as declared in the stack file."""

    kind: LayerKind
    name: str
    requirements: tuple[str, ...]
    platforms: tuple[str, ...]
    versioned: bool = False
    linux_target: str = DEFAULT_LINUX_TARGET
    """glibc version the layer targets (``X.Y``), i.e. ``manylinux_X_Y`` wheels."""
    macosx_target: str = DEFAULT_MACOSX_TARGET
    dynlib_exclude: tuple[str, ...] = ()
    package_indexes: tuple[tuple[str, str], ...] = ()
    index_overrides: tuple[tuple[str, str], ...] = ()
    priority_indexes: tuple[str, ...] = ()
    python_implementation: str = ""
    """Runtimes: ``impl@X.Y.Z``.  Layered envs: copied from their runtime."""
    runtime: str = ""
    """Name of the runtime layer (for runtimes: their own name)."""
    frameworks: tuple[str, ...] = ()
    """Framework names as declared (direct dependencies only)."""
    launch_module: Path | None = None
    support_modules: tuple[Path, ...] = ()

    @property
    def env_name(self) -> str:
        """Build name: runtimes as written, else ``framework-<name>`` / ``app-<name>``."""
        if self.kind == "runtime":
            return self.name
        prefix = "framework-" if self.kind == "framework" else "app-"
        return prefix + self.name

    @property
    def lock_name(self) -> str:
        """``env_name`` with ``.`` replaced by ``_`` (pylock file naming rule)."""
        return self.env_name.replace(".", "_")

    @property
    def implementation(self) -> str:
        return self.python_implementation.partition("@")[0]

    @property
    def py_version(self) -> str:
        """Full ``X.Y.Z`` version of the runtime."""
        return self.python_implementation.partition("@")[2]

    @property
    def py_minor(self) -> str:
        return ".".join(self.py_version.split(".")[:2])

    @property
    def launch_module_name(self) -> str | None:
        if self.launch_module is None:
            return None
        return module_name(self.launch_module)


@dataclass(frozen=True, kw_only=True)
class StackSpec:
    """A whole stack file."""

    path: Path
    runtimes: tuple[LayerSpec, ...]
    frameworks: tuple[LayerSpec, ...]
    applications: tuple[LayerSpec, ...]
    uv_config: dict[str, Any] = field(default_factory=dict)
    runtime_sources: tuple[str, ...] = ()
    base_image: str | None = None

    @property
    def spec_dir(self) -> Path:
        return self.path.parent

    @property
    def requirements_dir(self) -> Path:
        return self.spec_dir / "requirements"

    def all_layers(self) -> tuple[LayerSpec, ...]:
        """Every layer, runtimes first, then frameworks, then applications (file order)."""
        return self.runtimes + self.frameworks + self.applications

    def layer(self, env_name: str) -> LayerSpec:
        for layer in self.all_layers():
            if layer.env_name == env_name:
                return layer
        raise KeyError(env_name)

    def runtime_of(self, layer: LayerSpec) -> LayerSpec:
        for rt in self.runtimes:
            if rt.name == layer.runtime:
                return rt
        raise KeyError(layer.runtime)

    def linearised_frameworks(self, layer: LayerSpec) -> tuple[LayerSpec, ...]:
        """Frameworks ``layer`` depends on, in ``sys.path`` order (C3 linearisation)."""
        by_name = {fw.name: fw for fw in self.frameworks}
        return tuple(by_name[n] for n in _c3(layer.frameworks, by_name))

    def lower_layers(self, layer: LayerSpec) -> tuple[LayerSpec, ...]:
        """Layers visible to ``layer`` in ``sys.path`` order: frameworks, then the runtime."""
        if layer.kind == "runtime":
            return ()
        return (*self.linearised_frameworks(layer), self.runtime_of(layer))

    def derived_layers(self, layer: LayerSpec) -> tuple[LayerSpec, ...]:
        """Layers that have ``layer`` among their lower layers."""
        return tuple(
            other for other in self.all_layers() if layer in self.lower_layers(other)
        )


def module_name(path: Path) -> str:
    return path.stem if path.suffix == ".py" else path.name


def _c3(direct: tuple[str, ...], by_name: dict[str, LayerSpec]) -> list[str]:
    def linearise(names: tuple[str, ...]) -> list[str]:
        seqs = [[n, *linearise(by_name[n].frameworks)] for n in names]
        seqs.append(list(names))
        result: list[str] = []
        while True:
            seqs = [s for s in seqs if s]
            if not seqs:
                return result
            for seq in seqs:
                head = seq[0]
                if not any(head in s[1:] for s in seqs):
                    break
            else:
                raise SpecError(
                    "framework dependency linearisation failed "
                    f"(remaining sequences: {seqs})",
                    hint="reorder the 'frameworks' lists so they agree on a single order",
                )
            result.append(head)
            for s in seqs:
                if s and s[0] == head:
                    del s[0]

    return linearise(direct)


# --- loading -------------------------------------------------------------------


def load(path: str | Path) -> StackSpec:
    """Parse and validate a stack file.

    :param path: the ``venvstacks.toml`` file (any name works).
    :raises SpecError: for anything wrong with the file, naming the layer and key.
    """
    spec_path = Path(path).expanduser().absolute()
    if not spec_path.exists():
        raise SpecError(
            f"stack file not found: {spec_path}",
            hint="pass the path of a venvstacks.toml file",
        )
    if spec_path.is_dir():
        candidate = spec_path / "venvstacks.toml"
        if candidate.exists():
            spec_path = candidate
        else:
            raise SpecError(f"{spec_path} is a folder, not a stack file",
                            hint="pass the path of its venvstacks.toml")
    try:
        data = tomllib.loads(spec_path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{spec_path.name} is not valid TOML: {exc}",
                        hint="fix the syntax at the position shown") from exc
    except UnicodeDecodeError as exc:
        raise SpecError(f"{spec_path.name} is not UTF-8 text") from exc
    return _parse(spec_path, data)


def _did_you_mean(key: str, allowed: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(allowed), n=1)
    return f"did you mean '{close[0]}'?" if close else f"allowed keys: {', '.join(sorted(allowed))}"


def _parse(spec_path: Path, data: dict[str, Any]) -> StackSpec:
    allowed_top = set(_TABLES) | {"tool"}
    for key in data:
        if key not in allowed_top:
            raise SpecError(f"unknown top-level key '{key}' in {spec_path.name}",
                            hint=_did_you_mean(key, allowed_top))
    if not data.get("runtimes"):
        raise SpecError(f"{spec_path.name} defines no [[runtimes]]",
                        hint="add at least one [[runtimes]] table with name and python_implementation")
    tool = data.get("tool", {})
    if not isinstance(tool, dict):
        raise SpecError("'tool' must be a table")
    uv_config = tool.get("uv")
    if uv_config is None:
        uv_file = spec_path.parent / "venvstacks.uv.toml"
        try:
            uv_config = tomllib.loads(uv_file.read_text("utf-8")) if uv_file.exists() else {}
        except tomllib.TOMLDecodeError as exc:
            raise SpecError(f"{uv_file.name} is not valid TOML: {exc}",
                            hint="fix the syntax at the position shown") from exc
    if not isinstance(uv_config, dict):
        raise SpecError("[tool.uv] must be a table")
    ours = tool.get("venvstacks-docker", {})
    for key in ours:
        if key not in _TOOL_KEYS:
            raise SpecError(f"unknown key '{key}' in [tool.venvstacks-docker]",
                            hint=_did_you_mean(key, _TOOL_KEYS))
    sources = ours.get("runtime_sources", [])
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        raise SpecError("[tool.venvstacks-docker] runtime_sources must be an array of strings")
    # relative local sources are relative to the spec folder
    resolved_sources = tuple(
        s if "://" in s or Path(s).is_absolute() else str(spec_path.parent / s) for s in sources
    )
    base_image = ours.get("base_image")
    if base_image is not None and not isinstance(base_image, str):
        raise SpecError("[tool.venvstacks-docker] base_image must be a string")

    layers: dict[LayerKind, list[LayerSpec]] = {"runtime": [], "framework": [], "application": []}
    seen: dict[str, str] = {}
    for table, kind in _TABLES.items():
        entries = data.get(table, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise SpecError(f"'{table}' must be an array of tables ([[{table}]])")
        for index, raw in enumerate(entries):
            layer = _parse_layer(kind, raw, index, spec_path.parent, layers)
            if layer.env_name in seen:
                raise SpecError(
                    f"duplicate layer name '{layer.name}' in [[{table}]]",
                    hint="give every layer of a kind a unique name",
                )
            seen[layer.env_name] = table
            layers[kind].append(layer)
    spec = StackSpec(
        path=spec_path,
        runtimes=tuple(layers["runtime"]),
        frameworks=tuple(layers["framework"]),
        applications=tuple(layers["application"]),
        uv_config=uv_config,
        runtime_sources=resolved_sources,
        base_image=base_image,
    )
    # linearisation errors surface at load time, like venvstacks
    for layer in spec.frameworks + spec.applications:
        spec.linearised_frameworks(layer)
    return spec


def _where(kind: LayerKind, raw: dict[str, Any], index: int) -> str:
    name = raw.get("name")
    table = {"runtime": "runtimes", "framework": "frameworks", "application": "applications"}[kind]
    return f"[[{table}]] '{name}'" if isinstance(name, str) else f"[[{table}]] entry {index + 1}"


def _str_list(raw: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"{where}: '{key}' must be an array of strings")
    return tuple(value)


def _str_table(raw: dict[str, Any], key: str, where: str) -> tuple[tuple[str, str], ...]:
    value = raw.get(key, {})
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise SpecError(f"{where}: '{key}' must be a table of strings")
    return tuple(sorted(value.items()))


_VERSION_RE = re.compile(r"^\d+\.\d+$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]*$")


def _parse_layer(
    kind: LayerKind,
    raw: dict[str, Any],
    index: int,
    spec_dir: Path,
    defined: dict[LayerKind, list[LayerSpec]],
) -> LayerSpec:
    where = _where(kind, raw, index)
    allowed = _KEYS[kind]
    for key in raw:
        if key not in allowed:
            raise SpecError(f"{where}: unknown key '{key}'", hint=_did_you_mean(key, allowed))
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise SpecError(f"{where}: missing 'name'", hint="every layer needs name = \"...\"")
    if not _NAME_RE.match(name):
        raise SpecError(f"{where}: invalid layer name {name!r}",
                        hint="use letters, digits and - _ . @ + (no slashes or spaces)")
    if kind == "runtime" and name.startswith(("app-", "framework-")):
        raise SpecError(f"{where}: runtime names may not start with 'app-' or 'framework-'",
                        hint="those prefixes are reserved for layered environments")
    if "requirements" not in raw:
        raise SpecError(f"{where}: missing 'requirements'",
                        hint="add requirements = [] if the layer installs no packages")
    requirements = _str_list(raw, "requirements", where)
    for req in requirements:
        try:
            Requirement(req)
        except InvalidRequirement as exc:
            raise SpecError(f"{where}: invalid requirement {req!r}: {exc}") from exc
    versioned = raw.get("versioned", False)
    if not isinstance(versioned, bool):
        raise SpecError(f"{where}: 'versioned' must be true or false")

    linux_target = DEFAULT_LINUX_TARGET
    if "linux_target" in raw:
        value = raw["linux_target"]
        if not isinstance(value, str):
            raise SpecError(f"{where}: 'linux_target' must be a string like \"glibc@2.28\"")
        variant, _, version = value.partition("@")
        if variant != "glibc":
            raise SpecError(f"{where}: Linux libc variant must be one of ['glibc'], not {variant!r}")
        if version:
            if not _VERSION_RE.match(version):
                raise SpecError(f"{where}: linux_target version must be of the form 'X.Y'")
            linux_target = version
    macosx_target = raw.get("macosx_target", DEFAULT_MACOSX_TARGET)
    if not isinstance(macosx_target, str) or not re.match(r"^\d+(\.\d+)?$", macosx_target):
        raise SpecError(f"{where}: 'macosx_target' must be a version string like \"13.0\"")

    runtime = ""
    frameworks: tuple[str, ...] = ()
    python_implementation = ""
    inherited_platforms: set[str] = set(PLATFORMS)
    if kind == "runtime":
        impl = raw.get("python_implementation")
        legacy = raw.get("fully_versioned_name")
        if impl is not None and legacy is not None:
            raise SpecError(f"{where}: set only one of 'python_implementation' and "
                            "'fully_versioned_name' (the old name)")
        impl = impl if impl is not None else legacy
        if not isinstance(impl, str) or not impl:
            raise SpecError(f"{where}: missing 'python_implementation'",
                            hint='for example python_implementation = "cpython@3.11.2"')
        impl_name, at, version = impl.partition("@")
        if impl_name not in IMPLEMENTATIONS:
            raise SpecError(f"{where}: unknown Python implementation {impl_name!r}",
                            hint=f"use one of {', '.join(IMPLEMENTATIONS)}, e.g. cpython@3.11.2")
        if not at or not re.match(r"^\d+\.\d+\.\d+$", version):
            raise SpecError(f"{where}: python_implementation must look like 'cpython@X.Y.Z', "
                            f"not {impl!r}")
        python_implementation = impl
        runtime = name
    else:
        has_rt, has_fw = "runtime" in raw, "frameworks" in raw
        if has_rt == has_fw:
            raise SpecError(f"{where}: set exactly one of 'runtime' and 'frameworks'")
        known_rts = {rt.name: rt for rt in defined["runtime"]}
        known_fws = {fw.name: fw for fw in defined["framework"]}
        if has_rt:
            runtime = raw["runtime"]
            if not isinstance(runtime, str):
                raise SpecError(f"{where}: 'runtime' must be a string")
            if runtime not in known_rts:
                raise SpecError(
                    f"{where}: unknown runtime {runtime!r}",
                    hint=_ref_hint(runtime, set(known_rts), "runtimes"),
                )
            lower = [known_rts[runtime]]
        else:
            frameworks = _str_list(raw, "frameworks", where)
            if not frameworks:
                raise SpecError(f"{where}: 'frameworks' must not be empty")
            if len(set(frameworks)) != len(frameworks):
                raise SpecError(f"{where}: 'frameworks' lists a framework twice")
            for fw in frameworks:
                if fw == name and kind == "framework":
                    raise SpecError(f"{where}: a framework cannot depend on itself")
                if fw not in known_fws:
                    raise SpecError(
                        f"{where}: unknown framework {fw!r}",
                        hint=_ref_hint(fw, set(known_fws), "frameworks")
                        + " (layers must be defined before the layers that use them, "
                        "which also rules out cycles)",
                    )
            rts = {known_fws[fw].runtime for fw in frameworks}
            if len(rts) != 1:
                raise SpecError(f"{where}: references inconsistent frameworks "
                                f"(they use different runtimes: {', '.join(sorted(rts))})")
            runtime = rts.pop()
            lower = [known_fws[fw] for fw in frameworks]
        python_implementation = known_rts[runtime].python_implementation
        for low in lower:
            inherited_platforms &= set(low.platforms)

    if "platforms" in raw:
        platforms = _str_list(raw, "platforms", where)
        for plat in platforms:
            if plat not in PLATFORMS:
                raise SpecError(f"{where}: unknown platform {plat!r}",
                                hint=f"valid platforms: {', '.join(PLATFORMS)}")
        unsupported = [p for p in platforms if p not in inherited_platforms]
        if unsupported:
            raise SpecError(f"{where}: platforms {unsupported} are not supported by lower layers")
    else:
        platforms = tuple(p for p in PLATFORMS if p in inherited_platforms)

    launch_module: Path | None = None
    support_modules: tuple[Path, ...] = ()
    if kind == "application":
        lm = raw.get("launch_module")
        if not isinstance(lm, str) or not lm:
            raise SpecError(f"{where}: missing 'launch_module'",
                            hint='point it at a .py file or package folder, e.g. "launch_modules/app.py"')
        launch_module = _module_path(spec_dir, lm, where, "launch_module")
        mods = sorted(_module_path(spec_dir, m, where, "support_modules")
                      for m in _str_list(raw, "support_modules", where))
        names = [module_name(m) for m in mods]
        if len(set(names)) != len(names):
            raise SpecError(f"{where}: support module names must be unique")
        if module_name(launch_module) in names:
            raise SpecError(f"{where}: a support module has the launch module's name")
        support_modules = tuple(mods)

    return LayerSpec(
        kind=kind,
        name=name,
        requirements=requirements,
        platforms=platforms,
        versioned=versioned,
        linux_target=linux_target,
        macosx_target=macosx_target,
        dynlib_exclude=_str_list(raw, "dynlib_exclude", where),
        package_indexes=_str_table(raw, "package_indexes", where),
        index_overrides=_str_table(raw, "index_overrides", where),
        priority_indexes=_str_list(raw, "priority_indexes", where),
        python_implementation=python_implementation,
        runtime=runtime,
        frameworks=frameworks,
        launch_module=launch_module,
        support_modules=support_modules,
    )


def _ref_hint(name: str, known: set[str], what: str) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    if close:
        return f"did you mean '{close[0]}'?"
    return f"defined {what}: {', '.join(sorted(known)) or '(none yet)'}"


def _module_path(spec_dir: Path, value: str, where: str, key: str) -> Path:
    path = (spec_dir / value).absolute()
    if not path.exists():
        raise SpecError(f"{where}: {key} {value!r} does not exist (looked at {path})",
                        hint="paths are relative to the folder holding the stack file")
    if path.is_file() and path.suffix != ".py":
        raise SpecError(f"{where}: {key} {value!r} must be a .py file or a package folder")
    if path.is_dir() and not (path / "__init__.py").exists() and not (path / "__main__.py").exists():
        raise SpecError(f"{where}: {key} folder {value!r} is not a package",
                        hint="add an __init__.py (and a __main__.py to run it with -m)")
    return path


# --- hashing of module sources ---------------------------------------------------

_SKIP_DIRS = {"__pycache__"}


def iter_module_files(path: Path) -> list[Path]:
    """Files of a launch/support module, sorted, without caches and VCS files."""
    if path.is_file():
        return [path]
    files = []
    for item in sorted(path.rglob("*")):
        rel = item.relative_to(path)
        if any(p in _SKIP_DIRS or p.startswith(".git") for p in rel.parts):
            continue
        if item.suffix in (".pyc", ".pyo"):
            continue
        if item.is_file():
            files.append(item)
    return files


def module_hash(path: Path) -> str:
    """``sha256:<hex>`` over a module's name and content (every file, sorted)."""
    digest = hashlib.sha256()
    digest.update(module_name(path).encode())
    for file in iter_module_files(path):
        rel = file.relative_to(path).as_posix() if path.is_dir() else file.name
        digest.update(b"\0" + rel.encode() + b"\0")
        digest.update(file.read_bytes())
    return "sha256:" + digest.hexdigest()


def canonical(name: str) -> str:
    return canonicalize_name(name)
