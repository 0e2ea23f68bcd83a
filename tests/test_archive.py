"""Layer archives: determinism, format details, atomic writes, and a zip round trip."""

from __future__ import annotations

import lzma
import os
import random
import stat
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import pytest

from venvstacks_docker import archive
from venvstacks_docker.archive import (
    ArchiveResult,
    archive_suffix,
    write_archive,
    xz_filters,
)
from venvstacks_docker.errors import Interrupted, PublishError
from venvstacks_docker.extract import safe_extract

MTIME = 1_700_000_000
LONG_NAME = "very-long-folder-name-" * 4 + "/" + "and-an-even-longer-file-name-" * 3 + ".txt"

# relative path -> (content, executable); folders are implied, plus an empty folder
FILES: dict[str, tuple[bytes, bool]] = {
    "bin/run": (b"#!/bin/sh\necho run\n", True),
    "lib/python3.11/site-packages/pkg/__init__.py": (b"VALUE = 1\n", False),
    "lib/python3.11/site-packages/pkg/data.bin": (bytes(range(256)) * 40, False),
    "lib/python3.11/site-packages/pkg/hard.bin": (b"hard-linked content\n", False),
    "lib/python3.11/site-packages/pkg-1.0.dist-info/RECORD": (b"pkg/__init__.py,,\n", False),
    "share/venv/metadata/venvstacks_layer.json": (b'{"python": "bin/python"}\n', False),
    "postinstall.py": (b"print('postinstall')\n", False),
    "donn\u00e9es/caf\u00e9.txt": ("caf\u00e9\n".encode(), False),
    "a-b.txt": (b"sorts after the a/ folder in walk order\n", False),
    "a/inner.txt": (b"inside a\n", False),
    LONG_NAME: (b"long name\n", False),
}
EMPTY_DIRS = ["include/empty"]
SYMLINKS = {"bin/python": "../../cpython@3.11/bin/python3", "lib64": "lib"}
HARDLINKS = {"lib/python3.11/site-packages/pkg/hard-copy.bin": "lib/python3.11/site-packages/pkg/hard.bin"}


def make_tree(root: Path, *, seed: int, umask: int) -> Path:
    """Create the test tree in a shuffled order, with a given umask and random mtimes."""
    rng = random.Random(seed)
    items: list[tuple[str, str]] = [("file", p) for p in FILES]
    items += [("dir", p) for p in EMPTY_DIRS]
    items += [("symlink", p) for p in SYMLINKS]
    rng.shuffle(items)
    old = os.umask(umask)
    try:
        root.mkdir(parents=True)
        for kind, rel in items:
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if kind == "dir":
                path.mkdir(parents=True, exist_ok=True)
            elif kind == "symlink":
                path.symlink_to(SYMLINKS[rel])
            else:
                content, executable = FILES[rel]
                path.write_bytes(content)
                if executable:
                    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP)
        for rel, src in HARDLINKS.items():
            os.link(root / src, root / rel)
    finally:
        os.umask(old)
    for path in sorted(root.rglob("*")):
        if not path.is_symlink():
            t = rng.randrange(0, 2_000_000_000) + rng.random()
            os.utime(path, (t, t))
    return root


def expected_member_names(root_name: str) -> list[str]:
    """Sorted walk order: each folder, then its sorted contents."""
    paths = set(FILES) | set(EMPTY_DIRS) | set(SYMLINKS) | set(HARDLINKS)
    tree: dict[str, set[str]] = {"": set()}
    for p in paths:
        parts = p.split("/")
        for i in range(len(parts)):
            parent = "/".join(parts[:i])
            tree.setdefault(parent, set()).add(parts[i])
    names: list[str] = []

    def walk(rel: str) -> None:
        for child in sorted(tree.get(rel, ())):
            child_rel = f"{rel}/{child}" if rel else child
            names.append(f"{root_name}/{child_rel}")
            walk(child_rel)

    names.append(root_name)
    walk("")
    return names


