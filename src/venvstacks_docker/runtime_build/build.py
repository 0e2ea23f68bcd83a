"""``build_runtime``: from a pinned source to a cached install_only archive, once per input set."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from pathlib import Path

from packaging.version import Version

from venvstacks_docker.emulation import require_emulation
from venvstacks_docker.errors import RuntimeArchiveError
from venvstacks_docker.locking import exclusive
from venvstacks_docker.platforms import usable_cpus
from venvstacks_docker.runtime_build.compile import compile_source, fetch_source
from venvstacks_docker.runtime_build.package import copy_out, find_cached_build, store_archive
from venvstacks_docker.runtime_build.recipe import (
    BASE_SYMBOL_VERSION,
    BUILD_TAG,
    COMPAT_SYMBOLS,
    DISABLED_MODULES,
    GLIBC_TARGET,
    SourcePin,
    archive_filename,
    build_inputs,
    build_root,
    check_version,
    ensure_build_dependencies,
    host_triple,
    inputs_digest,
    is_cross,
    library_dirs,
    target_platform,
)
from venvstacks_docker.runtime_build.relocate import (
    carry_libraries,
    floor_of,
    floor_setters,
    glibc_needs,
    leftover_build_paths,
    lower_symbol_versions,
    normalise_tree,
    remove_bytecode,
    smoke_test,
)
from venvstacks_docker.runtimes import cache_root

log = logging.getLogger(__name__)


def build_runtime(
    version: str = "3.11.2",
    *,
    cache: Path | None = None,
    jobs: int | None = None,
    force: bool = False,
    output_dir: Path | None = None,
    target: str | None = None,
    build_python: str | None = None,
) -> Path:
    """Build (or reuse from the cache) the install_only archive for CPython ``version``.

    Returns the archive path inside ``<cache>/runtimes/<sha256>/``.  With ``output_dir`` a
    copy of the archive and its sidecar is also placed there.  ``target`` (default: this
    machine) may name another architecture: a cross build, which runs ``build_python``
    (default: this interpreter, when it is the same CPython minor version).
    """
    pin = check_version(version)
    if sys.platform != "linux":
        raise RuntimeArchiveError("building a runtime from source is only supported on Linux")
    target = target_platform(target)
    build_python = _build_python(pin, build_python) if is_cross(target) else None
    cache = Path(cache) if cache is not None else cache_root()
    if not force:
        cached = find_cached_build(version, inputs_digest(build_inputs(version, target, build_python)), cache)
        if cached is not None:
            log.info("reusing cached runtime %s", cached)
            return copy_out(cached, output_dir)
    ensure_build_dependencies(target)
    inputs = build_inputs(version, target, build_python)  # again: apt-get may just have installed packages
    digest = inputs_digest(inputs)

    # The build directory is fixed (for determinism), so the lock lives next to it: two
    # builds of one version never run at once, whichever cache they write to.
    with exclusive(build_root() / f"cpython-{version}.lock"):
        # someone else may have finished the same build while we waited for the lock
        cached = None if force else find_cached_build(version, digest, cache)
        if cached is not None:
            log.info("reusing cached runtime %s", cached)
            return copy_out(cached, output_dir)
        result = _build(pin, cache, jobs or usable_cpus(), inputs, digest, (target, build_python))
    return copy_out(result, output_dir)


def _build_python(pin: SourcePin, given: str | None) -> str:
    """The interpreter a cross build runs: ``given``, else this one (same minor version)."""
    if given:
        return given
    minor = ".".join(pin.version.split(".")[:2])
    if f"{sys.version_info[0]}.{sys.version_info[1]}" != minor:
        raise RuntimeArchiveError(
            f"cross-building CPython {pin.version} needs a CPython {minor} for this machine to run "
            f"during the build, and this is {sys.version.split()[0]}",
            hint="pass --build-python PATH, or build in the container (runtime build without --on-host: its "
            "image has one)",
        )
    return sys.executable


def _build(pin: SourcePin, cache: Path, jobs: int, inputs: dict[str, object], digest: str,
           cross: tuple[str, str | None]) -> Path:
    """Compile, relocate, check and pack one runtime into the cache (the build lock held)."""
    t0 = time.monotonic()
    target, build_python = cross
    triple = host_triple(target)
    pyver = ".".join(pin.version.split(".")[:2])
    tarball = fetch_source(pin, cache)
    # (a native build keeps the folder name it always had: cross builds get their own)
    work = build_root() / (f"cpython-{pin.version}-{target}" if is_cross(target) else f"cpython-{pin.version}")
    tree = compile_source(pin, tarball, work, jobs, target=target, build_python=build_python)
    carried = carry_libraries(tree, library_dirs(target) if is_cross(target) else ())
    lowered = lower_symbol_versions(tree, COMPAT_SYMBOLS, BASE_SYMBOL_VERSION[triple], GLIBC_TARGET)
    normalise_tree(tree, pyver, work / "src")
    leftovers = leftover_build_paths(tree, work)
    if leftovers:
        log.warning("build path still present in: %s", ", ".join(leftovers[:10]))
    if is_cross(target) and os.environ.get("VENVSTACKS_DOCKER_IN_CONTAINER") != "1":
        # the smoke test runs the target's interpreter (in a builder container, binfmt_misc
        # is the host's, and the host checked it before starting the container)
        require_emulation(target)
    openssl = smoke_test(tree, pyver)
    remove_bytecode(tree)  # belt and braces: nothing compiled may reach the archive
    needs = glibc_needs(tree)
    floor = floor_of(needs)
    if Version(floor) > Version(GLIBC_TARGET):
        log.warning("glibc floor %s is above the recipe's target %s (set by %s)", floor, GLIBC_TARGET,
                    ", ".join(floor_setters(needs)[:5]))
    meta: dict[str, object] = {
        "implementation": "cpython",
        "python_version": pin.version,
        "build_tag": BUILD_TAG,
        "target_triple": triple,
        "glibc_floor": floor,
        "crt_features": [f"glibc-max-symbol-version:{floor}"],
        "glibc_target": GLIBC_TARGET,
        "glibc_floor_set_by": floor_setters(needs),
        "glibc_needs": needs,
        "symbol_versions_lowered": lowered,
        "openssl_version": openssl,
        "carried_libraries": carried,
        "disabled_modules": list(DISABLED_MODULES),
        "build_inputs": inputs,
        "build_inputs_digest": digest,
    }
    filename = archive_filename(pin.version, triple, floor=floor)
    result = store_archive(tree, cache, filename, mtime=pin.source_date_epoch, meta=meta, started=t0)
    shutil.rmtree(work, ignore_errors=True)
    log.info("built %s in %.0f s", result, time.monotonic() - t0)
    return result
