"""The one downloader: partial files, resumed downloads, hash checks and clear errors.

A real HTTP server on the loopback (``http.server`` in a thread) serves one file and
answers ``Range`` requests (or, when told, ignores them); it can break a response off
midway, as a dropped connection does.  Nothing is mocked.
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from venvstacks_docker._download import download, lock_path, partial_path
from venvstacks_docker.errors import BuildError, RuntimeArchiveError

BLOB = random.Random(5).randbytes(3 * 1024 * 1024 + 123)
BLOB_SHA = hashlib.sha256(BLOB).hexdigest()


@dataclass
class Served:
    """One request the server answered: its Range header, status and body bytes sent."""

    range: str | None
    status: int
    sent: int


@dataclass
class FileServer:
    data: bytes
    ranges: bool = True
    """Answer ``Range`` requests with 206; otherwise ignore them and send the whole file."""
    cut_after: int | None = None
    """Break the next response off after this many body bytes (then serve normally)."""
    delay: float = 0.0
    auth: str | None = None
    """The ``Authorization`` header every request must carry (else 401)."""
    served: list[Served] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/files/blob.bin"

    def __enter__(self) -> FileServer:
        owner = self

        class Handler(_Handler):
            server_owner = owner

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    server_owner: FileServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:  # the stdlib's naming
        owner = self.server_owner
        time.sleep(owner.delay)
        if owner.auth is not None and self.headers.get("Authorization") != owner.auth:
            self._answer(401, b"", None, {"WWW-Authenticate": 'Basic realm="files"'})
            return
        if self.path != "/files/blob.bin":
            self._answer(404, b"not found\n", None)
            return
        wanted = self.headers.get("Range")
        match = re.fullmatch(r"bytes=(\d+)-", wanted or "")
        start = int(match.group(1)) if match and owner.ranges else 0
        if start >= len(owner.data) and start:
            self._answer(416, b"", wanted, {"Content-Range": f"bytes */{len(owner.data)}"})
            return
        headers = {"Content-Range": f"bytes {start}-{len(owner.data) - 1}/{len(owner.data)}"} if start else {}
        self._answer(206 if start else 200, owner.data[start:], wanted, headers)

    def _answer(self, status: int, body: bytes, wanted: str | None, headers: dict[str, str] | None = None) -> None:
        owner = self.server_owner
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if owner.cut_after is not None:
            body, owner.cut_after = body[: owner.cut_after], None
        # recorded before sending: the client may return (and the test look) before
        # this thread gets to run again
        owner.served.append(Served(wanted, status, len(body)))
        self.wfile.write(body)
        self.wfile.flush()


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer(BLOB) as srv:
        yield srv


def fetch(server: FileServer, target: Path, sha256: str | None = BLOB_SHA) -> str:
    return download(server.url, target, sha256=sha256, error=RuntimeArchiveError, what="the blob")


# ----------------------------------------------------------------------------- resuming


def test_an_interrupted_download_is_resumed_with_a_range_request(tmp_path: Path, server: FileServer) -> None:
    target = tmp_path / "dl" / "blob.bin"
    cut = 1_300_000
    server.cut_after = cut
    with pytest.raises(RuntimeArchiveError) as info:
        fetch(server, target)
    assert f"the transfer broke off after {cut} bytes" in str(info.value)
    assert "run the command again to resume it" in str(info.value)
    assert not target.exists()
    assert partial_path(target).read_bytes() == BLOB[:cut]  # what arrived is kept

    assert fetch(server, target) == BLOB_SHA
    assert target.read_bytes() == BLOB
    assert not partial_path(target).exists()
    assert server.served == [Served(None, 200, cut), Served(f"bytes={cut}-", 206, len(BLOB) - cut)]
    assert target.stat().st_mode & 0o777 == 0o644


def test_a_server_without_range_support_starts_over_cleanly(tmp_path: Path, server: FileServer) -> None:
    target = tmp_path / "blob.bin"
    server.cut_after, server.ranges = 700_000, False
    with pytest.raises(RuntimeArchiveError, match="broke off"):
        fetch(server, target)
    assert fetch(server, target) == BLOB_SHA
    assert target.read_bytes() == BLOB
    assert [(s.range, s.status, s.sent) for s in server.served] == [
        (None, 200, 700_000), ("bytes=700000-", 200, len(BLOB))]


def test_resumed_bytes_of_another_file_are_downloaded_again_from_the_start(tmp_path: Path,
                                                                           server: FileServer) -> None:
    target = tmp_path / "blob.bin"
    partial_path(target).write_bytes(b"x" * 1000)  # left by a download of some other file
    assert fetch(server, target) == BLOB_SHA
    assert target.read_bytes() == BLOB
    assert [(s.range, s.status) for s in server.served] == [("bytes=1000-", 206), (None, 200)]


def test_a_partial_file_longer_than_the_file_starts_over(tmp_path: Path, server: FileServer) -> None:
    target = tmp_path / "blob.bin"
    partial_path(target).write_bytes(b"y" * (len(BLOB) + 10))
    assert fetch(server, target) == BLOB_SHA
    assert [(s.range, s.status) for s in server.served] == [(f"bytes={len(BLOB) + 10}-", 416), (None, 200)]


def test_a_complete_partial_file_needs_no_request(tmp_path: Path, server: FileServer) -> None:
    target = tmp_path / "blob.bin"
    partial_path(target).write_bytes(BLOB)  # a run died between downloading and renaming
    assert fetch(server, target) == BLOB_SHA
    assert target.read_bytes() == BLOB and server.served == []


def test_without_an_expected_hash_nothing_is_resumed(tmp_path: Path, server: FileServer) -> None:
    target = tmp_path / "blob.bin"
    partial_path(target).write_bytes(b"z" * 1000)  # nothing could tell this is the wrong prefix
    assert fetch(server, target, sha256=None) == BLOB_SHA
    assert [s.range for s in server.served] == [None]


# ----------------------------------------------------------------------------- failures


def test_a_hash_mismatch_keeps_nothing(tmp_path: Path, server: FileServer) -> None:
    target = tmp_path / "blob.bin"
    with pytest.raises(BuildError) as info:
        download(server.url, target, sha256="0" * 64, error=BuildError, what="blob.whl",
                 mismatch_hint="relock if that is expected")
    assert f"blob.whl from {server.url} has sha256 {BLOB_SHA}, expected {'0' * 64}" in str(info.value)
    assert info.value.hint == "relock if that is expected"
    assert list(tmp_path.iterdir()) == [lock_path(target)]  # no file, no partial file


def test_http_errors_name_the_status_with_the_callers_error_class(tmp_path: Path, server: FileServer) -> None:
    with pytest.raises(BuildError) as info:
        download(server.url.replace("blob.bin", "missing.bin"), tmp_path / "m.bin", error=BuildError,
                 what="missing.bin", hint="check the index")
    assert "cannot download missing.bin from http://127.0.0.1:" in str(info.value)
    assert "HTTP 404 Not Found" in str(info.value) and info.value.hint == "check the index"
    assert not (tmp_path / "m.bin").exists() and not partial_path(tmp_path / "m.bin").exists()


def test_an_unreachable_server_is_named(tmp_path: Path) -> None:
    with pytest.raises(RuntimeArchiveError) as info:
        download("http://user:secret-pw-42@127.0.0.1:9/x.tar.gz", tmp_path / "x.tar.gz",
                 error=RuntimeArchiveError, what="the runtime", source="GitHub")
    message = str(info.value)
    assert "cannot download the runtime from http://***@127.0.0.1:9/x.tar.gz: GitHub is unreachable" in message
    assert "secret-pw-42" not in message
    assert not partial_path(tmp_path / "x.tar.gz").exists()


def test_rejected_credentials_of_the_url_are_named_without_the_secret(tmp_path: Path, server: FileServer) -> None:
    server.auth = "Basic " + base64.b64encode(b"alice:right-pw-1234").decode()
    url = server.url.replace("http://", "http://alice:wrong-pw-5678@")
    with pytest.raises(BuildError) as info:
        download(url, tmp_path / "blob.bin", error=BuildError, what="blob.whl", credentials=[])
    message = str(info.value)
    assert "HTTP 401" in message and "rejected the credentials from user:password in the wheel URL" in message
    assert "wrong-pw-5678" not in message
    download(url.replace("wrong-pw-5678", "right-pw-1234"), tmp_path / "blob.bin", sha256=BLOB_SHA,
             error=BuildError, what="blob.whl", credentials=[])
    assert (tmp_path / "blob.bin").read_bytes() == BLOB


# ----------------------------------------------------------------------------- one process at a time


def test_a_second_download_of_the_same_file_waits_and_uses_the_first_ones(tmp_path: Path,
                                                                          server: FileServer) -> None:
    target = tmp_path / "blob.bin"
    server.delay = 0.5
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(fetch(server, target))) for _ in range(2)]
    for thread in threads:
        thread.start()
        time.sleep(0.1)
    for thread in threads:
        thread.join()
    assert results == [BLOB_SHA, BLOB_SHA]
    assert len(server.served) == 1  # the one that waited found the file done
    assert target.read_bytes() == BLOB
