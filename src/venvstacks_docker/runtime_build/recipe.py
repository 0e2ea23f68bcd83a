"""What a runtime build is made of: pinned sources, the recipe, and the inputs it hashes.

Everything that can change the archive bytes is either a constant here or recorded by
:func:`build_inputs`, whose digest is the cache key of a build.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from venvstacks_docker._run import run
from venvstacks_docker.errors import RuntimeArchiveError, VenvstacksDockerError
from venvstacks_docker.platforms import current_platform
from venvstacks_docker.runtimes import PLATFORM_TRIPLES

log = logging.getLogger(__name__)

#: Bump whenever the recipe changes in a way that changes the archive bytes.
RECIPE_REVISION = 4
BUILD_TAG = f"vsd{RECIPE_REVISION}"

#: Prefix the interpreter is configured with (it is relocatable, so this only shows up
#: in sysconfig data, just like python-build-standalone's ``/install``).
INSTALL_PREFIX = "/install"
#: What the real build directory is rewritten to in compiled code and sysconfig data.
MAPPED_BUILD_DIR = "/build"
#: The platforms a runtime can be built for.  A build for another architecture than the
#: machine's is a cross build (Debian's cross toolchain and the target's ``-dev``
#: packages of that architecture, installed side by side with dpkg's multiarch).
BUILD_PLATFORMS = ("linux_x86_64", "linux_aarch64")
#: GNU triplets (Debian's multiarch names) and Debian architectures of the build platforms.
GNU_TRIPLET = {"linux_x86_64": "x86_64-linux-gnu", "linux_aarch64": "aarch64-linux-gnu"}
DEBIAN_ARCH = {"linux_x86_64": "amd64", "linux_aarch64": "arm64"}


@dataclass(frozen=True)
class SourcePin:
    """A CPython source tarball, pinned by size and sha256."""

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

#: The libraries CPython's extension modules link against (the target's ``-dev`` packages).
LIBRARY_DEPENDENCIES: tuple[str, ...] = (
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
#: Build tools of the machine the build runs on.
BUILD_TOOLS: tuple[str, ...] = ("build-essential", "pkg-config", "binutils", "patchelf")
#: Debian packages needed to build natively (checked with dpkg-query, installed with
#: apt-get as root).
BUILD_DEPENDENCIES: tuple[str, ...] = (*BUILD_TOOLS, *LIBRARY_DEPENDENCIES)

#: Recorded in the build inputs besides :data:`BUILD_DEPENDENCIES`: the C library the
#: runtime is linked against decides its glibc floor.
RECORDED_PACKAGES: tuple[str, ...] = (*BUILD_DEPENDENCIES, "libc6-dev")

#: The glibc the recipe aims at (venvstacks' default ``linux_target``, manylinux_2_28).
#: A build can only reach it on a userland whose glibc is not much newer (the carried
#: libraries are the userland's): Debian 11 reaches it, Debian 12 does not.
GLIBC_TARGET = "2.28"
#: configure's questions a cross build cannot answer by running a program, answered.
CROSS_ANSWERS: tuple[str, ...] = ("ac_cv_file__dev_ptmx=yes", "ac_cv_file__dev_ptc=no", "ac_cv_buggy_getaddrinfo=no")
#: Functions newer than :data:`GLIBC_TARGET` that configure would otherwise pick up,
#: turned off with configure cache variables: ``sem_clockwait`` (2.30) lets CPython use
#: CLOCK_MONOTONIC for lock timeouts; without it, ``sem_timedwait`` (realtime clock) is
#: used, as on older systems and in python-build-standalone.
CONFIGURE_CAPS: tuple[str, ...] = ("ac_cv_func_sem_clockwait=no",)
#: libm functions that glibc 2.29 re-versioned (new implementations, same behaviour):
#: every object file is compiled with a forced include that binds them to their base
#: version, so the interpreter does not need GLIBC_2.29 for ``pow`` and friends.
COMPAT_SYMBOLS: tuple[str, ...] = ("exp", "exp2", "log", "log2", "pow")
#: The base symbol version of glibc per target triple.
BASE_SYMBOL_VERSION = {"x86_64-unknown-linux-gnu": "GLIBC_2.2.5", "aarch64-unknown-linux-gnu": "GLIBC_2.17"}
#: Name of the forced-include header, written into the source folder (so sysconfig
#: records it as ``/build/...`` in ``CONFIGURE_CFLAGS_NODIST``, which builds of third
#: party extension modules do not use).
COMPAT_HEADER = "vsd-glibc-compat.h"

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

RELOCATABLE_SHEBANG = (
    "#!/bin/sh\n"
    "'''exec' \"$(dirname -- \"$(realpath -- \"$0\")\")/{exe}\" \"$0\" \"$@\"\n"
    "' '''\n"
)


# --------------------------------------------------------------------------- names and paths


def target_platform(target: str | None = None) -> str:
    """The platform a build makes a runtime for: ``target``, or this machine's."""
    plat = target or current_platform()
    if plat not in BUILD_PLATFORMS:
        raise RuntimeArchiveError(
            f"cannot build a runtime {'for' if target else 'on'} {plat}",
            hint="runtimes are built on x86_64 and aarch64 Linux, for linux_x86_64 and linux_aarch64",
        )
    return plat


