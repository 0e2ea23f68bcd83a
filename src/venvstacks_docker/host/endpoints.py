"""Which container engine to talk to, decided the way the docker CLI decides it.

In order: ``--engine`` (a context name, or a URL as ``docker -H`` takes it); else
``DOCKER_HOST``; else ``DOCKER_CONTEXT``; else the ``currentContext`` of the docker
CLI's ``config.json`` (in ``$DOCKER_CONFIG``, by default ``~/.docker``); else the
default socket.  A context is read from the CLI's context store:
``contexts/meta/<sha256 of the name>/meta.json`` (``Endpoints.docker.Host`` and
``SkipTLSVerify``) and its TLS material in ``contexts/tls/<sha256 of the name>/docker/``
(``ca.pem``, ``cert.pem``, ``key.pem``).  The context named ``default`` is
``DOCKER_HOST`` or the default socket, as for the CLI.

The store is read here (a few small JSON files) rather than through the SDK, whose
context support differs between the versions this tool accepts, so the resolution and
its messages are the same everywhere.

An engine is *local* when it is reached through a unix socket (or Windows named pipe)
that exists on this machine: then it sees this machine's files and builder containers
can bind-mount them.  Anything reached over TCP or SSH is *remote*, even on the
loopback address (another data root, a VM, another mount namespace): inputs and
outputs then travel through the Engine API (:mod:`venvstacks_docker.host.transfer`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from venvstacks_docker.errors import ContainerError

DEFAULT_SOCKET: Final = "unix:///var/run/docker.sock"
#: How a URL (not a context name) is recognised in ``--engine``.
_URL_SCHEMES: Final = ("unix://", "tcp://", "ssh://", "http://", "https://", "npipe://")


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """Where the engine is, how to reach it, and who said so."""

    url: str
    """``unix:///var/run/docker.sock``, ``tcp://host:2376``, ``ssh://user@host``..."""
    origin: str
    """What chose it: ``--engine``, ``DOCKER_HOST``, ``DOCKER_CONTEXT``, ``the current
    docker context`` or ``the default socket``."""
    context: str | None = None
    """The docker context it came from, if any."""
    tls_dir: Path | None = None
    """A folder holding ``ca.pem``, ``cert.pem`` and ``key.pem``: connect with TLS."""
    tls_verify: bool = False
    """Whether the server's certificate is checked against ``ca.pem``."""

    @property
    def local(self) -> bool:
        """Whether the engine sees this machine's files (a socket that exists here)."""
        return is_local_url(self.url)

    @property
    def ssh(self) -> bool:
        """Whether the engine is reached through the ``ssh`` client."""
        return self.url.startswith("ssh://")

    def describe(self) -> str:
        """E.g. ``tcp://10.0.0.5:2376 (docker context 'builder')``, for messages."""
        if self.context is not None:
            return f"{self.url} (docker context {self.context!r}, from {self.origin})"
        return f"{self.url} ({self.origin})"


def is_local_url(url: str) -> bool:
    """A unix socket that exists on this machine, or a Windows named pipe."""
    if url.startswith("npipe://"):
        return True
    if url.startswith(("unix://", "http+unix://")):
        path = url.split("://", 1)[1]
        return bool(path) and os.path.exists(path)  # noqa: PTH110 - False, never an error, for any path
    return False


