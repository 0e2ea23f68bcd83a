"""The one safe extractor for layer archives (``deploy``) and runtime archives (``build``).

Both unpack an archive whose members all live below a single top folder.  Nothing in
an archive may write outside the folder being unpacked or replace a file it did not
create itself, so the extractor

1. checks every member *before* it touches the disk (:class:`_MemberChecker`), against
   everything the archive has created so far;
2. creates every member in a fresh staging folder next to the destination
   (``.<name>.unpacking-<random hex>``), each with an exclusive create (``O_EXCL``,
   ``O_NOFOLLOW``, ``mkdir``, ``symlink``, ``link``): even a check that missed
   something cannot truncate or write through an existing file;
3. renames the staging folder into place only when every member is there, with
   :func:`~venvstacks_docker._fs.rename_noreplace`, so an existing path is never
   replaced.  On any failure the staging folder is removed and nothing appears at the
   final path.

Refused (naming the archive, the member and why): absolute names, ``..`` components,
NUL bytes, members outside the single top folder, devices, FIFOs and other special
files, duplicate names (a folder repeated as a folder is fine), members below a
symlink or file member, hard links to anything but an earlier regular-file member of
the same archive, and symlinks that are absolute or whose target, read lexically at
the *final* location (following the archive's own symlinks), leaves the allowed root:
the destination folder for layers (so ``app/bin/python -> ../../cpython-3.11/bin/python``
into a sibling layer is fine; links already on disk there are followed too), the
runtime folder itself for runtimes.  In zips (Windows layers): names Windows cannot create.
"""

from __future__ import annotations

import calendar
import collections
import contextlib
import errno
import lzma
import os
import shutil
import stat
import tarfile
import uuid
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from venvstacks_docker._fs import rename_noreplace, set_mtime, write_new_file
from venvstacks_docker.errors import VenvstacksDockerError, VerifyError
from venvstacks_docker.oslayout import windows_path_problem

__all__ = ["extract_tree", "rename_noreplace", "safe_extract"]

_TAR_SUFFIXES = (".tar.xz", ".tar.gz", ".tgz", ".tar")
_MAX_LINK_HOPS = 40  # as Linux's path resolution
_MAX_ZIP_LINK = 4096  # a zip symlink entry's data is its target: PATH_MAX is plenty
_KIND_NAMES = {"dir": "folder", "file": "file", "hardlink": "hard link", "symlink": "symlink"}
_NO_HARD_LINKS = {errno.EPERM, errno.EXDEV, errno.EMLINK, getattr(errno, "ENOTSUP", -1),
                  getattr(errno, "EOPNOTSUPP", -1)}
_CORRUPT = (tarfile.TarError, zipfile.BadZipFile, lzma.LZMAError, zlib.error, EOFError)
_ErrorType = type[VenvstacksDockerError]


def _bad(
    archive_path: Path, member: str, why: str, error: _ErrorType = VerifyError
) -> VenvstacksDockerError:
    return error(
        f"refusing to extract {archive_path.name}: member {member!r} {why}",
        hint="the archive is corrupt or was not written by a trusted publisher",
    )


@dataclass(frozen=True)
class _Admitted:
    """A member that passed the checks, with what must be created for it."""

    rel: tuple[str, ...]  # path below the top folder; () is the top folder itself
    parents: list[tuple[str, ...]]  # missing parent folders to create first, outermost first
    exists: bool = False  # a folder that already exists (repeated or implied earlier)
    link_target: tuple[str, ...] = ()  # hard links: the earlier file member, below the top


