"""Build a relocatable CPython "install_only" archive from pinned source, without GitHub.

The result has the same shape as a python-build-standalone ``install_only`` archive: one
top-level ``python/`` folder holding ``bin/python3``, ``lib/python3.X/`` and so on.  The
interpreter finds its standard library relative to its own executable, libpython is
linked statically into ``bin/python3.X`` and every third-party shared library an
extension module needs (OpenSSL, SQLite, readline, ncurses, ...) is carried in
``python/lib/`` and found through ``$ORIGIN``-relative RUNPATHs, so the archive only
needs glibc on the machine it is unpacked on.

Builds are deterministic: fixed build path, ``SOURCE_DATE_EPOCH``, ``-ffile-prefix-map``,
no bytecode in the archive and a normalised tar/gzip stream.  Results are stored in the
content-addressed cache ``<cache>/runtimes/<sha256>/<archive>`` next to a JSON sidecar.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from venvstacks_docker._run import run
from venvstacks_docker.errors import RuntimeArchiveError, VenvstacksDockerError
from venvstacks_docker.runtimes import cache_root, sha256_file

log = logging.getLogger(__name__)

#: Bump whenever the recipe changes in a way that changes the archive bytes.
RECIPE_REVISION = 2
BUILD_TAG = f"vsd{RECIPE_REVISION}"

#: Prefix the interpreter is configured with (it is relocatable, so this only shows up
#: in sysconfig data, just like python-build-standalone's ``/install``).
INSTALL_PREFIX = "/install"
#: What the real build directory is rewritten to in compiled code and sysconfig data.
MAPPED_BUILD_DIR = "/build"


@dataclass(frozen=True)
class SourcePin:
    version: str
    url: str
    sha256: str
    size: int
    #: Timestamp used for SOURCE_DATE_EPOCH and every archive member (upstream release day).
    source_date_epoch: int


PINS: dict[str, SourcePin] = {
    "3.11.2": SourcePin(
        version="3.11.2",
        url="http://deb.debian.org/debian/pool/main/p/python3.11/python3.11_3.11.2.orig.tar.gz",
        sha256="2411c74bda5bbcfcddaf4531f66d1adc73f247f529aee981b029513aefdbf849",
        size=26437858,
        source_date_epoch=1675814400,  # 2023-02-08
    ),
    "3.13.5": SourcePin(
        version="3.13.5",
        url="http://deb.debian.org/debian/pool/main/p/python3.13/python3.13_3.13.5.orig.tar.xz",
        sha256="93e583f243454e6e9e4588ca2c2662206ad961659863277afcdb96801647d640",
        size=22856016,
        source_date_epoch=1749513600,  # 2025-06-10
    ),
}

#: Debian packages needed to build (checked with dpkg-query, installed with apt-get as root).
BUILD_DEPENDENCIES: tuple[str, ...] = (
    "build-essential",
    "pkg-config",
    "binutils",
    "patchelf",
    "libssl-dev",
    "libsqlite3-dev",
    "libreadline-dev",
    "libncurses-dev",
    "libgdbm-dev",
    "libgdbm-compat-dev",
    "libffi-dev",
    "liblzma-dev",
    "libbz2-dev",
    "zlib1g-dev",
    "uuid-dev",
    "libcrypt-dev",
)

#: Shared libraries that are part of glibc itself: never carried, always taken from the target.
GLIBC_SONAME = re.compile(
    r"^(libc|libm|libdl|libpthread|librt|libutil|libresolv|libanl|libmvec|ld-linux[-\w.]*"
    r"|libBrokenLocale|libnss_\w+|libthread_db)\.so(\.\d+)*$"
)

#: Extension modules we deliberately do not build (they would drag in X11 / Kerberos).
DISABLED_MODULES = ("_tkinter", "nis")

#: Standard library test packages dropped from the archive (as python-build-standalone does).
STDLIB_TEST_DIRS = (
    "test",
    "idlelib/idle_test",
    "tkinter/test",
    "lib2to3/tests",
    "ctypes/test",
    "distutils/tests",
    "unittest/test",
    "sqlite3/test",
)
TEST_EXTENSION = re.compile(r"^(_test\w*|_ctypes_test|_xxtestfuzz|xxlimited\w*|xxsubtype|_xxsubinterpreters)\.")

HOST_TRIPLES = {
    "x86_64": "x86_64-unknown-linux-gnu",
    "amd64": "x86_64-unknown-linux-gnu",
    "aarch64": "aarch64-unknown-linux-gnu",
    "arm64": "aarch64-unknown-linux-gnu",
}

RELOCATABLE_SHEBANG = (
    "#!/bin/sh\n"
    "'''exec' \"$(dirname -- \"$(realpath -- \"$0\")\")/{exe}\" \"$0\" \"$@\"\n"
    "' '''\n"
)


# --------------------------------------------------------------------------- paths


def host_triple() -> str:
    machine = platform.machine().lower()
    try:
        return HOST_TRIPLES[machine]
    except KeyError:
        raise RuntimeArchiveError(
            f"cannot build a runtime on machine type {machine!r}",
            hint="building runtimes is supported on x86_64 and aarch64 Linux",
        ) from None


def archive_filename(version: str, triple: str | None = None) -> str:
    return f"cpython-{version}+{BUILD_TAG}-{triple or host_triple()}-install_only.tar.gz"


def build_root() -> Path:
    """Fixed per-user build location (its path never reaches the archive)."""
    return Path("/var/tmp/venvstacks-docker-build") / str(os.getuid())


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- source


def fetch_source(pin: SourcePin, cache: Path) -> Path:
    """Return the verified source tarball, downloading it into ``cache/sources`` once."""
    name = pin.url.rsplit("/", 1)[-1]
    target = cache / "sources" / pin.sha256 / name
    if target.is_file():
        if sha256_file(target) == pin.sha256:
            return target
        log.warning("cached source %s is corrupt; downloading it again", target)
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s", pin.url)
    tmp = target.with_name(f".{name}.{uuid.uuid4().hex[:16]}.part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(pin.url, timeout=60) as response, tmp.open("wb") as out:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise RuntimeArchiveError(
            f"cannot download the CPython {pin.version} source from {pin.url}: {exc}",
            hint="check the network (deb.debian.org must be reachable) or put the tarball at "
            f"{target}",
        ) from exc
    if digest.hexdigest() != pin.sha256:
        tmp.unlink(missing_ok=True)
        raise RuntimeArchiveError(
            f"the CPython {pin.version} source from {pin.url} has sha256 {digest.hexdigest()}, "
            f"expected {pin.sha256}",
            hint="the download was corrupted or the mirror serves a different file; retry, "
            "and do not use the file if the mismatch persists",
        )
    tmp.replace(target)
    return target


# --------------------------------------------------------------------------- host checks


def _dpkg_versions(packages: Sequence[str]) -> dict[str, str | None]:
    """Installed version of each Debian package (None when not installed)."""
    if shutil.which("dpkg-query") is None:
        return {}
    result: dict[str, str | None] = {}
    for name in packages:
        try:
            out = run(
                ["dpkg-query", "-W", "-f=${Status}\t${Version}", name],
                capture=True,
                what=f"dpkg-query {name}",
            )
        except VenvstacksDockerError:
            result[name] = None
            continue
        status, _, version = out.partition("\t")
        result[name] = version if status.endswith(" installed") else None
    return result


def ensure_build_dependencies() -> dict[str, str]:
    """Make sure the Debian build dependencies are there; install them as root if not."""
    if shutil.which("dpkg-query") is None:
        log.warning("not a Debian-like host: cannot check build dependencies %s", BUILD_DEPENDENCIES)
        return {}
    versions = _dpkg_versions(BUILD_DEPENDENCIES)
    missing = [name for name, version in versions.items() if version is None]
    if missing:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise RuntimeArchiveError(
                "missing Debian packages needed to build CPython: " + " ".join(missing),
                hint="run as root: apt-get install -y " + " ".join(missing),
            )
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        log.info("installing build dependencies: %s", " ".join(missing))
        try:
            run(["apt-get", "install", "-y", "--no-install-recommends", *missing], env=env,
                what="apt-get install")
        except VenvstacksDockerError:
            run(["apt-get", "update"], env=env, what="apt-get update", error=RuntimeArchiveError)
            run(["apt-get", "install", "-y", "--no-install-recommends", *missing], env=env,
                what="apt-get install", error=RuntimeArchiveError)
        versions = _dpkg_versions(BUILD_DEPENDENCIES)
        still = [name for name, version in versions.items() if version is None]
        if still:
            raise RuntimeArchiveError("apt-get did not install: " + " ".join(still))
    return {name: version for name, version in versions.items() if version}


def _compiler_identity() -> str:
    return run(["gcc", "--version"], capture=True, what="gcc --version").splitlines()[0].strip()


# --------------------------------------------------------------------------- inputs


def build_inputs(version: str) -> dict[str, object]:
    """Everything that determines the archive bytes (its digest is the cache key)."""
    pin = PINS[version]
    return {
        "implementation": "cpython",
        "version": version,
        "source_url": pin.url,
        "source_sha256": pin.sha256,
        "source_date_epoch": pin.source_date_epoch,
        "recipe_revision": RECIPE_REVISION,
        "target_triple": host_triple(),
        "configure_args": configure_args(version),
        "cflags": _cflags(),
        "disabled_modules": list(DISABLED_MODULES),
        "compiler": _compiler_identity(),
        "host_packages": _dpkg_versions(BUILD_DEPENDENCIES),
    }


def inputs_digest(inputs: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def configure_args(version: str) -> list[str]:
    args = [
        f"--prefix={INSTALL_PREFIX}",
        "--with-ensurepip=install",
        "--without-static-libpython",
        "--with-system-ffi",
        "--with-dbmliborder=gdbm:ndbm",
    ]
    args += [f"py_cv_module_{name}=n/a" for name in DISABLED_MODULES]
    return args


def _cflags() -> str:
    return f"-ffile-prefix-map=@SRC@={MAPPED_BUILD_DIR} -fdebug-prefix-map=@SRC@={MAPPED_BUILD_DIR}"


# --------------------------------------------------------------------------- build


def _build_env(src: Path, epoch: int) -> dict[str, str]:
    keep = ("PATH", "HOME", "TMPDIR")
    env = {key: os.environ[key] for key in keep if key in os.environ}
    env.update(
        LC_ALL="C",
        TZ="UTC",
        SOURCE_DATE_EPOCH=str(epoch),
        PYTHONHASHSEED="0",
        PYTHONDONTWRITEBYTECODE="1",
        OPT="-DNDEBUG -g0 -fwrapv -O2 -Wall",
        CFLAGS=_cflags().replace("@SRC@", str(src)),
        LDFLAGS="-Wl,--build-id=sha1",
    )
    return env


def _compile(pin: SourcePin, tarball: Path, work: Path, jobs: int) -> Path:
    """Unpack, configure, make and install into ``work/destdir``; return the install tree."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    log.info("unpacking %s", tarball.name)
    with tarfile.open(tarball) as archive:
        archive.extractall(work / "unpacked", filter="data")
    tops = list((work / "unpacked").iterdir())
    if len(tops) != 1 or not (tops[0] / "configure").is_file():
        raise RuntimeArchiveError(f"{tarball.name} does not look like a CPython source tarball")
    src = work / "src"
    tops[0].rename(src)
    env = _build_env(src, pin.source_date_epoch)
    t0 = time.monotonic()
    log.info("configure (%s)", " ".join(configure_args(pin.version)))
    run(["./configure", *configure_args(pin.version)], cwd=src, env=env,
        what="CPython configure", error=RuntimeArchiveError)
    log.info("make -j%d", jobs)
    run(["make", f"-j{jobs}"], cwd=src, env=env, what="CPython make", error=RuntimeArchiveError)
    log.info("make install")
    destdir = work / "destdir"
    run(["make", "install", f"DESTDIR={destdir}"], cwd=src, env=env,
        what="CPython make install", error=RuntimeArchiveError)
    log.info("compiled and installed in %.0f s", time.monotonic() - t0)
    tree = destdir / INSTALL_PREFIX.lstrip("/")
    if not (tree / "bin").is_dir():
        raise RuntimeArchiveError(f"make install produced no {tree}/bin")
    return tree


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


