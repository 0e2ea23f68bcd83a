"""The one deterministic tar writer (``_tar``) in each of the styles the tool uses.

The pinned hashes were computed with the four writers this module replaced (the layer
archive writer, the runtime archive packer and the two image tar writers, at commit
46cc1a6) on the same tree: the tar bytes must never change without a reason.  They
depend only on the tree and on Python's ``tarfile``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import random
import socket
import stat
import tarfile
from pathlib import Path

import pytest

from venvstacks_docker import _tar, archive, runtime_build
from venvstacks_docker.errors import ContainerError, PublishError, RuntimeArchiveError
from venvstacks_docker.host import images

MTIME = 1_700_000_000
LONG = "a-rather-long-folder-name-" * 4 + "/" + "and-an-even-longer-file-name-" * 3 + ".txt"

# relative path -> (content, mode); names chosen so that tree order and name order differ
FILES: dict[str, tuple[bytes, int]] = {
    "bin/run": (b"#!/bin/sh\necho run\n", 0o775),
    "lib/pkg/__init__.py": (b"VALUE = 1\n", 0o664),
    "lib/pkg/data.bin": (bytes(range(256)) * 33, 0o600),
    "lib/pkg/setuid-tool": (b"\x7fELF...", 0o4755),
    "lib/pkg-1.0.dist-info/RECORD": (b"pkg/__init__.py,,\n", 0o644),
    "lib/pkg.pth": (b"pkg\n", 0o644),
    "a-b.txt": (b"sorts before a/ by name, after it in tree order\n", 0o644),
    "a/inner.txt": (b"inside a\n", 0o700),
    "donn\u00e9es/caf\u00e9.txt": ("caf\u00e9\n".encode(), 0o644),
    LONG: (b"long name\n", 0o644),
}
SYMLINKS = {"bin/python": "../../cpython@3.11/bin/python3", "lib64": "lib"}

#: sha256 of the uncompressed tar streams the replaced writers produced for this tree.
GOLDEN = {
    "layer": "389a5cf71f46764947c2012289576f24ba006503a25cb28f699bdc1eda6fe564",
    "runtime": "fa644065f1d9a77ed9bbbcabf315e927553d0e191799c38f8bd9ed96eb0e0e99",
    "context": "56321d74a70c42989678c212cdb1875b49e8cb4e6adc772a3105e20f74fa50de",
}


def make_tree(root: Path, *, seed: int, umask: int) -> Path:
    """The test tree, created in a shuffled order with the given umask and random mtimes."""
    rng = random.Random(seed)
    items = [*FILES, *SYMLINKS, "include/empty/"]
    rng.shuffle(items)
    old = os.umask(umask)
    try:
        for rel in items:
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if rel.endswith("/"):
                path.mkdir(parents=True, exist_ok=True)
            elif rel in SYMLINKS:
                path.symlink_to(SYMLINKS[rel])
            else:
                path.write_bytes(FILES[rel][0])
                path.chmod(FILES[rel][1])
    finally:
        os.umask(old)
    for path in sorted(root.rglob("*")):
        if not path.is_symlink():
            t = rng.randrange(0, 2_000_000_000) + rng.random()
            os.utime(path, (t, t))
    return root


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- pinned bytes


def test_layer_archive_tar_stream_is_pinned(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree", seed=1, umask=0o022)
    result = archive.write_archive(tree, tmp_path / "out" / "x.tar.xz", root_name="layer@1", mtime=MTIME)
    tar_bytes = lzma.decompress((tmp_path / "out" / "x.tar.xz").read_bytes())
    assert result.tar_sha256 == sha256(tar_bytes) == GOLDEN["layer"]


def test_runtime_archive_tar_stream_is_pinned(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree", seed=2, umask=0o002)
    runtime_build.write_archive(tree, tmp_path / "rt.tar.gz", mtime=MTIME)
    assert sha256(gzip.decompress((tmp_path / "rt.tar.gz").read_bytes())) == GOLDEN["runtime"]


def test_context_tar_is_pinned(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree", seed=3, umask=0o077)
    images.write_context_tar(tree, tmp_path / "context.tar")
    assert sha256((tmp_path / "context.tar").read_bytes()) == GOLDEN["context"]


@pytest.mark.parametrize(("umask", "seed"), [(0o022, 4), (0o077, 5), (0o002, 6)])
def test_bytes_do_not_depend_on_umask_mtimes_or_creation_order(tmp_path: Path, umask: int, seed: int) -> None:
    tree = make_tree(tmp_path / "tree", seed=seed, umask=umask)
    out = io.BytesIO()
    _tar.write_tar(out, _tar.walk(tree, top="layer@1", order="tree"), mtime=MTIME, owner_name="root")
    assert sha256(out.getvalue()) == GOLDEN["layer"]


# ----------------------------------------------------------------------------- order and modes


def test_tree_order_and_name_order(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree", seed=7, umask=0o022)
    by_tree = [m.name for m in _tar.walk(tree, order="tree")]
    by_name = [m.name for m in _tar.walk(tree, order="name")]
    assert by_name == sorted(by_tree)
    assert by_tree.index("a/inner.txt") < by_tree.index("a-b.txt")  # a folder, then its contents
    assert by_name.index("a-b.txt") < by_name.index("a/inner.txt")  # "-" sorts before "/"
    with_top = [m.name for m in _tar.walk(tree, top="python", order="name")]
    assert with_top == ["python", *(f"python/{n}" for n in by_name)]


def test_modes_are_normalised_unless_owners_are_kept(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree", seed=8, umask=0o002)
    normal = {m.name: m for m in _tar.walk(tree)}
    assert normal["bin/run"].mode == 0o755
    assert normal["lib/pkg/setuid-tool"].mode == 0o755
    assert normal["lib/pkg/data.bin"].mode == 0o644
    assert normal["a"].mode == 0o755 and normal["lib64"].mode == 0o777
    assert {(m.uid, m.gid) for m in normal.values()} == {(0, 0)}
    kept = {m.name: m for m in _tar.walk(tree, keep_owners=True)}
    assert kept["lib/pkg/setuid-tool"].mode == 0o4755
    assert kept["lib/pkg/data.bin"].mode == 0o600
    assert kept["bin/run"].uid == os.getuid()


# ----------------------------------------------------------------------------- special files and hard links


def _with_specials(root: Path) -> Path:
    make_tree(root, seed=9, umask=0o022)
    os.link(root / "lib/pkg/data.bin", root / "lib/pkg/data-link.bin")
    os.link(root / "lib/pkg/data.bin", root / "a/data-link.bin")
    os.mkfifo(root / "lib/pipe")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "lib/sock"))
    sock.close()
    return root


@pytest.mark.parametrize(
    ("write", "error"),
    [
        (lambda tree, out: archive.write_archive(tree, out / "x.tar.xz", root_name="x", mtime=MTIME), PublishError),
        (lambda tree, out: runtime_build.write_archive(tree, out / "x.tar.gz"), RuntimeArchiveError),
        (lambda tree, out: images.write_context_tar(tree, out / "x.tar"), ContainerError),
    ],
    ids=["layer", "runtime", "context"],
)
def test_special_files_are_refused_with_the_callers_error(tmp_path: Path, write, error) -> None:  # type: ignore[no-untyped-def]
    tree = _with_specials(tmp_path / "tree")
    (tmp_path / "out").mkdir()
    with pytest.raises(error, match=r"lib/(pipe|sock): it is a (named pipe|socket)"):
        write(tree, tmp_path / "out")


def test_hard_links_are_files_in_normalised_tars(tmp_path: Path) -> None:
    tree = _with_specials(tmp_path / "tree")
    (tree / "lib/pipe").unlink()
    (tree / "lib/sock").unlink()
    images.write_context_tar(tree, tmp_path / "context.tar")
    with tarfile.open(tmp_path / "context.tar") as tar:
        members = {m.name: m for m in tar}
        for name in ("a/data-link.bin", "lib/pkg/data-link.bin", "lib/pkg/data.bin"):
            assert members[name].isreg() and members[name].mode == 0o644
            assert tar.extractfile(name).read() == FILES["lib/pkg/data.bin"][0]  # type: ignore[union-attr]


def test_root_file_systems_keep_owners_modes_and_hard_links_and_skip_special_files(tmp_path: Path) -> None:
    tree = _with_specials(tmp_path / "tree")
    images.write_rootfs_tar(tree, tmp_path / "rootfs.tar")
    with tarfile.open(tmp_path / "rootfs.tar") as tar:
        members = {m.name: m for m in tar}
    assert "lib/pipe" not in members and "lib/sock" not in members
    # the first path in name order is the file, later ones link to it
    assert members["a/data-link.bin"].isreg()
    for name in ("lib/pkg/data-link.bin", "lib/pkg/data.bin"):
        assert members[name].islnk() and members[name].linkname == "a/data-link.bin"
    assert members["lib/pkg/setuid-tool"].mode == 0o4755
    assert members["lib/pkg/data.bin"].mode == 0o600
    assert {(m.uid, m.uname, m.gname, m.mtime) for m in members.values()} == {(os.getuid(), "", "", 315532800)}


def test_a_file_that_shrinks_while_archived_is_an_error(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_bytes(b"x" * 1000)
    members = list(_tar.walk(tree))
    (tree / "f").write_bytes(b"x" * 10)
    with pytest.raises(RuntimeArchiveError, match="changed size"):
        _tar.write_tar(io.BytesIO(), members, mtime=0, error=RuntimeArchiveError)


def test_every_member_has_the_one_mtime_and_owner(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree", seed=10, umask=0o022)
    out = io.BytesIO()
    _tar.write_tar(out, _tar.walk(tree, top="t"), mtime=MTIME, owner_name="root")
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        members = tar.getmembers()
    assert members[0].name == "t" and members[0].isdir()
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(MTIME, 0, 0, "root", "root")}
    assert stat.S_IMODE(next(m for m in members if m.name == "t/lib/pkg/setuid-tool").mode) == 0o755