class _MemberChecker:
    """Checks each member of one archive against the members admitted before it.

    ``layer=True``: the first member must be the entry of the single top folder (named
    ``top`` if given, else learned from it); symlinks may reach the whole destination
    folder, i.e. sibling layers.  ``layer=False``: the top folder must be ``top``, its
    own entry is optional, and symlinks must stay inside it.  Nothing here touches the
    disk: the checker keeps its own record of what the archive creates.
    """

    def __init__(
        self, archive_path: Path, *, top: str | None, layer: bool, link_root: str,
        error: _ErrorType = VerifyError,
    ) -> None:
        self.archive_path = archive_path
        self.top = top
        self.layer = layer
        self.link_root = link_root  # for messages: where symlinks must stay
        self.error = error
        self.seen_any = False
        self.kinds: dict[tuple[str, ...], str] = {(): "dir"}
        self.symlinks: dict[tuple[str, ...], str] = {}

    def bad(self, member: str, why: str) -> VenvstacksDockerError:
        return _bad(self.archive_path, member, why, self.error)

    def name_of(self, rel: tuple[str, ...]) -> str:
        return "/".join((self.top or "", *rel))

    def _parts(self, name: str) -> list[str]:
        """Normalised components of a member name: never absolute, never '..'."""
        if not name:
            raise self.bad(name, "has an empty name")
        if "\0" in name:
            raise self.bad(name, "has a NUL byte in its name")
        if name.startswith(("/", "\\")) or os.path.isabs(name) or (len(name) > 1 and name[1] == ":"):
            raise self.bad(name, "has an absolute path")
        raw = name.replace("\\", "/").split("/") if os.sep == "\\" else name.split("/")
        if ".." in raw:
            raise self.bad(name, "has a '..' path component")
        return [p for p in raw if p not in ("", ".")]

    def _split(self, name: str, *, is_dir: bool) -> tuple[str, ...]:
        """The member's path below the top folder; learns or checks the top folder."""
        parts = self._parts(name)
        if not parts:
            raise self.bad(name, "is not inside a top folder")
        if self.layer and not self.seen_any:
            if len(parts) > 1 or not is_dir:
                raise self.bad(
                    name,
                    "comes before its top folder: layer archives must start with "
                    "the entry of their single top folder",
                )
            self.top = self.top or parts[0]
        if parts[0] != self.top:
            where = (f"the archive's single top folder {self.top!r}" if self.layer
                     else f"the top-level {self.top}/ folder")
            raise self.bad(name, f"is outside {where}")
        if len(parts) == 1 and not is_dir:
            raise self.bad(name, "replaces the top folder with a non-folder")
        self.seen_any = True
        return tuple(parts[1:])

    def _missing_parents(self, name: str, rel: tuple[str, ...]) -> list[tuple[str, ...]]:
        """Parent folders still to create; refuses members below a symlink or a file."""
        missing = []
        for i in range(len(rel)):
            kind = self.kinds.get(rel[:i])
            if kind is None:
                missing.append(rel[:i])
            elif kind == "symlink":
                raise self.bad(
                    name,
                    f"is below the symlink member {self.name_of(rel[:i])!r}: extracting "
                    "through a link could write outside the folder being unpacked",
                )
            elif kind != "dir":
                raise self.bad(
                    name, f"is below the {_KIND_NAMES[kind]} member {self.name_of(rel[:i])!r}, "
                    "which is not a folder",
                )
        return missing

    def admit(self, name: str, kind: str, linkname: str = "") -> _Admitted:
        """Check one member (``kind``: dir, file, symlink, hardlink) and record it."""
        rel = self._split(name, is_dir=kind == "dir")
        parents = self._missing_parents(name, rel)
        earlier = self.kinds.get(rel)
        if earlier == "dir" and kind == "dir":
            return _Admitted(rel, parents, exists=True)
        if earlier is not None:
            raise self.bad(
                name,
                f"has the same name as an earlier {_KIND_NAMES[earlier]}: an archive member "
                "may not replace anything (duplicate member names are refused)",
            )
        target: tuple[str, ...] = ()
        if kind == "symlink":
            self._check_symlink(name, rel, linkname)
            self.symlinks[rel] = linkname
        elif kind == "hardlink":
            target = self._check_hardlink(name, linkname)
        for parent in parents:
            self.kinds[parent] = "dir"
        self.kinds[rel] = kind
        return _Admitted(rel, parents, link_target=target)

    def _check_hardlink(self, name: str, linkname: str) -> tuple[str, ...]:
        """A hard link may only point at an earlier regular-file member of this archive:
        anything else could tie the new name to a file the archive did not create."""
        self._check_target(name, "hard link", linkname)
        parts = linkname.replace("\\", "/").split("/") if os.sep == "\\" else linkname.split("/")
        if ".." in parts:
            raise self.bad(name, f"is a hard link to {linkname!r}, which has a '..' component")
        parts = [p for p in parts if p not in ("", ".")]
        target = tuple(parts[1:])
        if not parts or parts[0] != self.top or self.kinds.get(target) != "file":
            raise self.bad(
                name,
                f"is a hard link to {linkname!r}, which is not an earlier regular file "
                "of this archive",
            )
        return target

    def _check_target(self, name: str, kind: str, linkname: str) -> None:
        if not linkname or "\0" in linkname:
            raise self.bad(name, f"is a {kind} with an empty target or a NUL byte in it")
        if os.path.isabs(linkname) or linkname.startswith(("/", "\\")):
            raise self.bad(name, f"is a {kind} to the absolute path {linkname!r}")

    def _check_symlink(self, name: str, rel: tuple[str, ...], linkname: str) -> None:
        self._check_target(name, "symlink", linkname)
        why = self._escapes(rel[:-1], linkname)
        if why:
            raise self.bad(name, f"is a symlink to {linkname!r}, which {why}")

    def recheck_symlinks(self) -> None:
        """Check every symlink again once all are known: one that was fine when it was
        read may escape through a symlink member that came later."""
        for rel, linkname in self.symlinks.items():
            why = self._escapes(rel[:-1], linkname)
            if why:
                raise self.bad(self.name_of(rel), f"is a symlink to {linkname!r}, which {why}")

    def _escapes(self, rel_dir: tuple[str, ...], linkname: str) -> str | None:
        """Why ``linkname`` (in folder ``rel_dir``) leaves the link root, or None.

        Lexical, at the final location: components are applied one by one from the
        link's folder, the archive's own symlinks are followed, and the walk may never
        climb above the link root (the destination folder for layers, whose first
        component is the top folder; the top folder itself otherwise)."""
        prefix: tuple[str, ...] = (self.top or "",) if self.layer else ()
        stack = list(prefix + rel_dir)
        todo = collections.deque(linkname.replace("\\", "/").split("/"))
        hops = 0
        while todo:
            part = todo.popleft()
            if part in ("", "."):
                continue
            if part == "..":
                if not stack:
                    return f"resolves outside {self.link_root}"
                stack.pop()
                continue
            stack.append(part)
            key = tuple(stack[len(prefix):])
            if tuple(stack[: len(prefix)]) == prefix and key in self.symlinks:
                hops += 1
                if hops > _MAX_LINK_HOPS:
                    return "is part of a symlink loop"
                stack.pop()
                todo.extendleft(reversed(self.symlinks[key].replace("\\", "/").split("/")))
        return None


