"""Helpers for the diff tests (no tests here): trees, archives made by the project's own
writer, and a rewriter that injects one kind of nondeterminism into a copy of a layer."""

from __future__ import annotations

import io
import json
import lzma
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from venvstacks_docker import archive, metadata

EPOCH = 1790812800

Transform = Callable[[tarfile.TarInfo, bytes | None], tuple[tarfile.TarInfo, bytes | None]]


def make_tree(root: Path, files: dict[str, bytes | str], executable: tuple[str, ...] = ()) -> Path:
    """A folder with ``files`` (relative path -> content)."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        path.chmod(0o755 if rel in executable else 0o644)
    return root


def layer_files(n: int = 30) -> dict[str, bytes | str]:
    """A small layer: a package with ``n`` modules, a dist-info and a script."""
    files: dict[str, bytes | str] = {
        "bin/tool": "#!/bin/sh\nexec python -m pkg \"$@\"\n",
        "lib/python3.11/site-packages/pkg-1.0.dist-info/METADATA": "Name: pkg\nVersion: 1.0\n",
        "lib/python3.11/site-packages/pkg-1.0.dist-info/RECORD":
            "pkg/__init__.py,sha256=abc,10\npkg/mod0.py,sha256=def,20\npkg-1.0.dist-info/RECORD,,\n",
        "lib/python3.11/site-packages/pkg/__init__.py": "VERSION = '1.0'\n",
    }
    for i in range(n):
        files[f"lib/python3.11/site-packages/pkg/mod{i}.py"] = f"def f{i}():\n    return {i}\n" * 5
    return files


def write_layer(tree: Path, path: Path, name: str, **kwargs: Any) -> Path:
    """The project's own layer archive writer."""
    archive.write_archive(tree, path, root_name=name, mtime=kwargs.pop("mtime", EPOCH), **kwargs)
    return path


def read_tar(path: Path) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    with tarfile.open(path) as tar:
        return [(info, tar.extractfile(info).read() if info.isreg() else None)  # type: ignore[union-attr]
                for info in tar]


def rewrite(src: Path, dst: Path, transform: Transform | None = None,
            order: Callable[[list[Any]], list[Any]] | None = None,
            filters: list[dict[str, int]] | None = None, chunk_size: int = archive.XZ_CHUNK_SIZE,
            extra: list[tuple[tarfile.TarInfo, bytes | None]] | None = None) -> Path:
    """Copy a ``.tar.xz`` layer, changing members, their order or the compression.

    Unchanged, the copy has the same bytes as the source (the same tar headers, the same
    chunked xz streams as ``write_archive``): the injected change is the only one.
    """
    items = read_tar(src)
    if transform is not None:
        items = [transform(info, data) for info, data in items]
    items += extra or []
    if order is not None:
        items = order(items)
    buf = io.BytesIO()
    with tarfile.TarFile(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8",
                         errors="surrogateescape") as tar:
        for info, data in items:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    stream = buf.getvalue()
    with dst.open("wb") as out:
        for start in range(0, len(stream), chunk_size):
            out.write(lzma.compress(stream[start:start + chunk_size], format=lzma.FORMAT_XZ,
                                    check=lzma.CHECK_CRC64, filters=filters or archive.xz_filters()))
    return dst


def change(name_suffix: str, **fields: Any) -> Transform:
    """A transform that sets TarInfo ``fields`` (or ``data=``) on the member ending with ``name_suffix``."""
    def transform(info: tarfile.TarInfo, data: bytes | None) -> tuple[tarfile.TarInfo, bytes | None]:
        if info.name.endswith(name_suffix):
            if "data" in fields:
                data = fields["data"]
                info.size = len(data or b"")
            for key, value in fields.items():
                if key != "data":
                    setattr(info, key, value)
        return info, data
    return transform


def publish_like(out: Path, layers: dict[str, Path], *, meta: dict[str, dict[str, Any]] | None = None,
                 names: dict[str, str] | None = None) -> Path:
    """An output folder like ``publish`` writes: archives, per-layer metadata and the manifest."""
    entries = []
    for layer, tree in layers.items():
        archive_name = (names or {}).get(layer, f"{layer}.tar.xz")
        result = archive.write_archive(tree, out / archive_name, root_name=layer, mtime=EPOCH)
        entry: dict[str, Any] = {
            "layer_name": layer, "install_target": layer, "archive_name": archive_name,
            "archive_size": result.size, "archive_hashes": {"sha256": result.sha256},
            "archive_build": 1, "lock_version": 1, "locked_at": "2026-10-01T00:00:00+00:00",
            "target_platform": "linux_x86_64",
            "venvstacks_docker": {"metadata_version": 1, "tool_version": "0.1.0", "uv_version": "0.13.9",
                                  "source_date_epoch": EPOCH, "source_date_epoch_from": "locked_at",
                                  "compression": archive.xz_description(), "archive_format": "tar.xz",
                                  "archive_tar_sha256": result.tar_sha256, "inputs_hash": "sha256:1"},
        }
        for key, value in (meta or {}).get(layer, {}).items():
            if key.startswith("venvstacks_docker."):
                entry["venvstacks_docker"][key.split(".", 1)[1]] = value
            else:
                entry[key] = value
        metadata.write_json(out / "__venvstacks__" / "env_metadata" / f"{layer}.json", entry)
        entries.append(entry)
    manifest = {"layers": {"applications": [], "frameworks": entries, "runtimes": []},
                "venvstacks_docker": {"metadata_version": 1, "spec_name": "venvstacks.toml",
                                      "target_platform": "linux_x86_64", "tool_version": "0.1.0"}}
    metadata.write_json(out / "__venvstacks__" / "venvstacks.json", manifest)
    return out


def load_json(text: str) -> Any:
    return json.loads(text)
