"""One builder container: create, run one command, stream its output, always remove it.

The container runs as the caller's uid:gid with umask 022, so files it writes into bind
mounts belong to the caller and get ordinary modes.  The environment is pinned (UTC,
C.UTF-8, PYTHONHASHSEED=0, SOURCE_DATE_EPOCH when given) and networking is off unless a
step asks for it.  Whatever happens (success, failure, Ctrl-C, SIGTERM), leaving the
``with`` block removes the container and its anonymous volumes, unless
``VENVSTACKS_DOCKER_KEEP_CONTAINER=1`` keeps it for debugging.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple

from venvstacks_docker.errors import ContainerError, Interrupted

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

StreamName = Literal["stdout", "stderr"]
#: Called once per output line (without its newline) and the stream it came from.
OutputCallback = Callable[[str, StreamName], None]

KEEP_CONTAINER_ENV: Final = "VENVSTACKS_DOCKER_KEEP_CONTAINER"
#: Every container the tool creates carries this label (value: ``"builder"``).
LABEL_ROLE: Final = "venvstacks-docker.role"
#: And this one, naming the host process that created it (``<hostname>:<pid>``).
LABEL_OWNER: Final = "venvstacks-docker.owner"

#: Runs the real command with umask 022 (the engine has no umask option).
_UMASK_WRAPPER: Final = ["/bin/sh", "-c", 'umask 022 && exec "$@"', "venvstacks-docker"]
_KILL_SIGNALS: Final = {137: "SIGKILL", 143: "SIGTERM", 130: "SIGINT"}


class Mount(NamedTuple):
    """A bind mount: host folder or file, where it appears in the container, read-only?"""

    host_path: Path
    container_path: str
    read_only: bool


def default_output(line: str, stream: StreamName) -> None:
    """Relay container output to our own stdout/stderr."""
    out = sys.stdout if stream == "stdout" else sys.stderr
    out.write(line + "\n")
    out.flush()


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def container_environment(
    environment: Mapping[str, str] | None = None, *, source_date_epoch: int | str | None = None
) -> dict[str, str]:
    """The pinned environment every builder container gets, plus ``environment``.

    ``SOURCE_DATE_EPOCH`` comes from ``source_date_epoch``, else from the host's
    environment; it is left unset when neither has one.
    """
    env = {
        "TZ": "UTC",
        "LC_ALL": "C.UTF-8",
        "LANG": "C.UTF-8",
        "HOME": "/tmp/home",
        "PYTHONHASHSEED": "0",
    }
    sde = source_date_epoch if source_date_epoch is not None else os.environ.get("SOURCE_DATE_EPOCH")
    if sde is not None and str(sde) != "":
        env["SOURCE_DATE_EPOCH"] = str(int(sde))
    env.update(environment or {})
    return env


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


class BuilderContainer:
    """A context manager around one container that runs one command.

    .. code-block:: python

        with BuilderContainer(client, image=tag, command=["python3", "-V"]) as box:
            exit_code = box.run()

    :param client: engine client (:func:`venvstacks_docker.host.engine.connect`).
    :param image: image tag or ID; it must exist locally (nothing is pulled).
    :param command: argv run inside the container (through ``sh -c 'umask 022; exec "$@"'``).
    :param environment: extra variables on top of :func:`container_environment`.
    :param source_date_epoch: ``SOURCE_DATE_EPOCH`` for the container.
    :param mounts: bind mounts ``(host_path, container_path, read_only)``.
    :param network: ``False`` (the default) runs with ``network_mode="none"``; ``True``
        uses the engine's default bridge network.
    :param working_dir: the command's working directory inside the container.
    :param user: ``"uid:gid"``; defaults to the calling process's uid and gid.
    :param on_output: called per output line; default relays to our stdout/stderr.
    :param labels: extra labels (tests use them to find their containers).
    :param name: container name; default ``venvstacks-docker-<random>``.
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
    ) -> None:
        self.client = client
        self.image = image
        self.command = [str(arg) for arg in command]
        self.environment = container_environment(environment, source_date_epoch=source_date_epoch)
        self.mounts = [Mount(Path(m[0]), str(m[1]), bool(m[2])) for m in mounts]
        self.network = network
        self.working_dir = working_dir
        self.user = user or f"{os.getuid()}:{os.getgid()}"
        self.on_output = on_output or default_output
        self.labels = {
            LABEL_ROLE: "builder",
            LABEL_OWNER: f"{os.uname().nodename}:{os.getpid()}",
            **(labels or {}),
        }
        self.name = name or f"venvstacks-docker-{uuid.uuid4().hex[:12]}"
        self.container: Container | None = None
        self._signals = _sigterm_raises()

    # -- lifecycle ------------------------------------------------------------------

    def __enter__(self) -> BuilderContainer:
        self._signals.__enter__()
        try:
            self.container = self._create()
        except BaseException:
            self._signals.__exit__(*sys.exc_info())
            raise
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
            self._signals.__exit__(exc_type, exc, tb)

    def _create(self) -> Container:
        import docker

        for mount in self.mounts:
            if not mount.host_path.exists():
                raise ContainerError(
                    f"cannot mount {mount.host_path} into the builder container: it does not exist",
                    hint="create it first, or check the path",
                )
        docker_mounts = [
            docker.types.Mount(
                target=m.container_path, source=str(m.host_path), type="bind", read_only=m.read_only
            )
            for m in self.mounts
        ]
        kwargs: dict[str, Any] = {}
        if not self.network:
            kwargs["network_mode"] = "none"
        try:
            return self.client.containers.create(
                self.image,
                command=self.command,
                entrypoint=_UMASK_WRAPPER,
                environment=self.environment,
                user=self.user,
                working_dir=self.working_dir,
                mounts=docker_mounts,
                labels=self.labels,
                name=self.name,
                detach=True,
                stdin_open=False,
                tty=False,
                security_opt=["no-new-privileges"],
                **kwargs,
            )
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
            if _truthy(os.environ.get(KEEP_CONTAINER_ENV)):
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

    # -- running --------------------------------------------------------------------

    @property
    def id(self) -> str:
        if self.container is None:
            raise RuntimeError("BuilderContainer is not entered")
        return str(self.container.id)

    def run(self) -> int:
        """Start the command, stream its output to ``on_output``, return its exit code.

        :raises ContainerError: when the container is killed from outside (``docker
            kill``, the OOM killer, an engine restart) or cannot be started.
        """
        import docker

        if self.container is None:
            raise RuntimeError("BuilderContainer.run() needs `with BuilderContainer(...)`")
        container = self.container
        try:
            # Attach before starting, so no output can be missed.
            frames = self.client.api.attach(
                container.id, stdout=True, stderr=True, stream=True, logs=True, demux=True
            )
            container.start()
            self._pump(frames)
            result = container.wait()
        except docker.errors.APIError as exc:
            raise ContainerError(
                f"the builder container {self.name} failed to run: {exc.explanation or exc}"
            ) from None
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
    "BuilderContainer",
    "Mount",
    "OutputCallback",
    "container_environment",
    "default_output",
]
