"""Shared helpers for tests that need the real CPython runtime archive.

``tests/conftest.py`` imports :func:`ensure_runtime_archive`; it builds the 3.11.2
install_only archive with :mod:`venvstacks_docker.runtime_build` the first time (a few
minutes) and afterwards returns the cached copy straight away.

:func:`ensure_minbase_chroot` provides a pristine ``debootstrap --variant=minbase`` tree
(cached under the cache root, keyed by suite and architecture) used to prove the runtime
needs nothing from the target system but glibc.
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
import tempfile
from pathlib import Path

from venvstacks_docker._run import run
from venvstacks_docker.errors import RuntimeArchiveError
from venvstacks_docker.runtimes import cache_root

RUNTIME_VERSION = "3.11.2"
DEBIAN_MIRROR = "http://deb.debian.org/debian"


@functools.cache
def ensure_runtime_archive(version: str = RUNTIME_VERSION) -> Path:
    """Path of the real install_only archive for ``version`` in the runtime cache, built
    as ``runtime build`` builds it by default: in the Debian 11 container (what the sample
    project pins).  Where no engine answers, it is built on this machine instead, loudly:
    its sha256 then differs from the sample project's pin."""
    return build_runtime_like_the_cli(version)


def build_runtime_like_the_cli(version: str = RUNTIME_VERSION, *, cache: Path | None = None,
                               force: bool = False) -> Path:
    """``runtime build``'s default: in the container when an engine answers, else here."""
    import sys

    from venvstacks_docker.errors import ContainerError
    from venvstacks_docker.runtime_build import build_runtime

    try:
        from venvstacks_docker.host.engine import connect
        from venvstacks_docker.host.runtime_container import build_runtime_in_container

        client = connect()
    except ContainerError as exc:
        sys.stderr.write(f"\n*** NO CONTAINER ENGINE ({exc}): building the runtime ON THIS HOST; "
                         "its sha256 differs from sample_project's pin ***\n")
        return build_runtime(version, cache=cache, force=force)
    return build_runtime_in_container(version, cache=cache, force=force, client=client)


def _debian_arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


def ensure_minbase_chroot(suite: str = "bookworm") -> Path:
    """A pristine minbase chroot of ``suite`` (created once, needs root and debootstrap).

    Never modify the returned tree: copy it (``cp -a``) and work on the copy.
    """
    if os.geteuid() != 0:
        raise RuntimeArchiveError("creating a debootstrap chroot needs root")
    if shutil.which("debootstrap") is None:
        raise RuntimeArchiveError(
            "debootstrap is not installed", hint="apt-get install -y debootstrap"
        )
    root = cache_root() / "chroots"
    target = root / f"debootstrap-minbase-{suite}-{_debian_arch()}"
    if (target / "usr" / "bin" / "env").exists() and (target / ".complete").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    try:
        run(
            ["debootstrap", "--variant=minbase", f"--arch={_debian_arch()}", suite,
             staging, DEBIAN_MIRROR],
            what=f"debootstrap {suite}",
            error=RuntimeArchiveError,
        )
        staging.chmod(0o755)  # mkdtemp made it 0700; the chroot's "/" must be 0755
        (staging / ".complete").write_text(f"debootstrap --variant=minbase {suite}\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
