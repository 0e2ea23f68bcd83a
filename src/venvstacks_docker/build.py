"""Build layer environments from their locks.

Runtime layers are the unpacked runtime archive plus the runtime's locked packages.
Framework and application layers are ``venv`` environments created by the runtime's
interpreter and chained the venvstacks way: a ``sitecustomize.py`` in each layered
environment adds the lower layers' ``site-packages`` with ``site.addsitedir``.
Packages are installed by uv from the hash-checked wheel cache, never from the network.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from venvstacks_docker import __version__
from venvstacks_docker import dynlib as _dynlib
from venvstacks_docker import lock as _lock
from venvstacks_docker import oslayout as _oslayout
from venvstacks_docker import platforms as _plat
from venvstacks_docker import runtimes as _runtimes
from venvstacks_docker._run import run
from venvstacks_docker.errors import BuildError, LockError
from venvstacks_docker.metadata import LAYER_CONFIG, read_json, write_json
from venvstacks_docker.spec import LayerSpec, StackSpec, iter_module_files, module_hash
from venvstacks_docker.wheels import ensure_wheels, wheel_ref

log = logging.getLogger(__name__)

VOLATILE_DIST_INFO = ("INSTALLER", "REQUESTED", "direct_url.json", "uv_cache.json", "uv_build.json")


@dataclass(frozen=True, kw_only=True)
class BuildContext:
    """Where and how to build: shared by lock, build, publish and export."""

    spec: StackSpec
    build_dir: Path
    platform: str = field(default_factory=_plat.current_platform)
    wheel_dir: Path = field(default_factory=lambda: _runtimes.cache_root() / "wheels")
    runtime_sources: tuple[str, ...] = ()
    offline: bool = False
    """No network: runtimes and wheels must already be available locally."""

    def env_dir(self, layer: LayerSpec) -> Path:
        """The folder ``layer`` is built in."""
        return self.build_dir / layer.env_name

    def python(self, layer: LayerSpec) -> Path:
        """The interpreter of ``layer``'s environment."""
        if _plat.os_of(self.platform) == "win":  # python.exe, Scripts/python.exe (oslayout)
            return self.env_dir(layer) / _oslayout.layout("win", layer.kind, layer.py_minor).python
        return self.env_dir(layer) / "bin" / ("python3" if layer.kind == "runtime" else "python")

    def site_packages(self, layer: LayerSpec) -> Path:
        """The ``site-packages`` folder of ``layer``'s environment."""
        return self.env_dir(layer) / _oslayout.layout(_plat.os_of(self.platform), layer.kind, layer.py_minor).site_dir

    def record_path(self, layer: LayerSpec) -> Path:
        """The record of ``layer``'s last build (next to its environment)."""
        return self.build_dir / f"{layer.env_name}.last-build.json"


def deployed_name(spec: StackSpec, layer: LayerSpec) -> str:
    """``install_target``: the env name, plus ``@<lock_version>`` for versioned layers."""
    if not layer.versioned:
        return layer.env_name
    meta = _lock.read_meta(spec, layer) or {}
    return f"{layer.env_name}@{meta.get('lock_version', 1)}"


def layer_config(spec: StackSpec, layer: LayerSpec, plat: str = "linux_x86_64") -> dict[str, Any]:
    """The deployed layer config (``share/venv/metadata/venvstacks_layer.json``) for ``plat``."""
    target_os = _plat.os_of(plat)
    paths = _oslayout.layout(target_os, layer.kind, layer.py_minor)
    site = paths.site_dir
    if layer.kind == "runtime":
        config: dict[str, Any] = {
            "python": paths.python,
            "py_version": layer.py_version,
            "base_python": paths.python,
            "site_dir": site,
            "pylib_dirs": [],
            "dynlib_dirs": [],
        }
    else:
        rt = spec.runtime_of(layer)
        lower = spec.lower_layers(layer)
        config = {
            "python": paths.python,
            "py_version": layer.py_version,
            "base_python": _oslayout.base_python(target_os, deployed_name(spec, rt)),
            "site_dir": site,
            "pylib_dirs": [f"../{deployed_name(spec, low)}/{site}" for low in lower],
            "dynlib_dirs": _oslayout.dynlib_dirs(target_os, (deployed_name(spec, low) for low in lower)),
        }
    if layer.launch_module_name:
        config["launch_module"] = layer.launch_module_name
    return config


