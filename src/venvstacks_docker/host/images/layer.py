"""The builder image's one new layer, made on the host the way the classic builder
would make it, then written as a deterministic tar.

A *stage* is a folder standing for the image's root.  The steps of :mod:`.recipe` fill
it (unpacking the runtime archive, copying the tool's files, making folders), and the
metadata the layer must carry (mode, owner, mtime) is kept beside it, because the host
user cannot give files to root.  Folders that already exist in the base image keep the
base's metadata, as they do in a layer the engine commits.  Whatever a ``RUN`` step
made on the host (``__pycache__`` folders, ``.pyc`` files) belongs to root and keeps the
mode it was created with, under umask ``022`` as in a build container.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final, Literal

from venvstacks_docker import _tar
from venvstacks_docker.errors import ContainerError
from venvstacks_docker.host.images.common import FIXED_MTIME
from venvstacks_docker.host.images.recipe import CannotAssemble
from venvstacks_docker.metadata import sha256_file

_XATTR_PREFIXES: Final = ("SCHILY.xattr.", "LIBARCHIVE.xattr.")
BaseKind = Literal["dir", "file", "symlink", "other"]


@dataclass(frozen=True)
class Meta:
    """What a layer member carries besides its content."""

    mode: int
    uid: int = 0
    gid: int = 0
    mtime: int = FIXED_MTIME


@dataclass(frozen=True)
class BaseEntry:
    """A path of the base image's file system."""

    kind: BaseKind
    meta: Meta


def image_rel(path: str) -> str:
    """``/opt/x/`` -> ``opt/x``; ``/`` -> ``""``."""
    return posixpath.normpath("/" + path).lstrip("/")


def member_rel(name: str) -> str:
    """A tar member name as a path relative to where it is unpacked (``""`` for ``.``).

    :raises CannotAssemble: for a name with ``..`` in it.
    """
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise CannotAssemble(f"the archive member {name!r} has `..` in its name")
    return "/".join(parts)


def index_layers(layers: Iterable[IO[bytes]]) -> dict[str, BaseEntry]:
    """The file system the base image's layers (uncompressed or compressed tars, bottom
    first) make: path -> kind and metadata, whiteouts applied."""
    index: dict[str, BaseEntry] = {}
    for fileobj in layers:
        try:
            tar = tarfile.open(fileobj=fileobj, mode="r:*")  # noqa: SIM115 - closed below
        except tarfile.TarError as exc:
            raise CannotAssemble(f"cannot read a layer of the base image ({exc})") from None
        with tar:
            for member in tar:
                _index_member(index, member)
    return index


def _index_member(index: dict[str, BaseEntry], member: tarfile.TarInfo) -> None:
    name = image_rel(member.name)
    parent, base = posixpath.split(name)
    if base == ".wh..wh..opq":
        _forget(index, parent, keep_top=True)
        return
    if base.startswith(".wh."):
        _forget(index, posixpath.join(parent, base[4:]), keep_top=False)
        return
    kind: BaseKind = ("dir" if member.isdir() else "symlink" if member.issym()
                      else "file" if member.isreg() or member.islnk() else "other")
    index[name] = BaseEntry(kind, Meta(member.mode & 0o7777, member.uid, member.gid, int(member.mtime)))


def _forget(index: dict[str, BaseEntry], top: str, *, keep_top: bool) -> None:
    prefix = top + "/" if top else ""
    for key in [k for k in index if k.startswith(prefix) or (k == top and not keep_top)]:
        del index[key]


