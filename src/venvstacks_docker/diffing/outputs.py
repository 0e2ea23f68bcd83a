"""Comparing two publish output folders (or two metadata files): metadata field by field,
archives paired by layer.

Layers are paired by ``layer_name`` and ``target_platform`` from the metadata, so
archives with other names (``--tag-outputs`` puts the ``archive_build`` into the name)
are still compared with each other; archives no metadata names are paired by file
name.  Fields in :data:`~.model.RUN_FIELDS` are listed apart and only count with
``strict``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from venvstacks_docker.diffing.compare import compare_archives
from venvstacks_docker.diffing.members import detect_format
from venvstacks_docker.diffing.model import ArchiveReport, FieldDiff, MetadataReport, Report, is_run_field
from venvstacks_docker.errors import SpecError
from venvstacks_docker.metadata import LAYER_KINDS, LAYER_METADATA_DIR, METADATA_DIR, sha256_file

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".tar.xz", ".tar.gz", ".tgz", ".tar", ".zip")
_UNREADABLE = object()
_WHY = {
    "archive_hashes": "the archive's bytes differ (see the archive below)",
    "archive_size": "the archive's size differs (see the archive below)",
    "archive_name": "the archive has another file name",
    "venvstacks_docker.archive_tar_sha256": "the uncompressed tar streams differ, not only the compression",
    "venvstacks_docker.compression": "other compressor settings: other archive bytes even for one tar stream",
    "venvstacks_docker.uv_version": "another uv installed the layer (installed files such as RECORD may differ)",
    "venvstacks_docker.tool_version": "another venvstacks-docker published it (postinstall.py, filtering rules)",
    "venvstacks_docker.source_date_epoch": "another mtime for every member (SOURCE_DATE_EPOCH or locked_at)",
    "venvstacks_docker.runtime_archive_sha256": "another runtime archive was pinned",
    "locked_at": "another lock (another exclude-newer time, or a relock)",
    "requirements_hash": "another lock: other packages or versions",
    "lock_version": "another lock version",
}


def _why(path: str, run: bool) -> str:
    if run:
        return "describes the run, not the result (counted only with --strict)"
    for key, why in _WHY.items():
        if path == key or path.startswith(key + "."):
            return why
    return ""


def _field(path: str, a: Any, b: Any, status: str, layer_prefix: str | None) -> FieldDiff:
    rel = None if layer_prefix is None else path[len(layer_prefix) + 1:] if layer_prefix else path
    run = rel is not None and is_run_field(rel)
    return FieldDiff(path, a, b, status, run, _why(rel or path, run))  # type: ignore[arg-type]


def diff_fields(a: Any, b: Any, prefix: str = "", layer_prefix: str | None = "") -> list[FieldDiff]:
    """Every leaf of two JSON values that differs, as dotted paths (lists compare whole).

    ``layer_prefix`` is where a layer entry starts (``""``: the values are layer entries;
    ``None``: no layer entry, so no run fields).
    """
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[FieldDiff] = []
        for key in sorted(set(a) | set(b)):
            path = f"{prefix}.{key}" if prefix else key
            if key not in b:
                out.append(_field(path, a[key], None, "only-in-a", layer_prefix))
            elif key not in a:
                out.append(_field(path, None, b[key], "only-in-b", layer_prefix))
            else:
                out += diff_fields(a[key], b[key], path, layer_prefix)
        return out
    return [] if a == b else [_field(prefix, a, b, "different", layer_prefix)]


def _manifest_layers(data: Any) -> dict[str, list[dict[str, Any]]]:
    layers = data.get("layers") if isinstance(data, dict) else None
    if not isinstance(layers, dict):
        return {}
    return {k: [e for e in v if isinstance(e, dict)] for k, v in layers.items() if isinstance(v, list)}


def _diff_manifest(a: Any, b: Any, covered: set[str]) -> list[FieldDiff]:
    """A manifest: its own fields, which layers it lists, and entries no per-layer file covers."""
    rest_a = {k: v for k, v in a.items() if k != "layers"} if isinstance(a, dict) else a
    rest_b = {k: v for k, v in b.items() if k != "layers"} if isinstance(b, dict) else b
    out = diff_fields(rest_a, rest_b, "", None)  # not a layer entry: no run fields here
    la, lb = _manifest_layers(a), _manifest_layers(b)
    for kind in sorted(set(la) | set(lb)):
        names_a = [e.get("layer_name") for e in la.get(kind, [])]
        names_b = [e.get("layer_name") for e in lb.get(kind, [])]
        if names_a != names_b:
            out.append(FieldDiff(f"layers.{kind}", names_a, names_b, "different", False, "other layers listed"))
        by_b = {e.get("layer_name"): e for e in lb.get(kind, [])}
        for entry in la.get(kind, []):
            name = entry.get("layer_name")
            if name in by_b and name not in covered:
                prefix = f"layers.{kind}.{name}"
                out += diff_fields(entry, by_b[name], prefix, prefix)
    return out


@dataclass
class _Side:
    """One side: its metadata files and the layers they describe."""

    root: Path | None
    files: dict[str, Any] = field(default_factory=dict)
    layers: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def add_layer(self, entry: dict[str, Any]) -> None:
        key = (str(entry.get("layer_name", "")), str(entry.get("target_platform", "")))
        self.layers.setdefault(key, entry)

    def archive(self, entry: dict[str, Any]) -> Path | None:
        name = entry.get("archive_name")
        if self.root is None or not isinstance(name, str) or "/" in name or not name:
            return None
        path = self.root / name
        return path if path.is_file() else None


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return _UNREADABLE


def _is_manifest(rel: str) -> bool:
    return Path(rel).parent.name == METADATA_DIR and Path(rel).name.startswith("venvstacks")


def _collect_layers(side: _Side) -> None:
    for rel, data in sorted(side.files.items()):
        if f"/{LAYER_METADATA_DIR}/" in f"/{rel}" and isinstance(data, dict) and "layer_name" in data:
            side.add_layer(data)
    for rel, data in sorted(side.files.items()):
        if _is_manifest(rel) or (isinstance(data, dict) and "layers" in data):
            for kind in LAYER_KINDS:
                for entry in _manifest_layers(data).get(kind, []):
                    side.add_layer(entry)


def _read_folder(root: Path) -> _Side:
    side = _Side(root)
    meta = root / METADATA_DIR
    if meta.is_dir():
        for path in sorted(meta.rglob("*.json")):
            side.files[path.relative_to(root).as_posix()] = _load(path)
    _collect_layers(side)
    return side


def _compare_files(sa: _Side, sb: _Side) -> list[MetadataReport]:
    covered = {k[0] for k in sa.layers if any(f"/{LAYER_METADATA_DIR}/{k[0]}" in f"/{r}" for r in sa.files)}
    reports = []
    for rel in sorted(set(sa.files) | set(sb.files)):
        report = MetadataReport(rel)
        if rel not in sb.files:
            report.status = "only-in-a"
        elif rel not in sa.files:
            report.status = "only-in-b"
        else:
            a, b = sa.files[rel], sb.files[rel]
            if a is _UNREADABLE or b is _UNREADABLE:
                report.fields = [] if a is b else [FieldDiff("(file)", "unreadable" if a is _UNREADABLE else "JSON",
                                                             "unreadable" if b is _UNREADABLE else "JSON")]
            elif _is_manifest(rel) or (isinstance(a, dict) and "layers" in a):
                report.fields = _diff_manifest(a, b, covered)
            else:
                report.fields = diff_fields(a, b, "", "")
            report.status = "different" if report.fields else "identical"
        reports.append(report)
    return reports


def _one_sided(label: str, path: Path, side: str, layer: str | None) -> ArchiveReport:
    report = ArchiveReport(label=label, a=str(path) if side == "a" else None, b=str(path) if side == "b" else None,
                           status="only-in-a" if side == "a" else "only-in-b", layer_name=layer)
    size, sha, fmt = path.stat().st_size, sha256_file(path), detect_format(path)
    if side == "a":
        report.size_a, report.sha256_a, report.format_a = size, sha, fmt
    else:
        report.size_b, report.sha256_b, report.format_b = size, sha, fmt
    return report


def _compression(entry: dict[str, Any] | None) -> str | None:
    block = (entry or {}).get("venvstacks_docker")
    value = block.get("compression") if isinstance(block, dict) else None
    return value if isinstance(value, str) else None


def _compare_layers(sa: _Side, sb: _Side, context: int) -> list[ArchiveReport]:
    reports = []
    named: dict[str, set[str]] = {"a": set(), "b": set()}
    for key in sorted(set(sa.layers) | set(sb.layers)):
        ea, eb = sa.layers.get(key), sb.layers.get(key)
        pa = sa.archive(ea) if ea else None
        pb = sb.archive(eb) if eb else None
        named["a"].add(pa.name if pa else "")
        named["b"].add(pb.name if pb else "")
        label = key[0] + (f" ({key[1]})" if key[1] and len({k[1] for k in sa.layers | sb.layers}) > 1 else "")
        if pa and pb:
            log.debug("comparing %s", label)
            reports.append(compare_archives(pa, pb, label=label, layer_name=key[0], context=context,
                                            recorded=(_compression(ea), _compression(eb))))
        elif pa or pb:
            reports.append(_one_sided(label, pa or pb, "a" if pa else "b", key[0]))  # type: ignore[arg-type]
    loose = {s: {p.name: p for p in (side.root.iterdir() if side.root else [])
                 if p.is_file() and p.name.endswith(ARCHIVE_SUFFIXES) and p.name not in named[s]}
             for s, side in (("a", sa), ("b", sb))}
    for name in sorted(set(loose["a"]) | set(loose["b"])):
        pa, pb = loose["a"].get(name), loose["b"].get(name)
        if pa and pb:
            reports.append(compare_archives(pa, pb, label=name, context=context))
        else:
            reports.append(_one_sided(name, pa or pb, "a" if pa else "b", None))  # type: ignore[arg-type]
    return reports


def compare_outputs(a: Path, b: Path, *, strict: bool = False, context: int = 3) -> Report:
    """Compare two publish output folders: every metadata file and every archive."""
    a, b = Path(a), Path(b)
    for path in (a, b):
        if not path.is_dir():
            raise SpecError(f"{path} is not a folder", hint="diff takes two output folders, two archives or "
                            "two metadata files")
    sa, sb = _read_folder(a), _read_folder(b)
    report = Report(str(a), str(b), "outputs", strict)
    report.metadata = _compare_files(sa, sb)
    report.archives = _compare_layers(sa, sb, context)
    return report


def _metadata_side(path: Path) -> _Side:
    data = _load(path)
    if data is _UNREADABLE or not isinstance(data, dict):
        raise SpecError(f"{path} is not a JSON metadata file")
    parent = path.parent
    root = parent.parent.parent if parent.name == LAYER_METADATA_DIR else parent.parent \
        if parent.name == METADATA_DIR else None
    side = _Side(root, {path.name: data})
    if "layers" in data:
        for entries in _manifest_layers(data).values():
            for entry in entries:
                side.add_layer(entry)
    elif "layer_name" in data:
        side.add_layer(data)
    return side


def compare_metadata_files(a: Path, b: Path, *, strict: bool = False, context: int = 3) -> Report:
    """Compare two metadata files (per-layer or manifest), and the archives they name when both are there."""
    sa, sb = _metadata_side(Path(a)), _metadata_side(Path(b))
    data_a, data_b = next(iter(sa.files.values())), next(iter(sb.files.values()))
    report = Report(str(a), str(b), "metadata", strict)
    fields = _diff_manifest(data_a, data_b, set()) if "layers" in data_a else diff_fields(data_a, data_b)
    name = Path(a).name if Path(a).name == Path(b).name else f"{Path(a).name} / {Path(b).name}"
    report.metadata = [MetadataReport(name, "different" if fields else "identical", fields)]
    if sa.root is not None and sb.root is not None:
        report.archives = [r for r in _compare_layers(_Side(sa.root, {}, sa.layers), _Side(sb.root, {}, sb.layers),
                                                      context) if r.layer_name is not None]
    return report


def compare(a: Path, b: Path, *, strict: bool = False, context: int = 3) -> Report:
    """Compare two output folders, two archives or two metadata files, whichever ``a`` and ``b`` are."""
    from venvstacks_docker.diffing.model import Report as _Report

    a, b = Path(a), Path(b)
    for path in (a, b):
        if not path.exists():
            raise SpecError(f"{path} does not exist")
    if a.is_dir() and b.is_dir():
        return compare_outputs(a, b, strict=strict, context=context)
    if a.is_dir() or b.is_dir():
        raise SpecError(f"cannot compare a folder with a file: {a} and {b}",
                        hint="give two output folders, two archives or two metadata files")
    if a.suffix == ".json" and b.suffix == ".json":
        return compare_metadata_files(a, b, strict=strict, context=context)
    report = _Report(str(a), str(b), "archives", strict)
    report.archives = [compare_archives(a, b, label=a.name if a.name == b.name else f"{a.name} / {b.name}",
                                        context=context)]
    return report