# --- runtimes -------------------------------------------------------------------


def runtime_request(ctx: BuildContext, layer: LayerSpec) -> _runtimes.RuntimeRequest:
    """The runtime archive that ``layer`` (a runtime) needs for the context's platform."""
    return _runtimes.RuntimeRequest(
        implementation=layer.implementation, version=layer.py_version, platform=ctx.platform
    )


def runtime_pin(spec: StackSpec, rt: LayerSpec, platform: str | None = None) -> dict[str, str]:
    """The runtime archive (``name``, ``sha256``) that ``rt``'s lock pinned, if any, still
    valid and (given a ``platform``) an archive for that platform: a lock pins the archive
    of the platform it was made on, so another platform's build takes its own archive."""
    meta = _lock.read_meta(spec, rt) or {}
    if meta.get("python_implementation") != rt.python_implementation:
        return {}
    pin: dict[str, str] = meta.get("runtime_archive") or {}
    if platform is not None and pin.get("name"):
        request = _runtimes.RuntimeRequest(implementation=rt.implementation, version=rt.py_version, platform=platform)
        if not _runtimes.archive_name_pattern(request).match(pin["name"]):
            return {}
    return pin


def pinned_runtime_sha(spec: StackSpec, rt: LayerSpec, platform: str | None = None) -> str | None:
    """The sha256 of :func:`runtime_pin`, if any."""
    return runtime_pin(spec, rt, platform).get("sha256")


def acquire_runtime_archive(ctx: BuildContext, rt: LayerSpec, *, pinned: bool = True) -> _runtimes.RuntimeArchive:
    """The runtime archive for ``rt``, found or fetched; checked against its lock's pin
    unless ``pinned`` is false."""
    expected = pinned_runtime_sha(ctx.spec, rt, ctx.platform) if pinned else None
    return _runtimes.acquire_runtime(
        runtime_request(ctx, rt),
        sources=(*ctx.runtime_sources, *ctx.spec.runtime_sources),
        expected_sha256=expected,
        offline=ctx.offline,
    )


def ensure_runtime_interpreter(ctx: BuildContext, layer: LayerSpec) -> tuple[Path, tuple[str, str] | None]:
    """Interpreter to lock ``layer`` with (unpacking its runtime if needed).

    For runtime layers also returns the archive pin ``(file name, sha256)``.
    """
    rt = ctx.spec.runtime_of(layer)
    python = ctx.python(rt)
    record = read_json(ctx.record_path(rt)) or {}
    if layer.kind == "runtime":
        # relocking a runtime re-pins whatever archive is available for its version
        archive = acquire_runtime_archive(ctx, rt, pinned=False)
        if not python.exists() or record.get("runtime_sha256") != archive.sha256:
            _unpack_runtime(ctx, rt, archive)
        return python, (archive.filename, archive.sha256)
    if not python.exists():
        _unpack_runtime(ctx, rt, acquire_runtime_archive(ctx, rt))
    return python, None


def _unpack_runtime(ctx: BuildContext, rt: LayerSpec, archive: _runtimes.RuntimeArchive) -> None:
    env = ctx.env_dir(rt)
    remove_tree(ctx, env)
    ctx.record_path(rt).unlink(missing_ok=True)
    env.parent.mkdir(parents=True, exist_ok=True)
    tmp = env.with_name(env.name + ".unpacking")
    remove_tree(ctx, tmp)
    _runtimes.extract_runtime(archive.path, tmp)
    tmp.replace(env)
    bin_dir = env / "bin"
    if bin_dir.is_dir() and not (bin_dir / "python").exists():  # Windows runtimes: python.exe, no bin/
        (bin_dir / "python").symlink_to("python3")
    # records which archive is unpacked (a full build record is written after install)
    write_json(ctx.record_path(rt), {"runtime_sha256": archive.sha256, "complete": False})


def remove_tree(ctx: BuildContext, path: Path) -> None:
    """Delete a folder, but only inside the build folder (never user files)."""
    if not path.exists() and not path.is_symlink():
        return
    build = ctx.build_dir.resolve()
    if build not in path.resolve().parents:
        raise BuildError(f"refusing to delete {path}: it is outside the build folder {build}")
    if path.is_symlink() or path.is_file():
        path.unlink()
    else:
        shutil.rmtree(path)