def config_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The docker CLI's configuration folder: ``$DOCKER_CONFIG``, else ``~/.docker``."""
    environ = os.environ if environ is None else environ
    explicit = environ.get("DOCKER_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    home = environ.get("HOME")
    return (Path(home) if home else Path.home()) / ".docker"


def current_context(environ: Mapping[str, str] | None = None) -> str | None:
    """``currentContext`` of ``config.json``, or ``None`` when there is none.

    :raises ContainerError: when ``config.json`` exists but is not a JSON object.
    """
    path = config_dir(environ) / "config.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ContainerError(f"cannot read the docker CLI configuration {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ContainerError(f"the docker CLI configuration {path} is not valid JSON ({exc})",
                             hint="fix or remove it (`docker context use default` rewrites it)") from None
    if not isinstance(data, dict):
        raise ContainerError(f"the docker CLI configuration {path} is not a JSON object")
    name = data.get("currentContext")
    return str(name) if isinstance(name, str) and name else None


def _tls_env(environ: Mapping[str, str]) -> tuple[Path | None, bool]:
    """TLS settings of ``DOCKER_TLS_VERIFY`` and ``DOCKER_CERT_PATH``, as the SDK reads them."""
    cert_path = environ.get("DOCKER_CERT_PATH") or None
    verify = environ.get("DOCKER_TLS_VERIFY")
    tls_verify = verify is not None and verify != ""
    if not (cert_path or tls_verify):
        return None, False
    return Path(cert_path).expanduser() if cert_path else config_dir(environ), tls_verify


def _from_url(url: str, origin: str, environ: Mapping[str, str], context: str | None = None) -> Endpoint:
    tls_dir, verify = _tls_env(environ) if not url.startswith(("unix://", "npipe://", "ssh://")) else (None, False)
    return Endpoint(url=url, origin=origin, context=context, tls_dir=tls_dir, tls_verify=verify)


def _default(origin: str, environ: Mapping[str, str], context: str | None = None) -> Endpoint:
    host = environ.get("DOCKER_HOST")
    if host:
        return _from_url(host, "DOCKER_HOST", environ, context)
    return Endpoint(url=DEFAULT_SOCKET, origin=origin, context=context)


def context_endpoint(name: str, origin: str, environ: Mapping[str, str] | None = None) -> Endpoint:
    """The docker endpoint of the context ``name``, read from the CLI's context store.

    :raises ContainerError: when there is no such context, or its metadata is unreadable.
    """
    environ = os.environ if environ is None else environ
    if name == "default":
        return _default("the default context", environ, context="default")
    key = hashlib.sha256(name.encode("utf-8")).hexdigest()
    store = config_dir(environ) / "contexts"
    meta = store / "meta" / key / "meta.json"
    try:
        data: Any = json.loads(meta.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ContainerError(f"there is no docker context {name!r} (named by {origin}): {meta} does not exist",
                             hint="`docker context ls` lists the contexts; create one with `docker context "
                             "create`, or name the engine by URL (--engine tcp://host:2376)") from None
    except (OSError, ValueError) as exc:
        raise ContainerError(f"cannot read docker context {name!r} ({meta}): {exc}",
                             hint="`docker context inspect` shows what the docker CLI makes of it") from None
    docker_endpoint = ((data.get("Endpoints") or {}).get("docker") or {}) if isinstance(data, dict) else {}
    host = docker_endpoint.get("Host") if isinstance(docker_endpoint, dict) else None
    if not host:
        return Endpoint(url=DEFAULT_SOCKET, origin=origin, context=name)
    tls = store / "tls" / key / "docker"
    has_tls = tls.is_dir() and any(tls.glob("*.pem"))
    skip = bool(docker_endpoint.get("SkipTLSVerify", False))
    return Endpoint(url=str(host), origin=origin, context=name, tls_dir=tls if has_tls else None,
                    tls_verify=has_tls and not skip)


def resolve(engine: str | None = None, environ: Mapping[str, str] | None = None) -> Endpoint:
    """The engine to use: ``engine`` (``--engine``), else as the docker CLI decides.

    :param engine: a context name, or a URL (``unix://``, ``tcp://``, ``ssh://``...).
    :raises ContainerError: for a context that does not exist or cannot be read.
    """
    environ = os.environ if environ is None else environ
    if engine:
        if engine.startswith(_URL_SCHEMES):
            return _from_url(engine, "--engine", environ)
        return context_endpoint(engine, "--engine", environ)
    if environ.get("DOCKER_HOST"):
        return _from_url(environ["DOCKER_HOST"], "DOCKER_HOST", environ)
    if environ.get("DOCKER_CONTEXT"):
        return context_endpoint(environ["DOCKER_CONTEXT"], "DOCKER_CONTEXT", environ)
    name = current_context(environ)
    if name and name != "default":
        return context_endpoint(name, "the current docker context", environ)
    return Endpoint(url=DEFAULT_SOCKET, origin="the default socket")


__all__ = ["DEFAULT_SOCKET", "Endpoint", "config_dir", "context_endpoint", "current_context", "is_local_url",
           "resolve"]
