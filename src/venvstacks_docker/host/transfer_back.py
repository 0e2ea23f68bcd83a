"""Copy mode, coming back: lock files and exported environments.

(The publication has a module of its own, :mod:`~venvstacks_docker.host.transfer_output`,
for its transaction.)  Lock files come back as a native ``lock`` writes them: each
changed file replaced atomically, files the lock removed removed.  Exported layers come
back as a tar each, unpacked by the one safe extractor
(:func:`venvstacks_docker.extract.safe_extract`, since package code ran where they
were made) into a staging folder, then swapped in for the host's copy.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from venvstacks_docker import ui
from venvstacks_docker.host.transfer_tar import members
from venvstacks_docker.host.volumes import Porter
from venvstacks_docker.locking import RUN_ID, STATE_DIR
from venvstacks_docker.metadata import METADATA_DIR


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.chmod(0o644)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _download_files(box: Porter, folder: Path, what: str) -> dict[Path, bytes]:
    """Every file below ``folder`` in the container: host path -> bytes."""
    found: dict[Path, bytes] = {}
    for rel, handle in members(box.get(str(folder), f"copying {what} back"), what):
        if handle is not None:
            found[folder / rel] = handle.read()
    return found


def bring_back_requirements(box: Porter, requirements_dir: Path, uploaded: Mapping[str, bytes]) -> list[Path]:
    """Write the lock files the run changed into the host's ``requirements_dir``.

    :param uploaded: what was sent (name without the leading ``/`` -> bytes): a file
        sent and not found again was removed by the lock, and is removed here too.
    :returns: the files written or removed.
    """
    now = _download_files(box, requirements_dir, f"the lock files of {requirements_dir}")
    changed: list[Path] = []
    for path, data in sorted(now.items()):
        before = uploaded.get(str(path).lstrip("/"))
        if before == data and path.is_file():
            continue
        _write_atomic(path, data)
        changed.append(path)
    for name in sorted(uploaded):
        path = Path("/" + name)
        if path not in now and path.is_file():
            path.unlink()
            changed.append(path)
    if changed:
        ui.current().detail(f"copied back {len(changed)} lock file change(s) into {requirements_dir}")
    return changed


def _swap_in(staged: Path, final: Path, trash: Path) -> None:
    """Put ``staged`` at ``final``, the old ``final`` (if any) going to ``trash`` and then away."""
    if final.exists() or final.is_symlink():
        final.replace(trash)
    staged.replace(final)
    shutil.rmtree(trash, ignore_errors=True)


def _fetch_folder(box: Porter, source: Path, incoming: Path) -> Path:
    """``source`` (a folder in the container) unpacked safely below ``incoming``."""
    from venvstacks_docker.extract import safe_extract

    tar = incoming / f"{source.name}.tar"
    with tar.open("wb") as handle:
        for chunk in box.get(str(source), f"copying {source} back"):
            handle.write(chunk)
    try:
        return safe_extract(tar, incoming, top=source.name)
    finally:
        tar.unlink(missing_ok=True)


def bring_back_export(box: Porter, out: Path, exported: dict[str, Any]) -> list[str]:
    """Copy the layers the run exported (or the host lacks) and the export metadata back.

    :returns: the names of the layer folders copied back.
    """
    names = []
    for layer in exported.get("layers") or []:
        folder = Path(str(layer.get("folder", "")))
        if folder.parent == out and (layer.get("status") == "exported" or not folder.exists()):
            names.append(folder.name)
    incoming = out / STATE_DIR / f"incoming-{RUN_ID}"
    shutil.rmtree(incoming, ignore_errors=True)
    incoming.mkdir(parents=True)
    try:
        for name in names:
            ui.current().detail(f"copying the exported {name} back from the engine")
            staged = _fetch_folder(box, out / name, incoming)
            _swap_in(staged, out / name, incoming / f".old-{name}")
        for path, data in _download_files(box, out / METADATA_DIR, "the export metadata").items():
            if not (path.is_file() and path.read_bytes() == data):
                _write_atomic(path, data)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(incoming)
    return names


__all__ = ["bring_back_export", "bring_back_requirements"]