# --- building ---------------------------------------------------------------------


def _module_hashes(layer: LayerSpec) -> list[str]:
    if layer.launch_module is None:
        return []
    return [module_hash(m) for m in (layer.launch_module, *layer.support_modules)]


def build_inputs(ctx: BuildContext, layer: LayerSpec) -> dict[str, Any]:
    """Everything an installed environment depends on (modules excepted)."""
    meta = _lock.read_meta(ctx.spec, layer) or {}
    rt = ctx.spec.runtime_of(layer)
    return {
        "tool_version": __version__,
        "uv_version": uv_version(),
        "requirements_hash": meta.get("requirements_hash"),
        "lock_version": meta.get("lock_version"),
        "runtime_sha256": pinned_runtime_sha(ctx.spec, rt, ctx.platform),
        "platform": ctx.platform,
        "layer_config": layer_config(ctx.spec, layer, ctx.platform),
        "lower_layers": [low.env_name for low in ctx.spec.lower_layers(layer)],
        "dynlib_exclude": list(layer.dynlib_exclude),
        "build_dir": str(ctx.build_dir.resolve()),
    }


_UV_VERSION: list[str] = []


def uv_version() -> str:
    # the uv wheel's version is the version of the uv binary it ships
    """The version of the uv that installs packages (the pinned ``uv`` dependency)."""
    if not _UV_VERSION:
        from importlib.metadata import version

        _UV_VERSION.append(version("uv"))
    return _UV_VERSION[0]


def build_layer(
    ctx: BuildContext,
    layer: LayerSpec,
    *,
    clean: bool = False,
    on_event: Callable[[str], None] | None = None,
) -> str:
    """Build (or bring up to date) one layer environment.

    :returns: ``"built"``, ``"modules-updated"`` or ``"unchanged"``.
    """
    problems = _lock.lock_problems(ctx.spec, layer)
    if problems:
        raise LockError(
            f"layer {layer.env_name} has no valid lock ({'; '.join(problems)})",
            hint="run `venvstacks-docker lock` first, or `build --lock-if-needed`",
        )
    inputs = build_inputs(ctx, layer)
    modules = _module_hashes(layer)
    record = read_json(ctx.record_path(layer)) or {}
    env = ctx.env_dir(layer)
    if not clean and record.get("complete") and record.get("inputs") == inputs and env.exists():
        if record.get("modules") == modules:
            return "unchanged"
        _install_modules(ctx, layer)
        write_json(ctx.record_path(layer), {**record, "modules": modules})
        return "modules-updated"
    if on_event:
        on_event(f"building {layer.env_name}")
    if layer.kind == "runtime":
        archive = acquire_runtime_archive(ctx, layer)
        _unpack_runtime(ctx, layer, archive)
        _remove_bundled_installers(ctx, layer)
    else:
        _create_layered_env(ctx, layer)
    _install_packages(ctx, layer, on_event=on_event)
    if _dynlib.supports_dynlib(_plat.os_of(ctx.platform)):
        _dynlib.link_shared_libraries(env, ctx.site_packages(layer), layer.dynlib_exclude, layer=layer.env_name)
    _portability_pass(ctx, layer)
    if layer.kind != "runtime":
        _write_build_sitecustomize(ctx, layer)
        _install_modules(ctx, layer)
    config_path = env / LAYER_CONFIG
    config_path.parent.mkdir(parents=True, exist_ok=True)
    write_json(config_path, layer_config(ctx.spec, layer, ctx.platform))
    run([ctx.python(layer), "-X", "utf8", "-Im", "site"], what=f"checking the {layer.env_name} environment",
        error=BuildError)
    write_json(ctx.record_path(layer), {"complete": True, "inputs": inputs, "modules": modules,
                                        "runtime_sha256": inputs["runtime_sha256"]})
    return "built"


