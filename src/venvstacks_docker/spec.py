"""Stack specification: ``venvstacks.toml`` -> frozen dataclasses, validated once.

The file format is venvstacks' (0.8): ``[[runtimes]]``, ``[[frameworks]]`` and
``[[applications]]`` arrays of tables plus an optional ``[tool.uv]`` table.  A spec
written for venvstacks loads here unchanged.  Unlike venvstacks, every mistake is
reported as a :class:`~venvstacks_docker.errors.SpecError` naming the layer and key,
with a did-you-mean suggestion for misspelt keys.

Our own optional settings live under ``[tool.venvstacks-docker]``, which venvstacks
ignores, so a spec using them still works with venvstacks.

This module reads the file and checks its top level; one layer's table is checked in
:mod:`~venvstacks_docker.spec_layers`, launch and support modules (where they may be,
what they ship, their hash) in :mod:`~venvstacks_docker.spec_modules`, and framework
order is computed, once per framework, by :mod:`~venvstacks_docker.spec_graph`.  The
names other modules use (``LayerSpec``, ``module_hash``, ...) are all importable from here.
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from venvstacks_docker import ui
from venvstacks_docker.errors import SpecError
from venvstacks_docker.spec_graph import FrameworkGraph
from venvstacks_docker.spec_indexes import LayerIndexes, Origin, index_names, merge_layer_indexes, normalise_sources
from venvstacks_docker.spec_layers import (  # re-exported (see __all__)
    DEFAULT_LINUX_TARGET,
    DEFAULT_MACOSX_TARGET,
    IMPLEMENTATIONS,
    PLATFORMS,
    Defined,
    LayerKind,
    LayerSpec,
    did_you_mean,
    parse_layer,
)
from venvstacks_docker.spec_modules import (  # re-exported for the stage modules
    iter_module_files,
    module_hash,
    module_name,
)

log = logging.getLogger(__name__)

_TABLES: dict[str, LayerKind] = {
    "runtimes": "runtime",
    "frameworks": "framework",
    "applications": "application",
}
_TABLE_OF = {kind: table for table, kind in _TABLES.items()}
_TOOL_KEYS = {"runtime_sources", "base_image"}


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
    warnings: tuple[str, ...] = ()
    """What loading found worth a warning (deprecated keys, ...); :func:`load` logs them."""
    layer_package_indexes: dict[str, dict[str, str]] = field(default_factory=dict, repr=False, compare=False)
    """Build name -> what :meth:`package_indexes_of` returns, computed at load."""
    _memo: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)
    """Computed once per spec: the framework graph and the derived-layers table."""

    @property
    def spec_dir(self) -> Path:
        """The folder holding the stack file."""
        return self.path.parent

    @property
    def requirements_dir(self) -> Path:
        """The folder of the lock files, next to the stack file."""
        return self.spec_dir / "requirements"

    def all_layers(self) -> tuple[LayerSpec, ...]:
        """Every layer that targets a platform: runtimes, then frameworks, then applications.

        A layer with ``platforms = []`` (or inheriting no platform) is left out, as
        venvstacks leaves it out: it is never locked, built, published or shown.
        """
        return tuple(layer for layer in self.declared_layers() if layer.platforms)

    def declared_layers(self) -> tuple[LayerSpec, ...]:
        """Every layer of the file, disabled ones included, in the order of :meth:`all_layers`."""
        return self.runtimes + self.frameworks + self.applications

    def package_indexes_of(self, layer: LayerSpec) -> dict[str, str]:
        """The distributions ``layer`` takes from a named index (normalised name -> index).

        Its own ``package_indexes`` and those it inherits from its lower layers, as
        ``index_overrides`` settle them (see :mod:`venvstacks_docker.spec_indexes`).
        """
        return dict(self.layer_package_indexes.get(layer.env_name, {}))

    def layer(self, env_name: str) -> LayerSpec:
        """The layer whose environment is named ``env_name`` (disabled ones too).

        :raises KeyError: when there is none.
        """
        for layer in self.declared_layers():
            if layer.env_name == env_name:
                return layer
        raise KeyError(env_name)

    def runtime_of(self, layer: LayerSpec) -> LayerSpec:
        """The runtime layer of ``layer``.

        :raises KeyError: when the stack has no such runtime.
        """
        for rt in self.runtimes:
            if rt.name == layer.runtime:
                return rt
        raise KeyError(layer.runtime)

    def _graph(self) -> tuple[FrameworkGraph, dict[str, LayerSpec]]:
        found: tuple[FrameworkGraph, dict[str, LayerSpec]] | None = self._memo.get("graph")
        if found is None:
            by_name = {fw.name: fw for fw in self.frameworks}
            graph = FrameworkGraph({name: fw.frameworks for name, fw in by_name.items()})
            found = self._memo.setdefault("graph", (graph, by_name))
        return found

    def linearised_frameworks(self, layer: LayerSpec) -> tuple[LayerSpec, ...]:
        """Frameworks ``layer`` depends on, in ``sys.path`` order (C3 linearisation).

        Each framework is linearised once per spec (see :mod:`venvstacks_docker.spec_graph`).
        """
        graph, by_name = self._graph()
        return tuple(by_name[n] for n in graph.linearise(layer.frameworks))

    def lower_layers(self, layer: LayerSpec) -> tuple[LayerSpec, ...]:
        """Layers visible to ``layer`` in ``sys.path`` order: frameworks, then the runtime."""
        if layer.kind == "runtime":
            return ()
        return (*self.linearised_frameworks(layer), self.runtime_of(layer))

    def derived_layers(self, layer: LayerSpec) -> tuple[LayerSpec, ...]:
        """Layers that have ``layer`` among their lower layers (file order).

        The table of every layer's derived layers is built once per spec, in one pass.
        """
        table: dict[str, tuple[LayerSpec, ...]] | None = self._memo.get("derived")
        if table is None:
            derived: dict[str, list[LayerSpec]] = {}
            for other in self.all_layers():
                for low in self.lower_layers(other):
                    derived.setdefault(low.env_name, []).append(other)
            table = self._memo.setdefault("derived", {k: tuple(v) for k, v in derived.items()})
        return table.get(layer.env_name, ())


# --- loading -------------------------------------------------------------------


def load(path: str | Path) -> StackSpec:
    """Parse and validate a stack file.

    :param path: the ``venvstacks.toml`` file (any name works), or a folder holding one.
    :raises SpecError: for anything wrong with the file, naming the layer and key; also
        when the file (or ``venvstacks.uv.toml`` next to it) is a folder, is not UTF-8
        text or cannot be read.
    """
    spec_path = _find_stack_file(path)
    text = read_text_file(spec_path, "stack file")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{spec_path.name} is not valid TOML: {exc}",
                        hint="fix the syntax at the position shown") from exc
    spec = _parse(spec_path, data)
    # in a builder container the host has loaded this file and reported them already
    say = log.debug if isinstance(ui.current(), ui.EventReporter) else log.warning
    for warning in spec.warnings:
        say(warning)
    return spec


def _find_stack_file(path: str | Path) -> Path:
    try:
        spec_path = Path(path).expanduser().absolute()
    except RuntimeError as exc:  # "~someone" with no such user
        raise SpecError(f"stack file not found: {path} ({exc})",
                        hint="pass the path of a venvstacks.toml file") from exc
    try:
        if not spec_path.exists():
            raise SpecError(f"stack file not found: {spec_path}",
                            hint="pass the path of a venvstacks.toml file")
        if spec_path.is_dir():
            candidate = spec_path / "venvstacks.toml"
            if not candidate.exists():
                raise SpecError(f"{spec_path} is a folder, not a stack file",
                                hint="pass the path of its venvstacks.toml")
            spec_path = candidate
    except OSError as exc:  # e.g. a name too long, or a folder on the way we may not enter
        raise SpecError(f"cannot read the stack file {spec_path}: {exc.strerror or exc}",
                        hint="check the path and the permissions of the folders leading to it") from exc
    return spec_path


def read_text_file(path: Path, what: str) -> str:
    """``path``'s text (UTF-8); every way that can fail is a :class:`SpecError` naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                        f"{exc.start})", hint=f"save the {what} with the UTF-8 encoding") from exc
    except OSError as exc:
        if _is_dir(path):  # IsADirectoryError, or PermissionError on Windows
            raise SpecError(f"{path} is a folder, not a {what}",
                            hint=f"the {what} must be a file: rename or remove the folder") from exc
        hint = ("make it readable for the user running venvstacks-docker"
                if isinstance(exc, PermissionError) else "check the file and the folders leading to it")
        raise SpecError(f"cannot read the {what} {path}: {exc.strerror or exc}", hint=hint) from exc


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _parse(spec_path: Path, data: dict[str, Any]) -> StackSpec:
    allowed_top = set(_TABLES) | {"tool"}
    for key in data:
        if key not in allowed_top:
            raise SpecError(f"unknown top-level key '{key}' in {spec_path.name}",
                            hint=did_you_mean(key, allowed_top))
    tool = data.get("tool", {})
    if not isinstance(tool, dict):
        raise SpecError("'tool' must be a table")
    uv_config = _uv_config(spec_path, tool)
    names = index_names(uv_config)
    uv_config = normalise_sources(uv_config, names)
    sources, base_image = _our_settings(spec_path, tool)
    notes: list[str] = []
    # layers first: a framework on a runtime that is not there is an unknown runtime
    layers = _parse_layers(spec_path, data, names, notes)
    if not layers["runtime"]:
        raise SpecError(f"{spec_path.name} defines no [[runtimes]]",
                        hint="add at least one [[runtimes]] table with name and python_implementation")
    spec = StackSpec(
        path=spec_path,
        runtimes=tuple(layers["runtime"].values()),
        frameworks=tuple(layers["framework"].values()),
        applications=tuple(layers["application"].values()),
        uv_config=uv_config,
        runtime_sources=sources,
        base_image=base_image,
        warnings=tuple(notes),
    )
    _settle_layers(spec)
    return spec


