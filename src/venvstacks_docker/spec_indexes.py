"""Package index settings of a stack: named indexes, sources and each layer's table.

The rules are venvstacks 0.8's:

* ``package_indexes`` (distribution -> name of a ``[[tool.uv.index]]``) and
  ``priority_indexes`` may only name indexes the uv settings define; a typo is an
  error when the file loads, not a uv failure when locking;
* distribution names are compared normalised (PEP 503: ``Torch``, ``torch`` and
  ``TORCH`` are one name), in ``package_indexes`` and in ``[tool.uv.sources]``; one
  table spelling a name twice is an error;
* a layer inherits the ``package_indexes`` of the layers below it.  Its frameworks are
  consulted in ``sys.path`` order (the first one that names a distribution wins; each
  carries what it inherited from its own lower layers, down to the runtime), then its
  own table, which wins over all of them.  A layer whose lower layers, or whose own
  table, disagree with what it inherits must accept that explicitly with
  ``index_overrides = {<index it replaces> = "<index it keeps>"}``; the error message
  spells out that line;
* ``priority_indexes`` are not inherited.

:func:`merge_layer_indexes` computes a layer's table once, at load; the lock step
(:func:`venvstacks_docker.lock`) hands it to uv as ``[tool.uv.sources]``.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from packaging.utils import canonicalize_name

from venvstacks_docker.errors import SpecError

Origin = tuple[str, str]
"""Where a layer takes a distribution from: (index name, build name of the layer that said so)."""

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class LayerIndexes:
    """One layer's own index settings, as declared (distribution names normalised)."""

    package_indexes: tuple[tuple[str, str], ...] = ()
    priority_indexes: tuple[str, ...] = ()
    index_overrides: tuple[tuple[str, str], ...] = ()