def _remove_bundled_installers(ctx: BuildContext, rt: LayerSpec) -> None:
    """Drop pip/setuptools/wheel shipped in the runtime (unless the lock installs them)."""
    site = ctx.site_packages(rt)
    wanted = {req.split("[")[0].split("=")[0].split("<")[0].split(">")[0].strip().lower()
              for req in rt.requirements}
    for dist in ("pip", "setuptools", "wheel"):
        if dist in wanted:
            continue
        for info in sorted(site.glob(f"{dist}-*.dist-info")):
            _uninstall_by_record(site, info)


def _uninstall_by_record(site: Path, info: Path) -> None:
    record = info / "RECORD"
    if record.exists():
        for line in record.read_text("utf-8").splitlines():
            rel = line.split(",", 1)[0]
            if not rel:
                continue
            target = (site / rel).resolve()
            if target.is_file() and site.parent.parent.parent in target.parents:
                target.unlink()
    shutil.rmtree(info, ignore_errors=True)
    for item in sorted(site.iterdir()):
        if item.is_dir() and not any(p for p in item.rglob("*") if p.is_file()):
            shutil.rmtree(item)


def _create_layered_env(ctx: BuildContext, layer: LayerSpec) -> None:
    rt = ctx.spec.runtime_of(layer)
    env = ctx.env_dir(layer)
    remove_tree(ctx, env)
    ctx.record_path(layer).unlink(missing_ok=True)
    rt_python = ctx.python(rt)
    if not rt_python.exists():
        raise BuildError(f"the runtime {rt.env_name} is not built yet",
                         hint="build the runtime layer first (build all layers, or drop --include)")
    windows = _plat.os_of(ctx.platform) == "win"  # Scripts/python.exe: a copy of the venv launcher
    run([rt_python, "-X", "utf8", "-Im", "venv", "--without-pip", "--copies" if windows else "--symlinks", env],
        what=f"creating the {layer.env_name} environment", error=BuildError)
    if windows:
        return
    # relative paths, so the layer keeps working wherever its folder and its runtime's land;
    # bin/python puts the lower layers' shared libraries on the loader path (dynlib.py)
    bin_dir = env / "bin"
    for name in ("python", "python3", f"python{layer.py_minor}"):
        (bin_dir / name).unlink(missing_ok=True)
    link_python(bin_dir, ctx.platform, rt.env_name, [low.env_name for low in ctx.spec.lower_layers(layer)])
    (bin_dir / "python3").symlink_to("python")
    (bin_dir / f"python{layer.py_minor}").symlink_to("python")
    for item in sorted(bin_dir.iterdir()):
        if not item.name.startswith("python"):
            item.unlink()


def link_python(bin_dir: Path, plat: str, runtime_folder: str, lower_folders: list[str]) -> None:
    """A layered env's ``bin/python``, for lower layers unpacked in the given sibling folders.

    On Linux and macOS the wrapper script of :mod:`.dynlib` (with ``python_`` linked to
    the runtime's interpreter); elsewhere a plain link to that interpreter.
    """
    base = f"../../{runtime_folder}/bin/python"
    if _dynlib.supports_dynlib(_plat.os_of(plat)):
        _dynlib.write_interpreter(bin_dir, base, _dynlib.layer_dynlib_dirs(lower_folders), _plat.os_of(plat))
    else:
        (bin_dir / "python").symlink_to(base)


def _write_build_sitecustomize(ctx: BuildContext, layer: LayerSpec) -> None:
    lines = ["# Generated by venvstacks-docker at build time; regenerated by postinstall.py on deploy",
             "import site"]
    lines += [f"site.addsitedir({str(ctx.site_packages(low))!r})" for low in ctx.spec.lower_layers(layer)]
    (ctx.site_packages(layer) / "sitecustomize.py").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _install_packages(ctx: BuildContext, layer: LayerSpec, *, on_event: Callable[[str], None] | None) -> None:
    chosen = _lock.install_requirements(ctx.spec, layer, ctx.platform)
    if not chosen:
        return
    lock_dir = _lock.lock_paths(ctx.spec, layer).folder
    refs = [wheel_ref(w, lock_dir) for _, w in chosen]
    ensure_wheels(refs, ctx.wheel_dir, offline=ctx.offline,
                  on_fetch=(lambda name: on_event(f"fetching {name}")) if on_event else None)
    reqs = ctx.build_dir / f"{layer.env_name}.install.txt"
    lines = [f"{pkg.name}=={pkg.version} --hash=sha256:{ref.sha256}"
             for (pkg, _), ref in zip(chosen, refs, strict=True)]
    reqs.write_text("\n".join(sorted(lines)) + "\n", encoding="utf-8")
    env = _lock.uv_env()
    env["UV_NO_INSTALLER_METADATA"] = "1"
    if _plat.os_of(ctx.platform) == "macosx":
        env["MACOSX_DEPLOYMENT_TARGET"] = layer.macosx_target
    cmd = [
        _lock._uv(), "pip", "install", "--python", str(ctx.python(layer)),
        "--no-deps", "--no-index", "--find-links", str(ctx.wheel_dir), "--require-hashes",
        "--no-build", "--link-mode", "copy", "--no-config", "--quiet", "--color", "never",
        "-r", str(reqs),
    ]
    if layer.kind == "runtime":
        cmd.append("--break-system-packages")
    run(cmd, env=env, what=f"installing packages into {layer.env_name}", error=BuildError)