def host_triple(target: str | None = None) -> str:
    """The target triple of the runtime a build makes (``target``, default: this machine,
    :func:`~venvstacks_docker.platforms.current_platform`)."""
    return PLATFORM_TRIPLES[target_platform(target)]


def is_cross(target: str | None) -> bool:
    """Whether building for ``target`` is a cross build (another architecture than this machine's)."""
    return target is not None and target_platform(target) != target_platform(None)


def build_dependencies(target: str | None = None) -> tuple[str, ...]:
    """The Debian packages a build for ``target`` needs: :data:`BUILD_DEPENDENCIES`, or for
    a cross build the build tools, the cross compiler and the target's libraries
    (``libssl-dev:arm64``...)."""
    if not is_cross(target):
        return BUILD_DEPENDENCIES
    plat = target_platform(target)
    arch = DEBIAN_ARCH[plat]
    return (*BUILD_TOOLS, f"crossbuild-essential-{arch}", *(f"{name}:{arch}" for name in LIBRARY_DEPENDENCIES))


def recorded_packages(target: str | None = None) -> tuple[str, ...]:
    """The packages whose versions a build for ``target`` records (its dependencies and libc)."""
    libc = f"libc6-dev:{DEBIAN_ARCH[target_platform(target)]}" if is_cross(target) else "libc6-dev"
    return (*build_dependencies(target), libc)


def compiler(target: str | None = None) -> str:
    """The C compiler of a build for ``target`` (``aarch64-linux-gnu-gcc`` when crossing)."""
    return f"{GNU_TRIPLET[target_platform(target)]}-gcc" if is_cross(target) else "gcc"


def library_dirs(target: str | None = None) -> tuple[Path, ...]:
    """Where a cross build finds the target's shared libraries (multiarch folders)."""
    triplet = GNU_TRIPLET[target_platform(target)]
    return (Path("/usr/lib") / triplet, Path("/lib") / triplet)


def archive_filename(version: str, triple: str | None = None, *, floor: str | None = None) -> str:
    """The file name of the runtime archive for ``version`` (and a target triple).

    With ``floor`` (the measured glibc floor) the build tag, python-build-standalone's
    release date slot, becomes ``vsd<N>.glibc<floor>``: ``cpython-3.11.2+vsd3.glibc2.28-...``.
    """
    tag = f"{BUILD_TAG}.glibc{floor}" if floor else BUILD_TAG
    return f"cpython-{version}+{tag}-{triple or host_triple()}-install_only.tar.gz"


def build_root() -> Path:
    """Fixed per-user build location (its path never reaches the archive)."""
    return Path("/var/tmp/venvstacks-docker-build") / str(os.getuid())


def check_version(version: str) -> SourcePin:
    """The pin for ``version``, if this recipe can build it here."""
    if version not in PINS:
        raise RuntimeArchiveError(
            f"no pinned source for CPython {version}",
            hint="supported versions: " + ", ".join(sorted(PINS)),
        )
    return PINS[version]


# --------------------------------------------------------------------------- host packages


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


def ensure_build_dependencies(target: str | None = None) -> dict[str, str]:
    """Make sure the Debian build dependencies are there; install them as root if not
    (not for a cross build: that needs another architecture added to dpkg, which the
    runtime builder image of ``runtime build --in-container`` has)."""
    wanted = build_dependencies(target)
    if shutil.which("dpkg-query") is None:
        log.warning("not a Debian-like host: cannot check build dependencies %s", wanted)
        return {}
    versions = _dpkg_versions(wanted)
    missing = [name for name, version in versions.items() if version is None]
    if missing and is_cross(target):
        raise RuntimeArchiveError(
            f"cross-building for {target} needs Debian packages this machine lacks: " + " ".join(missing),
            hint=f"build it in a container instead: venvstacks-docker runtime build --in-container --target {target}",
        )
    if missing:
        _apt_install(missing)
        versions = _dpkg_versions(wanted)
        still = [name for name, version in versions.items() if version is None]
        if still:
            raise RuntimeArchiveError("apt-get did not install: " + " ".join(still))
    return {name: version for name, version in versions.items() if version}


