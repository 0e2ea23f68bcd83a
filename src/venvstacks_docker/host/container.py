"""One builder container: create, run one command, stream its output, always remove it.

What the container may do, and why:

- **Never root.**  It runs as the caller's uid:gid, so files it writes into bind mounts
  belong to the caller; when the caller is root it runs as the unprivileged sandbox user
  instead (:mod:`venvstacks_docker.host.ownership`), and its writable mounts are handed
  to that user for the run and given back to root afterwards.
- **No privileges.**  Every capability is dropped, ``no-new-privileges`` is set (setuid
  binaries gain nothing), and the root file system is read-only; only a tmpfs at
  ``/tmp`` (which holds ``HOME``) and the writable bind mounts can be written.
- **Pinned.**  umask 022, UTC, C.UTF-8, PYTHONHASHSEED=0, SOURCE_DATE_EPOCH when given,
  and networking off unless a step asks for it.
- **Never outlives the host command.**  Leaving the ``with`` block removes the container
  and its anonymous volumes, whatever happened (success, failure, Ctrl-C, SIGTERM),
  unless ``VENVSTACKS_DOCKER_KEEP_CONTAINER=1`` keeps it for debugging.  If the host
  process dies without cleaning up (SIGKILL), the container notices (its stdin, held
  open by the host, reaches end-of-file) and stops its command within seconds; the next
  run removes it (:func:`venvstacks_docker.host.orphans.remove_orphans`).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple

from venvstacks_docker.errors import ContainerError, Interrupted
from venvstacks_docker.host.container_settings import (  # noqa: F401 - re-exported for callers and tests
    DEFAULT_TMP_SIZE,
    TMP_SIZE_ENV,
    container_environment,
    container_user,
    naming,
    placement,
    tmpfs_mounts,
)
from venvstacks_docker.host.engine import engine_info
from venvstacks_docker.host.orphans import (
    LABEL_KEEP,
    LABEL_OWNER,
    LABEL_ROLE,
    ROLE_BUILDER,
    Owner,
    remove_orphans,
    truthy,
)
from venvstacks_docker.host.ownership import (
    mount_point_skeletons,
    readable_by_sandbox,
    sandbox_ownership,
)

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

StreamName = Literal["stdout", "stderr"]
#: Called once per output line (without its newline) and the stream it came from.
OutputCallback = Callable[[str, StreamName], None]

KEEP_CONTAINER_ENV: Final = "VENVSTACKS_DOCKER_KEEP_CONTAINER"
#: Seconds between SIGTERM and SIGKILL when the host process is gone.
ORPHAN_GRACE_SECONDS: Final = 5

#: The entrypoint.  The engine has no umask option and the root file system is
#: read-only, so: umask 022, create HOME on the /tmp tmpfs, then ``exec`` the real
#: command, which keeps the shell's pid (docker-init's child), so ``docker stop`` and
#: ``docker kill`` reach it directly and its exit status is the container's.  When stdin
#: is a pipe (the host holds an attach to it open for the whole run and never writes), a
#: background watcher reads it: end-of-file means the engine closed it because the host
#: process went away, even by SIGKILL, so the watcher sends the command SIGTERM, then
#: SIGKILL after a grace period, and the container stops.  The command itself gets
#: /dev/null as stdin, as before.
_WRAPPER_SCRIPT: Final = f"""\
umask 022
if [ -n "${{HOME:-}}" ]; then mkdir -p "$HOME" 2>/dev/null || :; fi
if [ -p /proc/self/fd/0 ]; then
  exec 3<&0
  {{ while read -r _ <&3; do :; done
    kill -TERM "$$"; sleep {ORPHAN_GRACE_SECONDS}; kill -KILL "$$"
  }} </dev/null >/dev/null 2>&1 &
