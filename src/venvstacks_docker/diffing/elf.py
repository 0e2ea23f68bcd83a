"""ELF files (shared libraries, executables): build-id, library search paths, embedded paths.

Read with pyelftools, never by running ``readelf``.  Only called on members whose
bytes differ.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import IO

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import NoteSection

from venvstacks_docker.diffing import paths
from venvstacks_docker.diffing.model import Finding

# sections whose bytes a path can hide in (strings, debug info, comments, notes)
_STRING_SECTIONS = (".rodata", ".dynstr", ".comment", ".data", ".debug_str", ".debug_line_str", ".debug_line",
                    ".note", ".interp", ".gnu_debuglink")
_MAX_SECTION_SCAN = 64 << 20


@dataclass
class ElfFacts:
    """What the comparison reads from one ELF file."""

    machine: str = ""
    build_id: str | None = None
    rpath: str | None = None
    runpath: str | None = None
    soname: str | None = None
    needed: list[str] = field(default_factory=list)
    sections: dict[str, str] = field(default_factory=dict)
    """Section name -> sha256 of its bytes (``nobits`` sections have none)."""
    paths: dict[str, str] = field(default_factory=dict)
    """Embedded absolute path -> the first section it was found in."""


def _dynamic(section: DynamicSection, facts: ElfFacts) -> None:
    for tag in section.iter_tags():
        kind = tag.entry.d_tag
        # pyelftools sets the string of a tag as an attribute named after it
        if kind == "DT_RPATH":
            facts.rpath = str(getattr(tag, "rpath", ""))
        elif kind == "DT_RUNPATH":
            facts.runpath = str(getattr(tag, "runpath", ""))
        elif kind == "DT_SONAME":
            facts.soname = str(getattr(tag, "soname", ""))
        elif kind == "DT_NEEDED":
            facts.needed.append(str(getattr(tag, "needed", "")))


def read_facts(stream: IO[bytes]) -> ElfFacts | None:
    """The facts of an ELF file; ``None`` when pyelftools cannot read it."""
    try:
        elf = ELFFile(stream)
        facts = ElfFacts(machine=str(elf["e_machine"]))
        for section in elf.iter_sections():
            name = section.name
            if isinstance(section, NoteSection):
                for note in section.iter_notes():
                    if note["n_type"] == "NT_GNU_BUILD_ID":
                        facts.build_id = str(note["n_desc"])
            if isinstance(section, DynamicSection):
                _dynamic(section, facts)
            if section["sh_type"] == "SHT_NOBITS" or section["sh_size"] == 0:
                continue
            data = section.data() if section["sh_size"] <= _MAX_SECTION_SCAN * 4 else b""
            facts.sections[name] = hashlib.sha256(data).hexdigest()
            if name.startswith(_STRING_SECTIONS) and len(data) <= _MAX_SECTION_SCAN:
                for path in paths.binary_paths(data):
                    facts.paths.setdefault(path, name)
    except (ELFError, ValueError, KeyError, OSError, AssertionError):
        return None
    return facts


def _value(v: str | None) -> str:
    return repr(v) if v else "none"


def analyze(a: IO[bytes], b: IO[bytes], name: str) -> list[Finding]:
    """Findings for two differing ELF files; empty when either cannot be read as ELF."""
    fa, fb = read_facts(a), read_facts(b)
    if fa is None or fb is None:
        return []
    found = []
    if fa.build_id != fb.build_id:
        found.append(Finding(
            "elf-build-id",
            f"the GNU build-id differs ({fa.build_id or 'none'} in A, {fb.build_id or 'none'} in B): the linker "
            "hashes the linked output into it, so it changes whenever anything linked in changes (code, "
            "embedded paths, compiler or flags); the other findings for this file say what",
            {"a": fa.build_id, "b": fb.build_id}))
    for label, va, vb in (("RPATH", fa.rpath, fb.rpath), ("RUNPATH", fa.runpath, fb.runpath)):
        if va != vb:
            absolute = [p for p in (vb or "").split(":") + (va or "").split(":") if p.startswith("/")]
            where = f"; {absolute[0]} is {paths.origin(absolute[0], name)}" if absolute else ""
            found.append(Finding(
                "elf-rpath",
                f"the library search path the dynamic loader uses (DT_{label}) differs: {_value(va)} in A, "
                f"{_value(vb)} in B{where}. A relocatable layer needs $ORIGIN-relative entries or none",
                {"tag": label, "a": va, "b": vb}))
    if fa.soname != fb.soname or fa.needed != fb.needed:
        found.append(Finding("elf-dynamic",
                             f"the libraries it names differ: SONAME {_value(fa.soname)} / {_value(fb.soname)}, "
                             f"NEEDED {fa.needed} / {fb.needed}",
                             {"soname_a": fa.soname, "soname_b": fb.soname, "needed_a": fa.needed,
                              "needed_b": fb.needed}))
    only_a = set(fa.paths) - set(fb.paths)
    only_b = set(fb.paths) - set(fa.paths)
    if only_a or only_b:
        sentence, details = paths.explain_paths(only_a, only_b, name)
        details["sections"] = {p: fa.paths.get(p) or fb.paths.get(p) for p in sorted(only_a | only_b)[:20]}
        found.append(Finding("elf-embedded-path", "an absolute path compiled into the file differs: " + sentence,
                             details))
    differing = sorted(s for s in set(fa.sections) | set(fb.sections) if fa.sections.get(s) != fb.sections.get(s))
    found.append(Finding("elf-sections", f"sections that differ: {', '.join(differing) or 'none (headers only)'}",
                         {"sections": differing}))
    return found