def _settle_layers(spec: StackSpec) -> None:
    """Linearise every layer's frameworks and merge its package indexes, in file order.

    Errors of either kind surface at load time, as in venvstacks, naming the layer.  This
    also fills the spec's memo (each framework's dependencies are done before it).
    """
    merged: dict[str, dict[str, Origin]] = {}
    for layer in spec.declared_layers():
        where = f"[[{_TABLE_OF[layer.kind]}]] '{layer.name}'"
        try:
            lower = spec.lower_layers(layer)
        except SpecError as exc:
            raise SpecError(f"{where}: {exc.message}", hint=exc.hint) from None
        frameworks = [low for low in lower if low.kind == "framework"] or lower[-1:]
        own = LayerIndexes(layer.package_indexes, layer.priority_indexes, layer.index_overrides)
        table = merge_layer_indexes(where, layer.env_name, own, [merged[low.env_name] for low in frameworks])
        merged[layer.env_name] = table
        spec.layer_package_indexes[layer.env_name] = {dist: index for dist, (index, _) in sorted(table.items())}


def _uv_config(spec_path: Path, tool: dict[str, Any]) -> dict[str, Any]:
    uv_config = tool.get("uv")
    if uv_config is None:
        uv_file = spec_path.parent / "venvstacks.uv.toml"
        text = read_text_file(uv_file, "uv settings file") if uv_file.exists() else ""
        try:
            uv_config = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SpecError(f"{uv_file.name} is not valid TOML: {exc}",
                            hint="fix the syntax at the position shown") from exc
    if not isinstance(uv_config, dict):
        raise SpecError("[tool.uv] must be a table")
    return uv_config


