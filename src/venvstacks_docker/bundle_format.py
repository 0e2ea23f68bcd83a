"""The bundle file: a deterministic tar with a manifest, and reading it back safely.

A bundle is an uncompressed tar (wheels, runtime archives and image layers are
compressed already) whose every member sits below one top folder, ``venvstacks-bundle/``:

- ``bundle.json``: the manifest (wire format ``venvstacks-docker/bundle``, see
  :func:`manifest`): every other member with its size, sha256, role, and the layers and
  platforms that need it; the stack's layers and lock hashes; the builder images; the
  tool version; for an incremental bundle, the sha256 of the manifest it continues;
- ``bundle.json.sha256``: the manifest's own sha256, so an edited manifest is noticed
  (integrity, not authenticity: anyone who can edit both can forge a bundle);
- ``stack/``, ``wheels/``, ``runtimes/``, ``images/``, ``tool/``.

Members are written by the one deterministic tar writer, sorted by name, with one
mtime, owner and mode each, so two bundles of the same inputs are byte-identical.
Reading refuses anything but plain files and folders below the top folder, names that
climb out of it, members the manifest does not list (or lists with other bytes), and
missing members.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final

from venvstacks_docker import _tar
from venvstacks_docker.errors import BundleError
from venvstacks_docker.metadata import dumps, envelope, sha256_file

TOP: Final = "venvstacks-bundle"
MANIFEST: Final = "bundle.json"
CHECKSUM: Final = "bundle.json.sha256"
KIND: Final = "bundle"
#: Version of the manifest's shape; readers refuse other versions.
FORMAT_VERSION: Final = 1
#: The mtime of every member: 1980-01-01, as in wheels.
MTIME: Final = 315532800
_CHUNK: Final = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One file of a bundle, as the manifest lists it."""

    name: str
    size: int
    sha256: str
    role: str
    layers: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ()
    in_base: bool = False
    """Listed, but carried by the bundle this one continues (``--since``)."""

    def to_dict(self) -> dict[str, Any]:
        """The manifest's form of the entry."""
        data: dict[str, Any] = {"name": self.name, "size": self.size, "sha256": self.sha256, "role": self.role}
        if self.layers:
            data["layers"] = list(self.layers)
        if self.platforms:
            data["platforms"] = list(self.platforms)
        if self.in_base:
            data["in"] = "base"
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Entry:
        """An entry of a manifest (already checked by :func:`check_manifest`)."""
        return cls(name=data["name"], size=int(data["size"]), sha256=data["sha256"], role=data["role"],
                   layers=tuple(data.get("layers", ())), platforms=tuple(data.get("platforms", ())),
                   in_base=data.get("in") == "base")


def manifest(body: dict[str, Any], entries: Iterable[Entry]) -> dict[str, Any]:
    """The manifest: ``body`` (tool, stack, platforms, images, since) plus the file list."""
    files = sorted((e.to_dict() for e in entries), key=lambda e: e["name"])
    return envelope(KIND, {**body, "format_version": FORMAT_VERSION, "files": files})


def manifest_bytes(data: dict[str, Any]) -> bytes:
    """The manifest as stored: sorted keys and fixed indentation, so equal manifests are equal bytes."""
    return dumps(data).encode("utf-8")


# --- writing -------------------------------------------------------------------------


def write_bundle(out: Path, data: dict[str, Any], sources: dict[str, Path]) -> str:
    """Write the bundle ``out`` atomically: the manifest ``data`` and each carried file.

    :param sources: member name (below the top folder) -> file with its bytes; every
        entry of the manifest not marked ``in: base`` must have one.
    :returns: the manifest's sha256.
    """
    raw = manifest_bytes(data)
    digest = hashlib.sha256(raw).hexdigest()
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.partial")
    scratch = tmp.with_suffix(".manifest")
    try:
        scratch.mkdir()
        (scratch / MANIFEST).write_bytes(raw)
        (scratch / CHECKSUM).write_text(f"{digest}  {MANIFEST}\n", encoding="ascii")
        files = {MANIFEST: scratch / MANIFEST, CHECKSUM: scratch / CHECKSUM, **sources}
        with tmp.open("wb") as fh:
            _tar.write_tar(fh, _members(files), mtime=MTIME, owner_name="", error=BundleError)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
        shutil.rmtree(scratch, ignore_errors=True)
    return digest


def _members(files: dict[str, Path]) -> Iterator[_tar.Member]:
    folders = {str(parent) for name in files for parent in PurePosixPath(name).parents if str(parent) != "."}
    names = sorted([*(f"{d}/" for d in folders), *files])
    yield _tar.Member(TOP, TOP, "dir", 0o755)
    for name in names:
        if name.endswith("/"):
            yield _tar.Member(f"{TOP}/{name[:-1]}", name, "dir", 0o755)
            continue
        path = files[name]
        yield _tar.Member(f"{TOP}/{name}", str(path), "file", 0o644, size=path.stat().st_size)


# --- reading --------------------------------------------------------------------------