class Stage:
    """The new layer's files under ``root`` and the metadata each will carry."""

    def __init__(self, root: Path, base: Mapping[str, BaseEntry]) -> None:
        self.root = root
        self.base = base
        self.meta: dict[str, Meta] = {}
        root.mkdir(parents=True, exist_ok=True)

    def path(self, rel: str) -> Path:
        """Where the image path ``rel`` (relative to ``/``) is staged."""
        return self.root / rel if rel else self.root

    def exists(self, rel: str) -> bool:
        """Whether ``rel`` exists in the image as built so far (base or stage)."""
        return os.path.lexists(self.path(rel)) or rel in self.base

    # ------------------------------------------------------------------ folders

    def ensure_dir(self, rel: str) -> None:
        """``mkdir -p`` as the engine does: missing folders ``0755`` and root's; folders
        of the base image join the layer unchanged."""
        current = ""
        for part in rel.split("/") if rel else []:
            current = posixpath.join(current, part)
            where = self.path(current)
            if where.is_symlink() or (where.exists() and not where.is_dir()):
                raise CannotAssemble(f"/{current} is not a folder where the Dockerfile puts files")
            if where.is_dir():
                continue
            found = self.base.get(current)
            if found is not None and found.kind != "dir":
                raise CannotAssemble(f"/{current} is a {found.kind} in the base image, not a folder")
            where.mkdir(mode=0o755)
            self.meta[current] = found.meta if found is not None else Meta(0o755)

    def _replace(self, rel: str) -> Path:
        """Make room for a new entry at ``rel`` (as extraction replaces what was there)."""
        where = self.path(rel)
        if where.is_dir() and not where.is_symlink():
            shutil.rmtree(where)
        elif os.path.lexists(where):
            where.unlink()
        for key in [k for k in self.meta if k == rel or k.startswith(rel + "/")]:
            del self.meta[key]
        return where

    def _put_dir(self, rel: str, meta: Meta) -> None:
        where = self.path(rel)
        if not (where.is_dir() and not where.is_symlink()):
            self._replace(rel)
            where.mkdir(mode=0o755)
        self.meta[rel] = meta

    # ------------------------------------------------------------------ steps

    def unpack(self, archive: Path, dest: str) -> None:
        """``ADD <archive> <dest>/``: modes, owners and mtimes come from the archive."""
        top = image_rel(dest)
        self.ensure_dir(top)
        try:
            tar = tarfile.open(archive, mode="r:*")  # noqa: SIM115 - closed below
        except (OSError, tarfile.TarError) as exc:
            raise CannotAssemble(f"cannot read {archive.name} as a tar archive ({exc})") from None
        with tar:
            for member in tar:
                self._unpack_member(tar, member, top)

    def _unpack_member(self, tar: tarfile.TarFile, member: tarfile.TarInfo, top: str) -> None:
        name = member_rel(member.name)
        if not name:
            return
        if any(key.startswith(_XATTR_PREFIXES) for key in member.pax_headers):
            raise CannotAssemble(f"{member.name} in the runtime archive has extended attributes")
        rel = posixpath.join(top, name)
        self.ensure_dir(posixpath.dirname(rel))
        meta = Meta(member.mode & 0o7777, member.uid, member.gid, int(member.mtime))
        if member.isdir():
            self._put_dir(rel, meta)
        elif member.isreg():
            if not meta.mode & stat.S_IRUSR:
                raise CannotAssemble(f"{member.name} in the runtime archive is not readable by its owner")
            where = self._replace(rel)
            source = tar.extractfile(member)
            if source is None:
                raise CannotAssemble(f"cannot read {member.name} from the runtime archive")
            with source, where.open("wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
            where.chmod(meta.mode & 0o777)
            self.meta[rel] = meta
        elif member.issym():
            self._replace(rel).symlink_to(member.linkname)
            self.meta[rel] = Meta(0o777, meta.uid, meta.gid, meta.mtime)
        else:
            raise CannotAssemble(f"{member.name} in the runtime archive is a hard link or special file")

    def copy_dir(self, source: Path, dest: str) -> None:
        """``COPY <dir>/ <dest>/``: root-owned, with the modes and mtime the build
        context tar gives them (:func:`venvstacks_docker.host.images.write_context_tar`)."""
        top = image_rel(dest)
        self.ensure_dir(top)
        for member in _tar.walk(source, order="name", error=ContainerError):
            rel = posixpath.join(top, member.name)
            if member.kind == "dir":
                self._put_dir(rel, Meta(member.mode))
            elif member.kind == "file":
                where = self._replace(rel)
                shutil.copyfile(member.path, where)
                where.chmod(member.mode)
                self.meta[rel] = Meta(member.mode)
            else:
                self._replace(rel).symlink_to(member.linkname)
                self.meta[rel] = Meta(0o777)

    def make_dirs(self, paths: Iterable[str], mode: int) -> None:
        """``mkdir -p -m MODE``: parents ``0755``; an existing folder is left alone."""
        for path in paths:
            rel = image_rel(path)
            if not rel or self.exists(rel):
                continue
            self.ensure_dir(posixpath.dirname(rel))
            self.path(rel).mkdir(mode=0o755)
            self.meta[rel] = Meta(mode)

    def workdir(self, path: str) -> None:
        """``WORKDIR``: created ``0755`` when the image lacks it."""
        rel = image_rel(path)
        if rel and not self.exists(rel):
            self.ensure_dir(rel)

    # ------------------------------------------------------------------ the layer

    def write_layer(self, out: Path) -> str:
        """Write the stage as a layer tar (sorted names, PAX, the recorded metadata);
        return its sha256 (the layer's ``diff_id``)."""
        members = _tar.walk(self.root, order="name", keep_owners=True, error=ContainerError)
        with out.open("wb") as fh:
            tar = tarfile.TarFile(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8",
                                  errors="surrogateescape")
            with tar:
                for member in members:
                    self._write_member(tar, member)
        return sha256_file(out)

    def _write_member(self, tar: tarfile.TarFile, member: _tar.Member) -> None:
        meta = self.meta.get(member.name)
        if meta is None:  # made by a RUN step on the host: root's, as in a build container
            meta = Meta(0o777 if member.kind == "symlink" else member.mode)
        info = tarfile.TarInfo(member.name)
        info.mtime, info.mode, info.uid, info.gid = meta.mtime, meta.mode, meta.uid, meta.gid
        info.uname = info.gname = ""
        if member.kind == "dir":
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        elif member.kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, member.linkname
            tar.addfile(info)
        else:
            info.type, info.size = tarfile.REGTYPE, member.size
            with Path(member.path).open("rb") as fh:
                tar.addfile(info, fh)
