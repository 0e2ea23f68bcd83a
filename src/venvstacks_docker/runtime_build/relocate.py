"""Making the installed tree relocatable and self-contained, and checking that it is.

Third-party shared libraries are carried in ``python/lib`` and found through
``$ORIGIN``-relative RUNPATHs; entry-point scripts get a ``/bin/sh`` trampoline instead
of an absolute shebang; build paths are rewritten to ``/build``; bytecode and tests go.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import struct
from pathlib import Path
from typing import Any

from packaging.version import Version

from venvstacks_docker._run import run
from venvstacks_docker.errors import RuntimeArchiveError
from venvstacks_docker.runtime_build.recipe import (
    GLIBC_SONAME,
    INSTALL_PREFIX,
    MAPPED_BUILD_DIR,
    RELOCATABLE_SHEBANG,
    STDLIB_TEST_DIRS,
    TEST_EXTENSION,
)

log = logging.getLogger(__name__)


def _is_elf(path: Path) -> bool:
    if path.is_symlink() or not path.is_file():
        return False
    with path.open("rb") as stream:
        return stream.read(4) == b"\x7fELF"


def _elf_files(tree: Path) -> list[Path]:
    return sorted(p for p in tree.rglob("*") if _is_elf(p))


def _needed(path: Path) -> list[str]:
    out = run(["readelf", "-d", "-W", path], capture=True, what=f"readelf -d {path.name}")
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def _runpaths(path: Path) -> list[str]:
    out = run(["readelf", "-d", "-W", path], capture=True, what=f"readelf -d {path.name}")
    return re.findall(r"\((?:RUNPATH|RPATH)\)\s+Library (?:runpath|rpath): \[([^\]]*)\]", out)


def _resolve_with_ldd(path: Path) -> dict[str, Path]:
    out = run(["ldd", path], capture=True, what=f"ldd {path.name}", error=RuntimeArchiveError)
    found: dict[str, Path] = {}
    for line in out.splitlines():
        match = re.match(r"\s*(\S+) => (\S+) \(0x", line)
        if match:
            found[match.group(1)] = Path(match.group(2))
        elif "=> not found" in line:
            raise RuntimeArchiveError(f"{path.name} needs {line.split()[0]}, which is not installed")
    return found


def _resolve_in(folders: tuple[Path, ...], needs: list[str], elf: Path) -> dict[str, Path]:
    """Find ``needs`` in ``folders`` (a cross build: the target's libraries cannot be
    listed by running its loader, so they are looked up where multiarch puts them)."""
    found: dict[str, Path] = {}
    for soname in needs:
        path = next((folder / soname for folder in folders if (folder / soname).exists()), None)
        if path is None:
            raise RuntimeArchiveError(f"{elf.name} needs {soname}, which is in none of "
                                      + ", ".join(str(f) for f in folders))
        found[soname] = path
    return found


def _set_rpath(elf: Path, rpath: str) -> None:
    run(["patchelf", "--set-rpath", rpath, elf], what=f"patchelf {elf.name}", error=RuntimeArchiveError)


def carry_libraries(tree: Path, search: tuple[Path, ...] = ()) -> dict[str, str]:
    """Copy non-glibc shared libraries into ``python/lib`` and point RUNPATHs at them.

    They are located with ``ldd``, or in the ``search`` folders (a cross build's).
    Returns ``{soname: the host file it was copied from}``.
    """
    libdir = tree / "lib"
    carried: dict[str, str] = {}
    pending = _elf_files(tree)
    while pending:
        elf = pending.pop()
        needs = [n for n in _needed(elf) if not GLIBC_SONAME.match(n)]
        if not needs:
            continue
        resolved = _resolve_in(search, needs, elf) if search else _resolve_with_ldd(elf)
        for soname in needs:
            if soname in carried:
                continue
            source = resolved.get(soname)
            if source is None:
                raise RuntimeArchiveError(f"cannot locate {soname} needed by {elf.name}")
            target = libdir / soname
            shutil.copyfile(source.resolve(), target)
            target.chmod(0o755)
            carried[soname] = str(source.resolve())
            pending.append(target)
        _set_rpath(elf, "$ORIGIN" if elf.parent == libdir else "$ORIGIN/" + os.path.relpath(libdir, elf.parent))
    # carried libraries get $ORIGIN even without deps of their own, for uniformity
    for soname in carried:
        if not _runpaths(libdir / soname):
            _set_rpath(libdir / soname, "$ORIGIN")
    return dict(sorted(carried.items()))


def glibc_needs(tree: Path) -> dict[str, str]:
    """``{path relative to tree: the highest GLIBC_x.y version it needs}`` for every ELF file
    that needs one, read from its ``.gnu.version_r`` section with pyelftools."""
    from elftools.elf.elffile import ELFFile
    from elftools.elf.gnuversions import GNUVerNeedSection

    needs: dict[str, str] = {}
    for elf in _elf_files(tree):
        best: Version | None = None
        with elf.open("rb") as stream:
            for section in ELFFile(stream).iter_sections():
                if not isinstance(section, GNUVerNeedSection):
                    continue
                for _verneed, auxiliaries in section.iter_versions():
                    for aux in auxiliaries:
                        match = re.fullmatch(r"GLIBC_(\d+(?:\.\d+)+)", aux.name)
                        if match and (best is None or Version(match.group(1)) > best):
                            best = Version(match.group(1))
        if best is not None:
            needs[elf.relative_to(tree).as_posix()] = str(best)
    return needs


def _elf_hash(name: bytes) -> int:
    """The System V ELF hash (``vna_hash`` of a version name)."""
    value = 0
    for byte in name:
        value = (value << 4) + byte
        high = value & 0xF0000000
        if high:
            value ^= high >> 24
        value &= ~high & 0xFFFFFFFF
    return value


def _vernaux_entries(elf: Any) -> list[tuple[int, str, str, int]]:
    """``(file offset, needed file, version name, version index)`` of every vernaux entry."""
    from elftools.elf.gnuversions import GNUVerNeedSection

    found = []
    for section in elf.iter_sections():
        if not isinstance(section, GNUVerNeedSection):
            continue
        offset = section["sh_offset"]
        for verneed, auxiliaries in section.iter_versions():
            aux_offset = offset + verneed["vn_aux"]
            for aux in auxiliaries:
                found.append((int(aux_offset), str(verneed.name), str(aux.name), int(aux["vna_other"])))
                aux_offset += aux["vna_next"]
            offset += verneed["vn_next"]
    return found


def _users_of_version(elf: Any, index: int) -> set[str]:
    """Names of the dynamic symbols whose version index is ``index``."""
    from elftools.elf.gnuversions import GNUVerSymSection

    versym = next((s for s in elf.iter_sections() if isinstance(s, GNUVerSymSection)), None)
    dynsym = elf.get_section_by_name(".dynsym")
    if versym is None or dynsym is None:
        return set()
    return {dynsym.get_symbol(i).name for i in range(dynsym.num_symbols())
            if versym.get_symbol(i)["ndx"] == index}


def lower_symbol_versions(tree: Path, symbols: tuple[str, ...], base: str, target: str) -> dict[str, list[str]]:
    """Bind ``symbols`` of libm to their ``base`` version in ELF files linked elsewhere.

    What :data:`~.recipe.COMPAT_SYMBOLS` and the compat header do for the interpreter's own
    objects, done to the carried libraries (compiled by the distribution): a libm version
    need above ``target`` (``GLIBC_2.29`` for ``log``) that *only* those symbols use is
    renamed to ``base`` in place (name and hash of the vernaux entry; the string is
    already in ``.dynstr``), so they bind to the old implementation, as they do when
    compiled against an older glibc.  Anything else is left alone (and shows in the floor).
    Returns ``{file: the symbols rebound}``.
    """
    from elftools.elf.elffile import ELFFile

    changed: dict[str, list[str]] = {}
    for path in _elf_files(tree):
        with path.open("rb") as stream:
            elf = ELFFile(stream)
            name_field = _dynstr_offset(elf, base)
            patches: list[tuple[int, list[str]]] = []
            for offset, needed, name, index in _vernaux_entries(elf):
                match = re.fullmatch(r"GLIBC_(\d+(?:\.\d+)+)", name)
                if name_field is None or not needed.startswith("libm.so") or not match:
                    continue
                if Version(match.group(1)) <= Version(target):
                    continue
                users = _users_of_version(elf, index)
                if users and users <= set(symbols):
                    patches.append((offset, sorted(users)))
            little = elf.little_endian
        for offset, rebound in patches:
            assert name_field is not None
            _rewrite_vernaux(path, offset, _elf_hash(base.encode()), name_field, little)
            changed[path.relative_to(tree).as_posix()] = rebound
    return changed


def _dynstr_offset(elf: Any, text: str) -> int | None:
    """Where ``text`` starts as a whole string in ``.dynstr`` (``None``: it is not there)."""
    dynstr = elf.get_section_by_name(".dynstr")
    if dynstr is None:
        return None
    data = b"\0" + dynstr.data()
    found = data.find(b"\0" + text.encode() + b"\0")
    return None if found < 0 else found


def _rewrite_vernaux(path: Path, offset: int, hash_value: int, name_field: int, little: bool) -> None:
    """Set ``vna_hash`` and ``vna_name`` of the vernaux entry at ``offset`` (flags and index stay)."""
    with path.open("r+b") as stream:
        stream.seek(offset)
        stream.write(struct.pack("<I" if little else ">I", hash_value))
        stream.seek(offset + 8)
        stream.write(struct.pack("<I" if little else ">I", name_field))


def floor_of(needs: dict[str, str]) -> str:
    """The highest version in :func:`glibc_needs`' result (``"0"`` when nothing needs glibc)."""
    return str(max((Version(v) for v in needs.values()), default=Version("0")))


def glibc_floor(tree: Path) -> str:
    """Highest GLIBC_x.y symbol version any ELF file under ``tree`` requires (``"0"``: none)."""
    return floor_of(glibc_needs(tree))


def floor_setters(needs: dict[str, str]) -> list[str]:
    """The files of :func:`glibc_needs` that need the floor itself."""
    floor = Version(floor_of(needs))
    return sorted(path for path, version in needs.items() if Version(version) == floor)


def normalise_tree(tree: Path, pyver: str, build_dir: Path) -> None:
    """Drop tests, bytecode and static libraries; make scripts and text files relocatable."""
    stdlib = tree / "lib" / f"python{pyver}"
    for rel in STDLIB_TEST_DIRS:
        shutil.rmtree(stdlib / rel, ignore_errors=True)
    for ext in list((stdlib / "lib-dynload").iterdir()):
        if TEST_EXTENSION.match(ext.name):
            ext.unlink()
    remove_bytecode(tree)
    for static in tree.rglob("libpython*.a"):
        static.unlink()
    exe = f"python{pyver}"
    _relocatable_scripts(tree / "bin", exe)
    # Build paths in sysconfig data, Makefiles and pkg-config files -> /build.
    needle = str(build_dir).encode()
    for path in sorted(tree.rglob("*")):
        if path.is_symlink() or not path.is_file() or _is_elf(path):
            continue
        data = path.read_bytes()
        if needle in data:
            path.write_bytes(data.replace(needle, MAPPED_BUILD_DIR.encode()))
    bindir = tree / "bin"
    for link, target in (("python3", exe), ("python", "python3")):
        if (bindir / link).is_symlink() or (bindir / link).exists():
            (bindir / link).unlink()
        (bindir / link).symlink_to(target)


def _relocatable_scripts(bindir: Path, exe: str) -> None:
    """``#!/install/bin/python3.X`` entry points -> a ``/bin/sh`` trampoline."""
    for script in sorted(bindir.iterdir()):
        if script.is_symlink() or not script.is_file() or _is_elf(script):
            continue
        data = script.read_bytes()
        first, _sep, rest = data.partition(b"\n")
        if first.startswith(b"#!") and first[2:].strip().startswith(INSTALL_PREFIX.encode()):
            script.write_bytes(RELOCATABLE_SHEBANG.format(exe=exe).encode() + rest)


def remove_bytecode(tree: Path) -> None:
    """Delete every ``__pycache__`` folder and ``.pyc``/``.pyo`` file below ``tree``."""
    for cache_dir in sorted(tree.rglob("__pycache__"), reverse=True):
        shutil.rmtree(cache_dir)
    for pyc in tree.rglob("*.py[co]"):
        pyc.unlink()


def leftover_build_paths(tree: Path, build_dir: Path) -> list[str]:
    """Files below ``tree`` that still contain the build folder's path."""
    needle = str(build_dir).encode()
    hits = []
    for path in sorted(tree.rglob("*")):
        if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
            hits.append(str(path.relative_to(tree)))
    return hits


def smoke_test(tree: Path, pyver: str) -> str:
    """Run the built interpreter from where it is; return its OpenSSL version."""
    code = (
        "import sys, ssl, hashlib, sqlite3, ctypes, lzma, bz2, zlib, readline, curses, "
        "dbm.gnu, uuid, decimal, json; print(sys.prefix); print(ssl.OPENSSL_VERSION)"
    )
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "PYTHONDONTWRITEBYTECODE": "1"}
    out = run([tree / "bin" / f"python{pyver}", "-I", "-S", "-B", "-c", code], env=env, capture=True,
              what="runtime smoke test", error=RuntimeArchiveError)
    prefix = out.splitlines()[0]
    if Path(prefix).resolve() != tree.resolve():
        raise RuntimeArchiveError(f"the built interpreter is not relocatable: sys.prefix={prefix}")
    return out.splitlines()[1]
