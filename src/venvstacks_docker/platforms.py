"""Target platforms: marker environments, uv platform names and wheel tags."""

from __future__ import annotations

import os
import platform as _platform
import sys
from collections.abc import Iterable

from packaging.markers import Marker
from packaging.tags import Tag, cpython_tags
from packaging.utils import parse_wheel_filename

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


def _linux_platform_tags(arch: str, glibc: str) -> list[str]:
    major, minor = (int(p) for p in glibc.split("."))
    tags = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    ordered: list[str] = []
    for tag in tags:
        ordered.append(tag)
        m = int(tag.split("_")[2])
        if (m in legacy and (legacy[m] != "manylinux2010" or arch in ("x86_64", "i686"))
                and (legacy[m] != "manylinux1" or arch in ("x86_64", "i686"))):
            ordered.append(f"{legacy[m]}_{arch}")
    ordered.append(f"linux_{arch}")
    return ordered


def _mac_platform_tags(arch: str, target: str) -> list[str]:
    major = int(target.split(".")[0])
    tags: list[str] = []
    mac_arch = "arm64" if arch == "aarch64" else "x86_64"
    for ver in range(major, 10, -1):
        tags += [f"macosx_{ver}_0_{mac_arch}", f"macosx_{ver}_0_universal2"]
    if mac_arch == "x86_64":
        for minor in range(16, 8, -1):
            tags += [f"macosx_10_{minor}_x86_64", f"macosx_10_{minor}_universal2"]
    return tags


def supported_tags(plat: str, py_version: str, linux_target: str, macosx_target: str) -> list[Tag]:
    """Wheel tags a CPython of ``py_version`` on ``plat`` accepts, best first."""
    arch = arch_of(plat)
    osname = os_of(plat)
    if osname == "linux":
        plats = _linux_platform_tags(arch, linux_target)
    elif osname == "macosx":
        plats = _mac_platform_tags(arch, macosx_target)
    else:
        plats = ["win_arm64" if arch == "aarch64" else "win_amd64"]
    major, minor = (int(p) for p in py_version.split(".")[:2])
    return list(cpython_tags((major, minor), platforms=plats)) + _generic_tags((major, minor), plats)


def _generic_tags(version: tuple[int, int], plats: list[str]) -> list[Tag]:
    from packaging.tags import compatible_tags

    return list(compatible_tags(version, f"cp{version[0]}{version[1]}", plats))


def best_wheel(filenames: Iterable[str], tags: list[Tag]) -> str | None:
    """The wheel among ``filenames`` with the most preferred compatible tag."""
    rank = {tag: i for i, tag in enumerate(tags)}
    best: tuple[int, str] | None = None
    for name in filenames:
        try:
            _, _, _, wheel_tags = parse_wheel_filename(name)
        except Exception:  # noqa: BLE001 - a file name that does not parse is just not a candidate
            continue
        scores = [rank[t] for t in wheel_tags if t in rank]
        if scores and (best is None or min(scores) < best[0]):
            best = (min(scores), name)
    return best[1] if best else None

