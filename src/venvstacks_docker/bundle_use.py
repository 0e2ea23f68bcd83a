"""Using a bundle on the offline host: verify it, unpack it, and check it fits a build.

Nothing here needs the network or the container engine (loading the builder image is
the container executor's part, :mod:`venvstacks_docker.host.bundle_image`).
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from venvstacks_docker import __version__
from venvstacks_docker.bundle_format import (
    CHECKSUM,
    MANIFEST,
    TOP,
    Entry,
    check_manifest,
    compare,
    folder_files,
    scan_tar,
)
from venvstacks_docker.bundle_plan import TOOL_DIR
from venvstacks_docker.errors import BundleError
from venvstacks_docker.extract import extract_tree
from venvstacks_docker.locking import cache_lock

_SHOWN = 8


@dataclass(frozen=True)
class Checked:
    """A bundle (tar or unpacked folder) whose every member matched its manifest."""

    path: Path
    manifest: dict[str, Any]
    manifest_sha256: str

    @property
    def since(self) -> str | None:
        """The manifest sha256 of the bundle this one continues (``--since``), if any."""
        since = self.manifest.get("since") or {}
        return str(since["manifest_sha256"]) if since.get("manifest_sha256") else None

    @property
    def entries(self) -> list[Entry]:
        """Every file the manifest lists."""
        return [Entry.from_dict(e) for e in self.manifest.get("files", [])]


def _refuse(where: Path, problems: list[str]) -> BundleError:
    shown = "\n".join(f"  {p}" for p in problems[:_SHOWN])
    more = f"\n  … and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
    return BundleError(f"bundle {where} does not match its manifest:\n{shown}{more}",
                       hint="copy the bundle again from the connected host (or make it again there)")


def verify(path: Path, *, with_base: bool = False) -> Checked:
    """Check every member of the bundle ``path`` (a tar, or a folder it was unpacked into).

    :param with_base: for a folder: files a ``--since`` bundle leaves to its base must be
        present too (they are, once the pair is unpacked together).
    :raises BundleError: naming every mismatch, missing, extra or unsafe member, an
        edited manifest or a truncated file.
    """
    if path.is_dir():
        raw = _read_optional(path / MANIFEST)
        if raw is None:
            raise BundleError(f"{path} holds no {MANIFEST}", hint="give a bundle file or a folder unpacked from one")
        data = check_manifest(raw, _read_optional(path / CHECKSUM), str(path))
        problems = compare(data, folder_files(path), str(path), with_base=True)
    else:
        found = scan_tar(path)
        if found.manifest_raw is None:
            raise BundleError(f"bundle {path} holds no {MANIFEST}", hint="it is not a complete bundle: make it again")
        raw = found.manifest_raw
        data = check_manifest(raw, found.checksum_raw, str(path))
        problems = compare(data, found.files, str(path), with_base=with_base)
    if problems:
        raise _refuse(path, problems)
    return Checked(path, data, hashlib.sha256(raw).hexdigest())


def _read_optional(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _chain(checked: list[Checked]) -> None:
    """Each bundle after the first must continue the one before it."""
    if checked[0].since:
        raise BundleError(f"{checked[0].path} holds only what is new since the bundle with manifest sha256 "
                          f"{checked[0].since[:16]}…",
                          hint=f"unpack that bundle together with it: venvstacks-docker bundle unpack OLD "
                          f"{checked[0].path.name} -o DIR")
    for before, after in itertools.pairwise(checked):
        if after.since != before.manifest_sha256:
            raise BundleError(f"{after.path} does not continue {before.path} (it was made --since the bundle with "
                              f"manifest sha256 {(after.since or 'none')[:16]}…, and {before.path.name} has "
                              f"{before.manifest_sha256[:16]}…)",
                              hint="give the bundles in the order they were made, each after the one it continues")


def unpack(bundles: list[Path], dest: Path, *, checked: list[Checked] | None = None) -> Checked:
    """Unpack ``bundles`` (a full bundle, then the ``--since`` bundles that continue it)
    into the new or empty folder ``dest``: all or nothing, checked against the last
    manifest before ``dest`` appears.

    :param checked: the bundles, already verified (each is read once, not twice).
    :raises BundleError: for a bundle that fails :func:`verify`, a broken chain, or a
        ``dest`` that holds something.
    """
    dest = dest.absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BundleError(f"{dest} already exists and is not an empty folder",
                          hint="unpack into a new folder (nothing is overwritten)")
    checked = checked or [verify(b) for b in bundles]
    _chain(checked)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = dest.parent / f".{dest.name}.unpacking-{uuid.uuid4().hex[:8]}"
    try:
        final = work / "all"
        for index, bundle in enumerate(checked):
            part = work / f"part{index}"
            extract_tree(bundle.path, part, top=TOP, error=BundleError)
            _merge(part, final) if index else part.rename(final)
        last = checked[-1]
        listed = {e.name for e in last.entries} | {MANIFEST, CHECKSUM}
        for path in sorted(final.rglob("*"), reverse=True):  # what an earlier bundle had and the last dropped
            rel = path.relative_to(final).as_posix()
            if path.is_file() and rel not in listed:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        problems = compare(last.manifest, folder_files(final), str(dest), with_base=True)
        if problems:
            raise _refuse(dest, problems)
        if dest.exists():
            dest.rmdir()
        final.rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Checked(dest, last.manifest, last.manifest_sha256)


def _merge(part: Path, final: Path) -> None:
    for path in sorted(part.rglob("*")):
        if path.is_file():
            target = final / path.relative_to(part)
            target.parent.mkdir(parents=True, exist_ok=True)
            path.replace(target)


def open_bundle(path: Path, cache: Path) -> Checked:
    """The unpacked, verified bundle ``path`` names, for ``--from-bundle``.

    A folder is checked in place; a bundle file is checked, then unpacked once into
    ``cache/bundles/<manifest sha256>`` (reused, checked again, by later runs).

    :raises BundleError: see :func:`verify` and :func:`unpack`.
    """
    if path.is_dir():
        return verify(path, with_base=True)
    checked = verify(path)
    if checked.since:
        _chain([checked])
    folder = cache / "bundles" / checked.manifest_sha256[:32]
    with cache_lock(f"bundle-{checked.manifest_sha256[:16]}"):
        if folder.is_dir():
            try:
                return verify(folder, with_base=True)
            except BundleError:
                shutil.rmtree(folder)  # a damaged copy of ours: unpack it again
        return unpack([path], folder, checked=[checked])


def check_fits(checked: Checked, *, platform: str, layers: dict[str, str | None]) -> None:
    """Refuse a bundle made by another tool version, for other platforms, or from other locks.

    :param layers: the layers a build needs -> the ``requirements_hash`` of their lock.
    """
    data = checked.manifest
    made_by = str((data.get("tool") or {}).get("version", "?"))
    if made_by != __version__:
        raise BundleError(f"bundle {checked.path} was made by venvstacks-docker {made_by}; this is {__version__}",
                          hint="install the tool from the bundle: pip install --no-index --find-links "
                          f"<unpacked bundle>/{TOOL_DIR} venvstacks-docker=={made_by}")
    if platform not in data.get("platforms", []):
        raise BundleError(f"bundle {checked.path} is for {', '.join(data.get('platforms', [])) or 'no platform'}, "
                          f"not {platform}", hint=f"bundle with --platform {platform} on the connected host")
    recorded = (data.get("stack") or {}).get("layers") or {}
    for name, requirements_hash in layers.items():
        if name not in recorded:
            raise BundleError(f"bundle {checked.path} does not hold layer {name}",
                              hint="bundle every layer the build needs (check --include on the connected host)")
        if recorded[name].get("requirements_hash") != requirements_hash:
            raise BundleError(f"the lock of layer {name} differs from the one bundle {checked.path} was made from",
                              hint="bundle the current lock on the connected host, or use the bundled stack "
                              "(publish --from-bundle BUNDLE without a stack file)")


__all__ = ["Checked", "check_fits", "open_bundle", "unpack", "verify"]
