"""What a comparison found: findings, per-member and per-archive results, the report.

Plain dataclasses, no I/O: the readers and analyzers fill them in, the renderers
(:mod:`.text`, :mod:`.html`) and ``--json`` (:meth:`Report.to_dict`) read them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from venvstacks_docker.metadata import envelope

#: Every finding kind, with what it means (``docs/reference/diff.md`` lists the same).
#: The ids are stable: the JSON report and the audit use them.
KINDS: Final[dict[str, str]] = {
    "only-in-a": "present only in A (an archive, a member or a metadata file)",
    "only-in-b": "present only in B",
    "mtime": "a member's modification time differs",
    "mode": "a member's permission bits differ",
    "owner": "a member's owner or group (ids or names) differs",
    "member-type": "a member is a file in one archive and a folder or link in the other",
    "symlink-target": "a symlink points elsewhere",
    "tar-header": "other tar header fields (PAX records) differ",
    "tar-stream": "the tar streams differ although every member is equal",
    "member-order": "the members are stored in another order",
    "compression": "the compressor settings differ (filter chain, preset, check, streams, deflate)",
    "archive-format": "the archives have different formats (tar.xz, tar.gz, tar, zip)",
    "zip-timestamp": "a zip member's DOS timestamp differs",
    "zip-header": "other zip header fields differ (system, flags, extra fields, comment)",
    "pyc-magic": "a .pyc file was compiled by another Python version",
    "pyc-invalidation-mode": "a .pyc file is timestamp-based in one archive and hash-based in the other",
    "pyc-source-mtime": "a timestamp-based .pyc file records another source mtime",
    "pyc-source-size": "a timestamp-based .pyc file records another source size",
    "pyc-source-hash": "a hash-based .pyc file records another source hash",
    "pyc-embedded-path": "a .pyc file embeds another source path (co_filename)",
    "pyc-code": "a .pyc file's code differs with the same header",
    "record-rows": "rows of a wheel's RECORD file differ",
    "installer-metadata": "installer metadata (INSTALLER, REQUESTED, direct_url.json, uv_*.json) differs",
    "shebang": "a script's #! line differs",
    "absolute-path": "a text file embeds another absolute path",
    "pyvenv-cfg": "pyvenv.cfg keys differ",
    "sitecustomize": "sitecustomize.py differs",
    "elf-build-id": "an ELF file's GNU build-id differs",
    "elf-rpath": "an ELF file's RPATH or RUNPATH differs",
    "elf-dynamic": "an ELF file's SONAME or NEEDED libraries differ",
    "elf-embedded-path": "an ELF file embeds another absolute path",
    "elf-sections": "which sections of an ELF file differ",
    "content-text": "a text file's content differs (unified diff)",
    "content-binary": "a binary file's content differs",
    "metadata-field": "a field of the publication metadata differs",
    "run-field": "a field that describes the run, not the result, differs (counted with --strict)",
}

#: Metadata fields that describe how a publication was *run*, not what it *is*: they
#: may differ between two publishes of identical archives, so ``diff`` lists them apart
#: and does not count them as differences unless ``--strict``.  Paths are dotted,
#: relative to a layer entry (a per-layer ``env_metadata`` file or a manifest entry).
RUN_FIELDS: Final[tuple[str, ...]] = (
    # the builder image that ran the publish (only present for container runs)
    "venvstacks_docker.builder_image",
    # whether the one mtime came from SOURCE_DATE_EPOCH or locked_at (the value itself,
    # source_date_epoch, is compared)
    "venvstacks_docker.source_date_epoch_from",
    # how many times the archive was rebuilt in that output folder for one lock_version
    "archive_build",
)

Status = Literal["identical", "different", "only-in-a", "only-in-b"]


def is_run_field(path: str) -> bool:
    """Whether a dotted metadata path (relative to a layer entry) is, or lies in, a run field."""
    return any(path == run or path.startswith(run + ".") for run in RUN_FIELDS)


@dataclass(frozen=True)
class Finding:
    """One explained difference: a stable ``kind`` id, a sentence for people, details."""

    kind: str
    explanation: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``kind``, ``explanation``, ``details``."""
        return {"kind": self.kind, "explanation": self.explanation, "details": self.details}


