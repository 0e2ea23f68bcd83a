"""Check a publish output folder: whether the archives match their metadata.

Layout (venvstacks-compatible)::

    <out>/<archive files>
    <out>/__venvstacks__/venvstacks.json            (or venvstacks-<plat>.json, several)
    <out>/__venvstacks__/env_metadata/<layer>.json  (or <layer>-<plat>.json)

Every layer named by a manifest entry or a per-layer metadata file is checked
(size first, then SHA-256).  Archives in ``<out>`` named by no metadata file are
reported as ``unexpected``; they do not make the report fail (venvstacks leaves
archives of earlier builds in place), but ``clean`` is false.

With ``elf=`` (the CLI's default), the ELF files of every Linux layer whose archive
matches are checked against the layer's ``linux_target`` too (:mod:`venvstacks_docker.elf_policy`);
violations fail the report only when the options say ``strict``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from venvstacks_docker.errors import VerifyError
from venvstacks_docker.metadata import LAYER_KINDS, LAYER_METADATA_DIR, METADATA_DIR, dumps, envelope, sha256_file
from venvstacks_docker.ui import human_size

if TYPE_CHECKING:
    from venvstacks_docker.elf_policy import ElfOptions, ElfPolicyReport

ARCHIVE_SUFFIXES = (".tar.xz", ".tar.gz", ".zip")
_REQUIRED_KEYS = ("layer_name", "install_target", "archive_name", "archive_size", "archive_hashes")
_ARCHIVE_KEYS = ("archive_name", "archive_size", "archive_hashes")

LayerStatus = Literal["ok", "missing", "size-mismatch", "hash-mismatch"]


@dataclass(frozen=True, kw_only=True)
class LayerCheck:
    """The result for one layer archive."""

    layer_name: str
    install_target: str
    kind: str  # "runtimes" | "frameworks" | "applications"
    target_platform: str | None
    archive_name: str
    status: LayerStatus
    expected_size: int
    actual_size: int | None
    expected_sha256: str
    actual_sha256: str | None
    metadata_files: tuple[str, ...]  # relative to the output folder

    @property
    def ok(self) -> bool:
        """Whether the archive matches its metadata."""
        return self.status == "ok"

    def as_dict(self) -> dict[str, Any]:
        """The ``verify --json`` form of this result."""
        return {
            "layer_name": self.layer_name,
            "install_target": self.install_target,
            "kind": self.kind,
            "target_platform": self.target_platform,
            "archive_name": self.archive_name,
            "status": self.status,
            "expected_size": self.expected_size,
            "actual_size": self.actual_size,
            "expected_sha256": self.expected_sha256,
            "actual_sha256": self.actual_sha256,
            "metadata_files": list(self.metadata_files),
        }


@dataclass(frozen=True, kw_only=True)
class MetadataProblem:
    """Metadata that is unreadable, incomplete or self-contradictory."""

    file: str  # relative to the output folder
    message: str

    def as_dict(self) -> dict[str, str]:
        """The ``verify --json`` form of this problem."""
        return {"file": self.file, "message": self.message}


@dataclass(frozen=True, kw_only=True)
class VerifyReport:
    """The result of :func:`verify_output_dir`."""

    out_dir: Path
    manifests: tuple[str, ...]
    layers: tuple[LayerCheck, ...]
    unexpected: tuple[str, ...]
    metadata_problems: tuple[MetadataProblem, ...] = field(default=())
    elf_policy: ElfPolicyReport | None = None
    """The ELF policy check, when it ran (its violations fail ``ok`` only when strict)."""

    @property
    def ok(self) -> bool:
        """Every layer archive matches its metadata, the metadata is consistent, and a
        strict ELF policy check found nothing."""
        elf_fails = self.elf_policy is not None and self.elf_policy.fails
        return not self.metadata_problems and all(layer.ok for layer in self.layers) and not elf_fails

    @property
    def clean(self) -> bool:
        """``ok``, and no archive in the folder is unaccounted for."""
        return self.ok and not self.unexpected

    def as_dict(self) -> dict[str, Any]:
        """The ``verify --json`` output (envelope ``venvstacks-docker/verify``)."""
        return envelope("verify", {
            "out_dir": os.fspath(self.out_dir),
            "ok": self.ok,
            "clean": self.clean,
            "manifests": list(self.manifests),
            "layers": [layer.as_dict() for layer in self.layers],
            "unexpected": list(self.unexpected),
            "metadata_problems": [p.as_dict() for p in self.metadata_problems],
            "elf_policy": self.elf_policy.as_dict() if self.elf_policy is not None else None,
        })

    def to_json(self) -> str:
        """Stable JSON (2-space indent, sorted keys, trailing newline)."""
        return dumps(self.as_dict())

    def render_text(self) -> str:
        """The human-readable report ``verify`` prints."""
        lines = []
        width = max((len(layer.install_target) for layer in self.layers), default=0)
        for layer in self.layers:
            line = f"{layer.status:<13} {layer.install_target:<{width}}  {layer.archive_name}"
            if layer.status == "ok":
                line += f" ({human_size(layer.expected_size)})"
            elif layer.status == "missing":
                line += " (archive file not found)"
            elif layer.status == "size-mismatch":
                line += f" (expected {layer.expected_size} bytes, found {layer.actual_size})"
            else:
                line += (
                    f" (expected sha256 {layer.expected_sha256}, found {layer.actual_sha256})"
                )
            lines.append(line)
        for problem in self.metadata_problems:
            lines.append(f"metadata      {problem.file}: {problem.message}")
        for name in self.unexpected:
            lines.append(f"unexpected    {name} (not named by any metadata file)")
        if self.elf_policy is not None:
            lines += self.elf_policy.render_lines()
        counts: dict[str, int] = {}
        for layer in self.layers:
            counts[layer.status] = counts.get(layer.status, 0) + 1
        parts = [f"{len(self.layers)} layer archive(s)"]
        parts += [f"{n} {status}" for status, n in sorted(counts.items())]
        if self.metadata_problems:
            parts.append(f"{len(self.metadata_problems)} metadata problem(s)")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected archive(s)")
        if self.elf_policy is not None and self.elf_policy.violations:
            parts.append(f"{self.elf_policy.violations} ELF policy violation(s)"
                         + ("" if self.elf_policy.strict else " (warnings: --strict-elf fails on them)"))
        verdict = "OK" if self.ok else "FAILED"
        lines.append(f"{verdict}: " + ", ".join(parts))
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------
# Reading metadata
# ---------------------------------------------------------------------------------


@dataclass
class _Record:
    """One layer as described by a manifest entry and/or a per-layer file."""

    entry: dict[str, Any]
    kind: str
    sources: list[str]


def _load_json(path: Path, rel: str, problems: list[MetadataProblem]) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        problems.append(MetadataProblem(file=rel, message=f"cannot read JSON: {exc}"))
        return None


def find_manifests(out: Path) -> list[Path]:
    """``venvstacks.json`` / ``venvstacks-<plat>.json`` files in ``out/__venvstacks__``."""
    meta_dir = Path(out) / METADATA_DIR
    if not meta_dir.is_dir():
        return []
    return sorted(
        p
        for p in meta_dir.iterdir()
        if p.is_file()
        and p.suffix == ".json"
        and (p.name == "venvstacks.json" or p.name.startswith("venvstacks-"))
    )


def _manifest_platform_suffix(manifest: Path) -> str:
    """"" for venvstacks.json, "-<plat>" for venvstacks-<plat>.json."""
    return manifest.stem[len("venvstacks") :]


def layer_metadata_path(out: Path, manifest: Path, layer_name: str) -> Path:
    """The per-layer file that goes with a manifest entry."""
    suffix = _manifest_platform_suffix(manifest)
    return Path(out) / METADATA_DIR / LAYER_METADATA_DIR / f"{layer_name}{suffix}.json"


def _infer_kind(entry: dict[str, Any]) -> str:
    if "app_launch_module" in entry:
        return "applications"
    if "required_layers" in entry:
        return "frameworks"
    return "runtimes"


def _is_local_export(entries: list[dict[str, Any]]) -> bool:
    return bool(entries) and all(
        "install_target" in e and not any(k in e for k in _ARCHIVE_KEYS) for e in entries
    )


def _entry_problem(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return "layer entry is not a JSON object"
    missing = [k for k in _REQUIRED_KEYS if k not in entry]
    if missing:
        return f"layer entry {entry.get('layer_name', '?')!r} lacks {', '.join(missing)}"
    name = entry["archive_name"]
    if (
        not isinstance(name, str)
        or not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\0" in name
    ):
        return f"layer {entry['layer_name']!r}: archive_name {name!r} is not a plain file name"
    size = entry["archive_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        return f"layer {entry['layer_name']!r}: archive_size {size!r} is not a byte count"
    hashes = entry["archive_hashes"]
    sha = hashes.get("sha256") if isinstance(hashes, dict) else None
    if not isinstance(sha, str) or len(sha) != 64 or not all(c in "0123456789abcdef" for c in sha.lower()):
        return f"layer {entry['layer_name']!r}: archive_hashes has no valid sha256"
    return None


class _Collector:
    """Reads the manifests and per-layer files of one output folder, noting problems."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.problems: list[MetadataProblem] = []
        self.records: list[_Record] = []
        self.entries: list[dict[str, Any]] = []
        self.claimed: dict[Path, _Record] = {}  # per-layer file -> the manifest record it pairs with
        self.mentioned: set[str] = set()  # every archive_name in any metadata file, valid or not

    def _problem(self, rel: str, message: str) -> None:
        self.problems.append(MetadataProblem(file=rel, message=message))

    def _note(self, entry: Any) -> None:
        if isinstance(entry, dict):
            self.entries.append(entry)
            _note_archive_name(entry, self.mentioned)

    def read_manifest(self, manifest: Path) -> None:
        rel = os.fspath(manifest.relative_to(self.out))
        data = _load_json(manifest, rel, self.problems)
        if data is None:
            return
        layers = data.get("layers") if isinstance(data, dict) else None
        if not isinstance(layers, dict):
            self._problem(rel, "no 'layers' table")
            return
        for kind in LAYER_KINDS:
            entries = layers.get(kind, [])
            if not isinstance(entries, list):
                self._problem(rel, f"'layers.{kind}' is not a list")
                continue
            for entry in entries:
                self._note(entry)
                why = _entry_problem(entry)
                if why:
                    self._problem(rel, why)
                    continue
                record = _Record(entry=entry, kind=kind, sources=[rel])
                self.records.append(record)
                layer_file = layer_metadata_path(self.out, manifest, entry["layer_name"])
                if layer_file in self.claimed:
                    self._problem(rel, f"layer {entry['layer_name']!r} is listed more than once")
                else:
                    self.claimed[layer_file] = record

    def read_layer_file(self, layer_file: Path) -> None:
        rel = os.fspath(layer_file.relative_to(self.out))
        data = _load_json(layer_file, rel, self.problems)
        if data is None:
            return
        self._note(data)
        why = _entry_problem(data)
        if why:
            self._problem(rel, why)
            return
        record = self.claimed.get(layer_file)
        if record is None:
            # Not in any current manifest (e.g. published earlier with --include).
            self.records.append(_Record(entry=data, kind=_infer_kind(data), sources=[rel]))
            return
        record.sources.append(rel)
        differing = sorted(k for k in set(record.entry) | set(data)
                           if record.entry.get(k, _MISSING) != data.get(k, _MISSING))
        if differing:
            self._problem(rel, f"disagrees with {record.sources[0]} on {', '.join(differing)}")

    def check_claims(self) -> None:
        for layer_file, record in self.claimed.items():
            if not layer_file.exists():
                self._problem(os.fspath(layer_file.relative_to(self.out)),
                              f"per-layer metadata for {record.entry['layer_name']!r} "
                              f"(listed in {record.sources[0]}) is missing")