fi
exec "$@" </dev/null 3<&-
"""
_WRAPPER: Final = ["/bin/sh", "-c", _WRAPPER_SCRIPT, "venvstacks-docker"]
_KILL_SIGNALS: Final = {137: "SIGKILL", 143: "SIGTERM", 130: "SIGINT"}


class Mount(NamedTuple):
    """A bind mount: host folder or file, where it appears in the container, whether read-only."""

    host_path: Path
    container_path: str
    read_only: bool


class VolumeMount(NamedTuple):
    """A named volume of the engine, where it appears in the container, whether read-only
    (what a remote engine's containers get instead of bind mounts, see
    :mod:`venvstacks_docker.host.transfer`)."""

    volume: str
    container_path: str
    read_only: bool


def default_output(line: str, stream: StreamName) -> None:
    """Relay container output to our own stdout/stderr."""
    out = sys.stdout if stream == "stdout" else sys.stderr
    out.write(line + "\n")
    out.flush()


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into an exception while a container exists, so cleanup runs.

    Only possible in the main thread, and only when nobody else handles SIGTERM.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None):
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted("terminated by SIGTERM; the builder container was removed")

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _close_attach(attach: Any) -> None:
    """Close an attach socket for good: docker-py hands out a SocketIO wrapper on a
    unix socket, and closing the wrapper alone leaves the socket open."""
    for closable in (attach, getattr(attach, "_sock", attach)):
        with suppress(Exception):
            closable.close()


class BuilderContainer:
    """A context manager around one container that runs one command.

    .. code-block:: python

        with BuilderContainer(client, image=tag, command=["python3", "-V"]) as box:
            exit_code = box.run()

    Entering removes orphans of dead runs, hands the writable mounts to the sandbox user
    (root callers only) and creates the container; leaving removes it, then gives the
    mounts back.  Nothing else is needed around it, on any exit path.

    :param client: engine client (:func:`venvstacks_docker.host.engine.connect`).
    :param image: image tag or ID; it must exist locally (nothing is pulled).
    :param command: argv run inside the container (through a ``/bin/sh`` wrapper that
        sets umask 022 and then execs it).
    :param environment: extra variables on top of :func:`container_environment`.
    :param source_date_epoch: ``SOURCE_DATE_EPOCH`` for the container.
    :param mounts: bind mounts ``(host_path, container_path, read_only)``.
    :param volumes: named volumes (:class:`VolumeMount`), mounted as they are.
    :param network: ``False`` (the default) runs with ``network_mode="none"``; ``True``
        uses the engine's default bridge network.
    :param working_dir: the command's working directory inside the container.
    :param user: ``"uid:gid"``, never root; by default the caller's uid and gid, or the
        sandbox user's when the caller is root (then, and only then, the writable mounts
        are handed over and given back, and unreadable read-only *files* are mounted as
        private readable copies).
    :param on_output: called per output line; default relays to our stdout/stderr.
    :param labels: extra labels (tests use them to find their containers).
    :param name: container name; default ``venvstacks-docker-<random>``.
    :raises ContainerError: for a root ``user``, a missing mount or image, or an engine
        that refuses the container.
    """

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        image: str,
        command: Sequence[str],
        environment: Mapping[str, str] | None = None,
        source_date_epoch: int | str | None = None,
        mounts: Sequence[Mount | tuple[Path | str, str, bool]] = (),
        network: bool = False,
        working_dir: str | None = None,
        user: str | None = None,
        on_output: OutputCallback | None = None,
        labels: Mapping[str, str] | None = None,
        name: str | None = None,
        volumes: Sequence[VolumeMount] = (),
    ) -> None:
        self.client = client
        self.image = image
        self.command = [str(arg) for arg in command]
        self.environment = container_environment(environment, source_date_epoch=source_date_epoch)
        self.mounts = [Mount(Path(m[0]), str(m[1]), bool(m[2])) for m in mounts]
        self.volumes = list(volumes)
        self.network = network
        self.working_dir = working_dir
        self.user, self.sandboxed = container_user(user)
        self.on_output = on_output or default_output
        self.keep = truthy(os.environ.get(KEEP_CONTAINER_ENV))
        self.labels = {
            LABEL_ROLE: ROLE_BUILDER,
            LABEL_OWNER: Owner.current().label(),
            **({LABEL_KEEP: "1"} if self.keep else {}),
            **(labels or {}),
        }
        self.name = name or f"venvstacks-docker-{uuid.uuid4().hex[:12]}"
        self.container: Container | None = None
        self._stdin: Any = None
        self._resources: ExitStack | None = None

    # -- lifecycle ------------------------------------------------------------------

    def __enter__(self) -> BuilderContainer:
        resources = ExitStack()
        resources.enter_context(_sigterm_raises())
        try:
            self._check_mounts()
            self._remove_orphans()
            skeletons = resources.enter_context(
                mount_point_skeletons([(m.container_path, m.host_path.is_dir()) for m in self.mounts])
            )
            mounts = [*self.mounts, *(Mount(path, folder, True) for folder, path in skeletons.items())]
            sources = [m.host_path for m in mounts]
            if self.sandboxed:
                writable = [m.host_path for m in mounts if not m.read_only]
                resources.enter_context(sandbox_ownership(writable))
                sources = [
                    resources.enter_context(readable_by_sandbox(m.host_path))
                    if m.read_only and m.host_path.is_file()
                    else m.host_path
                    for m in mounts
                ]
            self.container = self._create(list(zip(mounts, sources, strict=True)))
        except BaseException:
            resources.close()
            raise
        self._resources = resources
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._cleanup()
        finally:
            # only now, with the container gone: give the mounts back, restore SIGTERM
            resources, self._resources = self._resources, None
            if resources is not None:
                resources.close()

    def _check_mounts(self) -> None:
        for mount in self.mounts:
            if not mount.host_path.exists():
                raise ContainerError(
                    f"cannot mount {mount.host_path} into the builder container: it does not exist",
                    hint="create it first, or check the path",
                )

    def _remove_orphans(self) -> None:
        """Remove containers left by dead runs; best effort (creating will report a dead engine)."""
        try:
            removed = remove_orphans(self.client)
        except ContainerError:
            return
        if removed:
            sys.stderr.write(
                f"venvstacks-docker: removed {len(removed)} builder container(s) left by "
                f"runs that died: {', '.join(removed)}\n"
            )

    def _create(self, mounts: Sequence[tuple[Mount, Path]]) -> Container:
        """Create (not start) the container; ``mounts`` pairs each mount with its host source."""
        import docker

        api = self.client.api
        host_config = api.create_host_config(
            mounts=[
                *(docker.types.Mount(target=m.container_path, source=str(src), type="bind", read_only=m.read_only)
                  for m, src in mounts),
                *(docker.types.Mount(target=v.container_path, source=v.volume, type="volume", read_only=v.read_only,
                                     no_copy=True) for v in self.volumes),
            ],
            network_mode=None if self.network else "none",
            init=True,
            read_only=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            tmpfs=tmpfs_mounts(podman=engine_info(self.client).name == "podman"),
            **placement(),
        )
        try:
            # detach=False with stdin_open=True is how the SDK spells StdinOnce: the
            # engine closes the container's stdin when the host's attach to it ends.
            created = api.create_container(
                self.image,
                command=self.command,
                entrypoint=_WRAPPER,
                environment=self.environment,
                user=self.user,
                working_dir=self.working_dir,
                labels=self.labels,
                name=self.name,
                **naming(),
                detach=False,
                stdin_open=True,
                tty=False,
                host_config=host_config,
            )
            return self.client.containers.get(created["Id"])
        except docker.errors.ImageNotFound:
            raise ContainerError(
                f"the builder image {self.image} is not in the local container engine",
                hint="build it with `venvstacks-docker image build` (images are never pulled)",
            ) from None
        except docker.errors.APIError as exc:
            raise ContainerError(
                f"cannot create the builder container from {self.image}: {exc.explanation or exc}"
            ) from None

    def _cleanup(self) -> None:
        import docker

        container, self.container = self.container, None
        if container is None:
            return
        try:
            if self.keep or truthy(os.environ.get(KEEP_CONTAINER_ENV)):
                container.reload()
                if container.status == "running":
                    container.kill()
                sys.stderr.write(
                    f"venvstacks-docker: kept container {container.name} "
                    f"({KEEP_CONTAINER_ENV} is set); remove it with `docker rm -v {container.name}`\n"
                )
                return
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            # Removal is retried once: the engine may still be tearing down after a kill.
            try:
                container.remove(force=True, v=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError:
                raise ContainerError(
                    f"could not remove builder container {container.name}: {exc.explanation or exc}",
                    hint=f"remove it by hand: `docker rm -f -v {container.name}`",
                ) from None
        finally:
            self._close_stdin()

    def _close_stdin(self) -> None:
        """Close our attach to the container's stdin (a live container would then stop)."""
        stdin, self._stdin = self._stdin, None
        if stdin is None:
            return
        with suppress(Exception):  # best effort: the container is gone or going anyway
            getattr(stdin, "_sock", stdin).shutdown(socket.SHUT_RDWR)
        _close_attach(stdin)

    # -- running --------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The container's id (only while entered)."""
        if self.container is None:
            raise RuntimeError("BuilderContainer is not entered")
        return str(self.container.id)

    def run(self) -> int:
        """Start the command, stream its output to ``on_output``, return its exit code.

        :raises ContainerError: when the container is killed from outside (``docker
            kill``, the OOM killer, an engine restart) or cannot be started.
        """
        import docker
        from docker.utils.socket import demux_adaptor, frames_iter

        if self.container is None:
            raise RuntimeError("BuilderContainer.run() needs `with BuilderContainer(...)`")
        container = self.container
        output = None
        try:
            # Attach before starting, so no output can be missed; and hold the
            # container's stdin open until we are done with it (never writing to it):
            # when this process dies, the engine closes it and the container stops.
            output = self.client.api.attach_socket(
                self.id, params={"stdout": 1, "stderr": 1, "stream": 1, "logs": 1})
            self._stdin = self.client.api.attach_socket(self.id, params={"stdin": 1, "stream": 1})
            container.start()
            frames = frames_iter(output, tty=False)  # type: ignore[no-untyped-call]  # unannotated in types-docker
            self._pump(demux_adaptor(*frame) for frame in frames)
            result = container.wait()
        except docker.errors.APIError as exc:
            raise ContainerError(
                f"the builder container {self.name} failed to run: {exc.explanation or exc}"
            ) from None
        finally:
            if output is not None:
                _close_attach(output)
        code = int(result.get("StatusCode", -1))
        container.reload()
        state = container.attrs.get("State", {})
        if state.get("OOMKilled"):
            raise ContainerError(
                f"the builder container {self.name} was killed by the out-of-memory killer",
                hint="give the container engine more memory, or build fewer layers at once",
            )
        if code in _KILL_SIGNALS:
            raise ContainerError(
                f"the builder container {self.name} was killed ({_KILL_SIGNALS[code]}, exit "
                f"{code}) while running `{' '.join(self.command[:4])} ...`: by `docker "
                "kill`/`docker stop`, the engine shutting down, or the system",
                hint="run the command again; nothing it wrote should be trusted",
            )
        return code

    def _pump(self, frames: Iterator[tuple[bytes | None, bytes | None]]) -> None:
        buffers: dict[StreamName, bytes] = {"stdout": b"", "stderr": b""}
        for out, err in frames:
            for stream, data in (("stdout", out), ("stderr", err)):
                if not data:
                    continue
                buffers[stream] += data  # type: ignore[index]
                *lines, buffers[stream] = buffers[stream].split(b"\n")  # type: ignore[index]
                for line in lines:
                    self.on_output(line.decode("utf-8", "replace").rstrip("\r"), stream)  # type: ignore[arg-type]
        for stream, rest in buffers.items():
            if rest:
                self.on_output(rest.decode("utf-8", "replace").rstrip("\r"), stream)


__all__ = [
    "KEEP_CONTAINER_ENV",
    "LABEL_KEEP",
    "LABEL_OWNER",
    "LABEL_ROLE",
    "TMP_SIZE_ENV",
    "BuilderContainer",
    "Mount",
    "OutputCallback",
    "VolumeMount",
    "container_environment",
    "default_output",
    "remove_orphans",
    "tmpfs_mounts",
]