class _Staging:
    """The fresh folder members are created in, renamed into place at the end."""

    def __init__(self, checker: _MemberChecker, parent: str, final_name: str | None,
                 *, replace_empty_dir: bool) -> None:
        self.checker = checker
        self.parent = parent
        self.final_name = final_name  # None: the archive's top folder
        self.replace_empty_dir = replace_empty_dir
        self.path: str | None = None
        self.final = ""
        self.dir_times: list[tuple[str, float]] = []

    def at(self, rel: tuple[str, ...]) -> str:
        """Where ``rel`` goes; the staging folder is made on first use (the name of a
        layer's top folder is only known once its first member has been read)."""
        path = self.path
        if path is None:
            name = self.final_name or self.checker.top or ""
            self.final = os.path.join(self.parent, name)
            if not self.replace_empty_dir and os.path.lexists(self.final):
                raise self.checker.error(
                    f"cannot extract {self.checker.archive_path.name}: {self.final} already exists",
                    hint="extract into a folder that does not contain this layer yet",
                )
            path = os.path.join(self.parent, f".{name}.unpacking-{uuid.uuid4().hex}")
            os.mkdir(path)  # unique name, and fails rather than reuse anything
            self.path = path
        return os.path.join(path, *rel)

    def prepare(self, member: _Admitted, mtime: float | None = None) -> str:
        """Create the member's missing parents; return its path in the staging folder."""
        for parent in member.parents:
            os.mkdir(self.at(parent))
        path = self.at(member.rel)
        if mtime is not None:
            self.dir_times.append((path, mtime))
        return path

    def add_dir(self, member: _Admitted, mtime: float) -> None:
        path = self.prepare(member, mtime)
        if not member.exists:
            os.mkdir(path)

    def add_file(self, member: _Admitted, src: IO[bytes], *, executable: bool, mtime: float) -> None:
        write_new_file(self.prepare(member), src, 0o755 if executable else 0o644, mtime)

    def add_symlink(self, member: _Admitted, linkname: str) -> None:
        os.symlink(linkname, self.prepare(member))

    def add_hardlink(self, member: _Admitted) -> None:
        source, path = self.at(member.link_target), self.prepare(member)
        try:
            os.link(source, path)
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            st = os.stat(source)  # this file system has no hard links: copy, as tarfile does
            with open(source, "rb") as src:
                write_new_file(path, src, stat.S_IMODE(st.st_mode), st.st_mtime)

    def check_links_on_disk(self) -> None:
        """Layers: each symlink, resolved on disk from the staging folder (a sibling of
        the final folder, so ``..`` lands in the same place), must stay in the
        destination folder even through links that other layers or the user put there."""
        root = self.checker.link_root
        for rel, linkname in self.checker.symlinks.items():
            real = os.path.realpath(self.at(rel))
            if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
                raise self.checker.bad(
                    self.checker.name_of(rel),
                    f"is a symlink to {linkname!r}, which resolves outside {root} (to {real}) "
                    "through links already there",
                )

    def commit(self) -> None:
        """Set folder times, then rename into place without replacing anything."""
        assert self.path is not None
        for path, mtime in reversed(self.dir_times):
            set_mtime(path, mtime)
        if self.replace_empty_dir and os.path.isdir(self.final) and not os.path.islink(self.final):
            os.rmdir(self.final)  # fails unless empty
        try:
            rename_noreplace(self.path, self.final)
        except FileExistsError as exc:
            raise self.checker.error(
                f"cannot extract {self.checker.archive_path.name}: {self.final} appeared "
                "while it was being unpacked; it was left alone"
            ) from exc
        self.path = None

    def discard(self) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None


