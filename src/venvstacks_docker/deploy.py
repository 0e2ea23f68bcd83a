"""Deploy published layer archives: unpack them side by side and run ``postinstall.py``.

This is the venvstacks deployment protocol: unpack every layer archive of a manifest
into one folder (giving peer layer folders), then run each layer's ``postinstall.py``
(runtimes first, then frameworks, then applications) with the base Python, from the
layer folder.  Each archive's size and SHA-256 are checked against the manifest
before it is unpacked.  Deployment is all-or-nothing: if any step fails, the layer
folders created by this call are removed again.

Each layer goes through :func:`venvstacks_docker.extract.safe_extract`: it is unpacked
into a fresh ``.<layer>.unpacking-<hex>`` folder in the target and renamed into place
(never over an existing path) once complete, and members that could write outside the
layer or replace a file deploy did not create (another layer's, or the user's) are
refused with ``VerifyError`` before anything of that layer becomes visible.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from venvstacks_docker import _run
from venvstacks_docker.errors import DeployError, FilesystemError, SpecError, VerifyError
from venvstacks_docker.extract import safe_extract
from venvstacks_docker.metadata import LAYER_CONFIG, LAYER_KINDS, METADATA_DIR, envelope, sha256_file
from venvstacks_docker.oslayout import layer_python
from venvstacks_docker.verify import find_manifests


@dataclass(frozen=True, kw_only=True)
class DeployedLayer:
    """One layer unpacked by :func:`deploy`."""

    kind: str  # "runtimes" | "frameworks" | "applications"
    layer_name: str
    install_target: str
    path: Path


@dataclass(frozen=True, kw_only=True)
class DeployedApp:
    """An application layer :func:`deploy` unpacked, and how to run it."""

    layer_name: str
    install_target: str
    launch_module: str
    python: Path  # the app layer's own interpreter: <target>/app-x/bin/python (Scripts/python.exe on Windows)


@dataclass(frozen=True, kw_only=True)
class DeployResult:
    """What :func:`deploy` did."""

    target: Path
    manifest: Path
    layers: tuple[DeployedLayer, ...]
    applications: tuple[DeployedApp, ...]

    def as_dict(self) -> dict[str, Any]:
        """The ``deploy --json`` output (envelope ``venvstacks-docker/deploy``)."""
        return envelope("deploy", {
            "target": os.fspath(self.target),
            "manifest": os.fspath(self.manifest),
            "layers": [
                {
                    "kind": layer.kind,
                    "layer_name": layer.layer_name,
                    "install_target": layer.install_target,
                    "path": os.fspath(layer.path),
                }
                for layer in self.layers
            ],
            "applications": [
                {
                    "layer_name": app.layer_name,
                    "install_target": app.install_target,
                    "launch_module": app.launch_module,
                    "python": os.fspath(app.python),
                }
                for app in self.applications
            ],
        })

    def render_text(self) -> str:
        """The human-readable summary ``deploy`` prints."""
        lines = [f"deployed {len(self.layers)} layer(s) into {self.target}"]
        lines += [f"  {layer.kind[:-1]:<11} {layer.install_target}" for layer in self.layers]
        for app in self.applications:
            lines.append(f"  run {app.install_target}: {app.python} -m {app.launch_module}")
        return "\n".join(lines) + "\n"


def _select_manifest(out: Path, manifest: Path | None) -> Path:
    if manifest is not None:
        manifest = Path(manifest)
        for candidate in (manifest, out / METADATA_DIR / manifest.name):
            if candidate.is_file():
                return candidate
        raise SpecError(f"manifest {manifest} not found (also looked in {out / METADATA_DIR})")
    found = find_manifests(out)
    if not found:
        raise SpecError(
            f"no {METADATA_DIR} metadata in {out}, did you mean the publish output folder?",
            hint=f"deploy expects {out}/{METADATA_DIR}/venvstacks.json next to the archives",
        )
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise SpecError(
            f"{out} has several manifests ({names}); choose one",
            hint="pass the manifest to deploy, e.g. --manifest " + found[0].name,
        )
    return found[0]


def _load_layers(manifest: Path) -> list[tuple[str, dict[str, Any]]]:
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise VerifyError(f"cannot read manifest {manifest}: {exc}") from exc
    layers = data.get("layers") if isinstance(data, dict) else None
    if not isinstance(layers, dict):
        raise VerifyError(f"manifest {manifest} has no 'layers' table")
    result: list[tuple[str, dict[str, Any]]] = []
    for kind in LAYER_KINDS:
        entries = layers.get(kind, [])
        if not isinstance(entries, list):
            raise VerifyError(f"manifest {manifest}: 'layers.{kind}' is not a list")
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("install_target"), str):
                raise VerifyError(f"manifest {manifest}: a {kind} entry has no install_target")
            if "archive_name" not in entry:
                raise SpecError(
                    f"manifest {manifest} has no archive names: this looks like "
                    "local-export output, which is already deployed",
                    hint="deploy the publish output folder (the one with the archives)",
                )
            name = entry["archive_name"]
            target = entry["install_target"]
            # checks of the manifest's strings as they are (Path would normalise them)
            if not isinstance(name, str) or os.path.basename(name) != name or name in ("", ".", ".."):  # noqa: PTH119
                raise VerifyError(f"manifest {manifest}: archive_name {name!r} is not a file name")
            if os.path.basename(target) != target or target in ("", ".", ".."):  # noqa: PTH119
                raise VerifyError(
                    f"manifest {manifest}: install_target {target!r} is not a folder name"
                )
            result.append((kind, entry))
    if not result:
        raise SpecError(f"manifest {manifest} lists no layers")
    return result


def _check_archive(out: Path, entry: dict[str, Any]) -> Path:
    path: Path = out / entry["archive_name"]
    if not path.is_file():
        raise VerifyError(f"archive {entry['archive_name']} is missing from {out}")
    size = path.stat().st_size
    expected_size = entry.get("archive_size")
    if expected_size is not None and size != expected_size:
        raise VerifyError(
            f"archive {path.name} has {size} bytes, the manifest says {expected_size}",
            hint="the download is incomplete or the folder mixes different publishes",
        )
    hashes = entry.get("archive_hashes")
    expected_sha = hashes.get("sha256") if isinstance(hashes, dict) else None
    if expected_sha is not None:
        actual = sha256_file(path)
        if actual != str(expected_sha).lower():
            raise VerifyError(
                f"archive {path.name} has sha256 {actual}, the manifest says {expected_sha}"
            )
    return path


def _layer_config(layer_dir: Path) -> dict[str, Any]:
    path = layer_dir / LAYER_CONFIG
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise VerifyError(f"cannot read {path}: {exc}") from exc
    return data if isinstance(data, dict) else {}


def _runtime_python(target: Path, runtime: str, for_layer: str) -> Path:
    runtime_dir = target / runtime
    if not runtime_dir.is_dir():
        raise DeployError(
            f"layer {for_layer} needs runtime {runtime}, which is neither in this "
            f"manifest nor already in {target}",
            hint="deploy the runtime too, or pass the Python to run postinstall.py with",
        )
    # where the layer says, else where a Windows or POSIX runtime keeps it (the layers'
    # target OS, not this machine's, decides the layout)
    python = layer_python(runtime_dir, _layer_config(runtime_dir), runtime=True)
    if not python.exists():
        raise VerifyError(f"runtime {runtime} has no interpreter at {python}")
    return python


def deploy(
    out: Path,
    target: Path,
    *,
    python: str | None = None,
    manifest: Path | None = None,
) -> DeployResult:
    """Unpack every layer of the manifest in ``out`` into ``target`` and post-install it.

    ``python`` (default: each layer's runtime interpreter) runs the ``postinstall.py``
    scripts; ``manifest`` picks one of several ``venvstacks-<plat>.json`` files.
    """
    out = Path(out)
    target = Path(target)
    if not out.is_dir():
        raise SpecError(f"{out} does not exist or is not a folder")
    manifest_path = _select_manifest(out, manifest)
    layers = _load_layers(manifest_path)

    clashes = [e["install_target"] for _, e in layers if os.path.lexists(target / e["install_target"])]
    if clashes:
        raise DeployError(
            f"{target} already contains {', '.join(clashes)}",
            hint="deploy into an empty folder, or remove those layer folders first",
        )
    seen: set[str] = set()
    for _, entry in layers:
        if entry["install_target"] in seen:
            raise VerifyError(
                f"manifest {manifest_path} lists {entry['install_target']} more than once"
            )
        seen.add(entry["install_target"])
    archives = [(kind, entry, _check_archive(out, entry)) for kind, entry in layers]

    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FilesystemError(f"cannot create {target}: {exc.strerror or exc}") from exc
    target = target.resolve()

    created: list[Path] = []
    deployed: list[DeployedLayer] = []
    try:
        for kind, entry, archive in archives:
            # unpacked into a staging folder and renamed into place, never over an
            # existing path; an archive whose top folder is not the manifest's
            # install_target is refused before anything is written
            layer_dir = safe_extract(archive, target, top=entry["install_target"])
            created.append(layer_dir)
            deployed.append(
                DeployedLayer(
                    kind=kind,
                    layer_name=str(entry.get("layer_name", entry["install_target"])),
                    install_target=entry["install_target"],
                    path=layer_dir,
                )
            )
        for layer, (_, entry, _) in zip(deployed, archives, strict=True):
            _postinstall(layer, entry, target, python)
    except BaseException:
        for path in reversed(created):
            shutil.rmtree(path, ignore_errors=True)
        raise

    return DeployResult(
        target=target, manifest=manifest_path, layers=tuple(deployed),
        applications=_applications(deployed, [entry for _, entry, _ in archives]),
    )


def _postinstall(layer: DeployedLayer, entry: dict[str, Any], target: Path, python: str | None) -> None:
    """Run the layer's ``postinstall.py`` from the layer folder."""
    script = layer.path / "postinstall.py"
    if not script.is_file():
        raise VerifyError(f"layer {layer.install_target} has no postinstall.py")
    if python is not None:
        interpreter: str | Path = python
    else:
        runtime = entry.get("runtime_layer") or (
            layer.install_target if layer.kind == "runtimes" else None
        )
        if runtime is None:
            raise VerifyError(f"manifest entry for {layer.install_target} has no runtime_layer")
        interpreter = _runtime_python(target, runtime, layer.install_target)
    _run.run(
        [interpreter, "-X", "utf8", "-I", script],
        cwd=layer.path,
        what=f"postinstall.py of layer {layer.install_target}",
    )


def _applications(deployed: list[DeployedLayer], entries: list[dict[str, Any]]) -> tuple[DeployedApp, ...]:
    apps = []
    for layer, entry in zip(deployed, entries, strict=True):
        if layer.kind != "applications":
            continue
        config = _layer_config(layer.path)
        launch = entry.get("app_launch_module") or config.get("launch_module") or ""
        app_python = layer_python(layer.path, config, runtime=False)
        apps.append(
            DeployedApp(
                layer_name=layer.layer_name,
                install_target=layer.install_target,
                launch_module=str(launch),
                python=app_python,
            )
        )
    return tuple(apps)