def write_in_subprocess(
    src: Path, dest: Path, env_extra: dict[str, str], *, fmt: str = "tar.xz", threads: int = 2
) -> None:
    """Write an archive from a fresh interpreter with a different TZ / locale."""
    code = (
        "import sys; from pathlib import Path; "
        "from venvstacks_docker.archive import write_archive; "
        "write_archive(Path(sys.argv[1]), Path(sys.argv[2]), root_name='layer@1', "
        f"mtime={MTIME}, fmt={fmt!r}, threads={threads})"
    )
    env = {**os.environ, **env_extra}
    subprocess.run([sys.executable, "-c", code, src, dest], check=True, env=env)


# ---------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["tar.xz", "zip"])
def test_same_tree_gives_identical_bytes(tmp_path: Path, fmt: str) -> None:
    tree_a = make_tree(tmp_path / "one" / "src", seed=1, umask=0o022)
    tree_b = make_tree(tmp_path / "two" / "deeper" / "src", seed=2, umask=0o077)
    if fmt == "zip":  # zip archives refuse symlinks: drop them from both trees
        for tree in (tree_a, tree_b):
            for rel in SYMLINKS:
                (tree / rel).unlink()
    out_a = tmp_path / f"a{archive_suffix(fmt)}"
    out_b = tmp_path / f"b{archive_suffix(fmt)}"
    write_in_subprocess(tree_a, out_a, {"TZ": "Pacific/Kiritimati", "LC_ALL": "C"}, fmt=fmt)
    write_in_subprocess(
        tree_b, out_b, {"TZ": "America/St_Johns", "LC_ALL": "C.UTF-8"}, fmt=fmt, threads=1
    )
    assert out_a.read_bytes() == out_b.read_bytes()
    # the trees really did differ in the ways that must not matter
    run_a, run_b = tree_a / "bin/run", tree_b / "bin/run"
    assert run_a.stat().st_mode != run_b.stat().st_mode
    assert run_a.stat().st_mtime != run_b.stat().st_mtime


def test_thread_count_does_not_change_bytes(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "src", seed=3, umask=0o022)
    big = tree / "lib" / "big.bin"
    big.write_bytes(random.Random(7).randbytes(3 * 1024 * 1024))
    results = [
        write_archive(
            tree, tmp_path / f"t{n}.tar.xz", root_name="layer@1", mtime=MTIME,
            threads=n, chunk_size=512 * 1024,
        )
        for n in (1, 2, 5)
    ]
    data = {r.path.read_bytes() for r in results}
    assert len(data) == 1
    assert len({(r.size, r.sha256, r.tar_sha256) for r in results}) == 1


#: (arch, chunk size) -> (sha256, tar_sha256, size) of the golden tree below, as the
#: writer of commit 46cc1a6 wrote them.  ``tar_sha256`` depends on Python's tarfile
#: only; if only ``sha256`` changes, liblzma changed (see the reproducibility docs).
GOLDEN = {
    (None, 64 * 1024): (
        "7bce15fc885f243c7a15a1a86069eb51192bae2c6c0a7a2c1ca4809db5883c3b",
        "e6714d1eb9cfe4a092ea0c2293afa8a1e01ee8169dbb80a5ba3cbf1e19255872",
        310732,
    ),
    ("x86_64", 64 * 1024): (
        "0f4a96b69b3c9dd379693d5ba4156b642b2c109607172c892ccd85108d83b3fc",
        "e6714d1eb9cfe4a092ea0c2293afa8a1e01ee8169dbb80a5ba3cbf1e19255872",
        310748,
    ),
    (None, archive.XZ_CHUNK_SIZE): (
        "67b24fbdb184190939ce0c71e75ed3f96a7cfe103633e560d2a30fba986de972",
        "f20ff42b4e7aac5c49b93d43b3e72321465dca36916b6a81eaf91200af98930c",
        1204,
    ),
    ("x86_64", archive.XZ_CHUNK_SIZE): (
        "ade1ab29c9a37069f3171283456395e55d843f8f58e0f4c9ee3e3ad43725095a",
        "f20ff42b4e7aac5c49b93d43b3e72321465dca36916b6a81eaf91200af98930c",
        1220,
    ),
}


