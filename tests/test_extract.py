"""The one safe extractor: what it refuses, what it allows, and that it never replaces.

Every archive here is a real tar/zip written in the test; hostile ones are written by
hand with tarfile/zipfile because ``write_archive`` never produces such members.
"""

from __future__ import annotations

import io
import lzma
import os
import random
import shutil
import stat
import subprocess
import tarfile
import warnings
import zipfile
from pathlib import Path

import pytest

from venvstacks_docker.archive import write_archive
from venvstacks_docker.errors import RuntimeArchiveError, VerifyError
from venvstacks_docker.extract import extract_tree, safe_extract

MTIME = 1_700_000_000
REG = stat.S_IFREG | 0o644
LNK = stat.S_IFLNK | 0o777
DIR = stat.S_IFDIR | 0o755


def _tar(path: Path, members: list[tuple[str, str, bytes | str]]) -> Path:
    """Write a tar.xz by hand: (name, kind, data-or-linkname); kinds: dir file sym hard chr fifo."""
    types = {
        "dir": tarfile.DIRTYPE, "file": tarfile.REGTYPE, "sym": tarfile.SYMTYPE,
        "hard": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE,
    }
    with tarfile.open(path, "w:xz") as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.type = types[kind]
            info.mode = 0o755 if kind in ("dir", "sym") else 0o644
            info.mtime = MTIME
            if kind in ("sym", "hard"):
                info.linkname = str(data)
                tar.addfile(info)
            elif kind == "file":
                assert isinstance(data, bytes)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def _zip(path: Path, members: list[tuple[str, int, bytes]]) -> Path:
    """Write a zip by hand: (name, unix type and mode, data); duplicate names allowed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(path, "w") as zf:
            for name, mode, data in members:
                info = zipfile.ZipInfo(name, date_time=(2023, 11, 14, 22, 13, 20))
                info.create_system = 3
                info.external_attr = mode << 16
                zf.writestr(info, data)
    return path


def _leftovers(folder: Path) -> list[str]:
    """Staging folders left behind in ``folder`` (there must never be any)."""
    return sorted(p.name for p in folder.iterdir() if ".unpacking-" in p.name)


def _snapshot(folder: Path) -> dict[str, tuple[str, bytes | str, int]]:
    """Everything below ``folder``: path -> (kind, content or link target, link count)."""
    found: dict[str, tuple[str, bytes | str, int]] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            found[rel] = ("symlink", os.readlink(path), st.st_nlink)
        elif stat.S_ISDIR(st.st_mode):
            found[rel] = ("dir", "", 0)
        else:
            found[rel] = ("file", path.read_bytes(), st.st_nlink)
    return found


# ---------------------------------------------------------------------------------
# Hostile archives: each is refused, naming its last member, and leaves nothing
# ---------------------------------------------------------------------------------

TOP = ("top", "dir", "")
MALICIOUS: dict[str, list[tuple[str, str, bytes | str]]] = {
    # names
    "absolute": [("/tmp/evil-abs", "file", b"x")],
    "dotdot": [TOP, ("top/../evil.txt", "file", b"x")],
    "leading-dotdot": [("../evil.txt", "file", b"x")],
    "second-top-folder": [TOP, ("top/ok.txt", "file", b"ok"), ("other/evil.txt", "file", b"x")],
    "file-before-top": [("top/evil.txt", "file", b"x")],
    "file-replaces-top": [TOP, ("top", "file", b"x")],
    "device": [TOP, ("top/dev", "chr", "")],
    "fifo": [TOP, ("top/pipe", "fifo", "")],
    # symlinks
    "absolute-symlink": [TOP, ("top/lnk", "sym", "/etc/passwd")],
    "escaping-symlink": [TOP, ("top/bin", "dir", ""), ("top/bin/lnk", "sym", "../../../outside")],
    # normpath(dest/top/up/../x) is inside, but up -> a/.. -> dest, so esc is dest/../x
    "escape-through-earlier-symlink": [
        TOP, ("top/a", "sym", "."), ("top/up", "sym", "a/.."), ("top/esc", "sym", "up/../x"),
    ],
    "write-through-symlink": [TOP, ("top/lnk", "sym", "../sibling"), ("top/lnk/evil.txt", "file", b"x")],
    "write-through-nested-symlink": [
        TOP, ("top/d", "dir", ""), ("top/d/lnk", "sym", "."), ("top/d/lnk/sub/evil.txt", "file", b"x"),
    ],
    "write-below-file": [TOP, ("top/f", "file", b"x"), ("top/f/evil.txt", "file", b"x")],
    # hard links: only to an earlier regular-file member of this archive
    "escaping-hardlink": [TOP, ("top/hl", "hard", "../outside.txt")],
    "hardlink-to-file-beside-layers": [TOP, ("top/hl", "hard", "outside-in-dest.txt")],
    "hardlink-to-sibling-layer": [TOP, ("top/hl", "hard", "sibling/keep.txt")],
    "hardlink-to-missing-member": [TOP, ("top/hl", "hard", "top/later.txt")],  # even if it came later
    "hardlink-to-symlink-member": [TOP, ("top/s", "sym", "f"), ("top/hl", "hard", "top/s")],
    "hardlink-to-folder": [TOP, ("top/d", "dir", ""), ("top/hl", "hard", "top/d")],
    "hardlink-to-itself": [TOP, ("top/hl", "hard", "top/hl")],
    "absolute-hardlink": [TOP, ("top/hl", "hard", "/etc/passwd")],
    # duplicate names: a member may not replace anything
    "file-then-file": [TOP, ("top/f", "file", b"one"), ("top/f", "file", b"two")],
    "link-then-file": [TOP, ("top/f", "file", b"one"), ("top/h", "hard", "top/f"), ("top/h", "file", b"two")],
    "file-then-symlink": [TOP, ("top/f", "file", b"one"), ("top/f", "sym", "../sibling/keep.txt")],
    "symlink-then-file": [TOP, ("top/s", "sym", "f"), ("top/s", "file", b"x")],
    "folder-then-file": [TOP, ("top/d", "dir", ""), ("top/d", "file", b"x")],
    "file-then-folder": [TOP, ("top/f", "file", b"x"), ("top/f", "dir", "")],
    "symlink-then-folder": [TOP, ("top/s", "sym", "../sibling"), ("top/s", "dir", "")],
    "implied-folder-then-symlink": [TOP, ("top/d/f", "file", b"x"), ("top/d", "sym", "../sibling")],
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_safe_extract_refuses_malicious_tar(tmp_path: Path, case: str) -> None:
    members = MALICIOUS[case]
    archive = _tar(tmp_path / f"{case}.tar.xz", members)
    dest = tmp_path / "deploy"
    (dest / "sibling").mkdir(parents=True)  # an existing peer layer folder
    (dest / "sibling" / "keep.txt").write_text("sibling layer file")
    (dest / "outside-in-dest.txt").write_text("user file beside the layers")
    (tmp_path / "outside.txt").write_text("outside")
    before = _snapshot(tmp_path)
    bad_member = members[-1][0]
    with pytest.raises(VerifyError) as excinfo:
        safe_extract(archive, dest)
    message = str(excinfo.value)
    assert f"refusing to extract {archive.name}: member {bad_member!r}" in message
    assert "hint:" in message
    # nothing written outside, nothing replaced, nothing left behind inside
    assert _snapshot(tmp_path) == before
    assert not Path("/tmp/evil-abs").exists()


@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("hardlink-to-file-beside-layers", "not an earlier regular file of this archive"),
        ("hardlink-to-missing-member", "not an earlier regular file of this archive"),
        ("file-then-file", "same name as an earlier file"),
        ("link-then-file", "same name as an earlier hard link"),
        ("file-then-symlink", "same name as an earlier file"),
        ("write-through-symlink", "is below the symlink member 'top/lnk'"),
        ("write-below-file", "is below the file member 'top/f'"),
        ("escape-through-earlier-symlink", "resolves outside"),
    ],
)
def test_refusals_say_why(tmp_path: Path, case: str, why: str) -> None:
    archive = _tar(tmp_path / "a.tar.xz", MALICIOUS[case])
    with pytest.raises(VerifyError, match=why):
        safe_extract(archive, tmp_path / "dest")


def test_symlink_escaping_through_a_later_symlink_is_refused(tmp_path: Path) -> None:
    """``esc -> a/b/up/..`` looks harmless until ``a/b/up -> ../../..`` arrives."""
    archive = _tar(tmp_path / "late.tar.xz", [
        TOP, ("top/esc", "sym", "a/b/up/.."), ("top/a", "dir", ""), ("top/a/b", "dir", ""),
        ("top/a/b/up", "sym", "../../.."),
    ])
    dest = tmp_path / "dest"
    with pytest.raises(VerifyError, match=r"member 'top/esc' is a symlink to 'a/b/up/\.\.', which resolves outside"):
        safe_extract(archive, dest)
    assert list(dest.iterdir()) == []


def test_symlink_loop_is_refused(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "loop.tar.xz", [TOP, ("top/a", "sym", "b/x"), ("top/b", "sym", "a/y")])
    with pytest.raises(VerifyError, match="symlink loop"):
        safe_extract(archive, tmp_path / "dest")
    assert list((tmp_path / "dest").iterdir()) == []


# ---------------------------------------------------------------------------------
# The filed bug: a hard link to an existing file, then a regular member of that name
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "victim",
    ["notes.txt", "cpython-3.11/lib/python3.11/os.py"],
    ids=["user-file-beside-layers", "file-of-another-layer"],
)
@pytest.mark.parametrize("then_file", [True, False], ids=["link-then-file", "link-alone"])
def test_hard_link_to_existing_file_in_target_is_refused(tmp_path: Path, victim: str, then_file: bool) -> None:
    dest = tmp_path / "deployed"
    victim_path = dest / victim
    victim_path.parent.mkdir(parents=True)
    victim_path.write_bytes(b"# the real os.py\n")
    members: list[tuple[str, str, bytes | str]] = [("app", "dir", ""), ("app/os.py", "hard", victim)]
    if then_file:
        members.append(("app/os.py", "file", b"import evil\n"))
    archive = _tar(tmp_path / "app.tar.xz", members)
    with pytest.raises(VerifyError) as excinfo:
        safe_extract(archive, dest)
    assert (
        f"member 'app/os.py' is a hard link to {victim!r}, which is not an earlier regular file"
        in str(excinfo.value)
    )
    assert victim_path.read_bytes() == b"# the real os.py\n"
    assert victim_path.stat().st_nlink == 1  # no second name was ever made for it
    assert not (dest / "app").exists()
    assert _leftovers(dest) == []


def test_hard_link_to_earlier_member_works(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "ok.tar.xz", [
        TOP, ("top/lib", "dir", ""), ("top/lib/real.so", "file", b"\x7fELF shared"),
        ("top/lib/alias.so", "hard", "top/lib/real.so"),
        ("top/bin", "dir", ""), ("top/bin/alias2.so", "hard", "./top/lib/real.so"),
        ("top/lib", "dir", ""),  # a folder entry repeated as a folder is tolerated
    ])
    top = safe_extract(archive, tmp_path / "dest")
    real, alias, alias2 = top / "lib" / "real.so", top / "lib" / "alias.so", top / "bin" / "alias2.so"
    assert alias.read_bytes() == alias2.read_bytes() == real.read_bytes() == b"\x7fELF shared"
    assert alias.stat().st_ino == real.stat().st_ino == alias2.stat().st_ino
    assert real.stat().st_nlink == 3
    assert _leftovers(tmp_path / "dest") == []


def test_gnu_tar_archive_with_hard_links_extracts(tmp_path: Path) -> None:
    """An archive written by GNU tar (tar.gz, hard links as link records) extracts too."""
    src = tmp_path / "layer@2"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "tool").write_text("#!/bin/sh\n")
    (src / "bin" / "tool").chmod(0o755)
    os.link(src / "bin" / "tool", src / "bin" / "tool-alias")
    archive = tmp_path / "gnu.tar.gz"
    subprocess.run(["tar", "-czf", archive, "-C", tmp_path, "layer@2"], check=True)
    with tarfile.open(archive) as tar:
        assert any(m.islnk() for m in tar.getmembers())
    shutil.rmtree(src)
    top = safe_extract(archive, tmp_path / "dest")
    assert os.access(top / "bin" / "tool", os.X_OK)
    assert (top / "bin" / "tool-alias").stat().st_ino == (top / "bin" / "tool").stat().st_ino


# ---------------------------------------------------------------------------------
# Symlinks and sibling layers
# ---------------------------------------------------------------------------------


def test_safe_extract_allows_sibling_layer_symlink(tmp_path: Path) -> None:
    runtime = tmp_path / "rt-src"
    (runtime / "bin").mkdir(parents=True)
    (runtime / "bin" / "python3").write_text("#!/bin/sh\necho runtime\n")
    (runtime / "bin" / "python3").chmod(0o755)
    app = tmp_path / "app-src"
    (app / "bin").mkdir(parents=True)
    (app / "bin" / "python").symlink_to("../../cpython@3.11/bin/python3")
    (app / "lib").mkdir()
    (app / "lib64").symlink_to("lib")
    (app / "data.txt").write_text("data")
    rt_archive = write_archive(runtime, tmp_path / "rt.tar.xz", root_name="cpython@3.11", mtime=MTIME)
    app_archive = write_archive(app, tmp_path / "app.tar.xz", root_name="app-x@1", mtime=MTIME)

    dest = tmp_path / "deploy here"
    assert safe_extract(rt_archive.path, dest) == dest / "cpython@3.11"
    assert safe_extract(app_archive.path, dest) == dest / "app-x@1"
    link = dest / "app-x@1" / "bin" / "python"
    assert os.readlink(link) == "../../cpython@3.11/bin/python3"
    assert link.resolve() == (dest / "cpython@3.11" / "bin" / "python3").resolve()
    assert os.access(link, os.X_OK)
    assert os.readlink(dest / "app-x@1" / "lib64") == "lib"
    assert (dest / "app-x@1" / "data.txt").stat().st_mode & 0o777 == 0o644
    assert (dest / "app-x@1" / "data.txt").stat().st_mtime == MTIME
    assert _leftovers(dest) == []

    # the same layer cannot be extracted over itself
    with pytest.raises(VerifyError, match="already exists"):
        safe_extract(app_archive.path, dest)
    assert (dest / "app-x@1" / "data.txt").read_text() == "data"
    assert _leftovers(dest) == []


def test_member_below_symlink_to_sibling_layer_is_refused(tmp_path: Path) -> None:
    """``app/bin -> ../cpython-3.11/bin`` is a fine link, but nothing may go through it."""
    dest = tmp_path / "deployed"
    (dest / "cpython-3.11" / "bin").mkdir(parents=True)
    (dest / "cpython-3.11" / "bin" / "python3").write_bytes(b"real interpreter")
    before = _snapshot(dest)
    archive = _tar(tmp_path / "app.tar.xz", [
        ("app", "dir", ""), ("app/bin", "sym", "../cpython-3.11/bin"),
        ("app/bin/python3", "file", b"evil"),
    ])
    with pytest.raises(VerifyError, match=r"member 'app/bin/python3' is below the symlink member 'app/bin'"):
        safe_extract(archive, dest)
    assert _snapshot(dest) == before


@pytest.mark.parametrize(
    ("existing", "linkname"),
    [
        (("sibling/a/up", "../.."), "../sibling/a/up/../etc"),  # another layer's link, then '..'
        (("data", "/"), "../data/etc"),  # the user's own link beside the layers
    ],
    ids=["through-sibling-layer-link", "through-user-link"],
)
def test_symlink_escaping_through_links_already_on_disk_is_refused(
    tmp_path: Path, existing: tuple[str, str], linkname: str
) -> None:
    """Lexically inside the destination, but the links already there lead out of it."""
    dest = tmp_path / "deployed"
    (dest / existing[0]).parent.mkdir(parents=True)
    (dest / existing[0]).symlink_to(existing[1])
    archive = _tar(tmp_path / "app.tar.xz", [("app", "dir", ""), ("app/esc", "sym", linkname)])
    with pytest.raises(VerifyError, match=r"member 'app/esc' is a symlink to .* through links already there"):
        safe_extract(archive, dest)
    assert not (dest / "app").exists() and _leftovers(dest) == []


def test_top_folder_must_match_the_expected_name(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "x.tar.xz", [("other", "dir", ""), ("other/f", "file", b"x")])
    with pytest.raises(VerifyError, match=r"member 'other' is outside the archive's single top folder 'app'"):
        safe_extract(archive, tmp_path / "dest", top="app")
    assert list((tmp_path / "dest").iterdir()) == []


def test_failure_midway_leaves_no_layer_and_no_staging_folder(tmp_path: Path) -> None:
    """A truncated archive fails after several members were written: all are removed."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"a{i}.txt").write_text(f"small file {i}\n")
    (src / "z-big.bin").write_bytes(random.Random(1).randbytes(512 * 1024))
    result = write_archive(src, tmp_path / "layer.tar.xz", root_name="layer", mtime=MTIME)
    blob = result.path.read_bytes()
    result.path.write_bytes(blob[: len(blob) * 3 // 4])
    dest = tmp_path / "dest"
    with pytest.raises(VerifyError, match=r"cannot unpack layer\.tar\.xz: the archive is corrupt"):
        safe_extract(result.path, dest)
    assert list(dest.iterdir()) == []
    # the cut is after the small files, so they had been unpacked before the failure
    assert b"layer/a4.txt" in lzma.LZMADecompressor().decompress(result.path.read_bytes())


# ---------------------------------------------------------------------------------
# zip
# ---------------------------------------------------------------------------------


def test_safe_extract_refuses_malicious_zip_names(tmp_path: Path) -> None:
    dest = tmp_path / "deploy"
    for name in ("../evil.txt", "/abs/evil.txt", "top/../../evil.txt"):
        archive = tmp_path / "bad.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("top/", b"")
            zf.writestr(zipfile.ZipInfo(name), b"x")
        with pytest.raises(VerifyError, match="refusing to extract"):
            safe_extract(archive, dest)
        assert list(dest.iterdir()) == []
    assert not (tmp_path / "evil.txt").exists()


ZIP_MALICIOUS: dict[str, list[tuple[str, int, bytes]]] = {
    "duplicate-file": [("top/", DIR, b""), ("top/a.txt", REG, b"one"), ("top/a.txt", REG, b"two")],
    "file-then-symlink": [("top/", DIR, b""), ("top/a", REG, b"one"), ("top/a", LNK, b"../sibling/keep.txt")],
    "below-symlink": [("top/", DIR, b""), ("top/lnk", LNK, b"../sibling"), ("top/lnk/evil.txt", REG, b"x")],
    "escaping-symlink": [("top/", DIR, b""), ("top/lnk", LNK, b"../../outside")],
    "device": [("top/", DIR, b""), ("top/dev", stat.S_IFCHR | 0o644, b"")],
}


@pytest.mark.parametrize("case", sorted(ZIP_MALICIOUS))
def test_safe_extract_refuses_malicious_zip(tmp_path: Path, case: str) -> None:
    members = ZIP_MALICIOUS[case]
    archive = _zip(tmp_path / f"{case}.zip", members)
    dest = tmp_path / "deploy"
    (dest / "sibling").mkdir(parents=True)
    (dest / "sibling" / "keep.txt").write_text("sibling layer file")
    before = _snapshot(tmp_path)
    with pytest.raises(VerifyError, match=f"refusing to extract {case}.zip: member {members[-1][0]!r}"):
        safe_extract(archive, dest)
    assert _snapshot(tmp_path) == before


def test_zip_with_repeated_folder_and_sibling_symlink_extracts(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "ok.zip", [
        ("top/", DIR, b""), ("top/bin/", DIR, b""), ("top/bin/tool", stat.S_IFREG | 0o755, b"#!/bin/sh\n"),
        ("top/bin/", DIR, b""), ("top/bin/python", LNK, b"../../rt/bin/python3"),
    ])
    top = safe_extract(archive, tmp_path / "dest")
    assert os.access(top / "bin" / "tool", os.X_OK)
    assert os.readlink(top / "bin" / "python") == "../../rt/bin/python3"


# ---------------------------------------------------------------------------------
# extract_tree (runtime archives: the contents of python/ become the destination)
# ---------------------------------------------------------------------------------


def test_extract_tree_refusal_leaves_nothing(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "rt.tar.xz", [
        ("python/bin/python3", "file", b"ok"), ("python/lib/os.py", "file", b"os"),
        ("python/lib/os.py", "file", b"evil"),
    ])
    dest = tmp_path / "area" / "runtime"
    with pytest.raises(RuntimeArchiveError, match=r"member 'python/lib/os.py' has the same name"):
        extract_tree(archive, dest, top="python", error=RuntimeArchiveError)
    assert list((tmp_path / "area").iterdir()) == []


def test_extract_tree_fills_an_existing_empty_folder(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "rt.tar.xz", [
        ("python", "dir", ""), ("python/bin/python3.11", "file", b"exe"),
        ("python/bin/python3", "sym", "python3.11"), ("python/bin/python", "hard", "python/bin/python3.11"),
    ])
    dest = tmp_path / "runtime"
    dest.mkdir()
    extract_tree(archive, dest, top="python")
    assert (dest / "bin" / "python3").read_bytes() == b"exe"
    assert (dest / "bin" / "python").stat().st_ino == (dest / "bin" / "python3.11").stat().st_ino
    assert _leftovers(tmp_path) == []


def test_extract_tree_symlinks_must_stay_inside_the_tree(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "rt.tar.xz", [("python/bin", "dir", ""), ("python/bin/x", "sym", "../../sibling")])
    with pytest.raises(VerifyError, match="resolves outside"):
        extract_tree(archive, tmp_path / "runtime", top="python")
    assert not (tmp_path / "runtime").exists()