def _our_settings(spec_path: Path, tool: dict[str, Any]) -> tuple[tuple[str, ...], str | None]:
    ours = tool.get("venvstacks-docker", {})
    for key in ours:
        if key not in _TOOL_KEYS:
            raise SpecError(f"unknown key '{key}' in [tool.venvstacks-docker]",
                            hint=did_you_mean(key, _TOOL_KEYS))
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
    return resolved_sources, base_image


def _parse_layers(spec_path: Path, data: dict[str, Any], known_indexes: tuple[str, ...],
                  notes: list[str]) -> Defined:
    layers: Defined = {"runtime": {}, "framework": {}, "application": {}}
    seen: set[str] = set()
    for table, kind in _TABLES.items():
        entries = data.get(table, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise SpecError(f"'{table}' must be an array of tables ([[{table}]])")
        for index, raw in enumerate(entries):
            layer = parse_layer(kind, raw, index, spec_path.parent, layers, index_names=known_indexes,
                                notes=notes)
            if layer.env_name in seen:
                raise SpecError(
                    f"duplicate layer name '{layer.name}' in [[{table}]]",
                    hint="give every layer of a kind a unique name",
                )
            seen.add(layer.env_name)
            layers[kind][layer.name] = layer
    return layers


def canonical(name: str) -> str:
    """The normalized form of a package name (PEP 503)."""
    return canonicalize_name(name)


__all__ = [
    "DEFAULT_LINUX_TARGET", "DEFAULT_MACOSX_TARGET", "IMPLEMENTATIONS", "PLATFORMS", "Defined",
    "LayerKind", "LayerSpec", "StackSpec", "canonical", "did_you_mean", "iter_module_files", "load",
    "module_hash", "module_name", "parse_layer", "read_text_file",
]
