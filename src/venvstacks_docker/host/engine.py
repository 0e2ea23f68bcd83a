"""Connecting to the container engine (Docker, or podman's Docker-compatible socket).

Everything that talks to the engine gets its client from :func:`connect`, so there is one
place that turns "no socket", "permission denied" and "engine too old" into messages a
user can act on.  Which engine is :mod:`venvstacks_docker.host.endpoints`' decision
(``--engine``, ``DOCKER_HOST``, ``DOCKER_CONTEXT``, the current docker context).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from venvstacks_docker.errors import ContainerError
from venvstacks_docker.host.endpoints import Endpoint, resolve

if TYPE_CHECKING:
    import docker

#: Docker Engine 20.10 speaks API 1.41.  Older engines lack things we rely on (labels on
#: builds, ``platform`` on create, stable ``network_mode=none`` for builds), and this is
#: the same floor cibuildwheel uses.
MIN_API_VERSION: Final = "1.41"
#: podman's compat service reports its own version; 3.0 is the first that works with
#: docker-py for create/attach/build.
MIN_PODMAN_VERSION: Final = (3, 0)


@dataclass(frozen=True, kw_only=True)
class EngineInfo:
    """What the engine says about itself (``docker version``)."""

    #: ``"docker"`` or ``"podman"``.
    name: str
    #: Engine version string, e.g. ``"20.10.24+dfsg1"``.
    version: str
    #: Highest API version the engine speaks, e.g. ``"1.41"``.
    api_version: str
    #: ``"linux"`` for every engine we can use.
    os: str
    #: Engine architecture in Docker's spelling: ``"amd64"``, ``"arm64"``.
    arch: str
    #: Where we connected (``DOCKER_HOST``, a context's host or the default socket).
    base_url: str


def _version_tuple(text: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in text.split("."):
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _explain_connect_failure(exc: BaseException, where: str) -> ContainerError:
    text = str(exc)
    lowered = text.lower()
    if "permission denied" in lowered or isinstance(exc, PermissionError):
        return ContainerError(
            f"permission denied when connecting to the container engine at {where}",
            hint=(
                "add your user to the 'docker' group (then log in again), run as a user "
                "that may use the engine, or point DOCKER_HOST at a rootless engine's "
                "socket (e.g. unix://$XDG_RUNTIME_DIR/podman/podman.sock)"
            ),
        )
    if "no such file" in lowered or isinstance(exc, FileNotFoundError):
        reason = "no socket there"
    elif "refused" in lowered:
        reason = "connection refused"
    elif "timed out" in lowered or "timeout" in lowered:
        reason = "timed out"
    else:
        reason = text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__
    return ContainerError(
        f"cannot reach a container engine at {where} ({reason}): "
        "is Docker installed and running?",
        hint=(
            "start the engine (e.g. `systemctl start docker`), or set DOCKER_HOST to its "
            "socket (podman: `systemctl --user start podman.socket` and "
            "DOCKER_HOST=unix://$XDG_RUNTIME_DIR/podman/podman.sock); "
            "or build without containers with `--native`"
        ),
    )


def _import_docker() -> Any:
    try:
        import docker
    except ImportError as exc:  # pragma: no cover - the SDK is a declared dependency
        raise ContainerError(
            "the Docker SDK for Python ('docker' package) is not installed, so containers "
            "cannot be used",
            hint="install it into this environment (`pip install 'docker>=7.1'`) or build with `--native`",
        ) from exc
    return docker


def _client_kwargs(sdk: Any, endpoint: Endpoint) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"base_url": endpoint.url}
    if endpoint.tls_dir is not None:
        folder = endpoint.tls_dir
        cert = (str(folder / "cert.pem"), str(folder / "key.pem"))
        has_cert = all((folder / name).is_file() for name in ("cert.pem", "key.pem"))
        ca = folder / "ca.pem"
        kwargs["tls"] = sdk.tls.TLSConfig(client_cert=cert if has_cert else None,
                                          ca_cert=str(ca) if ca.is_file() else None, verify=endpoint.tls_verify)
    if endpoint.ssh:
        kwargs["use_ssh_client"] = True  # the ssh client, its config and agent, as the docker CLI does
    return kwargs


def connect(*, timeout: int = 120, engine: str | None = None, endpoint: Endpoint | None = None) -> docker.DockerClient:
    """Return a client for the engine :func:`~venvstacks_docker.host.endpoints.resolve` picks.

    The engine is pinged and its version checked before the client is returned.

    :param timeout: seconds to wait for any single engine API call.
    :param engine: ``--engine``: a docker context name or an engine URL.
    :param endpoint: the engine, already resolved (wins over ``engine``).
    :raises ContainerError: when the SDK is missing, the context does not exist, nothing
        answers, access is denied or the engine is too old.
    """
    sdk = _import_docker()
    endpoint = endpoint or resolve(engine)
    host = endpoint.url
    # os.path.exists: False, not an exception, for a path it may not even stat
    if host.startswith("unix://") and not os.path.exists(host.removeprefix("unix://")):  # noqa: PTH110
        # say so at once (docker-py would also leave its half-open socket behind)
        raise _explain_connect_failure(FileNotFoundError(f"no socket at {host}"), endpoint.describe())
    try:
        client: docker.DockerClient = sdk.DockerClient(timeout=timeout, version="auto",
                                                       **_client_kwargs(sdk, endpoint))
    except sdk.errors.DockerException as exc:
        # the client negotiates the API version, so an unreachable engine fails here.
        raise _explain_connect_failure(exc.__cause__ or exc.__context__ or exc, endpoint.describe()) from None
    except OSError as exc:
        raise _explain_connect_failure(exc, endpoint.describe()) from None
    try:
        client.ping()
    except (sdk.errors.DockerException, OSError) as exc:
        client.close()
        raise _explain_connect_failure(exc, endpoint.describe()) from None
    check_engine(client)
    return client


@contextlib.contextmanager
def session(client: docker.DockerClient | None = None, *,
            endpoint: Endpoint | None = None) -> Iterator[docker.DockerClient]:
    """``client``, or a fresh one from :func:`connect` that is closed afterwards."""
    if client is not None:
        yield client
        return
    own = connect(endpoint=endpoint)
    try:
        yield own
    finally:
        own.close()


def engine_info(client: docker.DockerClient) -> EngineInfo:
    """Ask the engine what it is."""
    docker = _import_docker()
    try:
        version: dict[str, Any] = client.version()
    except (docker.errors.DockerException, OSError) as exc:
        raise _explain_connect_failure(exc, str(client.api.base_url)) from None
    name = "docker"
    engine_version = str(version.get("Version", "unknown"))
    for component in version.get("Components") or []:
        if "podman" in str(component.get("Name", "")).lower():
            name = "podman"
            engine_version = str(component.get("Version", engine_version))
    return EngineInfo(
        name=name,
        version=engine_version,
        api_version=str(version.get("ApiVersion", "0")),
        os=str(version.get("Os", "linux")),
        arch=str(version.get("Arch", "unknown")),
        base_url=str(client.api.base_url),
    )


def check_engine(client: docker.DockerClient) -> EngineInfo:
    """Refuse engines that are too old or cannot run Linux containers.

    :raises ContainerError: naming the engine, its version and the minimum.
    """
    info = engine_info(client)
    if info.name == "podman":
        if _version_tuple(info.version) < MIN_PODMAN_VERSION:
            raise ContainerError(
                f"podman {info.version} is too old: venvstacks-docker needs podman "
                f"{'.'.join(map(str, MIN_PODMAN_VERSION))} or newer",
                hint="upgrade podman, or use Docker Engine 20.10 or newer",
            )
    elif _version_tuple(info.api_version) < _version_tuple(MIN_API_VERSION):
        raise ContainerError(
            f"the container engine at {info.base_url} is too old: Docker {info.version} "
            f"speaks API {info.api_version}, venvstacks-docker needs API {MIN_API_VERSION} "
            "(Docker Engine 20.10) or newer",
            hint="upgrade Docker Engine, or point DOCKER_HOST at a newer engine",
        )
    if info.os != "linux":
        raise ContainerError(
            f"the container engine at {info.base_url} runs {info.os} containers; builder "
            "images are Linux images",
            hint="switch the engine to Linux containers, or build with `--native`",
        )
    return info


__all__ = ["MIN_API_VERSION", "Endpoint", "EngineInfo", "check_engine", "connect", "engine_info", "resolve", "session"]