@dataclass
class MemberDiff:
    """A member that differs (or exists on one side only), with every finding about it."""

    name: str
    status: Literal["different", "only-in-a", "only-in-b"]
    findings: list[Finding] = field(default_factory=list)
    size_a: int | None = None
    size_b: int | None = None

    @property
    def kinds(self) -> list[str]:
        """The kinds of its findings, in order, without repeats."""
        return list(dict.fromkeys(f.kind for f in self.findings))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of this member."""
        return {"name": self.name, "status": self.status, "size_a": self.size_a, "size_b": self.size_b,
                "findings": [f.to_dict() for f in self.findings]}


@dataclass
class ArchiveReport:
    """Two archives (or one, when the other side has none) compared member by member."""

    label: str
    """The layer name when known, else the archive's file name."""
    a: str | None
    b: str | None
    status: Status = "identical"
    layer_name: str | None = None
    format_a: str | None = None
    format_b: str | None = None
    size_a: int | None = None
    size_b: int | None = None
    sha256_a: str | None = None
    sha256_b: str | None = None
    tar_sha256_a: str | None = None
    tar_sha256_b: str | None = None
    findings: list[Finding] = field(default_factory=list)
    """Archive-level findings: compression, member order, tar stream."""
    members: list[MemberDiff] = field(default_factory=list)
    members_a: int = 0
    members_b: int = 0
    members_equal: int = 0
    """Paired members with equal bytes and headers: never opened further."""
    analyzed: int = 0
    """Members whose content reached the analyzers (only those whose bytes differ)."""
    opened: bool = False
    """Whether the archives were read at all (not when their sha256 is equal)."""
    streams_skipped: int = 0
    """xz streams equal on both sides that were never decompressed (their members are not counted)."""

    @property
    def identical(self) -> bool:
        """Whether the two archives have the same bytes."""
        return self.status == "identical"

    def kinds(self) -> Counter[str]:
        """How many findings of each kind, archive-level and member-level."""
        counts: Counter[str] = Counter(f.kind for f in self.findings)
        for member in self.members:
            counts.update(member.kinds)
        return counts

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of this archive pair."""
        return {
            "label": self.label, "layer_name": self.layer_name, "status": self.status,
            "a": self.a, "b": self.b, "format_a": self.format_a, "format_b": self.format_b,
            "size_a": self.size_a, "size_b": self.size_b, "sha256_a": self.sha256_a, "sha256_b": self.sha256_b,
            "tar_sha256_a": self.tar_sha256_a, "tar_sha256_b": self.tar_sha256_b, "opened": self.opened,
            "members_a": self.members_a, "members_b": self.members_b, "members_equal": self.members_equal,
            "members_analyzed": self.analyzed,
            "xz_streams_skipped": self.streams_skipped, "kinds": dict(sorted(self.kinds().items())),
            "findings": [f.to_dict() for f in self.findings],
            "members": [m.to_dict() for m in self.members],
        }


@dataclass(frozen=True)
class FieldDiff:
    """One metadata field that differs; ``a``/``b`` are ``None`` with ``status`` saying which is absent."""

    path: str
    a: Any
    b: Any
    status: Literal["different", "only-in-a", "only-in-b"] = "different"
    run_field: bool = False
    explanation: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of this field."""
        return {"path": self.path, "a": self.a, "b": self.b, "status": self.status,
                "run_field": self.run_field, "explanation": self.explanation}