def check_manifest(raw: bytes, checksum: bytes | None, where: str) -> dict[str, Any]:
    """Parse and check a manifest against its recorded sha256.

    :raises BundleError: when it is not a bundle manifest of this format, or was edited.
    """
    if checksum is None:
        raise BundleError(f"{where} has no {CHECKSUM}", hint="it is not a complete bundle: make it again")
    if checksum.split(b" ", 1)[0].strip().decode("ascii", "replace") != hashlib.sha256(raw).hexdigest():
        raise BundleError(f"the manifest of {where} was edited after the bundle was made "
                          f"(its sha256 differs from {CHECKSUM})",
                          hint="use the bundle as it was written, or make it again on the connected host")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BundleError(f"the manifest of {where} is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != f"venvstacks-docker/{KIND}":
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise BundleError(f"{where} is not a venvstacks-docker bundle (its manifest's schema is {found!r})")
    if data.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{where} has bundle format {data.get('format_version')!r}; this tool reads "
                          f"format {FORMAT_VERSION}", hint="make the bundle with the same tool version")
    for entry in data.get("files", []):
        _check_name(str(entry.get("name", "")), where)
    return data


def _check_name(name: str, where: str) -> str:
    parts = PurePosixPath(name).parts
    if not name or name.startswith("/") or ".." in parts or "\\" in name or any(p in ("", ".") for p in parts):
        raise BundleError(f"{where}: member {name!r} would escape the bundle's folder", hint="do not use this bundle")
    return name


@dataclass
class TarContents:
    """What a pass over a bundle tar found: each file's size and sha256, and the manifest."""

    files: dict[str, tuple[int, str]]
    manifest_raw: bytes | None = None
    checksum_raw: bytes | None = None


def scan_tar(path: Path) -> TarContents:
    """Read every member of the bundle tar ``path`` once, checking its kind and name.

    :raises BundleError: for a missing, truncated or unreadable file, a member outside the
        top folder, or anything but plain files and folders.
    """
    found = TarContents(files={})
    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                _scan_member(tar, member, found, path)
    except FileNotFoundError:
        raise BundleError(f"bundle {path} does not exist") from None
    except (tarfile.TarError, EOFError) as exc:
        raise BundleError(f"bundle {path} is truncated or not a tar file ({exc})",
                          hint="copy the bundle again (compare its sha256 with the connected host's)") from None
    return found


def _scan_member(tar: tarfile.TarFile, member: tarfile.TarInfo, found: TarContents, path: Path) -> None:
    name = member.name.rstrip("/")
    if name == TOP and member.isdir():
        return
    if not name.startswith(f"{TOP}/"):
        raise BundleError(f"{path}: member {member.name!r} is outside the bundle's folder {TOP}/",
                          hint="do not use this bundle")
    rel = _check_name(name[len(TOP) + 1:], str(path))
    if member.isdir():
        return
    if not member.isreg():
        raise BundleError(f"{path}: member {member.name!r} is not a plain file (links and devices are refused)",
                          hint="do not use this bundle")
    if rel in found.files:
        raise BundleError(f"{path}: member {rel!r} appears twice", hint="do not use this bundle")
    handle = tar.extractfile(member)
    assert handle is not None  # a regular file
    digest, size = hashlib.sha256(), 0
    keep = rel in (MANIFEST, CHECKSUM)
    kept = bytearray()
    while chunk := handle.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
        if keep:
            kept += chunk
    if size != member.size:
        raise EOFError(f"{rel} ends early")
    found.files[rel] = (size, digest.hexdigest())
    if rel == MANIFEST:
        found.manifest_raw = bytes(kept)
    elif rel == CHECKSUM:
        found.checksum_raw = bytes(kept)


def compare(data: dict[str, Any], files: dict[str, tuple[int, str]], where: str, *,
            with_base: bool = False) -> list[str]:
    """Every way ``files`` (name -> size, sha256) differ from the manifest ``data``.

    Entries marked ``in: base`` must be absent, unless ``with_base`` (a bundle unpacked
    together with the one it continues).
    """
    problems = []
    listed = {e["name"]: Entry.from_dict(e) for e in data.get("files", [])}
    for name, entry in sorted(listed.items()):
        if entry.in_base and not with_base:
            if name in files:
                problems.append(f"{name}: carried, though the manifest says the base bundle has it")
            continue
        got = files.get(name)
        if got is None:
            problems.append(f"{name}: missing")
        elif got != (entry.size, entry.sha256):
            problems.append(f"{name}: {got[0]} bytes with sha256 {got[1][:16]}…, the manifest says "
                            f"{entry.size} bytes with sha256 {entry.sha256[:16]}…")
    extra = sorted(set(files) - set(listed) - {MANIFEST, CHECKSUM})
    problems += [f"{name}: not listed in the manifest" for name in extra]
    return problems


def folder_files(root: Path) -> dict[str, tuple[int, str]]:
    """Name -> (size, sha256) of every file below ``root`` (an unpacked bundle).

    :raises BundleError: for a symbolic link or special file in it.
    """
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise BundleError(f"{path} is not a plain file or folder", hint="unpack the bundle again")
        if path.is_file():
            files[path.relative_to(root).as_posix()] = (path.stat().st_size, sha256_file(path))
    return files


__all__ = ["CHECKSUM", "FORMAT_VERSION", "KIND", "MANIFEST", "MTIME", "TOP", "Entry", "TarContents",
           "check_manifest", "compare", "folder_files", "manifest", "manifest_bytes", "scan_tar", "write_bundle"]
