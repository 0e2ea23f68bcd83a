"""Packing the runtime tree into its archive, and the content-addressed runtime cache.

The archive is a tar stream from :mod:`venvstacks_docker._tar` (members sorted by name,
the pin's ``source_date_epoch`` as every mtime, uid/gid 0 without owner names,
normalised modes) compressed by gzip at level 9 with no name and mtime 0 in its
header: a function of the tree alone.  Archives live in
``<cache>/runtimes/<sha256>/<archive>`` next to a JSON sidecar describing the build.
"""

from __future__ import annotations

import gzip
import json
import shutil
import tempfile
import time
from pathlib import Path

from venvstacks_docker import _tar
from venvstacks_docker.errors import RuntimeArchiveError
from venvstacks_docker.metadata import sha256_file


def write_archive(tree: Path, output: Path, *, top: str = "python", mtime: int = 0) -> None:
    """Write ``tree`` as ``top/...`` into a deterministic .tar.gz at ``output``."""
    members = _tar.walk(tree, top=top, order="name", error=RuntimeArchiveError)
    with output.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                                  compresslevel=9) as gz:
        _tar.write_tar(gz, members, mtime=mtime, owner_name="", error=RuntimeArchiveError)


def find_cached_build(version: str, digest: str, cache: Path) -> Path | None:
    """The cached archive of ``version`` built from the inputs with ``digest``, if any."""
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


def store_archive(tree: Path, cache: Path, filename: str, *, mtime: int, meta: dict[str, object],
                  started: float) -> Path:
    """Pack ``tree`` into ``<cache>/runtimes/<sha256>/<filename>`` with its sidecar (``meta``
    plus the archive's name, sha256 and size, and ``build_seconds`` since ``started``, a
    :func:`time.monotonic` time); return the archive path.

    Both files are written in a staging folder of the cache and renamed into place, so
    the cache never holds half an archive.
    """
    (cache / "runtimes").mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=".build-", dir=cache / "runtimes"))
    try:
        staged = tmpdir / filename
        write_archive(tree, staged, mtime=mtime)
        sha = sha256_file(staged)
        meta = {"filename": filename, "sha256": sha, "size": staged.stat().st_size, **meta,
                "build_seconds": round(time.monotonic() - started, 1)}
        final_dir = cache / "runtimes" / sha
        final_dir.mkdir(parents=True, exist_ok=True)
        staged_meta = tmpdir / (filename + ".json")
        staged_meta.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        staged.replace(final_dir / filename)
        staged_meta.replace(final_dir / (filename + ".json"))
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return final_dir / filename


def copy_out(archive: Path, output_dir: Path | None) -> Path:
    """Copy the archive and its sidecar into ``output_dir`` (if given); return the cache path."""
    if output_dir is not None:
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        for src in (archive, archive.with_name(archive.name + ".json")):
            if src.resolve() != (output_dir / src.name).resolve():
                shutil.copyfile(src, output_dir / src.name)
    return archive


def read_sidecar(archive: Path) -> dict[str, object]:
    """The JSON sidecar (``<archive>.json``) written next to a runtime archive."""
    data: dict[str, object] = json.loads(archive.with_name(archive.name + ".json").read_text())
    return data