@pytest.mark.parametrize(("arch", "chunk_size"), list(GOLDEN), ids=[f"{a}-{c >> 10}KiB" for a, c in GOLDEN])
def test_bytes_are_pinned(tmp_path: Path, arch: str | None, chunk_size: int) -> None:
    """The archive bytes of a fixed tree never change without a reason (several xz
    streams for the 64 KiB chunks, one for the default size)."""
    tree = make_tree(tmp_path / "src", seed=21, umask=0o022)
    if chunk_size < archive.XZ_CHUNK_SIZE:
        (tree / "big.bin").write_bytes(random.Random(21).randbytes(300 * 1024))
    result = write_archive(tree, tmp_path / "x.tar.xz", root_name="layer@1", mtime=MTIME, arch=arch,
                           chunk_size=chunk_size, threads=2)
    assert (result.sha256, result.tar_sha256, result.size) == GOLDEN[(arch, chunk_size)]


def test_result_matches_file(tmp_path: Path) -> None:
    import hashlib

    tree = make_tree(tmp_path / "src", seed=4, umask=0o022)
    result = write_archive(tree, tmp_path / "out" / "layer@1.tar.xz", root_name="layer@1", mtime=MTIME)
    assert isinstance(result, ArchiveResult)
    blob = result.path.read_bytes()
    assert result.size == len(blob)
    assert result.sha256 == hashlib.sha256(blob).hexdigest()
    assert result.tar_sha256 == hashlib.sha256(lzma.decompress(blob)).hexdigest()
    assert result.path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in result.path.parent.iterdir()] == ["layer@1.tar.xz"]


# ---------------------------------------------------------------------------------
# tar member details
# ---------------------------------------------------------------------------------


def test_tar_members_are_normalised(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "src", seed=5, umask=0o002)
    result = write_archive(tree, tmp_path / "l.tar.xz", root_name="layer@1", mtime=MTIME)
    with tarfile.open(result.path) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == expected_member_names("layer@1")
        by_name = {m.name: m for m in members}
        for m in members:
            assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "root", "root"), m.name
            assert m.mtime == MTIME and isinstance(m.mtime, int), m.name
            if m.isdir():
                assert m.mode == 0o755, m.name
            elif m.issym():
                assert m.mode == 0o777, m.name
            else:
                assert m.isreg(), f"{m.name} should be a regular file (no hardlink records)"
                assert m.mode in (0o644, 0o755), m.name
            # pax headers only where a name needs them (long or non-ASCII)
            if m.name.isascii() and len(m.name) <= 100:
                assert m.pax_headers == {}, (m.name, m.pax_headers)
            else:
                assert set(m.pax_headers) == {"path"}, (m.name, m.pax_headers)
        assert by_name["layer@1/bin/run"].mode == 0o755
        assert by_name["layer@1/postinstall.py"].mode == 0o644
        link = by_name["layer@1/bin/python"]
        assert link.issym() and link.linkname == "../../cpython@3.11/bin/python3"
        assert by_name["layer@1/lib64"].linkname == "lib"
        pkg = "layer@1/lib/python3.11/site-packages/pkg/"
        hard = tar.extractfile(by_name[pkg + "hard-copy.bin"])
        assert hard is not None and hard.read() == b"hard-linked content\n"
        long_member = by_name["layer@1/" + LONG_NAME]
        assert tar.extractfile(long_member).read() == b"long name\n"  # type: ignore[union-attr]
    raw = lzma.decompress(result.path.read_bytes())
    for word in (b"atime=", b"ctime=", b"mtime=", b"uid=", b"uname="):
        assert word not in raw


