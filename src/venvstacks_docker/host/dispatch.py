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

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from venvstacks_docker.errors import ContainerError, VenvstacksDockerError
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
    out.write(line + "\n")
    out.flush()


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
    """Run ``venvstacks-docker <argv...> --native`` in the builder container for this host.

    :param command: the stage (``lock``, ``build``, ``publish``, ``local-export``).
    :param argv: the command line as given (``sys.argv[1:]``).
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

    from venvstacks_docker.host.engine import connect
    from venvstacks_docker.runtimes import cache_root

    console = Console(stderr=True, highlight=False)

    def say(message: str) -> None:
        if not quiet:
            console.print(f"* {escape(message)}")

    def image_progress(line: str) -> None:
        if verbose and not quiet:
            console.print(escape(line), style="dim")

    target = host_target()
    client = connect()
    say(f"preparing the builder image for {target}")
    image = ensure_builder_image(
        target,
        base_image=base_image,
        spec_base_image=spec.base_image,
        client=client,
        on_progress=image_progress,
    )
    say(f"builder image {image.tag}")

    network = needs_network(command, argv)
    if not network and command in {"build", "publish", "local-export"}:
        try:
            prefetch_for_offline_build(
                spec,
                platform=target,
                runtime_sources=[*_option_values(argv, ("--runtime-source",)), *spec.runtime_sources],
                say=lambda m: say(m) if verbose else None,
            )
        except ImportError as exc:  # pragma: no cover - stage modules ship with the package
            raise ContainerError(f"cannot prepare the offline build: {exc}") from None
        except VenvstacksDockerError:
            raise

    cache = cache_root().absolute()
    folders = [spec.spec_dir.absolute(), build_dir, cache]
    if output_dir is not None:
        folders.append(output_dir)
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    # the spec folder is read-only; only requirements/ is writable, and only when locking
    paths: dict[Path, bool] = {spec.spec_dir.absolute(): True, build_dir: False, cache: False}
    if command == "lock" or network:
        spec.requirements_dir.mkdir(parents=True, exist_ok=True)
        paths[spec.requirements_dir.absolute()] = False
    if not network:
        # offline steps install from the hash-checked caches the host filled: read-only
        for sub in ("wheels", "runtimes"):
            (cache / sub).mkdir(parents=True, exist_ok=True)
            paths[cache / sub] = True
    if output_dir is not None:
        paths[output_dir] = False
    for extra in _input_paths(spec, argv):
        paths.setdefault(extra, True)
    cwd = Path.cwd()
    if not any(cwd == p or p in cwd.parents for p in paths):
        try:
            same_path_mounts({cwd: True})
            paths[cwd] = True
        except ContainerError:
            pass  # cwd is a system folder: relative paths in argv are resolved by the CLI anyway
    mounts = same_path_mounts(paths)

    env = {
        "VENVSTACKS_DOCKER_CACHE": str(cache),
        "UV_CACHE_DIR": str(cache / "uv"),
    }
    for name in ("NO_COLOR", "FORCE_COLOR", "UV_INDEX_URL", "UV_EXTRA_INDEX_URL", "UV_DEFAULT_INDEX"):
        if name in os.environ:
            env[name] = os.environ[name]
    if network:
        net_env, net_mounts = network_passthrough()
        env.update(net_env)
        mounts = [*mounts, *net_mounts]
    say(f"running `{command}` in the container (network {'on' if network else 'off'})")
    try:
        run_in_builder(
            [*argv, "--native"],
            image=image,
            mounts=mounts,
            network=network,
            env=env,
            on_output=_relay,
            working_dir=str(cwd) if any(cwd == m.host_path or m.host_path in cwd.parents for m in mounts) else None,
            client=client,
        )
    except BaseException:
        # the container is gone (failed, killed or interrupted): whatever temporary
        # files its publish left in the output folder are stale, whatever their pid
        if output_dir is not None:
            from venvstacks_docker.publish import remove_stale_temporaries

            remove_stale_temporaries(output_dir, any_pid=True)
        raise


__all__ = [
    "needs_network",
    "network_passthrough",
    "prefetch_for_offline_build",
    "run_command_in_container",
]
