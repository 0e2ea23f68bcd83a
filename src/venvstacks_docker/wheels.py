"""A hash-checked wheel cache: every wheel a build installs is fetched here first.

Builds install only from this folder (``uv pip install --no-index --find-links``),
natively and in the container alike, so the bytes installed never depend on how they
were fetched, and a container with networking disabled can build from a read-only
mount of the folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from venvstacks_docker.errors import BuildError
from venvstacks_docker.metadata import sha256_file


@dataclass(frozen=True, kw_only=True)
class WheelRef:
    filename: str
    sha256: str
    url: str | None = None
    path: Path | None = None
    """A local wheel (``--local-wheels``), already resolved to an absolute path."""


def wheel_ref(entry: dict[str, Any], lock_dir: Path) -> WheelRef:
    ref = entry.get("url") or entry.get("path") or ""
    filename = entry.get("name") or ref.rsplit("/", 1)[-1].split("#", 1)[0]
    sha = entry.get("hashes", {}).get("sha256")
    if not sha:
        raise BuildError(f"the lock has no sha256 for wheel {filename}",
                         hint="relock the layer; every wheel must be pinned by hash")
    path = None
    if entry.get("path"):
        path = (lock_dir / entry["path"]).resolve()
    return WheelRef(filename=filename, sha256=sha, url=entry.get("url"), path=path)


def ensure_wheels(
    refs: Iterable[WheelRef],
    wheel_dir: Path,
    *,
    offline: bool = False,
    on_fetch: Callable[[str], None] | None = None,
) -> list[Path]:
    """Make sure every wheel is in ``wheel_dir`` with the pinned hash.

    Present and correct wheels are not fetched again; a present wheel with the wrong
    hash is replaced.  Downloads go to a temporary name and are renamed once verified.
    """
    wheel_dir.mkdir(parents=True, exist_ok=True)
    unique = {r.filename: r for r in refs}
    todo: list[WheelRef] = []
    paths: list[Path] = []
    for ref in unique.values():
        target = wheel_dir / ref.filename
        paths.append(target)
        if target.exists() and _verified(target, ref.sha256):
            continue
        todo.append(ref)
    if not todo:
        return paths
    if offline:
        names = ", ".join(sorted(r.filename for r in todo)[:5])
        raise BuildError(
            f"{len(todo)} wheel(s) are not in the wheel cache {wheel_dir} and the network is off: {names}",
            hint="run the same build once with network access (natively, or in the container, "
            "where the host fetches them), which fills the wheel cache; then retry",
        )

    def fetch(ref: WheelRef) -> None:
        if on_fetch:
            on_fetch(ref.filename)
        _fetch_one(ref, wheel_dir / ref.filename)

    with ThreadPoolExecutor(max_workers=4) as pool:
        for future in [pool.submit(fetch, r) for r in todo]:
            future.result()
    return paths


_VERIFIED: dict[tuple[str, int, int], str] = {}


def _verified(path: Path, sha256: str) -> bool:
    # hashing hundreds of MB of wheels on every no-op build would be slow: remember the
    # hash of a file we already checked, keyed by its identity and size and mtime
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _VERIFIED:
        _VERIFIED[key] = sha256_file(path)
    return _VERIFIED[key] == sha256


def _fetch_one(ref: WheelRef, target: Path) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{ref.filename}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            if ref.path is not None:
                if not ref.path.exists():
                    raise BuildError(f"local wheel {ref.path} is missing",
                                     hint="local wheels must stay where they were when the stack was locked")
                with ref.path.open("rb") as src:
                    shutil.copyfileobj(src, out)
            elif ref.url:
                try:
                    with urllib.request.urlopen(ref.url, timeout=60) as resp:
                        shutil.copyfileobj(resp, out, 1 << 20)
                except (urllib.error.URLError, OSError) as exc:
                    raise BuildError(f"cannot download {ref.filename} from {ref.url}: {exc}",
                                     hint="check the network or index settings") from exc
            else:
                raise BuildError(f"the lock gives no URL or path for {ref.filename}")
        actual = sha256_file(tmp)
        if actual != ref.sha256:
            raise BuildError(
                f"hash mismatch for {ref.filename}: the lock pins sha256 {ref.sha256}, got {actual}",
                hint="the file changed on the index (or was tampered with); relock if that is expected",
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