def test_multi_chunk_archive_is_valid_xz(tmp_path: Path) -> None:
    rng = random.Random(42)
    tree = tmp_path / "src"
    (tree / "data").mkdir(parents=True)
    for i in range(4):  # a mix of incompressible and compressible data, ~4.5 MiB
        (tree / "data" / f"random-{i}.bin").write_bytes(rng.randbytes(768 * 1024))
        (tree / "data" / f"text-{i}.txt").write_bytes(b"spam and eggs %d\n" % i * 25_000)
    (tree / "bin").mkdir()
    (tree / "bin" / "tool").write_bytes(b"#!/bin/sh\n")
    (tree / "bin" / "tool").chmod(0o700)
    chunk = 1024 * 1024
    result = write_archive(
        tree, tmp_path / "multi.tar.xz", root_name="big@1", mtime=MTIME, chunk_size=chunk
    )
    blob = result.path.read_bytes()

    # one independent xz stream per chunk: the same bytes as compressing each chunk alone
    tar_bytes = lzma.decompress(blob)
    pieces = [tar_bytes[i : i + chunk] for i in range(0, len(tar_bytes), chunk)]
    assert len(pieces) >= 5
    expected = b"".join(
        lzma.compress(p, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=6) for p in pieces
    )
    assert blob == expected

    # xz(1) sees several streams and checks them
    listing = subprocess.run(
        ["xz", "--robot", "--list", result.path], check=True, capture_output=True, text=True
    ).stdout
    totals = next(line.split("\t") for line in listing.splitlines() if line.startswith("totals"))
    assert int(totals[1]) == len(pieces)  # number of streams
    subprocess.run(["xz", "--test", result.path], check=True)

    # GNU tar unpacks it
    unpacked = tmp_path / "by-tar"
    unpacked.mkdir()
    subprocess.run(["tar", "-xJf", result.path, "-C", unpacked], check=True)
    for path in (tree / "data").iterdir():
        assert (unpacked / "big@1" / "data" / path.name).read_bytes() == path.read_bytes()
    assert os.access(unpacked / "big@1" / "bin" / "tool", os.X_OK)

    # and so does tarfile (random-access mode reads concatenated streams)
    with tarfile.open(result.path) as tar:
        member = tar.getmember("big@1/data/random-3.bin")
        assert tar.extractfile(member).read() == (tree / "data" / "random-3.bin").read_bytes()  # type: ignore[union-attr]
        assert tar.getmember("big@1/bin/tool").mode == 0o755


def test_progress_reports_uncompressed_bytes(tmp_path: Path) -> None:
    tree = tmp_path / "src"
    tree.mkdir()
    (tree / "blob").write_bytes(random.Random(1).randbytes(600 * 1024))
    seen: list[int] = []
    result = write_archive(
        tree, tmp_path / "p.tar.xz", root_name="p", mtime=MTIME, chunk_size=128 * 1024,
        progress=seen.append,
    )
    assert seen == sorted(seen) and len(seen) >= 5
    assert seen[-1] == len(lzma.decompress(result.path.read_bytes()))


# ---------------------------------------------------------------------------------
# Refusals and atomic writes
# ---------------------------------------------------------------------------------


def test_absolute_symlink_is_refused(tmp_path: Path) -> None:
    tree = tmp_path / "src"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "python").symlink_to("/usr/bin/python3")
    with pytest.raises(PublishError, match=r"bin/python.*absolute path /usr/bin/python3"):
        write_archive(tree, tmp_path / "out" / "x.tar.xz", root_name="x", mtime=MTIME)
    assert list((tmp_path / "out").iterdir()) == []


def test_zip_refuses_symlinks(tmp_path: Path) -> None:
    tree = tmp_path / "src"
    tree.mkdir()
    (tree / "target.txt").write_text("x")
    (tree / "link.txt").symlink_to("target.txt")
    with pytest.raises(PublishError, match="symlink"):
        write_archive(tree, tmp_path / "x.zip", root_name="x", mtime=MTIME, fmt="zip")
    assert not (tmp_path / "x.zip").exists()


def test_fifo_is_refused(tmp_path: Path) -> None:
    tree = tmp_path / "src"
    tree.mkdir()
    os.mkfifo(tree / "pipe")
    with pytest.raises(PublishError, match="named pipe"):
        write_archive(tree, tmp_path / "x.tar.xz", root_name="x", mtime=MTIME)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


def test_failure_midway_leaves_previous_archive_and_no_temp_file(tmp_path: Path) -> None:
    tree = tmp_path / "src"
    tree.mkdir()
    rng = random.Random(9)
    for i in range(3):  # several chunks get compressed and written first
        (tree / f"a{i}.bin").write_bytes(rng.randbytes(400 * 1024))
    os.mkfifo(tree / "zz-pipe")  # sorts last
    out = tmp_path / "out"
    out.mkdir()
    previous = out / "x.tar.xz"
    previous.write_bytes(b"previous archive")
    with pytest.raises(PublishError, match="zz-pipe"):
        write_archive(tree, previous, root_name="x", mtime=MTIME, chunk_size=128 * 1024)
    assert previous.read_bytes() == b"previous archive"
    assert _leftovers(out) == []


