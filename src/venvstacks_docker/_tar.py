"""The one deterministic tar writer: layer archives, the runtime archive, builder images.

Every tar stream the tool makes is :func:`write_tar` fed by :func:`walk`, so the rules
that make the bytes reproducible live in one place:

- members in a fixed order that does not depend on the order the file system lists
  them in (see :data:`Order`);
- one mtime for every member, uid/gid 0 and one owner name;
- normalised modes: folders ``0755``, files ``0755`` when their owner may execute them,
  else ``0644``, symlinks ``0777`` (the umask and setuid/setgid/sticky bits never
  reach the archive);
- hard links stored as one regular file per path;
- PAX format, UTF-8 names;
- FIFOs, sockets and device files refused.

Root file systems are the one exception (``keep_owners=True``): a Debian userland needs
its numeric owners, its exact permission bits (setuid ``passwd``, the sticky ``/tmp``)
and its hard links, so those are kept, and device nodes, FIFOs and sockets are left
out (the engine makes its own ``/dev``).

The writer only ever sets the :class:`tarfile.TarInfo` fields it lists, so a member's
header is a function of the member alone: the tarfile module of the Python running
the tool is the only other input (see ``docs/explanation/reproducibility.md``).
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

from venvstacks_docker.errors import VenvstacksDockerError

#: ``"tree"``: each folder's entries sorted by name, a folder directly followed by its
#: contents (layer archives, written while walking).  ``"name"``: every member sorted
#: by its whole name (the runtime archive and builder images), which puts ``a-b``
#: before ``a/x``; the walk is read completely before the first member is written.
Order = Literal["tree", "name"]
Kind = Literal["dir", "file", "symlink"]

_COPY_BUFSIZE = 1024 * 1024


class Sink(Protocol):
    """What a tar stream is written to: a file, a gzip stream, the chunked xz writer."""

    def write(self, data: bytes, /) -> int: ...

    def tell(self) -> int: ...


@dataclass(frozen=True)
class Member:
    """One archive member and where its content comes from."""

    name: str
    """The member name (POSIX separators, no trailing slash)."""
    path: str
    """The file system path: the content of a file, and how messages name the member."""
    kind: Kind
    mode: int
    """The permission bits stored."""
    size: int = 0
    linkname: str = ""
    """A symlink's target."""
    uid: int = 0
    gid: int = 0
    inode: tuple[int, int] | None = None
    """``(st_dev, st_ino)`` of a file with several names, set only when hard links are
    kept: later paths of the same inode are stored as links to the first."""


def normalised_mode(kind: Kind, st_mode: int) -> int:
    """The mode an archive stores: only the owner's execute bit survives, for files."""
    if kind == "file":
        return 0o755 if st_mode & stat.S_IXUSR else 0o644
    return 0o755 if kind == "dir" else 0o777


def kind_name(st_mode: int) -> str:
    """What a special file is, for messages."""
    if stat.S_ISFIFO(st_mode):
        return "named pipe (FIFO)"
    if stat.S_ISSOCK(st_mode):
        return "socket"
    if stat.S_ISCHR(st_mode):
        return "character device"
    if stat.S_ISBLK(st_mode):
        return "block device"
    return "special file"


class _Walker:
    def __init__(self, keep_owners: bool, error: type[VenvstacksDockerError]) -> None:
        self.keep_owners = keep_owners
        self.error = error

    def member(self, name: str, path: str, st: os.stat_result) -> Member | None:
        """The member for one path; ``None`` for a special file that is left out."""
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            kind: Kind = "dir"
        elif stat.S_ISREG(mode):
            kind = "file"
        elif stat.S_ISLNK(mode):
            kind = "symlink"
        elif self.keep_owners:
            return None
        else:
            raise self.error(
                f"cannot archive {path}: it is a {kind_name(mode)}, not a file, folder or symlink",
                hint="remove it from the folder before archiving it",
            )
        linkname = os.readlink(path) if kind == "symlink" else ""
        size = st.st_size if kind == "file" else 0
        if not self.keep_owners:
            return Member(name, path, kind, normalised_mode(kind, mode), size, linkname)
        inode = (st.st_dev, st.st_ino) if kind == "file" and st.st_nlink > 1 else None
        return Member(name, path, kind, stat.S_IMODE(mode), size, linkname, st.st_uid, st.st_gid, inode)

    def tree(self, dir_path: str, prefix: str) -> Iterator[Member]:
        """Members below ``dir_path`` in tree order, named ``prefix + relative path``."""
        try:
            with os.scandir(dir_path) as it:
                names = sorted(entry.name for entry in it)
        except OSError as exc:
            raise self.error(f"cannot list {dir_path}: {exc.strerror or exc}") from exc
        for name in names:
            path = os.path.join(dir_path, name)
            try:
                st = os.lstat(path)
            except OSError as exc:
                raise self.error(f"cannot read {path}: {exc.strerror or exc}") from exc
            member = self.member(prefix + name, path, st)
            if member is None:
                continue
            yield member
            if member.kind == "dir":
                yield from self.tree(path, f"{member.name}/")


