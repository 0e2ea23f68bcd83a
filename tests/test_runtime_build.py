"""The real CPython 3.11.2 install_only archive built from Debian's pristine source.

The first run builds it as ``runtime build`` does by default, in the Debian 11 container
(about five minutes on two cores, images included); later runs reuse the cached
archive.  The portability test unpacks it into a minimal Debian chroot from which every
third-party library the runtime carries has been deleted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _runtime_fixture import RUNTIME_VERSION, build_runtime_like_the_cli, ensure_minbase_chroot, ensure_runtime_archive
from packaging.version import Version

from venvstacks_docker import runtime_build
from venvstacks_docker.runtimes import (
    RuntimeRequest,
    acquire_runtime,
    archive_name_pattern,
    extract_runtime,
    sha256_file,
)

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="runtimes are built on Linux only")]


def _needs_runtime(test: Callable[..., None]) -> Callable[..., None]:
    """Mark a test that needs the real archive (built on first use: minutes)."""
    marked: Callable[..., None] = pytest.mark.slow(pytest.mark.runtime(test))
    return marked


PYVER = ".".join(RUNTIME_VERSION.split(".")[:2])
EXE = f"python{PYVER}"

#: Libraries the runtime must not take from the target system.
FOREIGN_LIBS = re.compile(
    r"^lib(ssl|crypto|sqlite3|readline|ncurses\w*|tinfo|gdbm\w*|ffi|lzma|bz2|z|uuid|panel\w*"
    r"|crypt)\.so(\.[\d.]+)?$"
)

IMPORT_EVERYTHING = """
import sys, ssl, hashlib, sqlite3, ctypes, lzma, bz2, zlib, readline, curses, dbm.gnu, uuid
import decimal, json
assert hashlib.sha3_256(b"x").hexdigest()
assert hashlib.blake2b(b"x").hexdigest()
assert hashlib.md5(b"x").hexdigest() == "9dd4e461268c8034f5c8564e155c67a6"
assert sqlite3.connect(":memory:").execute("select 6*7").fetchone() == (42,)
assert lzma.decompress(lzma.compress(b"abc")) == b"abc"
assert bz2.decompress(bz2.compress(b"abc")) == b"abc"
assert zlib.decompress(zlib.compress(b"abc")) == b"abc"
assert ctypes.CDLL(None).strlen(b"four") == 4
assert str(decimal.Decimal("1.1") + decimal.Decimal("2.2")) == "3.3"
assert uuid.uuid4().version == 4
print(json.dumps({"prefix": sys.prefix, "executable": sys.executable,
                  "openssl": ssl.OPENSSL_VERSION}))