def _carry_libraries(tree: Path, pyver: str) -> dict[str, str]:
    """Copy non-glibc shared libraries into ``python/lib`` and point RUNPATHs at them."""
    libdir = tree / "lib"
    carried: dict[str, str] = {}
    pending = [p for p in _elf_files(tree)]
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
        if elf.parent == libdir:
            rpath = "$ORIGIN"
        else:
            rpath = "$ORIGIN/" + os.path.relpath(libdir, elf.parent)
        run(["patchelf", "--set-rpath", rpath, elf], what=f"patchelf {elf.name}",
            error=RuntimeArchiveError)
    # carried libraries get $ORIGIN even without deps of their own, for uniformity
    for soname in carried:
        target = libdir / soname
        if not _runpaths(target):
            run(["patchelf", "--set-rpath", "$ORIGIN", target], what=f"patchelf {soname}",
                error=RuntimeArchiveError)
    return dict(sorted(carried.items()))


def _runpaths(path: Path) -> list[str]:
    out = run(["readelf", "-d", "-W", path], capture=True, what=f"readelf -d {path.name}")
    return re.findall(r"\((?:RUNPATH|RPATH)\)\s+Library (?:runpath|rpath): \[([^\]]*)\]", out)


def glibc_floor(tree: Path) -> str:
    """Highest GLIBC_x.y symbol version any ELF file under ``tree`` requires."""
    best: tuple[int, ...] = (0,)
    for elf in _elf_files(tree):
        out = run(["readelf", "-V", "-W", elf], capture=True, what=f"readelf -V {elf.name}")
        needs = out.split("Version needs section", 1)
        if len(needs) < 2:
            continue
        for match in re.finditer(r"Name: GLIBC_(\d+(?:\.\d+)+)\b", needs[1]):
            best = max(best, tuple(int(x) for x in match.group(1).split(".")))
    return ".".join(str(x) for x in best)