def walk(
    root: str | os.PathLike[str],
    *,
    top: str | None = None,
    order: Order = "tree",
    keep_owners: bool = False,
    error: type[VenvstacksDockerError] = VenvstacksDockerError,
) -> Iterator[Member]:
    """The members for the folder ``root``, without following symlinks.

    :param top: a name for ``root`` itself: it is the first member (a folder) and every
        other name starts with ``top/``.  ``None``: ``root`` is not a member and names
        are relative to it.
    :param order: see :data:`Order`.
    :param keep_owners: keep numeric owners, permission bits and hard links, and leave
        special files out (root file systems).  Otherwise modes are normalised and
        special files raise ``error``.
    :param error: what unreadable folders and refused files raise.
    """
    walker = _Walker(keep_owners, error)
    root = os.fspath(root)
    if top is not None and keep_owners:
        st = os.stat(root)
        yield Member(top, root, "dir", stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid)
    elif top is not None:
        yield Member(top, root, "dir", 0o755)
    members = walker.tree(root, "" if top is None else f"{top}/")
    if order == "name":
        members = iter(sorted(members, key=lambda m: m.name))
    yield from members


def write_tar(
    out: Sink,
    members: Iterable[Member],
    *,
    mtime: int,
    owner_name: str = "",
    error: type[VenvstacksDockerError] = VenvstacksDockerError,
) -> None:
    """Write ``members`` to ``out`` as one tar stream (end-of-archive blocks included).

    ``out`` is left open; the stream is padded to tarfile's 10 KiB record size.

    :param mtime: the integer mtime of every member.
    :param owner_name: the user and group name of every member (``""`` or ``"root"``).
    :raises error: when a file's size changed while it was being read.
    """
    tar = tarfile.TarFile(
        fileobj=out,  # type: ignore[arg-type]  # tarfile only writes and tells
        mode="w",
        format=tarfile.PAX_FORMAT,
        encoding="utf-8",
        errors="surrogateescape",
        copybufsize=_COPY_BUFSIZE,
    )
    first_name: dict[tuple[int, int], str] = {}
    for member in members:
        info = tarfile.TarInfo(member.name)
        info.mtime = mtime
        info.mode = member.mode
        info.uid, info.gid = member.uid, member.gid
        info.uname = info.gname = owner_name
        if member.kind == "dir":
            info.type = tarfile.DIRTYPE
        elif member.kind == "symlink":
            info.type = tarfile.SYMTYPE
            info.linkname = member.linkname
        elif member.inode is not None and member.inode in first_name:
            info.type = tarfile.LNKTYPE
            info.linkname = first_name[member.inode]
        else:
            if member.inode is not None:
                first_name[member.inode] = member.name
            info.type = tarfile.REGTYPE
            info.size = member.size
            _add_file(tar, info, member.path, error)
            continue
        tar.addfile(info)
    tar.close()  # end-of-archive blocks and record padding; ``out`` stays open


def _add_file(tar: tarfile.TarFile, info: tarfile.TarInfo, path: str,
              error: type[VenvstacksDockerError]) -> None:
    with open(path, "rb") as f:
        try:
            tar.addfile(info, f)
        except OSError as exc:
            if exc.errno is None:  # tarfile: "unexpected end of data"
                raise error(f"{path} changed size while it was being archived") from exc
            raise


__all__ = ["Kind", "Member", "Order", "Sink", "kind_name", "normalised_mode", "walk", "write_tar"]