def index_names(uv_config: Mapping[str, Any]) -> tuple[str, ...]:
    """The names of the ``[[tool.uv.index]]`` entries, in file order (unnamed ones left out).

    :raises SpecError: when ``index`` is not an array of tables or a name is not a string.
    """
    entries = uv_config.get("index", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise SpecError("[tool.uv] 'index' must be an array of tables ([[tool.uv.index]])")
    names: list[str] = []
    for position, entry in enumerate(entries, 1):
        name = entry.get("name")
        if name is None:
            continue
        if not isinstance(name, str) or not name:
            raise SpecError(f"[[tool.uv.index]] entry {position}: 'name' must be a non-empty string")
        names.append(name)
    return tuple(names)


def unknown_index_hint(name: str, known: Sequence[str]) -> str:
    """What to do about an index name the uv settings do not define."""
    close = difflib.get_close_matches(name, sorted(known), n=1)
    if close:
        return f"did you mean '{close[0]}'?"
    if known:
        return f"named indexes: {', '.join(known)} (define more as [[tool.uv.index]] tables with a name)"
    return f'define it as a [[tool.uv.index]] table with name = "{name}" and its url'


def normalise_sources(uv_config: dict[str, Any], known: Sequence[str]) -> dict[str, Any]:
    """``uv_config`` with the keys of ``[tool.uv.sources]`` normalised, checked.

    :raises SpecError: when a name is spelt twice, or a source names an unknown index.
    """
    sources = uv_config.get("sources")
    if sources is None:
        return uv_config
    if not isinstance(sources, dict):
        raise SpecError("[tool.uv] 'sources' must be a table")
    normalised: dict[str, Any] = {}
    spelt: dict[str, str] = {}
    for raw_name, source in sources.items():
        dist = canonicalize_name(raw_name)
        if dist in normalised:
            raise SpecError(f"[tool.uv.sources] names the distribution {dist!r} twice "
                            f"({spelt[dist]!r} and {raw_name!r})", hint=_SAME_NAME_HINT)
        for entry in source if isinstance(source, list) else [source]:
            index = entry.get("index") if isinstance(entry, dict) else None
            if index is not None and index not in known:
                raise SpecError(f"[tool.uv.sources] {raw_name!r} names an unknown package index {index!r}",
                                hint=unknown_index_hint(str(index), known))
        normalised[dist] = source
        spelt[dist] = raw_name
    return {**uv_config, "sources": normalised}


_SAME_NAME_HINT = ("distribution names are compared normalised (case, '-', '_' and '.' do not matter, "
                   "as in PEP 503): keep one entry")


def _string_table(raw: Mapping[str, Any], key: str, where: str) -> dict[str, str]:
    value = raw.get(key, {})
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise SpecError(f"{where}: '{key}' must be a table of strings")
    return value


def parse_layer_indexes(raw: Mapping[str, Any], where: str, known: Sequence[str],
                        notes: list[str]) -> LayerIndexes:
    """A layer's ``package_indexes``, ``priority_indexes`` and ``index_overrides``, checked.

    :param known: the named indexes of the uv settings (:func:`index_names`).
    :param notes: warnings are appended here (an override naming no known index).
    :raises SpecError: for a wrong type, a distribution named twice or an unknown index.
    """
    package_indexes: dict[str, str] = {}
    spelt: dict[str, str] = {}
    for raw_name, index in _string_table(raw, "package_indexes", where).items():
        dist = canonicalize_name(raw_name)
        if dist in package_indexes:
            raise SpecError(f"{where}: package_indexes names the distribution {dist!r} twice "
                            f"({spelt[dist]!r} and {raw_name!r})", hint=_SAME_NAME_HINT)
        if index not in known:
            raise SpecError(f"{where}: package_indexes takes {raw_name!r} from an unknown package index "
                            f"{index!r}", hint=unknown_index_hint(index, known))
        package_indexes[dist] = index
        spelt[dist] = raw_name
    priority = raw.get("priority_indexes", [])
    if not isinstance(priority, list) or not all(isinstance(p, str) for p in priority):
        raise SpecError(f"{where}: 'priority_indexes' must be an array of strings")
    for index in priority:
        if index not in known:
            raise SpecError(f"{where}: priority_indexes names an unknown package index {index!r}",
                            hint=unknown_index_hint(index, known))
    overrides = _string_table(raw, "index_overrides", where)
    for replaced, kept in overrides.items():
        strangers = [name for name in (replaced, kept) if name not in known]
        if strangers:
            notes.append(f"{where}: index_overrides entry {replaced} = {kept!r} names "
                         f"{' and '.join(map(repr, strangers))}, not a named index of [[tool.uv.index]]; "
                         "it can never apply")
    return LayerIndexes(package_indexes=tuple(sorted(package_indexes.items())),
                        priority_indexes=tuple(priority), index_overrides=tuple(sorted(overrides.items())))


def override_line(replaced: str, kept: str) -> str:
    """The ``index_overrides`` line that accepts ``kept`` where ``replaced`` was inherited."""
    key = replaced if _BARE_KEY.match(replaced) else json.dumps(replaced)
    return f"index_overrides = {{{key} = {json.dumps(kept)}}}"


def merge_layer_indexes(where: str, env_name: str, own: LayerIndexes,
                        inherited: Sequence[Mapping[str, Origin]]) -> dict[str, Origin]:
    """The distributions -> indexes a layer resolves with, and which layer set each.

    :param inherited: the merged tables of the layers it sees, in ``sys.path`` order
        (its frameworks as linearised, or its runtime).
    :raises SpecError: when they disagree and ``own.index_overrides`` does not accept it.
    """
    overrides = dict(own.index_overrides)
    merged: dict[str, Origin] = {}
    for table in inherited:
        for dist, (index, origin) in table.items():
            kept = merged.get(dist)
            if kept is None:
                merged[dist] = (index, origin)
            elif kept[0] != overrides.get(index, index):
                raise SpecError(
                    f"{where}: inconsistent package index settings for {dist!r}: {kept[1]} takes it "
                    f"from {kept[0]!r}, {origin} from {index!r}",
                    hint=f"the layer takes it from {kept[0]!r} ({kept[1]} comes first in its sys.path); "
                         f"to accept that, add {override_line(index, kept[0])}")
    for dist, index in own.package_indexes:
        kept = merged.get(dist)
        if kept is not None and index != overrides.get(kept[0], kept[0]):
            raise SpecError(
                f"{where}: inconsistent package index settings for {dist!r}: its package_indexes take "
                f"it from {index!r}, but the lower layer {kept[1]} takes it from {kept[0]!r}",
                hint=f"to take it from {index!r} in this layer anyway, add {override_line(kept[0], index)}")
        merged[dist] = (index, env_name)
    return merged
