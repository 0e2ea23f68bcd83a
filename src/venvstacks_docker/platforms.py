"""Target platforms: marker environments, uv platform names and wheel tags."""

from __future__ import annotations

import functools
import os
import platform as _platform
import sys
from collections.abc import Iterable, Sequence

from packaging.markers import Marker
from packaging.tags import Tag, compatible_tags, cpython_tags, create_compatible_tags_selector, mac_platforms
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from venvstacks_docker.errors import SpecError

_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity, not the machine's count).

    ``taskset``, cgroups cpusets and ``docker run --cpuset-cpus`` all narrow it; thread
    pools sized by it do not oversubscribe a restricted process.
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity API (macOS, Windows)
        return max(1, os.cpu_count() or 1)


def current_platform() -> str:
    """The venvstacks platform tag of the machine we run on (``linux_x86_64``...).

    The one host-platform detector: builder images (``host.images.host_target``) and
    runtime builds (``runtime_build.host_triple``) derive theirs from it.
    """
    machine = _ARCH.get(_platform.machine().lower(), _platform.machine().lower())
    system: str = sys.platform  # a plain str: type checkers see every branch, on any platform
    if system.startswith("linux"):
        return f"linux_{machine}"
    if system == "darwin":
        return "macosx_arm64" if machine == "aarch64" else "macosx_x86_64"
    if system == "win32":
        return "win_arm64" if machine == "aarch64" else "win_amd64"
    raise SpecError(f"unsupported build platform {system}/{machine}")


def os_of(plat: str) -> str:
    """The operating system part of a platform name (``linux_x86_64`` -> ``linux``)."""
    return plat.split("_", 1)[0]


def arch_of(plat: str) -> str:
    """The machine part of a platform name, as Linux names it (``win_amd64`` -> ``x86_64``)."""
    tail = plat.split("_", 1)[1]
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(tail, tail)


def marker_environment(plat: str, py_full_version: str, implementation: str = "cpython") -> dict[str, str]:
    """A PEP 508 marker environment for a target platform and Python version."""
    osname = os_of(plat)
    machine = {
        "win_amd64": "AMD64",
        "win_arm64": "ARM64",
        "macosx_arm64": "arm64",
        "macosx_x86_64": "x86_64",
        "linux_x86_64": "x86_64",
        "linux_aarch64": "aarch64",
    }[plat]
    impl_name = "cpython" if implementation == "cpython" else "pypy"
    return {
        "os_name": "nt" if osname == "win" else "posix",
        "sys_platform": {"win": "win32", "linux": "linux", "macosx": "darwin"}[osname],
        "platform_system": {"win": "Windows", "linux": "Linux", "macosx": "Darwin"}[osname],
        "platform_machine": machine,
        "implementation_name": impl_name,
        "platform_python_implementation": "CPython" if impl_name == "cpython" else "PyPy",
        "python_version": ".".join(py_full_version.split(".")[:2]),
        "python_full_version": py_full_version,
        "implementation_version": py_full_version,
        "platform_release": "",
        "platform_version": "",
        "extra": "",
    }


def marker_applies(marker: str | None, plat: str, py_full_version: str) -> bool:
    """Whether the environment marker ``marker`` holds on ``plat`` (no marker always holds)."""
    if not marker:
        return True
    return Marker(marker).evaluate(marker_environment(plat, py_full_version))


#: glibc versions of the legacy manylinux tags (PEP 600), and the architectures each
#: was defined for (``packaging.tags`` knows the same aliases for the running host).
_LEGACY_MANYLINUX = {(2, 17): "manylinux2014", (2, 12): "manylinux2010", (2, 5): "manylinux1"}
_OLD_GLIBC_ARCHS = ("x86_64", "i686")  # the only ones with wheels for glibc older than 2.17


def _manylinux_platforms(arch: str, glibc: str) -> list[str]:
    """``manylinux`` platform tags of a target glibc, best first, with ``linux_<arch>`` last.

    ``packaging.tags.platform_tags()`` answers this for the running host only (it reads
    the host's glibc); a target is named by the stack, so its tags are made here, by the
    same rules: every ``manylinux_2_Y`` from the target down to 2.17 (2.5 on x86), each
    legacy alias right after its version.  ``linux_<arch>`` (a local, untagged build, as
    venvstacks accepts too) comes last.
    """
    major, minor = (int(part) for part in glibc.split(".")[:2])
    oldest = 5 if arch in _OLD_GLIBC_ARCHS else 17
    tags: list[str] = []
    for glibc_minor in range(minor, oldest - 1, -1):
        tags.append(f"manylinux_{major}_{glibc_minor}_{arch}")
        legacy = _LEGACY_MANYLINUX.get((major, glibc_minor))
        if legacy and (legacy == "manylinux2014" or arch in _OLD_GLIBC_ARCHS):
            tags.append(f"{legacy}_{arch}")
    return [*tags, f"linux_{arch}"]


def platform_tags(plat: str, linux_target: str, macosx_target: str) -> list[str]:
    """Wheel platform tags a target accepts, best first.

    macOS: :func:`packaging.tags.mac_platforms` for the target version and CPU, so an
    ``arm64`` target also takes ``universal2`` wheels, including ``macosx_10_x_universal2``
    ones (their x86_64 half names the oldest macOS; the arm64 half needs 11, which every
    arm64 Mac has).  Linux: :func:`_manylinux_platforms`.  Windows: the one tag.
    """
    arch = arch_of(plat)
    osname = os_of(plat)
    if osname == "linux":
        return _manylinux_platforms(arch, linux_target)
    if osname == "macosx":
        major, _, minor = f"{macosx_target}.0".partition(".")
        version = (int(major), int(minor.split(".")[0]))
        return list(mac_platforms(version, "arm64" if arch == "aarch64" else "x86_64"))
    return ["win_arm64" if arch == "aarch64" else "win_amd64"]


@functools.cache
def _supported_tags(plat: str, py_minor: tuple[int, int], linux_target: str, macosx_target: str) -> tuple[Tag, ...]:
    plats = platform_tags(plat, linux_target, macosx_target)
    interpreter = f"cp{py_minor[0]}{py_minor[1]}"
    return (*cpython_tags(py_minor, platforms=plats), *compatible_tags(py_minor, interpreter, plats))


def supported_tags(plat: str, py_version: str, linux_target: str, macosx_target: str) -> list[Tag]:
    """Wheel tags a CPython of ``py_version`` on ``plat`` accepts, best first.

    :func:`packaging.tags.cpython_tags` (``cp311-cp311``, ``cp311-abi3``... ``cp32-abi3``)
    then :func:`packaging.tags.compatible_tags` (``py3-none``...) over
    :func:`platform_tags`, then ``none-any``: the order a CPython installer prefers.
    """
    major, minor = (int(part) for part in py_version.split(".")[:2])
    return list(_supported_tags(plat, (major, minor), linux_target, macosx_target))


def best_wheel(filenames: Iterable[str], tags: Sequence[Tag]) -> str | None:
    """The wheel among ``filenames`` with the most preferred compatible tag (the first
    such when several tie); ``None`` when none is compatible.  A file name that is not a
    valid wheel name is just not a candidate."""
    candidates = []
    for name in filenames:
        try:
            candidates.append((name, parse_wheel_filename(name)[3]))
        except InvalidWheelFilename:
            continue
    return next(create_compatible_tags_selector(tags)(candidates), None)