def _portability_pass(ctx: BuildContext, layer: LayerSpec) -> None:
    """Remove what ties an environment to this machine or this install run.

    Entry-point scripts (absolute shebangs), installer metadata and direct_url.json
    go, together with their RECORD lines.
    """
    env = ctx.env_dir(layer)
    site = ctx.site_packages(layer)
    if not site.exists():
        return
    removed: set[Path] = set()
    bin_dir = env / _oslayout.layout(_plat.os_of(ctx.platform), layer.kind, layer.py_minor).scripts_dir
    for info in sorted(site.glob("*.dist-info")):
        record = info / "RECORD"
        if not record.exists():
            continue
        kept = []
        changed = False
        for line in record.read_text("utf-8").splitlines():
            rel = line.split(",", 1)[0]
            target = Path(os.path.normpath(site / rel))
            drop = (target.parent == bin_dir and not target.name.startswith("python")) or (
                target.parent == info and target.name in VOLATILE_DIST_INFO
            )
            if drop:
                changed = True
                if target.exists() or target.is_symlink():
                    target.unlink()
                removed.add(target)
            else:
                kept.append(line)
        for name in VOLATILE_DIST_INFO:
            (info / name).unlink(missing_ok=True)
        if changed:
            record.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
    if layer.kind != "runtime":
        for item in sorted(bin_dir.iterdir()):
            if not item.name.startswith("python"):
                item.unlink() if not item.is_dir() or item.is_symlink() else shutil.rmtree(item)


def _install_modules(ctx: BuildContext, layer: LayerSpec) -> None:
    """Copy launch and support modules (content only) into site-packages.

    Symbolic links are never followed.  The rules checked when the stack file was loaded
    (the module's path stays inside the stack file's folder; a package holds no links)
    are checked again first, in case the folder changed since, and every file of a
    package is opened without following a link (``O_NOFOLLOW``), so a link swapped in
    after that check is refused too: :class:`BuildError`, nothing from the host copied.
    """
    from venvstacks_docker.spec_modules import LINK_HINT, module_problem, read_no_follow

    if layer.launch_module is None:
        return
    site = ctx.site_packages(layer)
    for module in (layer.launch_module, *layer.support_modules):
        problem = module_problem(ctx.spec.spec_dir, module)
        if problem is not None:
            raise BuildError(f"{layer.env_name}: {problem[0]}", hint=f"{problem[1]}, then build again")
        dest = site / module.name
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        elif dest.exists() or dest.is_symlink():
            dest.unlink()
        if module.is_file():
            shutil.copyfile(module, dest)  # the module path itself: checked to stay inside
            continue
        for file in iter_module_files(module):
            data = read_no_follow(file)
            if data is None:
                raise BuildError(
                    f"{layer.env_name}: module {module.name!r} contains a symbolic link "
                    f"{file.relative_to(module).as_posix()} (made after the stack file was loaded)",
                    hint=f"{LINK_HINT}, then build again")
            target = dest / file.relative_to(module)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)


def layers_for_build(spec: StackSpec, plat: str, layers: list[LayerSpec]) -> list[LayerSpec]:
    """The layers that can be built on ``plat`` (their ``platforms`` include it)."""
    return [layer for layer in layers if plat in layer.platforms]

