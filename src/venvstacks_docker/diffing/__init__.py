"""``diff``: explain, in Python terms, how two publications, archives or metadata files differ.

Public API (the audit uses it too)::

    compare(a, b, *, strict=False, context=3) -> Report         # folders, archives or JSON files
    compare_outputs(a, b, *, strict=False, context=3) -> Report  # two publish output folders
    compare_metadata_files(a, b, *, strict=False, context=3) -> Report
    compare_archives(a, b, *, label=None, layer_name=None, context=3, recorded=(None, None)) -> ArchiveReport
    Report.identical, Report.to_dict()   # versioned JSON (envelope "venvstacks-docker/diff")
    render_text(report, verbose=0) -> str, renderables(report, verbose=0), render_html(report) -> str
    RUN_FIELDS, KINDS

Modules: :mod:`.model` (dataclasses, kinds, run fields), :mod:`.members` (reading
archives), :mod:`.compare` (member by member), :mod:`.skip` (skipping equal xz
streams), :mod:`.container` (xz/gzip headers), :mod:`.analyzers`, :mod:`.pyc`,
:mod:`.elf`, :mod:`.paths` (explanations), :mod:`.outputs` (folders and metadata),
:mod:`.text` and :mod:`.html` (reports).
"""

from __future__ import annotations

from venvstacks_docker.diffing.compare import compare_archives
from venvstacks_docker.diffing.html import render_html
from venvstacks_docker.diffing.model import (
    KINDS,
    RUN_FIELDS,
    ArchiveReport,
    FieldDiff,
    Finding,
    MemberDiff,
    MetadataReport,
    Report,
)
from venvstacks_docker.diffing.outputs import compare, compare_metadata_files, compare_outputs
from venvstacks_docker.diffing.text import render_text, renderables

__all__ = [
    "KINDS",
    "RUN_FIELDS",
    "ArchiveReport",
    "FieldDiff",
    "Finding",
    "MemberDiff",
    "MetadataReport",
    "Report",
    "compare",
    "compare_archives",
    "compare_metadata_files",
    "compare_outputs",
    "render_html",
    "render_text",
    "renderables",
]