def _normalise_tree(tree: Path, pyver: str, build_dir: Path) -> None:
    stdlib = tree / "lib" / f"python{pyver}"
    for rel in STDLIB_TEST_DIRS:
        shutil.rmtree(stdlib / rel, ignore_errors=True)
    dynload = stdlib / "lib-dynload"
    for ext in list(dynload.iterdir()):
        if TEST_EXTENSION.match(ext.name):
            ext.unlink()
    _remove_bytecode(tree)
    for static in tree.rglob("libpython*.a"):
        static.unlink()
    # Relocatable entry points: "#!/install/bin/python3.X" -> a /bin/sh trampoline.
    exe = f"python{pyver}"
    for script in sorted((tree / "bin").iterdir()):
        if script.is_symlink() or not script.is_file() or _is_elf(script):
            continue
        data = script.read_bytes()
        first, sep, rest = data.partition(b"\n")
        if first.startswith(b"#!") and first[2:].strip().startswith(INSTALL_PREFIX.encode()):
            script.write_bytes(RELOCATABLE_SHEBANG.format(exe=exe).encode() + rest)
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


def _remove_bytecode(tree: Path) -> None:
    for cache_dir in sorted(tree.rglob("__pycache__"), reverse=True):
        shutil.rmtree(cache_dir)
    for pyc in tree.rglob("*.py[co]"):
        pyc.unlink()