def _tar_kind(checker: _MemberChecker, member: tarfile.TarInfo) -> str:
    kinds = (("dir", member.isdir), ("file", member.isreg), ("symlink", member.issym),
             ("hardlink", member.islnk))
    for kind, test in kinds:
        if test():
            return kind
    raise checker.bad(member.name, "is a device, FIFO or other special file")


def _extract_tar(archive_path: Path, checker: _MemberChecker, staging: _Staging) -> None:
    with tarfile.open(archive_path, "r:*") as tar:
        for member in tar:
            kind = _tar_kind(checker, member)
            admitted = checker.admit(member.name, kind, member.linkname)
            if kind == "dir":
                staging.add_dir(admitted, member.mtime)
            elif kind == "file":
                src = tar.extractfile(member)
                assert src is not None
                with src:
                    staging.add_file(admitted, src, executable=bool(member.mode & stat.S_IXUSR),
                                     mtime=member.mtime)
            elif kind == "symlink":
                staging.add_symlink(admitted, member.linkname)
            else:
                staging.add_hardlink(admitted)


def _zip_kind(checker: _MemberChecker, info: zipfile.ZipInfo) -> str:
    why = windows_path_problem(info.filename.rstrip("/"))  # zip archives are for Windows targets
    if why:
        raise checker.bad(info.filename, why)
    ftype = stat.S_IFMT(info.external_attr >> 16)
    if ftype not in (0, stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK):
        raise checker.bad(info.filename, "is a device, FIFO or other special file")
    if info.is_dir() or ftype == stat.S_IFDIR:
        return "dir"
    return "symlink" if ftype == stat.S_IFLNK else "file"


def _extract_zip(archive_path: Path, checker: _MemberChecker, staging: _Staging) -> None:
    with zipfile.ZipFile(archive_path) as zf:
        for info in zf.infolist():  # duplicates included: each one is checked
            kind = _zip_kind(checker, info)
            linkname = ""
            if kind == "symlink":
                if info.file_size > _MAX_ZIP_LINK:
                    raise checker.bad(info.filename, "is a symlink with an overlong target")
                linkname = zf.read(info).decode("utf-8", "surrogateescape")
            admitted = checker.admit(info.filename, kind, linkname)
            mtime = calendar.timegm((*info.date_time, 0, 0, 0))  # the DOS time, read as UTC (as written)
            if kind == "dir":
                staging.add_dir(admitted, mtime)
            elif kind == "symlink":
                staging.add_symlink(admitted, linkname)
            else:
                with zf.open(info) as src:
                    executable = bool((info.external_attr >> 16) & stat.S_IXUSR)
                    staging.add_file(admitted, src, executable=executable, mtime=mtime)


