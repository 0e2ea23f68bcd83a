"""A hash-checked wheel cache: every wheel a build installs is fetched here first.

Builds install only from this folder (``uv pip install --no-index --find-links``),
natively and in the container alike, so the bytes installed never depend on how they
were fetched, and a container with networking disabled can build from a read-only
mount of the folder.

Downloads carry HTTP basic credentials for the hosts that have some
(:mod:`venvstacks_docker.credentials`: userinfo in the wheel URL, credentials of the
indexes in use, found where uv finds them, or a netrc ``machine`` entry), and only for
those hosts: never to another host, not even across a redirect.  Error messages never
show a secret.  The downloading itself (partial files, resuming, hash checks, credential
handling) is :mod:`venvstacks_docker._download`'s.
"""

from __future__ import annotations

import os
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.pylock import PackageWheel

from venvstacks_docker import credentials as _credentials
from venvstacks_docker._download import copy_verified, download
from venvstacks_docker.credentials import Credential
from venvstacks_docker.errors import BuildError, LockError
from venvstacks_docker.metadata import sha256_file


@dataclass(frozen=True, kw_only=True)
class WheelRef:
    """A wheel a lock pins: its name, sha256 and where to get it."""

    filename: str
    sha256: str
    url: str | None = None
    path: Path | None = None
    """A local wheel (``--local-wheels``), already resolved to an absolute path."""


def wheel_ref(wheel: PackageWheel, lock_dir: Path) -> WheelRef:
    """The wheel a pylock ``wheels`` entry pins (as :mod:`packaging.pylock` reads it).

    A ``path`` is relative to ``lock_dir`` (the folder of the lock file), as PEP 751 and
    venvstacks write it; an absolute path or a ``file://`` URL (locks written before
    paths were made relative) is taken as it is.

    :raises BuildError: when the entry has no sha256.
    """
    filename = wheel.filename
    sha = wheel.hashes.get("sha256")
    if not sha:
        raise BuildError(f"the lock has no sha256 for wheel {filename}",
                         hint="relock the layer; every wheel must be pinned by hash")
    local = wheel.path or _file_url_path(wheel.url)
    if local is not None:
        return WheelRef(filename=filename, sha256=sha, path=(lock_dir / local).resolve())
    return WheelRef(filename=filename, sha256=sha, url=wheel.url)


def _file_url_path(url: str | None) -> str | None:
    """The local path of a ``file://`` URL (``None`` for any other URL)."""
    if not url:
        return None
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "file":
        return None
    path = urllib.request.url2pathname(parsed.path)
    return f"//{parsed.netloc}{path}" if parsed.netloc not in ("", "localhost") else path


def portable_wheel_entry(wheel: dict[str, Any], lock_dir: Path) -> dict[str, Any]:
    """A pylock ``wheels`` entry as it is stored: local wheels by a path relative to the
    lock's folder, never by an absolute path or ``file://`` URL (as venvstacks stores
    them), so a checkout with its wheels can move; credentials never in a URL.

    uv names a ``--local-wheels`` (find-links) wheel by its absolute ``file://`` URL.

    :raises LockError: when no relative path leads from ``lock_dir`` to the wheel
        (another drive, on Windows).
    """
    entry = dict(wheel)
    local = entry.get("path") or _file_url_path(entry.get("url"))
    if local is not None and Path(local).is_absolute():
        try:
            relative = os.path.relpath(local, lock_dir)
        except ValueError:
            raise LockError(f"local wheel {local} cannot be named relative to the lock folder {lock_dir}",
                            hint="keep the --local-wheels folder on the same drive as the stack file") from None
        entry.pop("url", None)
        entry["path"] = Path(relative).as_posix()
    elif isinstance(entry.get("url"), str):
        entry["url"] = _credentials.strip_userinfo(entry["url"])
    return entry


def ensure_wheels(
    refs: Iterable[WheelRef],
    wheel_dir: Path,
    *,
    offline: bool = False,
    on_fetch: Callable[[str], None] | None = None,
    credentials: Sequence[Credential] | None = None,
) -> list[Path]:
    """Make sure every wheel is in ``wheel_dir`` with the pinned hash.

    Present and correct wheels are not fetched again; a present wheel with the wrong
    hash is replaced.  Downloads go to a partial file (resumed when a run was interrupted)
    and are renamed once verified (:func:`venvstacks_docker._download.download`).

    :param credentials: index credentials to send (each only to its own host); default:
        :func:`~venvstacks_docker.credentials.collect_credentials` for the indexes of the
        stacks this process works on.
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

    creds = list(credentials) if credentials is not None else _credentials.collect_credentials()

    def fetch(ref: WheelRef) -> None:
        if on_fetch:
            on_fetch(ref.filename)
        _fetch_one(ref, wheel_dir / ref.filename, creds)

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


def _fetch_one(ref: WheelRef, target: Path, credentials: Sequence[Credential] = ()) -> None:
    """Put the wheel at ``target``, checked against its pinned sha256 before it is renamed
    into place (an interrupted download is resumed by the next run)."""
    if ref.path is not None:
        if not ref.path.exists():
            raise BuildError(f"local wheel {ref.path} is missing",
                             hint="the lock names it relative to its own folder: keep the wheels where they are "
                             "relative to the stack file, or relock with --local-wheels")
        copy_verified(ref.path, target, sha256=ref.sha256, error=BuildError, what=ref.filename,
                      mismatch_hint=_MISMATCH_HINT)
    elif ref.url:
        download(ref.url, target, sha256=ref.sha256, error=BuildError, what=ref.filename,
                 hint="check the network or index settings; relock if the index changed",
                 mismatch_hint=_MISMATCH_HINT, credentials=credentials)
    else:
        raise BuildError(f"the lock gives no URL or path for {ref.filename}")


_MISMATCH_HINT = "the file changed on the index (or was tampered with); relock if that is expected"