def _leftover_build_paths(tree: Path, build_dir: Path) -> list[str]:
    needle = str(build_dir).encode()
    hits = []
    for path in sorted(tree.rglob("*")):
        if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
            hits.append(str(path.relative_to(tree)))
    return hits


def _smoke_test(tree: Path, pyver: str) -> str:
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


# --------------------------------------------------------------------------- archive


def write_archive(tree: Path, output: Path, *, top: str = "python", mtime: int = 0) -> None:
    """Write ``tree`` as ``top/...`` into a deterministic .tar.gz at ``output``."""
    buffer_path = output.with_name(output.name + ".tar.part")
    entries: list[tuple[str, Path]] = [(top, tree)]
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted(dirnames + filenames):
            path = base / name
            entries.append((f"{top}/{path.relative_to(tree).as_posix()}", path))
    entries.sort(key=lambda item: item[0])
    with buffer_path.open("wb") as raw:
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for arcname, path in entries:
                st = path.lstat()
                info = tarfile.TarInfo(arcname)
                info.mtime = mtime
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if stat.S_ISLNK(st.st_mode):
                    info.type = tarfile.SYMTYPE
                    info.linkname = os.readlink(path)
                    info.mode = 0o777
                    tar.addfile(info)
                elif stat.S_ISDIR(st.st_mode):
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
                elif stat.S_ISREG(st.st_mode):
                    info.type = tarfile.REGTYPE
                    info.mode = 0o755 if st.st_mode & 0o111 else 0o644
                    info.size = st.st_size
                    with path.open("rb") as stream:
                        tar.addfile(info, stream)
                else:
                    raise RuntimeArchiveError(f"unexpected file type in the runtime tree: {path}")
    try:
        with buffer_path.open("rb") as src, output.open("wb") as dst:
            with gzip.GzipFile(filename="", mode="wb", fileobj=dst, mtime=0, compresslevel=9) as gz:
                shutil.copyfileobj(src, gz, 1 << 20)
    finally:
        buffer_path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- cache


