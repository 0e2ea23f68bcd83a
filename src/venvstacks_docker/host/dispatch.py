"""Run a stage command (lock, build, publish, local-export) in a builder container.

The CLI calls :func:`run_command_in_container` when a command should not run natively.
The split of the work:

- on the host, with network: make sure the builder image exists, and for the steps that
  run offline, put every runtime archive and wheel the locked layers need into the
  shared cache (``VENVSTACKS_DOCKER_CACHE``);
- in the container: the same command with ``--native``, the spec folder, build and
  output folders and the cache mounted at their host paths, with networking off
  (``lock``, and ``build --lock-if-needed``, get the default bridge network to reach
  the package index).

Outputs need no copy-back: they are written straight into the mounted host folders, by
the stages' own atomic writes, as the caller's uid:gid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from venvstacks_docker import _testhooks
from venvstacks_docker import credentials as _credentials
from venvstacks_docker.errors import Interrupted
from venvstacks_docker.locking import FolderLock, held_env, hold, work_locks
from venvstacks_docker.txn import recover
from venvstacks_docker.host.container import Mount, StreamName
from venvstacks_docker.host.images import ensure_builder_image, host_target
from venvstacks_docker.host.orchestrator import run_in_builder, same_path_mounts

if TYPE_CHECKING:
    from venvstacks_docker.spec import StackSpec

#: Commands that may reach the network inside the container (to resolve against an index).
_NETWORKED: Final = {"lock"}
#: Options of ``build`` that make it lock first, and so need the network.
_LOCKING_BUILD_OPTIONS: Final = ("--lock-if-needed", "--lock")
#: Options whose values are host paths the inner command reads.
_PATH_OPTIONS: Final = ("--local-wheels", "--runtime-source")


def _option_values(argv: Sequence[str], names: Sequence[str]) -> list[str]:
    values = []
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                values.append(argv[i + 1])
            elif arg.startswith(name + "="):
                values.append(arg.split("=", 1)[1])
    return values


def needs_network(command: str, argv: Sequence[str]) -> bool:
    """Whether the in-container step needs the network (only to lock)."""
    if command in _NETWORKED:
        return True
    return command == "build" and any(a in _LOCKING_BUILD_OPTIONS for a in argv)


def _input_paths(spec: StackSpec, argv: Sequence[str]) -> list[Path]:
    """Existing local folders/files named by path options, resolved like the CLI does."""
    found = []
    for value in _option_values(argv, _PATH_OPTIONS):
        if "://" in value and not value.startswith("file://"):
            continue
        raw = Path(value.removeprefix("file://")).expanduser()
        for candidate in (raw, spec.spec_dir / raw) if not raw.is_absolute() else (raw,):
            if candidate.exists():
                found.append(candidate.absolute())
                break
    return found


def prefetch_for_offline_build(
    spec: StackSpec, *, platform: str, runtime_sources: Sequence[str] = (), say: Callable[[str], None]
) -> None:
    """Fetch, on the host, the runtime archives and wheels the locked layers need.

    Layers that are not (validly) locked are skipped: the in-container command reports
    them itself.  Everything lands in the shared cache the container mounts.
    """
    from venvstacks_docker import build as _build
    from venvstacks_docker import lock as _lock
    from venvstacks_docker import wheels as _wheels

    ctx = _build.BuildContext(
        spec=spec,
        build_dir=spec.spec_dir / "_build",
        platform=platform,
        runtime_sources=tuple(runtime_sources),
    )
    for layer in _build.layers_for_build(spec, platform, list(spec.all_layers())):
        if layer.kind == "runtime":
            archive = _build.acquire_runtime_archive(ctx, layer)
            say(f"runtime for {layer.env_name}: {archive.filename}")
        if _lock.lock_problems(spec, layer):
            continue
        chosen = _lock.install_requirements(spec, layer, platform)
        lock_dir = _lock.lock_paths(spec, layer).folder
        refs = [_wheels.wheel_ref(wheel, lock_dir) for _pkg, wheel in chosen]
        _wheels.ensure_wheels(refs, ctx.wheel_dir, on_fetch=lambda name: say(f"fetching {name}"))


#: Where the host's CA bundle appears in networked containers.
CONTAINER_CA_FILE: Final = "/run/venvstacks-docker/ca-certificates.crt"
_PROXY_VARIABLES: Final = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")


def network_passthrough(environ: Mapping[str, str] | None = None) -> tuple[dict[str, str], list[Mount]]:
    """Environment and mounts that let a networked container reach the index like the host.

    Proxy variables are copied, and a host CA bundle named by ``SSL_CERT_FILE`` (or
    ``REQUESTS_CA_BUNDLE``) is mounted read-only and named by ``SSL_CERT_FILE`` inside,
    so a TLS-intercepting proxy's certificate is trusted there too.
    """
    environ = os.environ if environ is None else environ
    env: dict[str, str] = {}
    for name in _PROXY_VARIABLES:
        for variant in (name, name.lower()):
            if environ.get(variant):
                env[variant] = environ[variant]
    mounts: list[Mount] = []
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        bundle = environ.get(name)
        if bundle and Path(bundle).is_file():
            mounts.append(Mount(Path(bundle).resolve(), CONTAINER_CA_FILE, True))
            env["SSL_CERT_FILE"] = CONTAINER_CA_FILE
            break
    return env, mounts


def _relay(line: str, stream: StreamName) -> None:
    out = sys.stdout if stream == "stdout" else sys.stderr
    out.write(_credentials.redact(line) + "\n")  # no index secret reaches a log
    out.flush()


#: Where a networked container finds the index credentials of its run.
CONTAINER_NETRC: Final = "/run/venvstacks-docker/netrc"


@contextlib.contextmanager
def _credentials_mount(spec: StackSpec) -> Iterator[tuple[dict[str, str], list[Mount]]]:
    """Index credentials for a networked container: a netrc file mounted for this run.

    Never environment variables or arguments, which ``docker inspect`` shows.  The file
    is private to the caller (0600, in a 0700 folder) and removed after the run.
    """
    text = _credentials.container_netrc(spec.uv_config)
    if not text:
        yield {}, []
        return
    folder = Path(tempfile.mkdtemp(prefix="venvstacks-docker-netrc-"))
    try:
        path = folder / "netrc"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        yield {"NETRC": CONTAINER_NETRC}, [Mount(path, CONTAINER_NETRC, True)]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _input_mounts(spec: StackSpec, argv: Sequence[str], *, writable_requirements: bool) -> dict[Path, bool]:
    """What the inner command reads from the spec folder, and nothing else of it.

    The stack file, ``venvstacks.uv.toml``, ``requirements/`` (writable only when
    locking), the launch and support modules, and folders named by path options.  The
    spec folder itself, the current folder and the caller's home are never mounted as
    such, so a networked lock container sees none of the caller's other files.
    """
    paths: dict[Path, bool] = {spec.path: True}
    uv_file = spec.spec_dir / "venvstacks.uv.toml"
    if uv_file.is_file():
        paths[uv_file] = True
    spec.requirements_dir.mkdir(parents=True, exist_ok=True)
    paths[spec.requirements_dir.absolute()] = not writable_requirements
    for layer in spec.applications:
        for module in (layer.launch_module, *layer.support_modules):
            if module is not None:
                paths[module] = True
    for extra in _input_paths(spec, argv):
        paths.setdefault(extra, True)
    return paths


def _work_mounts(build_dir: Path, output_dir: Path | None, cache: Path) -> dict[Path, bool]:
    """Build and output folders (writable) and the caches."""
    paths: dict[Path, bool] = {build_dir: False}
    if output_dir is not None:
        paths[output_dir] = False
    # uv opens its cache even to install from local wheels
    (cache / "uv").mkdir(parents=True, exist_ok=True)
    paths[cache / "uv"] = False
    # installs come from the hash-checked caches the host filled: read-only
    for sub in ("wheels", "runtimes"):
        (cache / sub).mkdir(parents=True, exist_ok=True)
        paths[cache / sub] = True
    return paths


def _container_env(cache: Path, locks: Sequence[FolderLock]) -> dict[str, str]:
    env = {
        "VENVSTACKS_DOCKER_CACHE": str(cache),
        "UV_CACHE_DIR": str(cache / "uv"),
        **held_env(locks),
    }
    for name in ("NO_COLOR", "FORCE_COLOR", _testhooks.PAUSE_ENV):
        if name in os.environ:
            env[name] = os.environ[name]
    # index settings, with any user:password@ stripped and no _USERNAME/_PASSWORD
    env.update(_credentials.container_environment())
    return env


def _settle_output(output_dir: Path | None, say: Callable[[str], None]) -> bool:
    """Finish or clear what an interrupted publish left (the host holds the lock).

    :returns: whether a committed publication was finished.
    """
    finished = False
    if output_dir is not None and output_dir.is_dir():
        for note in recover(output_dir):
            say(note)
            finished = finished or note.startswith("finished")
    return finished


def _interrupted(command: str, output_dir: Path | None, finished: bool) -> Interrupted:
    """What a Ctrl-C (or SIGTERM) of the host kept, once the container is gone."""
    if output_dir is None or command == "local-export":
        return Interrupted(f"`{command}` was interrupted; the builder container was removed, and the "
                           "next run redoes what was unfinished")
    if finished:
        return Interrupted(f"interrupted just after publishing finished: {output_dir} holds the new "
                           "publication")
    return Interrupted(f"publishing was interrupted: {output_dir} still holds its previous publication "
                       "(nothing of this run was kept)")


def run_command_in_container(
    command: str,
    argv: Sequence[str],
    *,
    spec: StackSpec,
    base_image: str | None,
    build_dir: Path,
    output_dir: Path | None,
    verbose: int | bool = False,
    quiet: bool = False,
) -> None:
    """Run ``venvstacks-docker <argv...>`` in the builder container for this host.

    The host holds the folders' locks for the whole run (the command inside is told
    so), settles the output folder before and after (so a killed container never
    leaves a half-committed publication behind) and mounts only what the command needs.

    :param command: the stage (``lock``, ``build``, ``publish``, ``local-export``).
    :param argv: the full in-container command line, paths absolute (``_argv.reserialise``).
    :param spec: the loaded stack file.
    :param base_image: ``--base-image``; the spec's ``base_image`` is used otherwise.
    :param build_dir: absolute build folder (mounted writable).
    :param output_dir: absolute output folder, if the command writes one (writable).
    :raises ContainerError: for engine and image problems; a failing inner command raises
        :class:`~venvstacks_docker.host.orchestrator.ContainerStepFailed` carrying its
        exit status.
    """
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True, highlight=False)

    def say(message: str) -> None:
        if not quiet:
            console.print(f"* {escape(message)}")

    network = needs_network(command, argv)
    locks = work_locks(requirements_dir=spec.requirements_dir if network else None, build_dir=build_dir,
                       output_dir=output_dir,
                       output_what="the export folder" if command == "local-export" else "the output folder")
    published = output_dir if command != "local-export" else None
    with hold(locks, command=command, say=say):
        _settle_output(published, say)
        try:
            _run_locked(command, argv, spec=spec, base_image=base_image, build_dir=build_dir,
                        output_dir=output_dir, network=network, locks=locks, verbose=verbose, say=say,
                        console=console)
        except (KeyboardInterrupt, Interrupted):
            raise _interrupted(command, output_dir, _settle_output(published, say)) from None
        except BaseException:
            # a failed or killed container may have died mid-commit
            _settle_output(published, say)
            raise


def _run_locked(command: str, argv: Sequence[str], *, spec: StackSpec, base_image: str | None,
                build_dir: Path, output_dir: Path | None, network: bool, locks: Sequence[FolderLock],
                verbose: int | bool, say: Callable[[str], None], console: Any) -> None:
    from rich.markup import escape

    from venvstacks_docker.host.engine import connect
    from venvstacks_docker.runtimes import cache_root

    def image_progress(line: str) -> None:
        if verbose:
            console.print(escape(line), style="dim")

    target = host_target()
    client = connect()
    say(f"preparing the builder image for {target}")
    image = ensure_builder_image(target, base_image=base_image, spec_base_image=spec.base_image,
                                 client=client, on_progress=image_progress)
    say(f"builder image {image.tag}")
    if not network and command in {"build", "publish", "local-export"}:
        prefetch_for_offline_build(
            spec, platform=target,
            runtime_sources=[*_option_values(argv, ("--runtime-source",)), *spec.runtime_sources],
            say=lambda m: say(m) if verbose else None,
        )
    cache = cache_root().absolute()
    for folder in (build_dir, cache) if output_dir is None else (build_dir, cache, output_dir):
        folder.mkdir(parents=True, exist_ok=True)
    paths = _input_mounts(spec, argv, writable_requirements=network)
    paths.update(_work_mounts(build_dir, output_dir, cache))
    mounts = same_path_mounts(paths)
    env = _container_env(cache, locks)
    with _credentials_mount(spec) if network else contextlib.nullcontext(({}, [])) as (auth_env, auth_mounts):
        if network:
            net_env, net_mounts = network_passthrough()
            env.update(net_env, **auth_env)
            mounts = [*mounts, *net_mounts, *auth_mounts]
        say(f"running `{command}` in the container (network {'on' if network else 'off'})")
        run_in_builder(list(argv), image=image, mounts=mounts, network=network, env=env, on_output=_relay,
                       working_dir=str(spec.spec_dir), client=client)


__all__ = [
    "needs_network",
    "network_passthrough",
    "prefetch_for_offline_build",
    "run_command_in_container",
]