@dataclass
class MetadataReport:
    """One metadata file (relative to its output folder) compared field by field."""

    file: str
    status: Status = "identical"
    fields: list[FieldDiff] = field(default_factory=list)

    def counted(self, strict: bool) -> list[FieldDiff]:
        """The field differences that count: all with ``strict``, else all but run fields."""
        return [f for f in self.fields if strict or not f.run_field]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of this file."""
        return {"file": self.file, "status": self.status, "fields": [f.to_dict() for f in self.fields]}


@dataclass
class Report:
    """Everything ``diff`` found between A and B."""

    a: str
    b: str
    input_kind: Literal["outputs", "archives", "metadata"]
    strict: bool = False
    archives: list[ArchiveReport] = field(default_factory=list)
    metadata: list[MetadataReport] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        """No archive differs and no metadata field counts as a difference."""
        return (all(a.identical for a in self.archives)
                and all(m.status in ("identical", "different") for m in self.metadata)
                and not any(m.counted(self.strict) for m in self.metadata))

    def layer_verdicts(self) -> dict[str, str]:
        """Each archive pair's status (``identical``, ``different``, ``only-in-a``, ``only-in-b``), by label
        (the layer name when the metadata gives it)."""
        return {a.label: a.status for a in self.archives}

    def run_field_differences(self) -> list[tuple[str, FieldDiff]]:
        """``(file, field)`` for every run field that differs (counted only with ``strict``)."""
        return [(m.file, f) for m in self.metadata for f in m.fields if f.run_field]

    def metadata_differences(self) -> list[tuple[str, FieldDiff]]:
        """``(file, field)`` for every counted metadata difference."""
        return [(m.file, f) for m in self.metadata for f in m.counted(self.strict)]

    def kinds(self) -> Counter[str]:
        """How many findings of each kind, over every archive (metadata fields as ``metadata-field``)."""
        counts: Counter[str] = Counter()
        for archive in self.archives:
            counts.update(archive.kinds())
        for m in self.metadata:
            if m.status in ("only-in-a", "only-in-b"):
                counts[m.status] += 1
            for f in m.fields:
                counts["run-field" if f.run_field else "metadata-field"] += 1
        return counts

    def summary(self) -> dict[str, Any]:
        """Counts for the summary line and table."""
        status = Counter(a.status for a in self.archives)
        return {
            "archives": len(self.archives),
            "archives_identical": status["identical"],
            "archives_different": status["different"],
            "archives_only_in_a": status["only-in-a"],
            "archives_only_in_b": status["only-in-b"],
            "members_different": sum(len(a.members) for a in self.archives),
            "metadata_files": len(self.metadata),
            "metadata_differences": len(self.metadata_differences()),
            "run_field_differences": len(self.run_field_differences()),
            "kinds": dict(sorted(self.kinds().items())),
        }

    def verdict(self) -> str:
        """One sentence: identical, or what differs."""
        s = self.summary()
        if self.identical:
            extra = (f" ({s['run_field_differences']} run field(s) differ, not counted without --strict)"
                     if s["run_field_differences"] else "")
            return f"IDENTICAL: {s['archives']} archive(s), {s['metadata_files']} metadata file(s){extra}"
        parts = []
        changed = s["archives"] - s["archives_identical"]
        if s["archives"]:
            parts.append(f"{changed} of {s['archives']} archive(s) differ")
        if s["members_different"]:
            parts.append(f"{s['members_different']} member(s)")
        if s["metadata_differences"]:
            parts.append(f"{s['metadata_differences']} metadata field(s)")
        missing = sum(m.status in ("only-in-a", "only-in-b") for m in self.metadata)
        if missing:
            parts.append(f"{missing} metadata file(s) on one side only")
        return "DIFFERENT: " + ", ".join(parts)

    def body(self) -> dict[str, Any]:
        """The report's JSON body (without the envelope)."""
        return {
            "a": self.a, "b": self.b, "input_kind": self.input_kind, "strict": self.strict,
            "identical": self.identical, "verdict": self.verdict(), "summary": self.summary(),
            "run_fields": list(RUN_FIELDS),
            "archives": [a.to_dict() for a in self.archives],
            "metadata": [m.to_dict() for m in self.metadata],
        }

    def to_dict(self) -> dict[str, Any]:
        """``diff --json``: the body in the versioned envelope ``venvstacks-docker/diff``."""
        return envelope("diff", self.body())
