"""A private PEP 503 ("simple") package index with HTTP basic auth, for tests.

:class:`PrivateIndex` serves real wheels (downloaded once from PyPI into the tool's
cache, sha256-checked against PyPI's JSON API) from an :mod:`http.server` in a thread:

- ``/simple/`` and ``/simple/<project>/``: PEP 503 HTML pages whose links are relative
  (``../../files/<wheel>#sha256=...``), so wheel URLs are on the index's host;
- ``/files/<wheel>``: the wheels.

Every request without the right ``Authorization: Basic`` header gets 401 (unless
``require_auth`` is off), and every request is recorded (method, path, whether it
carried credentials, whether they were right).  ``redirects`` maps a path to a URL
answered with a 302, to test what a client sends after a redirect.

The server binds ``0.0.0.0`` on a free port, so a container on the Docker bridge can
reach it at the bridge gateway: :meth:`PrivateIndex.url_for` builds the index URL for
any host name (:func:`docker_bridge_gateway` finds the gateway address).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import html
import json
import lzma
import re
import secrets
import socket
import struct
import threading
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from venvstacks_docker.runtimes import cache_root

#: Small pure-Python wheels without dependencies: (project, version).
DEFAULT_WHEELS: tuple[tuple[str, str], ...] = (("tabulate", "0.9.0"), ("six", "1.17.0"))


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    had_auth: bool
    authorized: bool
    agent: str
    """The User-Agent: ``uv/...`` for uv, ``Python-urllib/...`` for the wheel fetcher."""


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def fetch_wheel(project: str, version: str) -> Path:
    """The ``py3-none-any`` wheel of ``project==version`` from PyPI, cached and hash-checked.

    Found through PyPI's simple API in its JSON form (PEP 691), which mirrors and
    proxies serve as well as PyPI.
    """
    folder = cache_root() / "test-wheels"
    folder.mkdir(parents=True, exist_ok=True)
    request = urllib.request.Request(f"https://pypi.org/simple/{_canonical(project)}/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as resp:
        files = json.load(resp)["files"]
    prefix = f"{project.replace('-', '_')}-{version}-"
    wheels = [f for f in files if f["filename"].startswith(prefix) and f["filename"].endswith("-none-any.whl")]
    if not wheels:
        raise RuntimeError(f"{project}=={version} has no pure-Python wheel on PyPI")
    entry = wheels[0]
    sha256 = entry["hashes"]["sha256"]
    target = folder / entry["filename"]
    if target.exists() and _sha256(target) == sha256:
        return target
    with urllib.request.urlopen(entry["url"], timeout=120) as resp:
        data = resp.read()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise RuntimeError(f"hash mismatch downloading {entry['filename']}")
    partial = target.with_suffix(".part")
    partial.write_bytes(data)
    partial.replace(target)
    return target


def cached_wheels(projects: Sequence[tuple[str, str]] = DEFAULT_WHEELS) -> list[Path]:
    """Wheels of the cache only when present (no PyPI look-up), else fetched."""
    folder = cache_root() / "test-wheels"
    found = []
    for project, version in projects:
        prefix = f"{project.replace('-', '_')}-{version}-"
        hits = sorted(folder.glob(f"{prefix}*-none-any.whl")) if folder.exists() else []
        found.append(hits[0] if hits else fetch_wheel(project, version))
    return found


@dataclass
class PrivateIndex:
    """A running private index; use as a context manager (or call :meth:`stop`)."""

    wheels: Sequence[Path]
    username: str = "alice"
    password: str = field(default_factory=lambda: f"pw-{secrets.token_hex(12)}")
    """Unique per index, so a test can search files and output for it."""
    require_auth: bool = True
    redirects: dict[str, str] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    # --- lifecycle --------------------------------------------------------------

    def start(self) -> PrivateIndex:
        index = self

        class Handler(_Handler):
            owner = index

        self._server = ThreadingHTTPServer(("0.0.0.0", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="private-index", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> PrivateIndex:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- addresses ----------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None, "the index is not running"
        return self._server.server_address[1]

    def url_for(self, host: str = "127.0.0.1", *, userinfo: str | None = None) -> str:
        """The index URL (``.../simple``) as reached through ``host``."""
        auth = f"{userinfo}@" if userinfo else ""
        return f"http://{auth}{host}:{self.port}/simple"

    @property
    def url(self) -> str:
        """The loopback index URL."""
        return self.url_for()

    def gateway_url(self) -> str:
        """The index URL as a container on the default Docker bridge reaches it."""
        return self.url_for(docker_bridge_gateway())

    # --- what was served ----------------------------------------------------------

    def wheel_requests(self, agent: str = "") -> list[Request]:
        """Requests for wheel files (by clients whose User-Agent starts with ``agent``)."""
        return [r for r in self.requests if r.path.startswith("/files/") and r.agent.startswith(agent)]

    def fetcher_downloads(self) -> list[Request]:
        """Wheel downloads by the wheel fetcher (urllib), as opposed to uv."""
        return [r for r in self.wheel_requests("Python-urllib") if r.method == "GET"]

    def authorized(self, header: str | None) -> bool:
        expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return header == f"Basic {expected}"

    def page(self, path: str) -> tuple[int, str, bytes]:
        """Status, content type and body for ``path``."""
        files = {w.name: w for w in self.wheels}
        if path in ("/simple", "/simple/"):
            names = sorted({_canonical(w.name.split("-", 1)[0]) for w in self.wheels})
            links = "".join(f'<a href="{n}/">{n}</a>\n' for n in names)
            return 200, "text/html", _html("Simple index", links)
        match = re.fullmatch(r"/simple/([^/]+)/?", path)
        if match:
            project = _canonical(match.group(1))
            mine = [w for w in self.wheels if _canonical(w.name.split("-", 1)[0]) == project]
            if not mine:
                return 404, "text/plain", b"not found\n"
            links = "".join(
                f'<a href="../../files/{html.escape(w.name)}#sha256={_sha256(w)}">{html.escape(w.name)}</a>\n'
                for w in mine)
            return 200, "text/html", _html(f"Links for {project}", links)
        if path.startswith("/files/") and path[len("/files/"):] in files:
            return 200, "application/octet-stream", files[path[len("/files/"):]].read_bytes()
        return 404, "text/plain", b"not found\n"


def _html(title: str, body: str) -> bytes:
    return (f'<!DOCTYPE html>\n<html><head><meta name="pypi:repository-version" content="1.0">'
            f"<title>{title}</title></head><body>\n{body}</body></html>\n").encode()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    owner: PrivateIndex

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass  # quiet: tests inspect owner.requests instead

    def _answer(self, *, body: bool) -> None:
        path = self.path.split("?", 1)[0].split("#", 1)[0]
        header = self.headers.get("Authorization")
        ok = self.owner.authorized(header)
        agent = self.headers.get("User-Agent", "")
        self.owner.requests.append(Request(self.command, path, header is not None, ok, agent))
        if self.owner.require_auth and not ok:
            self._send(401, "text/plain", b"authentication required\n", body=body,
                       extra={"WWW-Authenticate": 'Basic realm="private-index"'})
            return
        if path in self.owner.redirects:
            self._send(302, "text/plain", b"", body=body, extra={"Location": self.owner.redirects[path]})
            return
        status, ctype, data = self.owner.page(path)
        self._send(status, ctype, data, body=body)

    def _send(self, status: int, ctype: str, data: bytes, *, body: bool,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_GET(self) -> None:  # the stdlib's naming
        self._answer(body=True)

    def do_HEAD(self) -> None:  # the stdlib's naming
        self._answer(body=False)


def docker_bridge_gateway(interface: str = "docker0", default: str = "172.17.0.1") -> str:
    """IPv4 address of the Docker bridge on this host (the gateway containers see)."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        packed = struct.pack("256s", interface.encode()[:15])
        return socket.inet_ntoa(fcntl.ioctl(sock.fileno(), 0x8915, packed)[20:24])  # SIOCGIFADDR
    return default


@contextlib.contextmanager
def private_index(**kwargs: object) -> Iterator[PrivateIndex]:
    """A started :class:`PrivateIndex` serving :func:`cached_wheels` unless ``wheels`` is given."""
    kwargs.setdefault("wheels", cached_wheels())
    index = PrivateIndex(**kwargs)  # type: ignore[arg-type]
    with index:
        yield index


def assert_secret_nowhere(secret: str, folder: Path, *outputs: str) -> None:
    """``secret`` is in no file under ``folder`` (archives decompressed) and no output."""
    needle = secret.encode()
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if path.name.endswith(".tar.xz"):
                data = lzma.decompress(data)
            assert needle not in data, f"the secret is in {path}"
    for text in outputs:
        assert secret not in text