def _read_metadata(
    out: Path,
) -> tuple[list[str], list[_Record], list[MetadataProblem], set[str]]:
    meta_dir = out / METADATA_DIR
    layer_dir = meta_dir / LAYER_METADATA_DIR
    manifests = find_manifests(out)
    layer_files = sorted(layer_dir.glob("*.json")) if layer_dir.is_dir() else []
    if not manifests and not layer_files:
        raise VerifyError(
            f"no {METADATA_DIR} metadata in {out}, did you mean the publish output folder?",
            hint=f"verify expects {out}/{METADATA_DIR}/venvstacks.json next to the archives",
        )
    collector = _Collector(out)
    for manifest in manifests:
        collector.read_manifest(manifest)
    for layer_file in layer_files:
        collector.read_layer_file(layer_file)
    if _is_local_export(collector.entries):
        raise VerifyError(
            f"{out} holds local-export metadata (no archive_name/archive_hashes): "
            "there are no archives to verify",
            hint="point verify at the publish output folder (the one with the archives)",
        )
    collector.check_claims()
    manifest_names = [os.fspath(m.relative_to(out)) for m in manifests]
    return manifest_names, collector.records, collector.problems, collector.mentioned


def _note_archive_name(entry: dict[str, Any], mentioned: set[str]) -> None:
    name = entry.get("archive_name")
    if isinstance(name, str):
        mentioned.add(name)


