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
from pathlib import Path

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


def _set_rpath(elf: Path, rpath: str) -> None:
    run(["patchelf", "--set-rpath", rpath, elf], what=f"patchelf {elf.name}", error=RuntimeArchiveError)


def carry_libraries(tree: Path) -> dict[str, str]:
    """Copy non-glibc shared libraries into ``python/lib`` and point RUNPATHs at them.

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
        resolved = _resolve_with_ldd(elf)
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


def glibc_floor(tree: Path) -> str:
    """Highest GLIBC_x.y symbol version any ELF file under ``tree`` requires."""
    best = Version("0")
    for elf in _elf_files(tree):
        out = run(["readelf", "-V", "-W", elf], capture=True, what=f"readelf -V {elf.name}")
        needs = out.split("Version needs section", 1)
        if len(needs) < 2:
            continue
        for match in re.finditer(r"Name: GLIBC_(\d+(?:\.\d+)+)\b", needs[1]):
            best = max(best, Version(match.group(1)))
    return str(best)


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
