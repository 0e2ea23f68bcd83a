"""Reading what ELF files need, for the ELF policy check (:mod:`venvstacks_docker.elf_policy`).

A layer archive is read as a stream (any tar compression), never unpacked: every member's
path and name is noted (what the layer offers), and every executable or shared object is
read with pyelftools for what it needs: ``DT_NEEDED`` libraries, its RUNPATH (or RPATH),
its soname, and the symbol versions of ``.gnu.version_r``, with one symbol that needs
each version the caller cares about (found through ``.gnu.version``).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import posixpath
import shutil
import sys
import tarfile
import tempfile
import zlib
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection, GNUVerSymSection

ELF_MAGIC: Final = b"\x7fELF"
_SPOOL_BYTES = 64 << 20  # an ELF file bigger than this is spooled to a temporary file




@dataclass(frozen=True, kw_only=True)
class NeededVersion:
    """One symbol version an ELF file needs from a library."""

    library: str
    version: str
    symbol: str | None
    """One symbol that needs it (looked up only for versions the policy may reject)."""


@dataclass(frozen=True, kw_only=True)
class ElfNeeds:
    """What one ELF file needs from the host to load."""

    path: str  # deployed: <install_target>/...
    soname: str | None
    needed: tuple[str, ...]
    search: tuple[str, ...]  # RUNPATH entries (or RPATH when there is no RUNPATH)
    versions: tuple[NeededVersion, ...]


def _dynamic(elf: ELFFile) -> tuple[str | None, list[str], list[str], list[str]]:
    soname, needed, runpath, rpath = None, [], [], []
    for section in elf.iter_sections():
        if not isinstance(section, DynamicSection):
            continue
        for tag in section.iter_tags():
            kind = tag.entry.d_tag
            # pyelftools sets the string of a tag as an attribute named after it
            text = str(getattr(tag, kind.removeprefix("DT_").lower(), ""))
            if kind == "DT_NEEDED":
                needed.append(text)
            elif kind == "DT_SONAME":
                soname = text
            elif kind == "DT_RUNPATH":
                runpath += [p for p in text.split(":") if p]
            elif kind == "DT_RPATH":
                rpath += [p for p in text.split(":") if p]
    return soname, needed, runpath, rpath


def _first_users(elf: ELFFile, indexes: set[int]) -> dict[int, str]:
    """For each version index, the name of the first dynamic symbol that needs it."""
    versym = next((s for s in elf.iter_sections() if isinstance(s, GNUVerSymSection)), None)
    if versym is None or not indexes:
        return {}
    table = array("H", versym.data())
    if (sys.byteorder == "little") != elf.little_endian:
        table.byteswap()
    found: dict[int, str] = {}
    for i, value in enumerate(table):
        index = value & 0x7FFF
        if index in indexes and index not in found:
            found[index] = str(versym.symboltable.get_symbol(i).name)
            if len(found) == len(indexes):
                break
    return found


def _versions(elf: ELFFile, judge: Callable[[str], bool]) -> tuple[NeededVersion, ...]:
    raw: list[tuple[str, str, int]] = []
    for section in elf.iter_sections():
        if isinstance(section, GNUVerNeedSection):
            for verneed, auxiliaries in section.iter_versions():
                raw += [(str(verneed.name), str(aux.name), int(aux["vna_other"])) for aux in auxiliaries]
    users = _first_users(elf, {index for _lib, name, index in raw if judge(name)})
    return tuple(NeededVersion(library=lib, version=name, symbol=users.get(index)) for lib, name, index in raw)


def read_elf(stream: IO[bytes], path: str, judge: Callable[[str], bool]) -> ElfNeeds | None:
    """The needs of the ELF file in ``stream`` (seekable); ``None`` for anything but an
    executable or shared object, or a file pyelftools cannot read.

    ``judge(version_name)`` says which versions are worth naming a symbol for.
    """
    try:
        elf = ELFFile(stream)
        if elf.header["e_type"] not in ("ET_EXEC", "ET_DYN"):
            return None
        soname, needed, runpath, rpath = _dynamic(elf)
        versions = _versions(elf, judge)
    except (ELFError, ValueError, KeyError, IndexError, OSError, EOFError):
        return None
    return ElfNeeds(path=path, soname=soname, needed=tuple(needed), search=tuple(runpath or rpath),
                    versions=versions)


@dataclass
class LayerScan:
    """Everything one layer archive offers (names, paths) and needs (its ELF files)."""

    names: set[str] = field(default_factory=set)
    paths: set[str] = field(default_factory=set)
    elves: list[ElfNeeds] = field(default_factory=list)
    error: str | None = None


def _scan_member(tar: tarfile.TarFile, member: tarfile.TarInfo, name: str, scan: LayerScan,
                 judge: Callable[[str], bool]) -> None:
    source = tar.extractfile(member)
    if source is None:
        return
    head = source.read(4)
    if head != ELF_MAGIC:
        return
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
        spool.write(head)
        shutil.copyfileobj(source, spool, 1 << 20)
        spool.seek(0)
        needs = read_elf(spool, name, judge)
    if needs is not None:
        scan.elves.append(needs)
        if needs.soname:
            scan.names.add(needs.soname)


def _decompressed(archive: Path) -> IO[bytes] | lzma.LZMAFile | gzip.GzipFile | bz2.BZ2File:
    """The tar stream of ``archive``: xz (our archives are several xz streams one after
    another, which tarfile's own ``r|xz`` stops after the first of), gzip, bzip2 or none."""
    with archive.open("rb") as f:
        magic = f.read(6)
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.open(archive, "rb")
    if magic.startswith(b"\x1f\x8b"):
        return gzip.open(archive, "rb")
    if magic.startswith(b"BZh"):
        return bz2.open(archive, "rb")
    return archive.open("rb")


def scan_archive(archive: Path, judge: Callable[[str], bool]) -> LayerScan:
    """Read a layer archive (a tar, compressed or not) as a stream: names, paths, ELF needs."""
    scan = LayerScan()
    try:
        with _decompressed(archive) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                name = posixpath.normpath(member.name)
                if member.isdir():
                    continue
                scan.paths.add(name)
                scan.names.add(posixpath.basename(name))
                if member.isfile():
                    _scan_member(tar, member, name, scan, judge)
    except (tarfile.TarError, lzma.LZMAError, zlib.error, EOFError, OSError) as exc:
        scan.error = f"cannot read {archive.name}: {exc}"
    return scan


__all__ = ["ELF_MAGIC", "ElfNeeds", "LayerScan", "NeededVersion", "read_elf", "scan_archive"]