_MISSING = object()


# ---------------------------------------------------------------------------------
# Checking archives
# ---------------------------------------------------------------------------------


def _check_archive(out: Path, record: _Record) -> LayerCheck:
    entry = record.entry
    expected_size = entry["archive_size"]
    expected_sha = entry["archive_hashes"]["sha256"].lower()
    path = out / entry["archive_name"]
    actual_size: int | None = None
    actual_sha: str | None = None
    status: LayerStatus
    try:
        actual_size = path.stat().st_size if path.is_file() else None
    except OSError:
        actual_size = None
    if actual_size is None:
        status = "missing"
    elif actual_size != expected_size:
        status = "size-mismatch"
    else:
        try:
            actual_sha = sha256_file(path)
        except OSError as exc:
            raise VerifyError(f"cannot read {path}: {exc.strerror or exc}") from exc
        status = "ok" if actual_sha == expected_sha else "hash-mismatch"
    return LayerCheck(
        layer_name=str(entry["layer_name"]),
        install_target=str(entry["install_target"]),
        kind=record.kind,
        target_platform=entry.get("target_platform"),
        archive_name=entry["archive_name"],
        status=status,
        expected_size=expected_size,
        actual_size=actual_size,
        expected_sha256=expected_sha,
        actual_sha256=actual_sha,
        metadata_files=tuple(record.sources),
    )