@pytest.mark.parametrize("fmt", ["tar.xz", "zip"])
def test_keyboard_interrupt_leaves_no_temp_file(tmp_path: Path, fmt: str) -> None:
    tree = tmp_path / "src"
    tree.mkdir()
    rng = random.Random(10)
    for i in range(4):
        (tree / f"f{i}.bin").write_bytes(rng.randbytes(300 * 1024))
    out = tmp_path / "out"
    out.mkdir()
    temp_seen: list[list[str]] = []

    def interrupt(done: int) -> None:
        temp_seen.append(_leftovers(out))
        raise KeyboardInterrupt

    target = out / f"x{archive_suffix(fmt)}"
    with pytest.raises(KeyboardInterrupt):
        write_archive(
            tree, target, root_name="x", mtime=MTIME, fmt=fmt,  # type: ignore[arg-type]
            chunk_size=128 * 1024, progress=interrupt,
        )
    # one temporary file, named for this call (never by pid: in a container every pid is 1)
    assert temp_seen and len(temp_seen[0]) == 1 and temp_seen[0][0].startswith(f".{target.name}.tmp-")
    assert not temp_seen[0][0].endswith(f".tmp-{os.getpid()}")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("fmt", ["tar.xz", "zip"])
def test_cancel_event_stops_the_writer(tmp_path: Path, fmt: str) -> None:
    tree = tmp_path / "src"
    tree.mkdir()
    rng = random.Random(11)
    for i in range(6):
        (tree / f"f{i}.bin").write_bytes(rng.randbytes(200 * 1024))
    out = tmp_path / "out"
    cancel = threading.Event()
    with pytest.raises(Interrupted, match="cancelled"):
        write_archive(
            tree, out / f"x{archive_suffix(fmt)}", root_name="x", mtime=MTIME, fmt=fmt,  # type: ignore[arg-type]
            chunk_size=128 * 1024, threads=2, cancel=cancel, progress=lambda done: cancel.set(),
        )
    assert list(out.iterdir()) == []


def test_own_failure_does_not_set_the_callers_cancel_event(tmp_path: Path) -> None:
    tree = tmp_path / "src"
    tree.mkdir()
    (tree / "a.bin").write_bytes(random.Random(12).randbytes(300 * 1024))
    os.mkfifo(tree / "b-pipe")
    cancel = threading.Event()
    with pytest.raises(PublishError):
        write_archive(tree, tmp_path / "x.tar.xz", root_name="x", mtime=MTIME,
                      chunk_size=128 * 1024, cancel=cancel)
    assert not cancel.is_set()


def test_bad_arguments(tmp_path: Path) -> None:
    tree = tmp_path / "src"
    tree.mkdir()
    with pytest.raises(PublishError, match="root folder name"):
        write_archive(tree, tmp_path / "x.tar.xz", root_name="a/b", mtime=MTIME)
    with pytest.raises(PublishError, match="integer"):
        write_archive(tree, tmp_path / "x.tar.xz", root_name="a", mtime=1.5)  # type: ignore[arg-type]
    with pytest.raises(PublishError, match="inside the folder"):
        write_archive(tree, tree / "x.tar.xz", root_name="a", mtime=MTIME)
    with pytest.raises(PublishError, match="unknown archive format"):
        write_archive(tree, tmp_path / "x.tgz", root_name="a", mtime=MTIME, fmt="tgz")  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


# ---------------------------------------------------------------------------------
# zip details
# ---------------------------------------------------------------------------------


def test_zip_entries_are_normalised(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "src", seed=6, umask=0o002)
    for rel in SYMLINKS:
        (tree / rel).unlink()
    result = write_archive(tree, tmp_path / "w.zip", root_name="layer@1", mtime=MTIME, fmt="zip")
    expected_time = time.gmtime(MTIME)[:6]
    with zipfile.ZipFile(result.path) as zf:
        infos = zf.infolist()
        names = [i.filename.rstrip("/") for i in infos]
        assert names == [n for n in expected_member_names("layer@1") if not n.endswith(tuple(SYMLINKS))]
        for info in infos:
            assert info.create_system == 3
            # DOS times have 2-second resolution
            assert info.date_time[:5] == expected_time[:5]
            assert info.date_time[5] == expected_time[5] - expected_time[5] % 2
            mode = info.external_attr >> 16
            if info.is_dir():
                assert mode == stat.S_IFDIR | 0o755 and info.external_attr & 0x10
            else:
                assert info.compress_type == zipfile.ZIP_DEFLATED
                assert mode in (stat.S_IFREG | 0o644, stat.S_IFREG | 0o755)
        assert zf.getinfo("layer@1/bin/run").external_attr >> 16 == stat.S_IFREG | 0o755
        assert zf.read("layer@1/lib/python3.11/site-packages/pkg/hard-copy.bin") == b"hard-linked content\n"
        assert zf.testzip() is None