@contextlib.contextmanager
def _failures_as(error: _ErrorType, archive_path: Path, staging: _Staging) -> Iterator[None]:
    """Remove the staging folder on any failure; report library errors as ``error``."""
    try:
        yield
    except BaseException as exc:
        staging.discard()
        if isinstance(exc, VenvstacksDockerError):
            raise
        if isinstance(exc, _CORRUPT):
            raise error(f"cannot unpack {archive_path.name}: the archive is corrupt ({exc})") from exc
        if isinstance(exc, OSError):
            raise error(
                f"cannot unpack {archive_path.name}: {exc.strerror or exc}"
                + (f" ({exc.filename})" if exc.filename else "")
            ) from exc
        raise


def _run(archive_path: Path, checker: _MemberChecker, staging: _Staging, *, tar_only: bool) -> None:
    name = archive_path.name.lower()
    with _failures_as(checker.error, archive_path, staging):
        if name.endswith(".zip") and not tar_only:
            _extract_zip(archive_path, checker, staging)
        elif name.endswith(_TAR_SUFFIXES) or tar_only:
            _extract_tar(archive_path, checker, staging)
        else:
            raise checker.error(
                f"cannot extract {archive_path.name}: unknown archive type",
                hint="expected a .tar.xz, .tar.gz, .tar or .zip file",
            )
        if not checker.seen_any:
            what = "is empty" if checker.layer else f"contains no {checker.top}/ folder"
            raise checker.error(f"archive {archive_path.name} {what}")
        checker.recheck_symlinks()
        if checker.layer:
            staging.check_links_on_disk()
        staging.commit()


def _prepare(archive_path: Path, folder: Path, error: _ErrorType) -> None:
    if not archive_path.is_file():
        raise error(f"archive {archive_path} does not exist")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise error(f"cannot create {folder}: {exc.strerror or exc}") from exc


def safe_extract(archive_path: Path, dest_root: Path, *, top: str | None = None) -> Path:
    """Extract a ``.tar.xz``/``.tar.gz``/``.tar``/``.zip`` layer archive into ``dest_root``.

    The archive must start with the entry of its single top folder (``top``, if
    given), which must not exist yet in ``dest_root``; returns ``dest_root/<top>``.
    Staged in ``dest_root/.<top>.unpacking-<hex>``, renamed into place when complete.
    Refused with ``VerifyError``: see the module docstring.  Relative symlinks into
    sibling layer folders are fine.  Exec bits and mtimes are kept, ownership is not.
    """
    archive_path, dest_root = Path(archive_path), Path(dest_root)
    _prepare(archive_path, dest_root, VerifyError)
    real_root = os.path.realpath(dest_root)
    checker = _MemberChecker(archive_path, top=top, layer=True, link_root=real_root)
    _run(archive_path, checker, _Staging(checker, real_root, None, replace_empty_dir=False),
         tar_only=False)
    assert checker.top is not None
    return dest_root / checker.top


def extract_tree(archive_path: Path, dest: Path, *, top: str, error: _ErrorType = VerifyError) -> None:
    """Unpack the contents of the archive's ``top/`` folder as the folder ``dest``.

    For python-build-standalone style archives: a tar (any compression tarfile reads)
    with every member below ``top/``, whose own entry is optional.  ``dest`` must not
    exist, or be an empty folder.  Same staging, no-replace rename and refusals as
    :func:`safe_extract`, except that symlinks must stay inside ``dest``.  Errors are
    raised as ``error``.
    """
    archive_path, dest = Path(archive_path), Path(os.path.abspath(dest))
    _prepare(archive_path, dest.parent, error)
    checker = _MemberChecker(archive_path, top=top, layer=False, link_root=str(dest), error=error)
    staging = _Staging(checker, str(dest.parent), dest.name, replace_empty_dir=True)
    _run(archive_path, checker, staging, tar_only=True)
