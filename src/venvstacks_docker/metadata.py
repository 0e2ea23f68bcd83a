"""The one wire format: file and output shapes, their constants, one JSON writer.

Everything the tool writes as JSON goes through here:

- the venvstacks metadata it shares with venvstacks 0.8 (lock metadata, published and
  exported per-layer metadata, combined manifests, the deployed layer config), described
  by the ``TypedDict`` shapes below, plus our own ``venvstacks_docker`` block;
- the ``--json`` output of every command: one versioned envelope (:func:`envelope`),
  where a layer is always named ``layer_name``;
- one serialisation: sorted keys, 2-space indent, LF, trailing newline (:func:`dumps`),
  or compact for hashing (:func:`canonical`), written atomically (:func:`write_json`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final, TypedDict

#: Version of the extra metadata venvstacks-docker adds (``venvstacks_docker`` keys).
METADATA_VERSION: Final = 1
#: Version of the ``--json`` output envelope (:func:`envelope`).
OUTPUT_VERSION: Final = 1
#: Where publications keep their metadata (venvstacks' layout).
METADATA_DIR: Final = "__venvstacks__"
LAYER_METADATA_DIR: Final = "env_metadata"
#: Manifest groups, in deployment order.
LAYER_KINDS: Final = ("runtimes", "frameworks", "applications")
#: Per-layer deployment config, relative to a layer folder (venvstacks' section 8).
LAYER_CONFIG: Final = Path("share", "venv", "metadata", "venvstacks_layer.json")


class LockMeta(TypedDict, total=False):
    """``requirements/<layer>/pylock.<layer>.meta.json`` (venvstacks 0.8, plus our keys)."""

    lock_input_hash: str
    other_inputs_hash: str
    requirements_hash: str
    version_inputs_hash: str
    lock_version: int
    locked_at: str
    python_implementation: str
    runtime_archive: dict[str, str]


class LayerMetadata(TypedDict, total=False):
    """One layer in a manifest or ``env_metadata/<layer>.json`` (venvstacks' keys)."""

    layer_name: str
    install_target: str
    requirements_hash: str
    lock_version: int
    locked_at: str
    runtime_layer: str
    python_implementation: str
    bound_to_implementation: bool
    required_layers: list[str]
    app_launch_module: str
    app_launch_module_hash: str
    app_support_modules: list[dict[str, str]]
    archive_build: int
    archive_name: str
    archive_size: int
    archive_hashes: dict[str, str]
    target_platform: str
    venvstacks_docker: dict[str, Any]


class Manifest(TypedDict, total=False):
    """``__venvstacks__/venvstacks[-<platform>].json``."""

    layers: dict[str, list[LayerMetadata]]
    venvstacks_docker: dict[str, Any]


class LayerConfig(TypedDict, total=False):
    """``share/venv/metadata/venvstacks_layer.json`` inside a layer."""

    python: str
    py_version: str
    base_python: str
    site_dir: str
    pylib_dirs: list[str]
    dynlib_dirs: list[str]
    launch_module: str


def envelope(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """The ``--json`` output of a command: ``body`` with its schema name and version.

    ``{"schema": "venvstacks-docker/<kind>", "schema_version": 1, ...}``: consumers
    check both before reading the rest.  Keys of ``body`` that venvstacks defines
    (``spec_name``, ``runtimes``, ...) keep venvstacks' meaning.
    """
    return {"schema": f"venvstacks-docker/{kind}", "schema_version": OUTPUT_VERSION, **body}


def dumps(data: Any) -> str:
    """The one pretty serialisation: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def canonical(data: Any) -> bytes:
    """Compact, sorted JSON bytes: what hashes and labels are computed over."""
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode("utf-8")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        tmp.chmod(0o644)
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` to ``path`` as canonical JSON, atomically."""
    write_text_atomic(path, dumps(data))


def write_json_if_changed(path: Path, data: Any) -> bool:
    """Write only when the content differs, so unchanged runs rewrite nothing."""
    text = dumps(data)
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    write_text_atomic(path, text)
    return True


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``, ``None`` when the file is missing or not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def hash_strings(items: list[str]) -> str:
    """``sha256:<hex>`` over a list of strings (order-insensitive: they are sorted)."""
    digest = hashlib.sha256()
    for item in sorted(items):
        digest.update(item.encode("utf-8") + b"\n")
    return "sha256:" + digest.hexdigest()


def hash_sequence(items: Iterable[str]) -> str:
    """``sha256:<hex>`` over ``items`` concatenated in the order given, with no separator.

    venvstacks 0.8 computes its lock validity hashes this way; lock metadata written by
    either tool must verify with the other, so the formula is theirs exactly.
    """
    digest = hashlib.sha256()
    for item in items:
        digest.update(item.encode("utf-8"))
    return "sha256:" + digest.hexdigest()


def sha256_file(path: Path) -> str:
    """SHA-256 (hex) of a file, read in 1 MiB chunks: the one file hasher of the tool."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
