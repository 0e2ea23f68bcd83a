"""``venvstacks-docker runtime build``: a relocatable CPython from pinned sources."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from venvstacks_docker import ui
from venvstacks_docker.cli._common import emit_json, out
from venvstacks_docker.errors import SpecError

runtime_app = typer.Typer(help="Python runtime archives in python-build-standalone's install_only layout.",
                          no_args_is_help=True)


@runtime_app.command("build")
def build(
    python_version: Annotated[str, typer.Option(
        "--python-version", "-p", metavar="X.Y.Z", help="The CPython version to build (it must have a pinned source).")
    ] = "3.11.2",
    legacy_version: Annotated[str | None, typer.Option("--version", hidden=True,
                                                       help="Old name of --python-version.")] = None,
    output_dir: Annotated[Path | None, typer.Option(
        "--output-dir", metavar="DIR", help="Also copy the archive and its .json sidecar here.")] = None,
    cache_dir: Annotated[Path | None, typer.Option(
        "--cache-dir", metavar="DIR", help="Cache root (default: VENVSTACKS_DOCKER_CACHE or the user cache folder).")
    ] = None,
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", min=1, metavar="N",
                                             help="Parallel make jobs (default: every CPU).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if the cache has this runtime.")] = False,
    in_container: Annotated[bool | None, typer.Option(
        "--in-container/--on-host",
        help="Build in a container of an old Debian userland (--suite; the default on Linux), so the archive "
        "needs an old glibc and does not depend on this machine's packages; or on this machine (needs its "
        "build dependencies, gives its glibc floor).", show_default=False)] = None,
    suite: Annotated[str, typer.Option(
        "--suite", metavar="SUITE",
        help="Debian suite of the build container (with --in-container); bullseye is the oldest one "
        "deb.debian.org still serves.")] = "bullseye",
    target: Annotated[str | None, typer.Option(
        "--target", metavar="PLATFORM",
        help="Build for this platform (linux_x86_64 or linux_aarch64; default: this machine's). Another "
        "architecture is cross-compiled with Debian's cross toolchain (with --in-container, in a cross "
        "builder image); its smoke test runs under qemu user-mode emulation.")] = None,
    build_python: Annotated[str | None, typer.Option(
        "--build-python", metavar="PATH",
        help="The CPython of the same X.Y for this machine that a cross build runs (default: the one "
        "running this command, when it is X.Y).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the archive's metadata as JSON.")] = False,
) -> None:
    """Build a relocatable CPython runtime archive from a pinned, hash-checked Debian source tarball.

    The archive lands in the runtime cache, keyed by its sha256, where lock and build find it. Linux only.

    By default it is built in a container of Debian 11 and needs glibc 2.28, venvstacks' default target.

    The container's images are made once (root, the first time, for the Debian bootstrap).

    --on-host builds on this machine instead. Building the same version again gives the same bytes.

    The archive name carries the measured glibc floor: cpython-3.11.2+vsd4.glibc2.28-...
    """
    from venvstacks_docker.runtime_build import BUILD_PLATFORMS, build_runtime, read_sidecar

    version = legacy_version or python_version
    if in_container is None:  # inside a builder container, the build is the container's own
        in_container = os.environ.get("VENVSTACKS_DOCKER_IN_CONTAINER") != "1"
    if not re.fullmatch(r"[a-z][a-z0-9-]*", suite):
        raise SpecError(f"--suite {suite!r} is not a Debian suite name", hint="for example: --suite bullseye")
    if target is not None and target not in BUILD_PLATFORMS:
        raise SpecError(f"--target {target!r}: runtimes are built for " + " and ".join(BUILD_PLATFORMS),
                        hint="for example: --target linux_aarch64")
    where = f" in a Debian {suite} container" if in_container else ""
    with ui.current().phase(f"building CPython {version}" + (f" for {target}" if target else "") + where):
        if in_container:
            from venvstacks_docker.host.runtime_container import build_runtime_in_container

            archive = build_runtime_in_container(version, suite=suite, cache=cache_dir, jobs=jobs, force=force,
                                                 output_dir=output_dir, target=target)
        else:
            archive = build_runtime(version, cache=cache_dir, jobs=jobs, force=force, output_dir=output_dir,
                                    target=target, build_python=build_python)
    meta = read_sidecar(archive)
    if json_output:
        emit_json("runtime", {**meta, "path": str(archive)})
        return
    out.print(str(archive), markup=False)
    out.print(f"sha256 {meta['sha256']}  glibc>={meta['glibc_floor']}", markup=False)
    sys.stdout.flush()
