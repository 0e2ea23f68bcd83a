"""One layer of a stack file: :class:`LayerSpec` and the checks of its table.

Everything here is re-exported by :mod:`venvstacks_docker.spec`, which reads the file
and parses the tables in order; this module checks one ``[[runtimes]]``,
``[[frameworks]]`` or ``[[applications]]`` table against the layers defined above it.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from packaging.requirements import InvalidRequirement, Requirement

from venvstacks_docker.dynlib import pattern_problem
from venvstacks_docker.errors import SpecError
from venvstacks_docker.spec_indexes import parse_layer_indexes
from venvstacks_docker.spec_modules import check_module_path, module_name

LayerKind = Literal["runtime", "framework", "application"]

PLATFORMS: tuple[str, ...] = (
    "win_amd64",
    "win_arm64",
    "linux_x86_64",
    "linux_aarch64",
    "macosx_arm64",
    "macosx_x86_64",
)
#: Python implementations a runtime layer may name (the one table: runtimes imports it).
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
    "build_requirements",  # deprecated in venvstacks: accepted with a warning, ignored
}
_KEYS: dict[LayerKind, set[str]] = {
    "runtime": _COMMON_KEYS | {"python_implementation", "fully_versioned_name"},
    "framework": _COMMON_KEYS | {"runtime", "frameworks"},
    "application": _COMMON_KEYS | {"runtime", "frameworks", "launch_module", "support_modules"},
}


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
    """The layer's own table (normalised distribution name -> index name), sorted; what it
    resolves with, inherited entries included, is ``StackSpec.package_indexes_of``."""
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
        """The implementation part of ``python_implementation`` (``cpython``)."""
        return self.python_implementation.partition("@")[0]

    @property
    def py_version(self) -> str:
        """Full ``X.Y.Z`` version of the runtime."""
        return self.python_implementation.partition("@")[2]

    @property
    def py_minor(self) -> str:
        """The ``major.minor`` Python version."""
        return ".".join(self.py_version.split(".")[:2])

    @property
    def launch_module_name(self) -> str | None:
        """The module name of the launch module, if the layer has one."""
        if self.launch_module is None:
            return None
        return module_name(self.launch_module)


def did_you_mean(key: str, allowed: set[str]) -> str:
    """A hint for an unknown key: the closest allowed one, else all of them."""
    close = difflib.get_close_matches(key, sorted(allowed), n=1)
    return f"did you mean '{close[0]}'?" if close else f"allowed keys: {', '.join(sorted(allowed))}"


Defined = dict[LayerKind, dict[str, LayerSpec]]
"""Layers parsed so far, by kind, then by name (file order)."""


def _where(kind: LayerKind, raw: dict[str, Any], index: int) -> str:
    name = raw.get("name")
    table = {"runtime": "runtimes", "framework": "frameworks", "application": "applications"}[kind]
    return f"[[{table}]] '{name}'" if isinstance(name, str) else f"[[{table}]] entry {index + 1}"


def _str_list(raw: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"{where}: '{key}' must be an array of strings")
    return tuple(value)


_VERSION_RE = re.compile(r"^\d+\.\d+$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]*$")


@dataclass(frozen=True)
class _Lower:
    """What a layer takes from the layers below it."""

    runtime: str
    frameworks: tuple[str, ...]
    python_implementation: str
    platforms: frozenset[str]


def parse_layer(kind: LayerKind, raw: dict[str, Any], index: int, spec_dir: Path, defined: Defined, *,
                index_names: tuple[str, ...] = (), notes: list[str] | None = None) -> LayerSpec:
    """One ``[[runtimes]]``/``[[frameworks]]``/``[[applications]]`` table, checked in key order.

    :param index_names: the named indexes of the stack's uv settings.
    :param notes: warnings (deprecated keys, ...) are appended here.
    """
    notes = [] if notes is None else notes
    where = _where(kind, raw, index)
    name = _parse_name(kind, raw, where)
    notes.extend(deprecations(kind, raw, where))
    requirements = _parse_requirements(raw, where)
    versioned = raw.get("versioned", False)
    if not isinstance(versioned, bool):
        raise SpecError(f"{where}: 'versioned' must be true or false")
    linux_target = _parse_linux_target(raw, where)
    macosx_target = raw.get("macosx_target", DEFAULT_MACOSX_TARGET)
    if not isinstance(macosx_target, str) or not re.match(r"^\d+(\.\d+)?$", macosx_target):
        raise SpecError(f"{where}: 'macosx_target' must be a version string like \"13.0\"")
    if kind == "runtime":
        lower = _Lower(name, (), _parse_implementation(raw, where), frozenset(PLATFORMS))
    else:
        lower = _parse_lower(kind, raw, name, where, defined)
    platforms = _parse_platforms(raw, where, lower.platforms)
    launch_module, support_modules = (_parse_modules(raw, where, spec_dir) if kind == "application"
                                      else (None, ()))
    indexes = parse_layer_indexes(raw, where, index_names, notes)
    return LayerSpec(
        kind=kind,
        name=name,
        requirements=requirements,
        platforms=platforms,
        versioned=versioned,
        linux_target=linux_target,
        macosx_target=macosx_target,
        dynlib_exclude=_parse_dynlib_exclude(raw, where),
        package_indexes=indexes.package_indexes,
        index_overrides=indexes.index_overrides,
        priority_indexes=indexes.priority_indexes,
        python_implementation=lower.python_implementation,
        runtime=lower.runtime,
        frameworks=lower.frameworks,
        launch_module=launch_module,
        support_modules=support_modules,
    )


def _parse_name(kind: LayerKind, raw: dict[str, Any], where: str) -> str:
    allowed = _KEYS[kind]
    for key in raw:
        if key not in allowed:
            raise SpecError(f"{where}: unknown key '{key}'", hint=did_you_mean(key, allowed))
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise SpecError(f"{where}: missing 'name'", hint="every layer needs name = \"...\"")
    if not _NAME_RE.match(name):
        raise SpecError(f"{where}: invalid layer name {name!r}",
                        hint="use letters, digits and - _ . @ + (no slashes or spaces)")
    if kind == "runtime" and name.startswith(("app-", "framework-")):
        raise SpecError(f"{where}: runtime names may not start with 'app-' or 'framework-'",
                        hint="those prefixes are reserved for layered environments")
    return name


def deprecations(kind: LayerKind, raw: dict[str, Any], where: str) -> list[str]:
    """Warnings for the keys venvstacks deprecated (it warns with a ``FutureWarning``)."""
    found = []
    if kind == "runtime" and "fully_versioned_name" in raw:
        found.append(f"{where}: 'fully_versioned_name' is the deprecated name of 'python_implementation' "
                     "(a FutureWarning in venvstacks): rename it")
    if "build_requirements" in raw:
        found.append(f"{where}: 'build_requirements' is deprecated and has no effect (a FutureWarning "
                     "in venvstacks, which dropped it): remove it")
    return found


def _parse_requirements(raw: dict[str, Any], where: str) -> tuple[str, ...]:
    if "requirements" not in raw:
        raise SpecError(f"{where}: missing 'requirements'",
                        hint="add requirements = [] if the layer installs no packages")
    requirements = _str_list(raw, "requirements", where)
    for req in requirements:
        try:
            Requirement(req)
        except InvalidRequirement as exc:
            raise SpecError(f"{where}: invalid requirement {req!r}: {exc}") from exc
    return requirements


def _parse_dynlib_exclude(raw: dict[str, Any], where: str) -> tuple[str, ...]:
    """Glob patterns of shared libraries not to link into ``share/venv/dynlib`` (see :mod:`.dynlib`)."""
    patterns = _str_list(raw, "dynlib_exclude", where)
    for pattern in patterns:
        problem = pattern_problem(pattern)
        if problem is not None:
            raise SpecError(f"{where}: dynlib_exclude pattern {pattern!r} {problem}",
                            hint="patterns match the end of a library's path, e.g. \"*.so\" or \"triton/**\"")
    return patterns


def _parse_linux_target(raw: dict[str, Any], where: str) -> str:
    if "linux_target" not in raw:
        return DEFAULT_LINUX_TARGET
    value = raw["linux_target"]
    if not isinstance(value, str):
        raise SpecError(f"{where}: 'linux_target' must be a string like \"glibc@2.28\"")
    variant, _, version = value.partition("@")
    if variant != "glibc":
        raise SpecError(f"{where}: Linux libc variant must be one of ['glibc'], not {variant!r}")
    if not version:
        return DEFAULT_LINUX_TARGET
    if not _VERSION_RE.match(version):
        raise SpecError(f"{where}: linux_target version must be of the form 'X.Y', not {version!r}",
                        hint='for example linux_target = "glibc@2.28"')
    return version


def _parse_implementation(raw: dict[str, Any], where: str) -> str:
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
    return impl


def _parse_lower(kind: LayerKind, raw: dict[str, Any], name: str, where: str,
                 defined: Defined) -> _Lower:
    """``runtime`` or ``frameworks`` of a layered environment, checked against ``defined``."""
    has_rt, has_fw = "runtime" in raw, "frameworks" in raw
    if has_rt == has_fw:
        raise SpecError(f"{where}: set exactly one of 'runtime' and 'frameworks'")
    known_rts, known_fws = defined["runtime"], defined["framework"]
    frameworks: tuple[str, ...] = ()
    if has_rt:
        runtime = raw["runtime"]
        if not isinstance(runtime, str):
            raise SpecError(f"{where}: 'runtime' must be a string")
        if runtime not in known_rts:
            raise SpecError(f"{where}: unknown runtime {runtime!r}",
                            hint=_ref_hint(runtime, set(known_rts), "runtimes"))
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
    platforms = set(PLATFORMS)
    for low in lower:
        platforms &= set(low.platforms)
    return _Lower(runtime, frameworks, known_rts[runtime].python_implementation, frozenset(platforms))


def _parse_platforms(raw: dict[str, Any], where: str, inherited: frozenset[str]) -> tuple[str, ...]:
    if "platforms" not in raw:
        return tuple(p for p in PLATFORMS if p in inherited)
    platforms = _str_list(raw, "platforms", where)
    for plat in platforms:
        if plat not in PLATFORMS:
            raise SpecError(f"{where}: unknown platform {plat!r}",
                            hint=f"valid platforms: {', '.join(PLATFORMS)}")
    unsupported = [p for p in platforms if p not in inherited]
    if unsupported:
        raise SpecError(f"{where}: platforms {unsupported} are not supported by lower layers")
    return platforms


def _parse_modules(raw: dict[str, Any], where: str, spec_dir: Path) -> tuple[Path, tuple[Path, ...]]:
    """An application's ``launch_module`` and ``support_modules`` (see :mod:`.spec_modules`)."""
    lm = raw.get("launch_module")
    if not isinstance(lm, str) or not lm:
        raise SpecError(f"{where}: missing 'launch_module'",
                        hint='point it at a .py file or package folder, e.g. "launch_modules/app.py"')
    support = _str_list(raw, "support_modules", where)
    _check_module_names(lm, support, where)  # before the files: as venvstacks, names first
    launch_module = check_module_path(spec_dir, lm, where, "launch_module")
    mods = sorted(check_module_path(spec_dir, m, where, "support_modules") for m in support)
    return launch_module, tuple(mods)


def _check_module_names(launch: str, support: tuple[str, ...], where: str) -> None:
    """Every module of an application needs its own import name (whether or not it exists)."""
    launch_name = module_name(Path(launch))
    named = [(module_name(Path(value)), value) for value in sorted(support)]
    for name, value in named:
        if name == launch_name:
            raise SpecError(f"{where}: the launch module {launch!r} and the support module {value!r} are both "
                            f"imported as {name!r}: the names conflict",
                            hint="rename one of them; each module of an application needs its own name")
    seen: dict[str, str] = {}
    for name, value in named:
        if name in seen:
            raise SpecError(f"{where}: conflicting support module names: {seen[name]!r} and {value!r} are both "
                            f"imported as {name!r}", hint="rename one of them, or list only one")
        seen[name] = value


def _ref_hint(name: str, known: set[str], what: str) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    if close:
        return f"did you mean '{close[0]}'?"
    return f"defined {what}: {', '.join(sorted(known)) or '(none yet)'}"

