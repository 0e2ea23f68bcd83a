"""The container executor: run a :class:`~venvstacks_docker.plan.Plan` in a builder container.

The CLI makes the plan on the host (so selection errors and bad folders are reported
before anything starts) and hands it here.  The split of the work:

- on the host: hold the locks of the folders the plan writes; make sure the builder
  image exists; for offline plans, put every runtime archive and wheel the plan's layers
  need into the shared cache; write the plan as JSON into the build folder;
- in the container: ``venvstacks-docker _run-plan <plan file>`` runs the plan natively
  (:mod:`venvstacks_docker.execute`), with only the files it needs mounted at their host
  paths and networking off unless the plan locks.  It reports through
  :class:`~venvstacks_docker.ui.EventReporter`: progress events, then the outcome or
  the error, which the host renders as if it had run natively;
- on the host again: settle the output folder once the container is gone, however it
  ended (:func:`venvstacks_docker.txn.recover`).

Where the engine sees this machine's files (a local socket), the container bind-mounts
them at their host paths (*mount* mode).  Where it does not (``ssh://``, ``tcp://``,
another docker context), or with ``--transfer copy``, they travel through the Engine API
instead (*copy* mode, :mod:`venvstacks_docker.host.transfer`); the plan, the events and
the outcome are the same.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from venvstacks_docker import _testhooks, ui
from venvstacks_docker import credentials as _credentials
from venvstacks_docker.errors import BundleError, Interrupted, VenvstacksDockerError
from venvstacks_docker.execute import Outcome
from venvstacks_docker.host.container import Mount, StreamName
from venvstacks_docker.host.endpoints import Endpoint, resolve
from venvstacks_docker.host.engine import session
from venvstacks_docker.host.images import BuilderImage, ensure_builder_image, host_target
from venvstacks_docker.host.orchestrator import ContainerStepFailed, run_in_builder, same_path_mounts
from venvstacks_docker.host.transfer import PLAN_PATH, CacheFile, CopySession
from venvstacks_docker.host.transfer_output import PublicationInterrupted
from venvstacks_docker.host.volumes import engine_errors
from venvstacks_docker.locking import (
    HELD_ENV,
    RUN_ID,
    STATE_DIR,
    FolderLock,
    held_env,
    hold,
    requirements_lock,
    work_locks,
)
from venvstacks_docker.metadata import dumps
from venvstacks_docker.plan import Plan
from venvstacks_docker.txn import recover

if TYPE_CHECKING:
    from venvstacks_docker.spec import StackSpec

#: Where a networked container finds the index credentials of its run.
CONTAINER_NETRC: Final = "/run/venvstacks-docker/netrc"
#: Where a networked container finds the host's CA bundle.
CONTAINER_CA_FILE: Final = "/run/venvstacks-docker/ca-certificates.crt"
_PROXY_VARIABLES: Final = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")
#: ``--transfer``: how files reach the builder container.
TRANSFER_MODES: Final = ("auto", "mount", "copy")


class RemoteError(VenvstacksDockerError):
    """An error the command in the container reported: shown as if it happened here."""

    def __init__(self, message: str, *, hint: str | None, return_code: int) -> None:
        super().__init__(message, hint=hint)
        self.return_code = return_code


def _local_sources(spec: StackSpec, plan: Plan) -> list[Path]:
    """Local files and folders among the runtime sources (URLs are not mounted)."""
    found = []
    for value in (*plan.runtime_sources, *spec.runtime_sources):
        if "://" in value and not value.startswith("file://"):
            continue
        path = Path(value.removeprefix("file://")).expanduser()
        if path.is_absolute() and path.exists():
            found.append(path)
    return found


def prefetch_for_offline_build(spec: StackSpec, plan: Plan) -> list[CacheFile]:
    """Fetch, on the host, the runtime archives and wheels the plan's builds need.

    Layers that are not (validly) locked are skipped: the in-container run reports them
    itself.  Everything lands in the shared cache the container mounts read-only (or,
    in copy mode, that is copied to the engine's store: hence the list returned).
    """
    from venvstacks_docker import build as _build
    from venvstacks_docker import lock as _lock
    from venvstacks_docker import wheels as _wheels
    from venvstacks_docker.execute import context

    ctx = context(plan, spec)
    names = plan.layers_with("build", "build-if-needed")
    wanted = {low.env_name for name in names for low in (spec.layer(name), *spec.lower_layers(spec.layer(name)))}
    found: list[CacheFile] = []
    for layer in spec.all_layers():
        if layer.env_name not in wanted or plan.platform not in layer.platforms:
            continue
        if layer.kind == "runtime":
            archive = _build.acquire_runtime_archive(ctx, layer)
            ui.current().detail(f"runtime for {layer.env_name}: {archive.filename}")
            found.append(CacheFile(filename=archive.filename, sha256=archive.sha256, path=archive.path,
                                   kind="runtime"))
        if _lock.lock_problems(spec, layer):
            continue
        chosen = _lock.install_requirements(spec, layer, plan.platform)
        lock_dir = _lock.lock_paths(spec, layer).folder
        refs = [_wheels.wheel_ref(wheel, lock_dir) for _pkg, wheel in chosen]
        _wheels.ensure_wheels(refs, ctx.wheel_dir, on_fetch=lambda name: ui.current().step(f"fetching {name}"))
        found += [CacheFile(filename=ref.filename, sha256=ref.sha256, path=ctx.wheel_dir / ref.filename, kind="wheel")
                  for ref in refs]
    return found


def _runtimes_to_lock(spec: StackSpec, plan: Plan) -> list[CacheFile]:
    """Copy mode: the runtime archives a lock will want, found here (best effort: the
    run in the container reports what is missing, and may fetch it itself)."""
    from venvstacks_docker import build as _build
    from venvstacks_docker.errors import RuntimeArchiveError
    from venvstacks_docker.execute import context

    ctx = context(plan, spec)
    found = []
    runtimes = {spec.runtime_of(spec.layer(name)).env_name for name in plan.layers_with("lock", "lock-if-needed")}
    for layer in spec.runtimes:
        if layer.env_name in runtimes and plan.platform in layer.platforms:
            try:
                archive = _build.acquire_runtime_archive(ctx, layer, pinned=False)
            except RuntimeArchiveError:
                continue
            found.append(CacheFile(filename=archive.filename, sha256=archive.sha256, path=archive.path,
                                   kind="runtime"))
    return found


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


def _input_paths(spec: StackSpec, plan: Plan) -> dict[Path, bool]:
    """Host path -> read-only, for what the plan reads (and ``requirements/``).

    The stack file, ``venvstacks.uv.toml``, ``requirements/`` (writable only when
    locking), the launch and support modules, local wheel folders and runtime sources,
    an unpacked bundle.
    """
    paths: dict[Path, bool] = {spec.path: True}
    uv_file = spec.spec_dir / "venvstacks.uv.toml"
    if uv_file.is_file():
        paths[uv_file] = True
    spec.requirements_dir.mkdir(parents=True, exist_ok=True)
    paths[spec.requirements_dir.absolute()] = not plan.lock
    for layer in spec.applications:
        for module in (layer.launch_module, *layer.support_modules):
            if module is not None:  # mounted where the stack file names it, even above its folder
                paths[Path(os.path.normpath(module))] = True
    extras = [*plan.local_wheel_dirs, *_local_sources(spec, plan)]
    if plan.bundle_dir is not None:
        extras.append(plan.bundle_dir)
    for extra in extras:
        paths.setdefault(Path(extra), True)
    return paths


def _mounts(spec: StackSpec, plan: Plan, cache: Path) -> dict[Path, bool]:
    """Host path -> read-only, for exactly what the plan reads and writes.

    The inputs (:func:`_input_paths`); the build and output folders; the cache's wheels
    and runtimes (read-only) and uv cache.  The spec folder itself, the current folder
    and the caller's home are never mounted as such, so a networked lock container sees
    none of the caller's other files.
    """
    paths = _input_paths(spec, plan)
    for folder in (plan.build_dir, plan.output_dir):
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            paths[folder] = False
    for sub, read_only in (("wheels", True), ("runtimes", True), ("uv", False)):
        (cache / sub).mkdir(parents=True, exist_ok=True)
        paths[cache / sub] = read_only  # uv opens its cache even to install from local wheels
    return paths


def _container_env(cache: Path, locks: list[FolderLock], *, copy: bool = False) -> dict[str, str]:
    env = {"VENVSTACKS_DOCKER_CACHE": str(cache), "UV_CACHE_DIR": str(cache / "uv"), **held_env(locks)}
    # a pause point's flag file is on the host: a copy-mode container could not reach it
    for name in ("NO_COLOR", "FORCE_COLOR", *(() if copy else (_testhooks.PAUSE_ENV,))):
        if name in os.environ:
            env[name] = os.environ[name]
    # index settings, with any user:password@ stripped and no _USERNAME/_PASSWORD
    env.update(_credentials.container_environment())
    return env


def _settle(plan: Plan) -> bool:
    """Finish or clear what an interrupted publish left (the host holds the lock).

    :returns: whether a committed publication was finished.
    """
    finished = False
    if plan.command != "local-export" and plan.writes_output and plan.output_dir and plan.output_dir.is_dir():
        for note in recover(plan.output_dir):
            ui.current().note(note)
            finished = finished or note.startswith("finished")
    return finished


def _interrupted(plan: Plan, finished: bool) -> Interrupted:
    """What a Ctrl-C (or SIGTERM) of the host kept, once the container is gone."""
    if not plan.writes_output or plan.command == "local-export":
        return Interrupted(f"`{plan.command}` was interrupted; the builder container was removed, and the "
                           "next run redoes what was unfinished")
    if finished:
        return Interrupted(f"interrupted just after publishing finished: {plan.output_dir} holds the new "
                           "publication")
    return Interrupted(f"publishing was interrupted: {plan.output_dir} still holds its previous publication "
                       "(nothing of this run was kept)")


def copies(transfer: str, engine: str | None) -> bool:
    """Whether a run with ``--transfer`` and ``--engine`` copies its files (else mounts them).

    :raises ContainerError: for a docker context that does not exist.
    """
    return transfer == "copy" or (transfer == "auto" and not resolve(engine).local)


def run_plan_in_container(plan: Plan, spec: StackSpec, *, base_image: str | None, transfer: str = "auto",
                          engine: str | None = None) -> Outcome:
    """Run ``plan`` in the builder container for this host; the outcome as if native.

    :param transfer: ``auto`` (mount where the engine is local, else copy), ``mount``
        or ``copy`` (``--transfer``).
    :param engine: ``--engine``: a docker context name or engine URL (default: as the
        docker CLI chooses, :func:`~venvstacks_docker.host.endpoints.resolve`).
    :raises ContainerError: for engine and image problems, or a container that died.
    :raises RemoteError: for an error of the run inside (same message and exit code).
    :raises Interrupted: on Ctrl-C or SIGTERM, saying what the output folder kept.
    """
    endpoint = resolve(engine)
    copy = transfer == "copy" or (transfer == "auto" and not endpoint.local)
    ui.current().detail(f"engine {endpoint.describe()}: {'local' if endpoint.local else 'remote'}, "
                        + ("inputs and outputs copied through the Engine API" if copy
                           else "host folders mounted at their paths"))
    locks = work_locks(requirements_dir=spec.requirements_dir if plan.lock else None,
                       build_dir=plan.build_dir if plan.writes_build else None,
                       output_dir=plan.output_dir if plan.writes_output else None,
                       output_what="the export folder" if plan.command == "local-export" else "the output folder")
    with hold(locks, command=plan.command, say=ui.current().note):
        _settle(plan)
        try:
            with session(endpoint=endpoint) as client, engine_errors(endpoint.describe(), f"running `{plan.command}`"):
                _check_architecture(plan.platform, client, local=endpoint.local)
                image = _builder_image(plan, spec, base_image=base_image, client=client)
                ui.current().detail(f"builder image {image.tag}")
                if copy:
                    return _run_copied(plan, spec, image=image, locks=locks, client=client, endpoint=endpoint)
                return _run_with_client(plan, spec, image=image, locks=locks, client=client)
        except PublicationInterrupted:
            _settle(plan)
            raise
        except (KeyboardInterrupt, Interrupted):
            raise _interrupted(plan, _settle(plan)) from None
        except BaseException:
            _settle(plan)  # a failed or killed container may have died mid-commit
            raise


def _argv() -> list[str]:
    reporter = ui.current()
    return ["-v"] * max(reporter.verbosity, 0) + (["-q"] if reporter.verbosity < 0 else [])


def _run_with_client(plan: Plan, spec: StackSpec, *, image: BuilderImage, locks: list[FolderLock],
                     client: Any) -> Outcome:
    from venvstacks_docker.runtimes import cache_root

    reporter = ui.current()
    if not plan.needs_network and plan.build and plan.bundle_dir is None:
        prefetch_for_offline_build(spec, plan)
    cache = cache_root().absolute()
    mounts = same_path_mounts(_mounts(spec, plan, cache))
    env = _container_env(cache, locks)
    plan_file = plan.build_dir / STATE_DIR / f"plan-{RUN_ID}.json"
    plan_file.parent.mkdir(parents=True, exist_ok=True)
    plan_file.write_text(dumps(plan.to_dict()), encoding="utf-8")
    replayer = ui.Replayer(reporter)
    try:
        auth: contextlib.AbstractContextManager[tuple[dict[str, str], list[Mount]]] = (
            _credentials_mount(spec) if plan.needs_network else contextlib.nullcontext(({}, [])))
        with auth as (auth_env, auth_mounts):
            if plan.needs_network:
                net_env, net_mounts = network_passthrough()
                env.update(net_env, **auth_env)
                mounts = [*mounts, *net_mounts, *auth_mounts]
            reporter.detail(f"running `{plan.command}` in the container (network "
                            f"{'on' if plan.needs_network else 'off'})")
            run_in_builder([*_argv(), "_run-plan", str(plan_file)], image=image, mounts=mounts,
                           network=plan.needs_network, env=env, on_output=_relay(replayer),
                           working_dir=str(spec.spec_dir), client=client)
    except ContainerStepFailed:
        if replayer.error is not None:
            raise _remote_error(replayer.error) from None
        raise
    finally:
        replayer.close()
        plan_file.unlink(missing_ok=True)
    return _outcome(replayer)


def _outcome(replayer: ui.Replayer) -> Outcome:
    if replayer.outcome is None:
        raise RemoteError("the builder container ended without reporting an outcome", hint=None, return_code=6)
    return Outcome.from_dict(replayer.outcome)


def _copy_secrets(spec: StackSpec, plan: Plan) -> tuple[dict[str, str], dict[str, bytes]]:
    """Copy mode, networked: proxy variables, and the netrc and CA bundle as files."""
    if not plan.needs_network:
        return {}, {}
    env, mounts = network_passthrough()
    env.pop("SSL_CERT_FILE", None)
    secrets = {"ca-certificates.crt": mounts[0].host_path.read_bytes()} if mounts else {}
    netrc = _credentials.container_netrc(spec.uv_config)
    if netrc:
        secrets["netrc"] = netrc.encode("utf-8")
    return env, secrets


def _run_copied(plan: Plan, spec: StackSpec, *, image: BuilderImage, locks: list[FolderLock], client: Any,
                endpoint: Endpoint) -> Outcome:
    """Copy mode: the same run, its files carried by the Engine API (:mod:`~venvstacks_docker.host.transfer`)."""
    from venvstacks_docker.host.transfer import CACHE_ROOT

    reporter = ui.current()
    cache_files = prefetch_for_offline_build(spec, plan) if (not plan.needs_network and plan.build
                                                             and plan.bundle_dir is None) else []
    if plan.lock:
        cache_files += _runtimes_to_lock(spec, plan)
    spec.requirements_dir.mkdir(parents=True, exist_ok=True)
    net_env, secrets = _copy_secrets(spec, plan)
    env = {**_container_env(Path(CACHE_ROOT), locks, copy=True), **net_env}
    if plan.lock:  # the lock of requirements/ is in the cache, which is elsewhere in the container
        inside = f"{CACHE_ROOT}/locks/{requirements_lock(spec.requirements_dir).lock_file.name}"
        env[HELD_ENV] = json.dumps(sorted([*json.loads(env[HELD_ENV]), inside]))
    copied = CopySession(client, where=endpoint.describe(), image_id=image.image_id, spec=spec, plan=plan,
                         inputs=list(_input_paths(spec, plan)), cache_files=cache_files, secrets=secrets)
    with copied:
        env.update(copied.environment())
        replayer = ui.Replayer(reporter)
        reporter.detail(f"running `{plan.command}` in the container (network "
                        f"{'on' if plan.needs_network else 'off'}, files copied)")
        try:
            run_in_builder([*_argv(), "_run-plan", PLAN_PATH], image=image, volumes=copied.mounts,
                           network=plan.needs_network, env=env, on_output=_relay(replayer),
                           working_dir=str(spec.spec_dir), client=client)
        except ContainerStepFailed:
            if replayer.error is not None:
                with contextlib.suppress(VenvstacksDockerError):
                    copied.bring_back(None, failed=True)  # the lock files written before the failure
                raise _remote_error(replayer.error) from None
            raise
        finally:
            replayer.close()
        outcome = _outcome(replayer)
        copied.bring_back(outcome)
    return outcome


def _check_architecture(platform: str, client: Any, *, local: bool) -> None:
    """A builder for another architecture than the engine's runs under qemu: on a local
    engine, check that the kernel can do that before anything is built (a remote
    engine's kernel cannot be asked; its container fails with "exec format error")."""
    from venvstacks_docker.emulation import require_emulation
    from venvstacks_docker.host.engine import engine_info
    from venvstacks_docker.host.images.common import ENGINE_ARCH

    arch, engine_arch = ENGINE_ARCH.get(platform), engine_info(client).arch
    if arch is None or arch == engine_arch:
        return
    if local:
        require_emulation(platform)
    ui.current().note(f"{platform} builders run under qemu emulation on this {engine_arch} engine: "
                      "expect several times the native build time")


def _builder_image(plan: Plan, spec: StackSpec, *, base_image: str | None, client: Any) -> BuilderImage:
    """The builder image: the bundle's (loaded if the engine lacks it), else made or found."""
    target = plan.platform if plan.platform in ("linux_x86_64", "linux_aarch64") else host_target()
    if plan.bundle_dir is not None:
        from venvstacks_docker.bundle_format import MANIFEST
        from venvstacks_docker.host.bundle_image import ensure_loaded

        manifest = json.loads((plan.bundle_dir / MANIFEST).read_text(encoding="utf-8"))
        recorded = (manifest.get("builder_images") or {}).get(target)
        if not recorded:
            raise BundleError(f"the bundle {plan.bundle_dir} holds no builder image for {target}",
                              hint="bundle with the image on the connected host, or build here with --native")
        return ensure_loaded(client, plan.bundle_dir / recorded["member"], recorded)
    with ui.current().phase(f"preparing the builder image for {target}"):
        return ensure_builder_image(target, base_image=base_image, spec_base_image=spec.base_image,
                                    client=client, on_progress=ui.current().detail)


def _remote_error(event: dict[str, object]) -> RemoteError:
    hint = event.get("hint")
    return RemoteError(str(event.get("message", "")), hint=str(hint) if hint else None,
                       return_code=int(str(event.get("code", 1))))


def _relay(replayer: ui.Replayer):  # type: ignore[no-untyped-def]
    def relay(line: str, stream: StreamName) -> None:
        if stream == "stderr" and replayer.feed(line):
            return
        out = sys.stdout if stream == "stdout" else sys.stderr
        out.write(_credentials.redact(line) + "\n")  # no index secret reaches a log
        out.flush()

    return relay


__all__ = ["TRANSFER_MODES", "RemoteError", "copies", "network_passthrough", "prefetch_for_offline_build",
           "run_plan_in_container"]