def find_cached_build(version: str, digest: str, cache: Path) -> Path | None:
    runtimes = cache / "runtimes"
    if not runtimes.is_dir():
        return None
    for sidecar in sorted(runtimes.glob(f"*/cpython-{version}+*-install_only.tar.gz.json")):
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            continue
        if meta.get("build_inputs_digest") != digest:
            continue
        archive = sidecar.with_name(sidecar.name[: -len(".json")])
        if archive.is_file() and archive.parent.name == meta.get("sha256"):
            return archive
    return None


def build_runtime(
    version: str = "3.11.2",
    *,
    cache: Path | None = None,
    jobs: int | None = None,
    force: bool = False,
    output_dir: Path | None = None,
) -> Path:
    """Build (or reuse from the cache) the install_only archive for CPython ``version``.

    Returns the archive path inside ``<cache>/runtimes/<sha256>/``.  With ``output_dir`` a
    copy of the archive and its sidecar is also placed there.
    """
    if version not in PINS:
        raise RuntimeArchiveError(
            f"no pinned source for CPython {version}",
            hint="supported versions: " + ", ".join(sorted(PINS)),
        )
    if sys.platform != "linux":
        raise RuntimeArchiveError("building a runtime from source is only supported on Linux")
    pin = PINS[version]
    cache = Path(cache) if cache is not None else cache_root()
    jobs = jobs or os.cpu_count() or 1
    triple = host_triple()
    filename = archive_filename(version, triple)
    pyver = ".".join(version.split(".")[:2])

    if not force:
        cached = find_cached_build(version, inputs_digest(build_inputs(version)), cache)
        if cached is not None:
            log.info("reusing cached runtime %s", cached)
            return _copy_out(cached, output_dir)
    ensure_build_dependencies()
    inputs = build_inputs(version)  # again: apt-get may just have installed packages
    digest = inputs_digest(inputs)

    # The build directory is fixed (for determinism), so the lock lives next to it: two
    # builds of one version never run at once, whichever cache they write to.
    with _locked(build_root() / f"cpython-{version}.lock"):
        # someone else may have finished the same build while we waited for the lock
        cached = None if force else find_cached_build(version, digest, cache)
        if cached is not None:
            log.info("reusing cached runtime %s", cached)
            result = cached
        else:
            t0 = time.monotonic()
            tarball = fetch_source(pin, cache)
            work = build_root() / f"cpython-{version}"
            tree = _compile(pin, tarball, work, jobs)
            carried = _carry_libraries(tree, pyver)
            _normalise_tree(tree, pyver, work / "src")
            leftovers = _leftover_build_paths(tree, work)
            if leftovers:
                log.warning("build path still present in: %s", ", ".join(leftovers[:10]))
            openssl = _smoke_test(tree, pyver)
            _remove_bytecode(tree)  # belt and braces: nothing compiled may reach the archive
            floor = glibc_floor(tree)
            (cache / "runtimes").mkdir(parents=True, exist_ok=True)
            tmpdir = Path(tempfile.mkdtemp(prefix=".build-", dir=cache / "runtimes"))
            try:
                staged = tmpdir / filename
                write_archive(tree, staged, mtime=pin.source_date_epoch)
                sha = sha256_file(staged)
                meta = {
                    "filename": filename,
                    "sha256": sha,
                    "size": staged.stat().st_size,
                    "implementation": "cpython",
                    "python_version": version,
                    "build_tag": BUILD_TAG,
                    "target_triple": triple,
                    "glibc_floor": floor,
                    "crt_features": [f"glibc-max-symbol-version:{floor}"],
                    "openssl_version": openssl,
                    "carried_libraries": carried,
                    "disabled_modules": list(DISABLED_MODULES),
                    "build_inputs": inputs,
                    "build_inputs_digest": digest,
                    "build_seconds": round(time.monotonic() - t0, 1),
                }
                final_dir = cache / "runtimes" / sha
                final_dir.mkdir(parents=True, exist_ok=True)
                staged_meta = tmpdir / (filename + ".json")
                staged_meta.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
                staged.replace(final_dir / filename)
                staged_meta.replace(final_dir / (filename + ".json"))
            finally:
                shutil.rmtree(tmpdir, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)
            result = final_dir / filename
            log.info("built %s in %.0f s", result, time.monotonic() - t0)
    return _copy_out(result, output_dir)