"""


@pytest.fixture(scope="module")
def archive() -> Path:
    return ensure_runtime_archive()


def _sidecar(archive: Path) -> dict[str, object]:
    return runtime_build.read_sidecar(archive)


@pytest.fixture(scope="module")
def unpacked(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("runtime") / "a dir with space" / "python"
    extract_runtime(archive, dest)
    return dest


def _elf_files(tree: Path) -> list[Path]:
    found = []
    for path in sorted(tree.rglob("*")):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as stream:
                if stream.read(4) == b"\x7fELF":
                    found.append(path)
    return found


def _dynamic(path: Path) -> str:
    return subprocess.run(
        ["readelf", "-d", "-W", str(path)], check=True, capture_output=True, text=True
    ).stdout


# ----------------------------------------------------------------------------- layout


@_needs_runtime
def test_archive_name_and_cache_location(archive: Path) -> None:
    assert re.fullmatch(
        rf"cpython-{re.escape(RUNTIME_VERSION)}\+vsd\d+\.glibc2\.\d+-(x86_64|aarch64)-unknown-linux-gnu"
        r"-install_only\.tar\.gz",
        archive.name,
    )
    digest = sha256_file(archive)
    assert archive.parent.name == digest
    assert archive.parent.parent.name == "runtimes"
    meta = json.loads(archive.with_name(archive.name + ".json").read_text())
    assert meta["sha256"] == digest
    assert meta["filename"] == archive.name
    assert meta["python_version"] == RUNTIME_VERSION
    assert meta["build_inputs"]["source_sha256"] == runtime_build.PINS[RUNTIME_VERSION].sha256


@_needs_runtime
def test_archive_has_install_only_layout(archive: Path) -> None:
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    by_name = {m.name: m for m in members}
    assert names == sorted(names), "members must be sorted"
    assert all(n == "python" or n.startswith("python/") for n in names)
    assert by_name[f"python/bin/{EXE}"].isfile()
    assert by_name[f"python/bin/{EXE}"].mode == 0o755
    assert by_name["python/bin/python3"].issym()
    assert by_name["python/bin/python3"].linkname == EXE
    assert by_name["python/bin/python"].issym()
    for required in (
        f"python/lib/python{PYVER}/os.py",
        f"python/lib/python{PYVER}/lib-dynload",
        f"python/include/python{PYVER}/Python.h",
        f"python/lib/pkgconfig/python-{PYVER}.pc",
    ):
        assert required in by_name, required
    # OpenSSL is carried: libssl.so.1.1 from Debian 11 in the container build, .so.3 on a Debian 12 host
    carried = _sidecar(archive)["carried_libraries"]
    assert isinstance(carried, dict)
    libssl = [name for name in carried if name.startswith("libssl.so.")]
    assert libssl and all(f"python/lib/{name}" in by_name for name in libssl), carried
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".pyo"))]
    assert f"python/lib/python{PYVER}/test/__init__.py" not in by_name
    assert not [n for n in names if re.search(r"libpython[\d.]+\.a$", n)]


@_needs_runtime
def test_archive_members_are_normalised(archive: Path) -> None:
    raw = archive.read_bytes()
    assert raw[:2] == b"\x1f\x8b"
    flags, header_mtime = raw[3], int.from_bytes(raw[4:8], "little")
    assert header_mtime == 0, "gzip header must not carry a timestamp"
    assert not flags & 0x08, "gzip header must not carry a file name"
    epoch = runtime_build.PINS[RUNTIME_VERSION].source_date_epoch
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            assert member.mtime == epoch, member.name
            assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", ""), member.name
            if member.isdir():
                assert member.mode == 0o755, member.name
            elif member.isfile():
                assert member.mode in (0o644, 0o755), member.name
            else:
                assert member.issym(), f"unexpected member type: {member.name}"


# ----------------------------------------------------------------------------- behaviour


@_needs_runtime
def test_runtime_runs_from_a_path_with_a_space(archive: Path, unpacked: Path, tmp_path: Path) -> None:
    assert " " in str(unpacked)
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(
        [str(unpacked / "bin" / "python3"), "-c", IMPORT_EVERYTHING],
        capture_output=True, text=True, env=env, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert Path(info["prefix"]) == unpacked
    assert info["openssl"] == _sidecar(archive)["openssl_version"]

    venv = tmp_path / "venv with space"
    subprocess.run([str(unpacked / "bin" / "python3"), "-m", "venv", "--without-pip", str(venv)],
                   check=True, env=env)
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sys, ssl; print(sys.base_prefix)"],
        capture_output=True, text=True, check=True, env=env,
    ).stdout.strip()
    assert Path(out) == unpacked


@_needs_runtime
def test_pip_entry_point_is_relocatable(unpacked: Path) -> None:
    pip = unpacked / "bin" / "pip3"
    assert not pip.read_text().startswith("#!/install")
    proc = subprocess.run([str(pip), "--version"], capture_output=True, text=True, check=False,
                          env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert str(unpacked) in proc.stdout


@_needs_runtime
def test_no_absolute_rpath_anywhere(unpacked: Path) -> None:
    elves = _elf_files(unpacked)
    assert len(elves) > 40
    carried = {p.name for p in (unpacked / "lib").glob("lib*.so*")}
    for elf in elves:
        text = _dynamic(elf)
        for paths in re.findall(r"\((?:RUNPATH|RPATH)\)\s+Library \w+: \[([^\]]*)\]", text):
            for entry in paths.split(":"):
                assert entry.startswith("$ORIGIN"), f"{elf}: absolute rpath {entry}"
        for needed in re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", text):
            if runtime_build.GLIBC_SONAME.match(needed):
                continue
            assert needed in carried, f"{elf.name} needs {needed}, which the archive does not carry"
            assert "$ORIGIN" in text, f"{elf.name} needs {needed} but has no $ORIGIN runpath"


@_needs_runtime
def test_glibc_floor_is_recorded(archive: Path, unpacked: Path) -> None:
    meta = runtime_build.read_sidecar(archive)
    floor = meta["glibc_floor"]
    assert isinstance(floor, str) and re.fullmatch(r"2\.\d+", floor)
    assert floor == runtime_build.glibc_floor(unpacked)
    assert f"glibc-max-symbol-version:{floor}" in meta["crt_features"]
    host = os.confstr("CS_GNU_LIBC_VERSION").split()[-1]
    assert tuple(map(int, floor.split("."))) <= tuple(map(int, host.split(".")))


@_needs_runtime
def test_cached_archive_is_reused_without_rebuilding(archive: Path) -> None:
    before = archive.stat().st_mtime_ns
    started = time.monotonic()
    again = build_runtime_like_the_cli(RUNTIME_VERSION)
    assert again == archive
    assert archive.stat().st_mtime_ns == before
    assert time.monotonic() - started < 60


@_needs_runtime
def test_build_cli_reports_the_cached_archive_as_json(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from venvstacks_docker.cli import run

    out_dir = tmp_path / "out"
    assert run(["runtime", "build", "--python-version", RUNTIME_VERSION, "--json", "--output-dir", str(out_dir)]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert (meta["schema"], meta["schema_version"]) == ("venvstacks-docker/runtime", 1)
    assert meta["path"] == str(archive)
    assert meta["sha256"] == archive.parent.name
    assert (out_dir / archive.name).read_bytes() == archive.read_bytes()
    assert (out_dir / (archive.name + ".json")).is_file()


@_needs_runtime
def test_acquire_runtime_finds_the_built_archive_offline(archive: Path) -> None:
    request = RuntimeRequest(
        implementation="cpython",
        version=RUNTIME_VERSION,
        platform="linux_aarch64" if "aarch64" in archive.name else "linux_x86_64",
    )
    found = acquire_runtime(request, expected_sha256=sha256_file(archive), offline=True)
    assert found.path == archive
    assert found.origin == "cache"


# ----------------------------------------------------------------------------- portability


@_needs_runtime
@pytest.mark.root
def test_runtime_needs_only_glibc_in_a_minbase_chroot(archive: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip(
            "!!! NOT RUN: the portability proof needs root (debootstrap + chroot); "
            "rerun this test as root to check the runtime needs nothing but glibc !!!"
        )
    if shutil.which("debootstrap") is None:
        pytest.skip("!!! NOT RUN: debootstrap is not installed (apt-get install debootstrap) !!!")
    pristine = ensure_minbase_chroot("bookworm")
    work = tmp_path / "chroot"
    subprocess.run(["cp", "-a", str(pristine), str(work)], check=True)
    try:
        assert (work / "etc" / "debian_version").is_file()
        removed = []
        for dirpath, dirnames, filenames in os.walk(work / "usr"):
            dirnames[:] = [d for d in dirnames if d != "share"]
            for name in filenames:
                if FOREIGN_LIBS.match(name):
                    (Path(dirpath) / name).unlink()
                    removed.append(name)
        # minbase ships at least these; deleting them is what makes the test meaningful
        for expected in ("libz.so.1", "liblzma.so.5", "libtinfo.so.6"):
            assert expected in removed, f"{expected} was not found in the chroot"
        extract_runtime(archive, work / "opt" / "python")
        proc = subprocess.run(
            ["chroot", str(work), "/usr/bin/env", "-i", "PATH=/usr/bin:/bin", "LC_ALL=C",
             "PYTHONDONTWRITEBYTECODE=1", "/opt/python/bin/python3", "-c", IMPORT_EVERYTHING],
            capture_output=True, text=True, check=False,
        )
        assert proc.returncode == 0, proc.stderr
        info = json.loads(proc.stdout)
        print("runtime in minbase chroot:", info["openssl"])
        assert info["prefix"] == "/opt/python"
        assert info["openssl"] == _sidecar(archive)["openssl_version"]
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ----------------------------------------------------------------------------- determinism


@pytest.mark.skipif(
    not os.environ.get("VENVSTACKS_DOCKER_TEST_REBUILD"),
    reason="set VENVSTACKS_DOCKER_TEST_REBUILD=1 to rebuild from scratch and compare (minutes)",
)
@_needs_runtime
def test_rebuild_is_bit_for_bit_identical(archive: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    pin = runtime_build.PINS[RUNTIME_VERSION]
    source = runtime_build.fetch_source(pin, archive.parents[2])
    (cache / "sources" / pin.sha256).mkdir(parents=True)
    shutil.copyfile(source, cache / "sources" / pin.sha256 / source.name)
    rebuilt = build_runtime_like_the_cli(RUNTIME_VERSION, cache=cache, force=True)
    assert rebuilt.name == archive.name
    assert sha256_file(rebuilt) == sha256_file(archive)


# ----------------------------------------------------------------------------- fast: naming, recipe, floor


def test_archive_name_carries_the_floor_in_the_build_tag() -> None:
    name = runtime_build.archive_filename("3.11.2", "x86_64-unknown-linux-gnu", floor="2.28")
    assert name == f"cpython-3.11.2+{runtime_build.BUILD_TAG}.glibc2.28-x86_64-unknown-linux-gnu-install_only.tar.gz"
    match = archive_name_pattern(RuntimeRequest(implementation="cpython", version="3.11.2",
                                                platform="linux_x86_64")).match(name)
    assert match and match.group("tag") == f"{runtime_build.BUILD_TAG}.glibc2.28"
    # a newer build tag still sorts first, as python-build-standalone's dates do
    assert f"{runtime_build.BUILD_TAG}.glibc2.28" > "vsd2"


def test_recipe_keeps_newer_glibc_functions_out() -> None:
    args = runtime_build.configure_args("3.11.2")
    assert "ac_cv_func_sem_clockwait=no" in args
    header = runtime_build.compat_header("x86_64-unknown-linux-gnu")
    for name in ("exp", "exp2", "log", "log2", "pow"):
        assert f'__asm__(".symver {name},{name}@GLIBC_2.2.5");' in header
    assert "@GLIBC_2.17" in runtime_build.compat_header("aarch64-unknown-linux-gnu")
    # only the interpreter's own objects get the header: sysconfig's CFLAGS never name it
    assert runtime_build.COMPAT_HEADER not in runtime_build.recipe.cflags()
    assert runtime_build.COMPAT_HEADER in runtime_build.recipe.cflags_nodist()


def _readelf_glibc(path: Path) -> str:
    out = subprocess.run(["readelf", "-V", "-W", str(path)], check=True, capture_output=True, text=True).stdout
    versions = re.findall(r"Name: GLIBC_(\d+(?:\.\d+)+)\b", out.split("Version needs section", 1)[-1])
    return str(max(Version(v) for v in versions))


@pytest.mark.skipif(shutil.which("readelf") is None, reason="needs binutils' readelf to cross-check")
def test_floor_read_with_pyelftools_matches_readelf(tmp_path: Path) -> None:
    exe = Path(os.path.realpath(sys.executable))
    (tmp_path / "bin").mkdir()
    shutil.copyfile(exe, tmp_path / "bin" / "python")
    (tmp_path / "bin" / "script").write_text("#!/bin/sh\n")
    needs = runtime_build.glibc_needs(tmp_path)
    assert set(needs) == {"bin/python"}
    assert needs["bin/python"] == _readelf_glibc(exe)
    assert runtime_build.floor_of(needs) == needs["bin/python"]
    assert runtime_build.floor_setters({**needs, "lib/old.so": "2.2.5"}) == ["bin/python"]
    assert runtime_build.floor_of({}) == "0"


def test_bad_suite_is_refused_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    from venvstacks_docker.cli import run

    assert run(["runtime", "build", "--in-container", "--suite", "not a suite"]) == 2
    err = capsys.readouterr().err
    assert "--suite 'not a suite' is not a Debian suite name" in err
    assert "Traceback" not in err


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to make a library that calls log()")
def test_libm_versions_of_carried_libraries_are_lowered(tmp_path: Path) -> None:
    """A library compiled against glibc >= 2.29 needs log@GLIBC_2.29; rebound to the base
    version, it needs no newer glibc for it and still computes the same."""
    source = tmp_path / "uselog.c"
    source.write_text("#include <math.h>\n#include <stdlib.h>\n"  # getenv: libc's base version string
                      "double uselog(double x) { return log(x) + pow(x, 0.5) + (getenv(\"VSD_NONE\") != 0); }\n")
    lib = tmp_path / "tree" / "lib" / "libuselog.so"
    lib.parent.mkdir(parents=True)
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(lib), str(source), "-lm"], check=True)
    before = runtime_build.glibc_needs(tmp_path / "tree")["lib/libuselog.so"]
    triple = runtime_build.host_triple()
    base = runtime_build.BASE_SYMBOL_VERSION[triple]
    lowered = runtime_build.lower_symbol_versions(tmp_path / "tree", runtime_build.COMPAT_SYMBOLS, base, "2.28")
    if Version(before) <= Version("2.28"):
        assert lowered == {}  # this machine's glibc predates the new libm versions
        return
    assert lowered == {"lib/libuselog.so": ["log", "pow"]}
    assert Version(runtime_build.glibc_needs(tmp_path / "tree")["lib/libuselog.so"]) <= Version("2.28")
    symbols = subprocess.run(["readelf", "--dyn-syms", "-W", str(lib)], check=True, capture_output=True,
                             text=True).stdout
    assert f"log@{base}" in symbols and f"pow@{base}" in symbols
    code = ("import ctypes, math, sys; f = ctypes.CDLL(sys.argv[1]).uselog; f.restype = ctypes.c_double; "
            "f.argtypes = [ctypes.c_double]; assert abs(f(4.0) - (math.log(4.0) + 2.0)) < 1e-12")
    subprocess.run([sys.executable, "-c", code, str(lib)], check=True)
    assert runtime_build.lower_symbol_versions(tmp_path / "tree", runtime_build.COMPAT_SYMBOLS, base, "2.28") == {}
