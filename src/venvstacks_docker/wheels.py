"""A hash-checked wheel cache: every wheel a build installs is fetched here first.

Builds install only from this folder (``uv pip install --no-index --find-links``),
natively and in the container alike, so the bytes installed never depend on how they
were fetched, and a container with networking disabled can build from a read-only
mount of the folder.

Downloads carry HTTP basic credentials for the hosts that have some
(:mod:`venvstacks_docker.credentials`: userinfo in the wheel URL, credentials of the
indexes in use, found where uv finds them, or a netrc ``machine`` entry), and only for
those hosts: never to another host, not even across a redirect.  Error messages never
show a secret.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from venvstacks_docker import credentials as _credentials
from venvstacks_docker.credentials import Credential
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
    credentials: Sequence[Credential] | None = None,
) -> list[Path]:
    """Make sure every wheel is in ``wheel_dir`` with the pinned hash.

    Present and correct wheels are not fetched again; a present wheel with the wrong
    hash is replaced.  Downloads go to a temporary name and are renamed once verified.

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
                _download(ref, out, credentials)
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


class _CredentialRedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follows redirects, sending credentials only to a target host that has its own.

    The ``Authorization`` header is added as an *unredirected* header, which urllib
    never copies to a redirected request; this handler adds the credential of the new
    URL's host, if it has one, and drops userinfo a ``Location`` might carry.
    """

    def __init__(self, credentials: Sequence[Credential]) -> None:
        super().__init__()
        self.credentials = credentials

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, _credentials.strip_userinfo(newurl))
        if new is not None:
            _authorize(new, _credentials.credential_for(new.full_url, self.credentials)[1])
        return new


def _authorize(request: urllib.request.Request, cred: Credential | None) -> None:
    if cred is not None:
        request.add_unredirected_header("Authorization", cred.header())


def _download(ref: WheelRef, out: Any, credentials: Sequence[Credential]) -> None:
    assert ref.url is not None
    url, cred = _credentials.credential_for(ref.url, credentials)
    request = urllib.request.Request(url)
    _authorize(request, cred)
    opener = urllib.request.build_opener(_CredentialRedirectHandler(credentials))
    shown = _credentials.redact(ref.url)
    try:
        with opener.open(request, timeout=60) as resp:
            shutil.copyfileobj(resp, out, 1 << 20)
    except urllib.error.HTTPError as exc:
        exc.close()
        final = _credentials.strip_userinfo(exc.url or url)
        if final != url:  # the error came from a redirect target: name it and its credential
            cred = _credentials.credential_for(final, credentials)[1]
        raise _http_error(ref.filename, final, exc.code, exc.reason, cred) from None
    except (urllib.error.URLError, OSError) as exc:
        raise BuildError(f"cannot download {ref.filename} from {shown}: {_credentials.redact(str(exc))}",
                         hint="check the network or index settings") from None


def _http_error(filename: str, url: str, code: int, reason: object, cred: Credential | None) -> BuildError:
    """A clear error for an HTTP error status (``url``: without userinfo)."""
    parts = urllib.parse.urlsplit(url)
    where = parts.netloc
    message = _credentials.redact(f"cannot download {filename} from {url}: HTTP {code} {reason}")
    if code not in (401, 403):
        return BuildError(message, hint="check the network or index settings; relock if the index changed")
    if cred is None:
        return BuildError(
            f"{message}: {where} wants credentials and none were found for it",
            hint=f"give credentials for {where} where uv finds them: "
            + _credentials.where_to_put_credentials(parts.hostname),
        )
    return BuildError(f"{message}: {where} rejected the credentials from {cred.source}",
                      hint=f"check the username and password for {where} (or their access to this file)")
