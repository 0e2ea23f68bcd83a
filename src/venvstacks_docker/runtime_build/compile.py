"""Getting the pinned CPython source and compiling it into an install tree."""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import time
from pathlib import Path

from venvstacks_docker._download import download
from venvstacks_docker._run import run
from venvstacks_docker.errors import RuntimeArchiveError
from venvstacks_docker.metadata import sha256_file
from venvstacks_docker.runtime_build.recipe import (
    COMPAT_HEADER,
    INSTALL_PREFIX,
    SourcePin,
    cflags,
    cflags_nodist,
    compat_header,
    configure_args,
    host_triple,
    is_cross,
    library_dirs,
)

log = logging.getLogger(__name__)


def fetch_source(pin: SourcePin, cache: Path) -> Path:
    """Return the verified source tarball, downloading it into ``cache/sources`` once.

    An interrupted download is resumed by the next call.
    """
    name = pin.url.rsplit("/", 1)[-1]
    target = cache / "sources" / pin.sha256 / name
    if target.is_file():
        if sha256_file(target) == pin.sha256:
            return target
        log.warning("cached source %s is corrupt; downloading it again", target)
        target.unlink()
    log.info("downloading %s", pin.url)
    download(
        pin.url, target, sha256=pin.sha256, error=RuntimeArchiveError,
        what=f"the CPython {pin.version} source",
        hint=f"check the network (deb.debian.org must be reachable) or put the tarball at {target}",
        mismatch_hint="the download was corrupted or the mirror serves a different file; retry, "
        "and do not use the file if the mismatch persists",
    )
    return target


def _build_env(src: Path, epoch: int, target: str | None) -> dict[str, str]:
    keep = ("PATH", "HOME", "TMPDIR")
    env = {key: os.environ[key] for key in keep if key in os.environ}
    env.update(
        LC_ALL="C",
        TZ="UTC",
        SOURCE_DATE_EPOCH=str(epoch),
        PYTHONHASHSEED="0",
        PYTHONDONTWRITEBYTECODE="1",
        OPT="-DNDEBUG -g0 -fwrapv -O2 -Wall",
        CFLAGS=cflags().replace("@SRC@", str(src)),
        # the interpreter's own objects only: sysconfig's CFLAGS (what third-party
        # extension modules are built with) never name the compat header
        CFLAGS_NODIST=cflags_nodist().replace("@SRC@", str(src)),
        LDFLAGS="-Wl,--build-id=sha1",
    )
    if is_cross(target):
        # pkg-config must describe the target's libraries, not this machine's
        multiarch = library_dirs(target)[0]
        env["PKG_CONFIG_LIBDIR"] = f"{multiarch}/pkgconfig:/usr/share/pkgconfig"
    return env


def _unpack(tarball: Path, work: Path) -> Path:
    """Unpack the source tarball into a fresh ``work``; return the source folder ``work/src``."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    log.info("unpacking %s", tarball.name)
    with tarfile.open(tarball) as archive:
        if hasattr(tarfile, "data_filter"):
            archive.extractall(work / "unpacked", filter="data")
        else:  # CPython < 3.11.4 (the bootstrap interpreter of --in-container); the tarball is sha256-pinned
            archive.extractall(work / "unpacked")
    tops = list((work / "unpacked").iterdir())
    if len(tops) != 1 or not (tops[0] / "configure").is_file():
        raise RuntimeArchiveError(f"{tarball.name} does not look like a CPython source tarball")
    src = work / "src"
    tops[0].rename(src)
    return src


def compile_source(pin: SourcePin, tarball: Path, work: Path, jobs: int, *, target: str | None = None,
                   build_python: str | None = None) -> Path:
    """Unpack, configure, make and install into ``work/destdir``; return the install tree.

    For another architecture (``target``), configure crosses with ``build_python``.
    """
    src = _unpack(tarball, work)
    (src / COMPAT_HEADER).write_text(compat_header(host_triple(target)), encoding="utf-8")
    env = _build_env(src, pin.source_date_epoch, target)
    t0 = time.monotonic()
    args = configure_args(pin.version, target, build_python)
    log.info("configure (%s)", " ".join(args))
    run(["./configure", *args], cwd=src, env=env,
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