def test_zip_timestamp_is_clamped_to_1980(tmp_path: Path) -> None:
    tree = tmp_path / "src"
    tree.mkdir()
    (tree / "f.txt").write_text("x")
    result = write_archive(tree, tmp_path / "old.zip", root_name="old", mtime=0, fmt="zip")
    with zipfile.ZipFile(result.path) as zf:
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}


# ---------------------------------------------------------------------------------
# round trip through the safe extractor (its own tests are in test_extract.py)
# ---------------------------------------------------------------------------------


def test_safe_extract_zip_round_trip(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "src", seed=8, umask=0o022)
    for rel in SYMLINKS:
        (tree / rel).unlink()
    result = write_archive(tree, tmp_path / "w.zip", root_name="layer@1", mtime=MTIME, fmt="zip")
    top = safe_extract(result.path, tmp_path / "dest")
    assert top == tmp_path / "dest" / "layer@1"
    for rel, (content, executable) in FILES.items():
        assert (top / rel).read_bytes() == content
        assert bool((top / rel).stat().st_mode & stat.S_IXUSR) == executable
    assert (top / "include" / "empty").is_dir()


def test_safe_extract_tar_round_trip(tmp_path: Path) -> None:
    """Everything ``write_archive`` writes unpacks again: files, modes, mtimes, symlinks."""
    tree = make_tree(tmp_path / "src", seed=9, umask=0o022)
    result = write_archive(tree, tmp_path / "w.tar.xz", root_name="layer@1", mtime=MTIME)
    top = safe_extract(result.path, tmp_path / "dest")
    assert top == tmp_path / "dest" / "layer@1"
    for rel, (content, executable) in FILES.items():
        assert (top / rel).read_bytes() == content
        assert bool((top / rel).stat().st_mode & stat.S_IXUSR) == executable
        assert (top / rel).stat().st_mtime == MTIME
    for rel, target in SYMLINKS.items():
        assert os.readlink(top / rel) == target
    for rel, src in HARDLINKS.items():
        assert (top / rel).read_bytes() == (top / src).read_bytes()
    assert (top / "include" / "empty").is_dir()
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["layer@1"]


def test_x86_filter_chain_is_deterministic_and_readable_by_xz(tmp_path: Path) -> None:
    """x86-64 targets get the x86 BCJ filter in front of LZMA2: still plain .tar.xz."""
    src = make_tree(tmp_path / "src", seed=7, umask=0o022)
    plain = write_archive(src, tmp_path / "plain.tar.xz", root_name="layer", mtime=1_700_000_000)
    one = write_archive(src, tmp_path / "x86-1.tar.xz", root_name="layer", mtime=1_700_000_000,
                        arch="x86_64", threads=1, chunk_size=64 * 1024)
    two = write_archive(src, tmp_path / "x86-2.tar.xz", root_name="layer", mtime=1_700_000_000,
                        arch="x86_64", threads=2, chunk_size=64 * 1024)
    assert one.sha256 == two.sha256 and one.sha256 != plain.sha256
    assert xz_filters("x86_64")[0]["id"] == lzma.FILTER_X86
    assert xz_filters("aarch64") == [{"id": lzma.FILTER_LZMA2, "preset": 6}]
    listing = subprocess.run(["tar", "-tJf", str(one.path)], capture_output=True, text=True, check=True)
    assert [n.rstrip("/") for n in listing.stdout.splitlines()] == expected_member_names("layer")
    with tarfile.open(one.path) as tar, tarfile.open(plain.path) as ref:
        assert [m.name for m in tar] == [m.name for m in ref]


def test_safe_extract_is_still_importable_from_archive() -> None:
    """Older callers import ``safe_extract`` from ``archive``: it is the same function."""
    assert archive.safe_extract is safe_extract