def verify_output_dir(out: Path, *, elf: ElfOptions | None = None) -> VerifyReport:
    """Check every archive named by the metadata in ``out`` (size, then SHA-256), and,
    with ``elf``, the ELF files of its Linux layers."""
    out = Path(out)
    if not out.is_dir():
        raise VerifyError(f"{out} does not exist or is not a folder")
    manifests, records, problems, mentioned = _read_metadata(out)

    # One check per archive file; several records naming one archive must agree.
    by_archive: dict[str, _Record] = {}
    for record in records:
        name = record.entry["archive_name"]
        first = by_archive.get(name)
        if first is None:
            by_archive[name] = record
            continue
        for key in ("archive_size", "archive_hashes"):
            if first.entry.get(key) != record.entry.get(key):
                problems.append(
                    MetadataProblem(
                        file=record.sources[0],
                        message=f"{key} of {name} disagrees with {first.sources[0]}",
                    )
                )
        first.sources.extend(s for s in record.sources if s not in first.sources)

    kind_order = {kind: i for i, kind in enumerate(LAYER_KINDS)}
    checks = sorted(
        (_check_archive(out, record) for record in by_archive.values()),
        key=lambda c: (kind_order.get(c.kind, 99), c.install_target, c.archive_name),
    )
    unexpected = sorted(
        p.name
        for p in out.iterdir()
        if p.name.endswith(ARCHIVE_SUFFIXES) and p.is_file() and p.name not in mentioned
    )
    return VerifyReport(
        out_dir=out,
        manifests=tuple(manifests),
        layers=tuple(checks),
        unexpected=tuple(unexpected),
        metadata_problems=tuple(problems),
        elf_policy=_elf_policy(out, by_archive, checks, elf) if elf is not None else None,
    )


def _elf_policy(out: Path, by_archive: dict[str, _Record], checks: list[LayerCheck],
                options: ElfOptions) -> ElfPolicyReport:
    """The ELF policy check of the layers; an archive that failed verification is not read."""
    from venvstacks_docker.elf_policy import LayerInput, check_layers

    layers = [LayerInput.from_metadata(out, by_archive[check.archive_name].entry, readable=check.ok)
              for check in checks]
    return check_layers(layers, options)