def _apt_install(missing: list[str]) -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeArchiveError(
            "missing Debian packages needed to build CPython: " + " ".join(missing),
            hint="run as root: apt-get install -y " + " ".join(missing),
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log.info("installing build dependencies: %s", " ".join(missing))
    install = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    try:
        run(install, env=env, what="apt-get install")
    except VenvstacksDockerError:
        run(["apt-get", "update"], env=env, what="apt-get update", error=RuntimeArchiveError)
        run(install, env=env, what="apt-get install", error=RuntimeArchiveError)


def _compiler_identity(target: str | None = None) -> str:
    cc = compiler(target)
    return run([cc, "--version"], capture=True, what=f"{cc} --version").splitlines()[0].strip()


# --------------------------------------------------------------------------- inputs


def build_inputs(version: str, target: str | None = None, build_python: str | None = None) -> dict[str, object]:
    """Everything that determines the archive bytes (its digest is the cache key)."""
    pin = PINS[version]
    cross = {"build_platform": target_platform(None), "build_python": build_python} if is_cross(target) else {}
    return {
        "implementation": "cpython",
        "version": version,
        "source_url": pin.url,
        "source_sha256": pin.sha256,
        "source_date_epoch": pin.source_date_epoch,
        "recipe_revision": RECIPE_REVISION,
        "target_triple": host_triple(target),
        **cross,
        "configure_args": configure_args(version, target, build_python),
        "cflags": cflags(),
        "disabled_modules": list(DISABLED_MODULES),
        "configure_caps": list(CONFIGURE_CAPS),
        "compat_header": compat_header(host_triple(target)),
        "compiler": _compiler_identity(target),
        "userland": userland(),
        "host_packages": _dpkg_versions(recorded_packages(target)),
    }


def inputs_digest(inputs: dict[str, object]) -> str:
    """The sha256 of the build inputs, as canonical JSON."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def configure_args(version: str, target: str | None = None, build_python: str | None = None) -> list[str]:
    """The ``./configure`` arguments for CPython ``version`` (built for ``target``; a cross
    build runs ``build_python``, the same CPython version built for this machine)."""
    args = [
        f"--prefix={INSTALL_PREFIX}",
        "--with-ensurepip=install",
        "--without-static-libpython",
        "--with-system-ffi",
        "--with-dbmliborder=gdbm:ndbm",
    ]
    args += [f"py_cv_module_{name}=n/a" for name in DISABLED_MODULES]
    args += list(CONFIGURE_CAPS)
    if is_cross(target):
        # what configure cannot find out without running target programs, answered as a
        # native build on the target finds it (glibc has /dev/ptmx and a working getaddrinfo)
        args += [f"--build={GNU_TRIPLET[target_platform(None)]}", f"--host={GNU_TRIPLET[target_platform(target)]}",
                 f"--with-build-python={build_python}", *CROSS_ANSWERS]
    return args


def compat_header(triple: str | None = None) -> str:
    """The forced-include header binding :data:`COMPAT_SYMBOLS` to glibc's base version."""
    base = BASE_SYMBOL_VERSION[triple or host_triple()]
    lines = ["/* venvstacks-docker: keep the runtime's glibc floor low (see recipe.py) */"]
    lines += [f'__asm__(".symver {name},{name}@{base}");' for name in COMPAT_SYMBOLS]
    return "\n".join(lines) + "\n"


def userland() -> str:
    """The distribution the build runs on (``/etc/os-release`` and ``/etc/debian_version``)."""
    parts = []
    for name, key in (("os-release", "PRETTY_NAME="), ("debian_version", "")):
        try:
            text = (Path("/etc") / name).read_text(encoding="utf-8")
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(key):
                parts.append(line[len(key):].strip().strip('"'))
                break
    return " ".join(parts) or "unknown"


def cflags() -> str:
    """The prefix maps, with ``@SRC@`` standing for the source folder."""
    return f"-ffile-prefix-map=@SRC@={MAPPED_BUILD_DIR} -fdebug-prefix-map=@SRC@={MAPPED_BUILD_DIR}"


def cflags_nodist() -> str:
    """Flags for the interpreter's own objects only (``@SRC@`` as in :func:`cflags`)."""
    return f"-include @SRC@/{COMPAT_HEADER}"