def _copy_out(archive: Path, output_dir: Path | None) -> Path:
    """Copy the archive and its sidecar into ``output_dir`` (if given); return the cache path."""
    if output_dir is not None:
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        for src in (archive, archive.with_name(archive.name + ".json")):
            if src.resolve() != (output_dir / src.name).resolve():
                shutil.copyfile(src, output_dir / src.name)
    return archive


def read_sidecar(archive: Path) -> dict[str, object]:
    return json.loads(archive.with_name(archive.name + ".json").read_text())


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="build-python-runtime",
        description="Build a relocatable CPython install_only archive from pinned Debian sources.",
    )
    parser.add_argument("--version", default="3.11.2", choices=sorted(PINS),
                        help="CPython version to build (default: %(default)s)")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="also copy the archive and its .json sidecar into this folder")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="cache root (default: $VENVSTACKS_DOCKER_CACHE or ~/.cache/venvstacks-docker)")
    parser.add_argument("--jobs", "-j", type=int, default=None, help="parallel make jobs")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument("--json", action="store_true", help="print the sidecar metadata as JSON")
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    if args.jobs is not None and args.jobs < 1:
        parser.error("--jobs must be at least 1")
    try:
        archive = build_runtime(args.version, cache=args.cache_dir, jobs=args.jobs,
                                force=args.force, output_dir=args.output_dir)
    except VenvstacksDockerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.return_code
    except OSError as exc:
        error = RuntimeArchiveError(f"building the runtime failed: {exc}")
        print(f"error: {error}", file=sys.stderr)
        return error.return_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    meta = read_sidecar(archive)
    try:
        if args.json:
            meta = dict(meta, path=str(archive))
            print(json.dumps(meta, indent=2, sort_keys=True))
        else:
            print(archive)
            print(f"sha256 {meta['sha256']}  glibc>={meta['glibc_floor']}")
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. piped into `head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
