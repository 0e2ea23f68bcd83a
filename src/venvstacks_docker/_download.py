"""The one downloader: wheels, runtime archives and CPython sources.

:func:`download` fetches a URL into a file so that the file is either absent or complete
and hash-checked:

- the bytes go to a hidden partial file next to the target (``.<name>.part``) and are
  renamed into place only after the sha256 matched, so an interrupted download never
  leaves a truncated file under the real name;
- a partial file left by an interrupted run is *resumed* with an HTTP ``Range``
  request; a server that answers with the whole file (200) or with another range makes
  it start over cleanly, and a resumed file that fails the hash check is downloaded once
  more from the start before that counts as a mismatch;
- one process at a time works on a given target (a hidden ``.<name>.lock`` next to it);
  one that had to wait uses the target the other one finished instead of fetching it
  again;
- failures raise the caller's error class (``BuildError`` for wheels,
  ``RuntimeArchiveError`` for runtimes) with a message that names what was fetched,
  from where, and why; URLs in messages never show credentials.

Credentials (wheels only, ``credentials`` not ``None``) follow
:mod:`venvstacks_docker.credentials`: userinfo in the URL or the credential of the URL's
host, sent as an ``Authorization`` header urllib never copies to a redirected request;
after a redirect, only the new host's own credential is sent.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from venvstacks_docker import credentials as _credentials
from venvstacks_docker.credentials import Credential
from venvstacks_docker.errors import VenvstacksDockerError
from venvstacks_docker.locking import exclusive
from venvstacks_docker.metadata import sha256_file

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-\d+/(?:\d+|\*)$")
DEFAULT_HINT = "check the network or index settings"
DEFAULT_MISMATCH_HINT = (
    "the download was corrupted, or the file changed at its source (or was tampered with); "
    "retry, and do not use the file if the mismatch persists"
)


def partial_path(target: Path) -> Path:
    """Where :func:`download` keeps the bytes of ``target`` until they are complete."""
    return target.with_name(f".{target.name}.part")


def lock_path(target: Path) -> Path:
    """The lock of ``target``'s download: next to it, so it lives and goes with its folder
    (and is never deleted while someone might wait on it)."""
    return target.with_name(f".{target.name}.lock")


@dataclass(frozen=True, kw_only=True)
class _Job:
    """One download: what it fetches, where to, and how its failures read."""

    url: str
    target: Path
    sha256: str | None
    error: type[VenvstacksDockerError]
    what: str
    hint: str
    mismatch_hint: str
    source: str
    headers: Mapping[str, str] = field(default_factory=dict)
    credentials: Sequence[Credential] | None = None
    timeout: float = 60

    @property
    def shown(self) -> str:
        """The URL for messages: ``user:password@`` masked, known secrets removed."""
        return _credentials.redact(self.url)

    @property
    def partial(self) -> Path:
        return partial_path(self.target)


def download(
    url: str,
    target: Path,
    *,
    error: type[VenvstacksDockerError],
    what: str,
    sha256: str | None = None,
    hint: str = DEFAULT_HINT,
    mismatch_hint: str = DEFAULT_MISMATCH_HINT,
    source: str | None = None,
    headers: Mapping[str, str] | None = None,
    credentials: Sequence[Credential] | None = None,
    timeout: float = 60,
) -> str:
    """Download ``url`` to ``target``; return the sha256 (hex) of what is there now.

    :param error: the class every failure raises.
    :param what: names the file in messages (``"tabulate-0.9.0-py3-none-any.whl"``).
    :param sha256: the expected sha256; a mismatch raises ``error`` and keeps nothing.
        Without it the file is taken as it comes (the caller files it by its hash).
    :param hint: the hint of a failure to reach the server or get the file from it.
    :param mismatch_hint: the hint of a sha256 mismatch.
    :param source: how "... is unreachable" names the server (default: its host).
    :param headers: extra request headers (they follow redirects).
    :param credentials: send HTTP basic credentials as the wheel fetcher does (see the
        module docstring); ``None`` sends none at all.
    """
    target = Path(target)
    job = _Job(
        url=url, target=target, sha256=sha256, error=error, what=what, hint=hint,
        mismatch_hint=mismatch_hint, headers=dict(headers or {}), credentials=credentials,
        timeout=timeout, source=source or _host(url),
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(lock_path(target)) as waited:
        if waited and sha256 is not None and target.is_file() and sha256_file(target) == sha256:
            return sha256  # another process finished it while this one waited
        digest = _fetch_verified(job)
        job.partial.chmod(0o644)
        job.partial.replace(target)
    return digest


def _fetch_verified(job: _Job) -> str:
    """Fill the partial file until its sha256 is the expected one (or there is none)."""
    resumed = _fetch(job)
    actual = sha256_file(job.partial)
    if job.sha256 is None or actual == job.sha256:
        return actual
    job.partial.unlink(missing_ok=True)
    if resumed:
        # The old bytes may have come from another version of the file: start over once.
        log.info("the resumed download of %s does not match its sha256; downloading it again", job.what)
        _fetch(job)
        actual = sha256_file(job.partial)
        if actual == job.sha256:
            return actual
        job.partial.unlink(missing_ok=True)
    raise job.error(f"{job.what} from {job.shown} has sha256 {actual}, expected {job.sha256}",
                    hint=job.mismatch_hint)


def _fetch(job: _Job) -> bool:
    """Complete the partial file from the server; return whether earlier bytes were kept.

    Only a download with an expected hash is resumed (without one, nothing could tell
    a wrong resumption from the real file).  A partial file that already has that hash
    is complete (a run died between downloading and renaming it): no request then.
    """
    offset = job.partial.stat().st_size if job.sha256 is not None and job.partial.is_file() else 0
    if offset and sha256_file(job.partial) == job.sha256:
        return True
    try:
        response, offset = _start(job, offset)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise _http_error(job, exc) from None
    with response, job.partial.open("ab" if offset else "wb") as out:
        try:
            _copy(job, response, out, offset)
        finally:
            if out.tell() == 0:  # nothing arrived: leave no empty partial file behind
                job.partial.unlink(missing_ok=True)
    return offset > 0


def _start(job: _Job, offset: int) -> tuple[Any, int]:
    """Open the download, resuming at ``offset`` where the server allows it:
    ``(response, the offset its body starts at)``."""
    if offset:
        try:
            response = _open(job, offset)
        except urllib.error.HTTPError as exc:
            if exc.code != 416:
                raise
            exc.close()  # "range not satisfiable": the partial file is not a prefix of this one
        else:
            start = _resumes_at(response)
            if start == offset:
                log.info("resuming the download of %s at byte %d", job.what, offset)
                return response, start
            if start == 0:  # the whole file instead (200)
                return response, start
            response.close()  # a range that was not asked for
        log.info("%s does not resume %s at byte %d; downloading it from the start", job.source, job.what,
                 offset)
    return _open(job, 0), 0


def _open(job: _Job, offset: int) -> Any:
    """Send the request (for the bytes from ``offset`` on, if not 0).

    :raises urllib.error.HTTPError: for an HTTP error status.
    """
    url, cred = job.url, None
    if job.credentials is not None:
        url, cred = _credentials.credential_for(job.url, job.credentials)
    request = urllib.request.Request(url, headers=dict(job.headers))
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    _authorize(request, cred)
    handlers = [] if job.credentials is None else [_CredentialRedirectHandler(job.credentials)]
    try:
        return urllib.request.build_opener(*handlers).open(request, timeout=job.timeout)
    except urllib.error.HTTPError:
        raise
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise job.error(
            f"cannot download {job.what} from {job.shown}: {job.source} is unreachable "
            f"({_credentials.redact(str(reason))})",
            hint=job.hint,
        ) from None


def _resumes_at(response: Any) -> int:
    """Where a response's body starts in the file: its Content-Range start for a 206, else 0."""
    if getattr(response, "status", None) != 206:
        return 0
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", "").strip())
    return int(match.group(1)) if match else -1


