"""Named volumes on the engine, and the porter container that fills and empties them.

A remote engine cannot see this machine's files, so in copy mode
(:mod:`venvstacks_docker.host.transfer`) the builder container gets named volumes
instead of bind mounts:

- **the store** (:data:`STORE_VOLUME`, one per engine, shared): wheels and runtime
  archives, each at ``<sha256>/<file name>``.  Content-addressed: a file is only ever put
  under the hash of its bytes (computed here, on the host), so no project can give
  another different bytes under a name it expects; builder containers mount it
  read-only.
- **per project** (kept between runs, reused): the build folder, the output folder
  (a mirror of the host's publication, so unchanged archives are reused) and the uv
  cache.  Their names are keyed by a hash of this machine's id, the caller's uid and the
  host path, so two projects, two users or two machines sharing an engine never share
  one.
- **per run** (removed when the run ends, and by the next run if this one was killed):
  the inputs (the stack file, lock files, modules...) at their host paths, and the
  run's own folder (the plan, the view of the store the cache expects).

Volumes are filled and read through a *porter*: a container created from the builder
image with the volumes mounted, never started, on which the Engine API's archive
calls (``put_archive``, ``get_archive``, and ``HEAD`` for a file's size) work.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import socket
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from venvstacks_docker.errors import ContainerError
from venvstacks_docker.host.container import VolumeMount
from venvstacks_docker.host.orphans import LABEL_OWNER, LABEL_ROLE, ROLE_BUILDER, Owner

if TYPE_CHECKING:
    import docker

#: The content-addressed store of wheels and runtime archives (one per engine).
STORE_VOLUME: Final = "venvstacks-docker-store"
#: Every volume the tool makes carries this label: ``store``, ``build``, ``output``,
#: ``uv``, ``input`` or ``run``.
LABEL_VOLUME: Final = "venvstacks-docker.volume"
#: The host path a per-project volume mirrors (for people: ``docker volume ls``).
LABEL_PATH: Final = "venvstacks-docker.path"
#: Kinds of volume removed with the run that made them.
PER_RUN: Final = ("input", "run")


def host_id() -> str:
    """This machine: its ``/etc/machine-id`` (stable across renames), else its name."""
    for candidate in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        with contextlib.suppress(OSError):
            text = Path(candidate).read_text(encoding="ascii").strip()
            if text:
                return text
    return socket.gethostname()


def project_volume(kind: str, path: Path, uid: int) -> str:
    """The name of the per-project volume of ``kind`` mirroring the host folder ``path``."""
    key = hashlib.sha256(f"{host_id()}\0{uid}\0{os.fsdecode(path)}".encode()).hexdigest()[:20]
    return f"venvstacks-docker-{kind}-{key}"


def run_volume(kind: str, index: int, run_id: str) -> str:
    """The name of a per-run volume."""
    return f"venvstacks-docker-{kind}-{run_id}-{index}"


@contextlib.contextmanager
def engine_errors(where: str, doing: str) -> Iterator[None]:
    """Engine failures while ``doing`` something, as one message with exit code 6.

    A lost connection (the engine stopped, the network went), an engine that refuses
    the call, and a volume that is full each get a message of their own.
    """
    import docker
    import requests
    import urllib3

    try:
        yield
    except docker.errors.APIError as exc:
        raise _api_error(exc, where, doing) from None
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, docker.errors.DockerException,
            ConnectionError) as exc:
        raise lost_engine(exc, where, doing) from None


def lost_engine(exc: BaseException, where: str, doing: str) -> ContainerError:
    """The error for an engine that stopped answering while ``doing`` something."""
    reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
    return ContainerError(f"lost the connection to the container engine at {where} while {doing} ({reason})",
                          hint="check that the engine is running and reachable, then run the command again: "
                          "what was copied so far is reused or replaced, never trusted")


def _api_error(exc: Any, where: str, doing: str) -> ContainerError:
    text = str(getattr(exc, "explanation", None) or exc)
    if "no space left" in text.lower():
        return ContainerError(f"a volume of the container engine at {where} is full while {doing} ({text})",
                              hint="free space on the engine (`docker volume prune`, `docker system df`) "
                              "or give its volumes more room, then run again")
    return ContainerError(f"the container engine at {where} refused {doing}: {text}")


def ensure_volume(client: docker.DockerClient, name: str, labels: Mapping[str, str]) -> bool:
    """Create the volume ``name`` unless it exists; whether it was created."""
    import docker

    try:
        client.api.inspect_volume(name)
        return False
    except docker.errors.NotFound:
        pass
    client.api.create_volume(name=name, driver="local", labels=dict(labels))
    return True


def remove_volume(client: docker.DockerClient, name: str) -> bool:
    """Remove the volume ``name`` (missing is fine); whether it is gone."""
    import docker
    import requests

    try:
        client.api.remove_volume(name, force=True)
    except docker.errors.NotFound:
        return True
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        return False
    return True


def remove_orphan_volumes(client: docker.DockerClient) -> list[str]:
    """Remove the per-run volumes whose host process is provably dead (best effort)."""
    import docker
    import requests

    here = Owner.current()
    try:
        listed = client.api.volumes(filters={"label": LABEL_OWNER}).get("Volumes") or []
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        return []
    removed = []
    for info in listed:
        labels = info.get("Labels") or {}
        owner = Owner.parse(labels.get(LABEL_OWNER))
        if labels.get(LABEL_VOLUME) in PER_RUN and owner is not None and owner.is_provably_dead(here) \
                and remove_volume(client, str(info.get("Name"))):
            removed.append(str(info.get("Name")))
    return removed


class Porter:
    """A never-started container with volumes mounted read-write: the archive calls' target.

    Its root file system is writable (it never runs anything), so entries for the mount
    points can set the owner of a volume's root.  It carries the builder role and this
    process as its owner, so a run killed while it exists leaves nothing the next run
    does not remove (:func:`venvstacks_docker.host.orphans.remove_orphans`).
    """

    def __init__(self, client: docker.DockerClient, image: str, volumes: Sequence[VolumeMount], where: str) -> None:
        self.client = client
        self.where = where
        with engine_errors(where, "creating a container to copy files through"):
            host_config = client.api.create_host_config(
                mounts=[_volume_mount(v.volume, v.container_path) for v in volumes],
                network_mode="none", cap_drop=["ALL"], security_opt=["no-new-privileges"])
            created = client.api.create_container(
                image, command=["/bin/true"], entrypoint=[], host_config=host_config, network_disabled=True,
                name=f"venvstacks-docker-porter-{uuid.uuid4().hex[:12]}",
                labels={LABEL_ROLE: ROLE_BUILDER, LABEL_OWNER: Owner.current().label()})
        self.id = str(created["Id"])

    def put(self, path: str, data: bytes | Iterator[bytes], doing: str) -> None:
        """Unpack the tar ``data`` at ``path`` (a folder that exists in the container)."""
        with engine_errors(self.where, doing):
            self.client.api.put_archive(self.id, path, data)

    def size(self, path: str) -> int | None:
        """The size of the file at ``path``, or ``None`` when there is nothing there."""
        with engine_errors(self.where, f"looking for {path}"):
            url = f"{self.client.api.base_url}/v{self.client.api.api_version}/containers/{self.id}/archive"
            response = self.client.api.head(url,
                                             params={"path": path})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise ContainerError(f"the container engine at {self.where} answered {response.status_code} "
                                 f"when asked about {path}")
        stat = json.loads(base64.b64decode(response.headers["X-Docker-Container-Path-Stat"]))
        return int(stat.get("size", 0))

    def get(self, path: str, doing: str) -> Iterator[bytes]:
        """The tar stream of ``path`` (file or folder), chunk by chunk; engine failures
        while it streams are :class:`ContainerError` too."""
        with engine_errors(self.where, doing):
            stream, _stat = self.client.api.get_archive(self.id, path, chunk_size=1 << 20)
        chunks = iter(stream)
        while True:
            with engine_errors(self.where, doing):
                chunk = next(chunks, None)
            if chunk is None:
                return
            yield chunk

    def exists(self, path: str) -> bool:
        """Whether anything is at ``path``."""
        return self.size(path) is not None

    def remove(self) -> None:
        """Remove the porter (best effort: the next run removes what is left)."""
        import docker
        import requests

        with contextlib.suppress(docker.errors.DockerException, requests.exceptions.RequestException):
            self.client.api.remove_container(self.id, force=True, v=True)


def _volume_mount(volume: str, target: str) -> Any:
    import docker

    return docker.types.Mount(target=target, source=volume, type="volume", read_only=False, no_copy=True)


@contextlib.contextmanager
def porter(client: docker.DockerClient, image: str, volumes: Sequence[VolumeMount], where: str) -> Iterator[Porter]:
    """A :class:`Porter` for the duration of the block, removed whatever happens."""
    box = Porter(client, image, volumes, where)
    try:
        yield box
    finally:
        box.remove()


def volume_labels(kind: str, path: Path | str | None = None, *, owned: bool = False) -> dict[str, str]:
    """The labels of a volume of ``kind`` (per-run volumes name their owner process)."""
    labels = {LABEL_VOLUME: kind}
    if path is not None:
        labels[LABEL_PATH] = os.fsdecode(path)
    if owned:
        labels[LABEL_OWNER] = Owner.current().label()
    return labels


__all__ = ["LABEL_PATH", "LABEL_VOLUME", "STORE_VOLUME", "Porter", "engine_errors", "ensure_volume", "host_id",
           "lost_engine", "porter", "project_volume", "remove_orphan_volumes", "remove_volume", "run_volume",
           "volume_labels"]