def _copy(job: _Job, response: Any, out: IO[bytes], offset: int) -> None:
    """Append the body to ``out``; a broken transfer keeps what arrived, to resume later."""
    received = 0
    # http.client's read(amt) ends quietly when a connection closes early: the length
    # the server announced is what tells a complete body from a broken one.
    expected = response.headers.get("Content-Length", "")
    while True:
        try:
            block = response.read(_CHUNK)
            if not block and expected.isdigit() and received < int(expected):
                raise http.client.IncompleteRead(b"", int(expected) - received)
        except (OSError, http.client.HTTPException) as exc:
            raise job.error(
                f"cannot download {job.what} from {job.shown}: the transfer broke off after "
                f"{offset + received} bytes ({_credentials.redact(str(exc)) or type(exc).__name__}); "
                "run the command again to resume it",
                hint=job.hint,
            ) from None
        if not block:
            return
        out.write(block)
        received += len(block)


def _host(url: str) -> str:
    netloc = urllib.parse.urlsplit(_credentials.strip_userinfo(url)).netloc
    return netloc or url


def _http_error(job: _Job, exc: urllib.error.HTTPError) -> VenvstacksDockerError:
    """A clear error for an HTTP error status, naming the credential that was sent."""
    final = _credentials.strip_userinfo(exc.url or job.url)
    message = _credentials.redact(f"cannot download {job.what} from {final}: HTTP {exc.code} {exc.reason}")
    if exc.code not in (401, 403) or job.credentials is None:
        return job.error(message, hint=job.hint)
    url, cred = _credentials.credential_for(job.url, job.credentials)
    if final != url:  # the error came from a redirect target: name it and its credential
        cred = _credentials.credential_for(final, job.credentials)[1]
    parts = urllib.parse.urlsplit(final)
    where = parts.netloc
    if cred is None:
        return job.error(
            f"{message}: {where} wants credentials and none were found for it",
            hint=f"give credentials for {where} where uv finds them: "
            + _credentials.where_to_put_credentials(parts.hostname),
        )
    return job.error(f"{message}: {where} rejected the credentials from {cred.source}",
                     hint=f"check the username and password for {where} (or their access to this file)")


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


def copy_verified(src: Path, target: Path, *, sha256: str, error: type[VenvstacksDockerError],
                  what: str, mismatch_hint: str = DEFAULT_MISMATCH_HINT) -> None:
    """Copy a local file to ``target`` the way :func:`download` places a download: through
    a partial file, renamed into place only when its sha256 is ``sha256``."""
    partial = partial_path(target)
    try:
        with src.open("rb") as fin, partial.open("wb") as fout:
            shutil.copyfileobj(fin, fout, _CHUNK)
        actual = sha256_file(partial)
        if actual != sha256:
            raise error(f"{what} from {src} has sha256 {actual}, expected {sha256}", hint=mismatch_hint)
        partial.chmod(0o644)
        partial.replace(target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()


__all__ = ["DEFAULT_HINT", "DEFAULT_MISMATCH_HINT", "copy_verified", "download", "lock_path", "partial_path"]
