"""Zip archives (Windows layers) are byte-reproducible, and unpack safely.

A synthetic Windows layer tree is made twice, differently in every way that must not
matter (file creation order, mtimes, umask, build folder, time zone); both zips must be
the same bytes.  The zip's structure is then read byte by byte: fixed DOS timestamps,
sorted members, Unix external attributes, deflate at level 6, no extra fields, no data
descriptors, no comments.
"""

from __future__ import annotations

import os
import random
import re
import stat
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import pytest

from venvstacks_docker import publish
from venvstacks_docker.archive import ZIP_LEVEL, write_archive
from venvstacks_docker.errors import PublishError, VerifyError
from venvstacks_docker.extract import safe_extract

EPOCH = 1_790_812_800  # 2026-10-01T00:00:00Z, sample_project's locked_at
ROOT = "framework-sci@2"
_BIG = bytes(random.Random(5).choices(b"import numpy as np\n", k=600_000))
FILES: dict[str, tuple[bytes, bool]] = {  # relative path -> (content, owner may execute)
    "Scripts/python.exe": (b"MZ venv launcher" * 64, True),
    "Scripts/pythonw.exe": (b"MZ venv launcher (windowed)" * 64, True),
    "Lib/site-packages/sci/__init__.py": (b"from ._core import *\n", False),
    "Lib/site-packages/sci/_core.cp311-win_amd64.pyd": (_BIG, False),
    "Lib/site-packages/sci/empty.txt": (b"", False),
    "Lib/site-packages/sci/d\u00e9j\u00e0_vu.txt": (b"non-ASCII name: UTF-8 flag\n", False),
    "Lib/site-packages/sci-2.0.dist-info/RECORD": (b"sci/__init__.py,sha256=x,21\n", False),
    "Library/bin/sci_helper.dll": (b"MZ dll", False),
    "share/venv/metadata/venvstacks_layer.json": (b'{"python": "Scripts/python.exe"}\n', False),
    "postinstall.py": (b"print('postinstall')\n", False),
}
EMPTY_DIRS = ("Lib/site-packages/sci/data",)


def make_tree(root: Path, *, seed: int, umask: int) -> tuple[Path, list[str]]:
    """The same names and contents; creation order (returned), modes and mtimes depend on
    ``seed``/``umask``."""
    rng = random.Random(seed)
    old = os.umask(umask)
    try:
        items = [*FILES.items()]
        rng.shuffle(items)  # creation order: the order a directory lists its entries in
        for rel, (content, executable) in items:
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            if executable:
                path.chmod(0o777 & ~umask | stat.S_IXUSR)
            os.utime(path, (rng.randrange(10**9, 2 * 10**9),) * 2)
        for rel in EMPTY_DIRS:
            (root / rel).mkdir(parents=True)
        for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
            os.utime(folder, (rng.randrange(10**9, 2 * 10**9),) * 2)
    finally:
        os.umask(old)
    return root, [rel for rel, _ in items]


def zip_in_subprocess(src: Path, dest: Path, env_extra: dict[str, str]) -> None:
    code = ("import sys; from pathlib import Path; from venvstacks_docker.archive import write_archive; "
            f"write_archive(Path(sys.argv[1]), Path(sys.argv[2]), root_name={ROOT!r}, mtime={EPOCH}, fmt='zip')")
    subprocess.run([sys.executable, "-c", code, src, dest], check=True, env={**os.environ, **env_extra})


def test_same_windows_layer_gives_identical_zip_bytes(tmp_path: Path) -> None:
    tree_a, order_a = make_tree(tmp_path / "a" / "build", seed=1, umask=0o022)
    tree_b, order_b = make_tree(tmp_path / "elsewhere" / "deeper" / "build", seed=2, umask=0o077)
    a = write_archive(tree_a, tmp_path / "a.zip", root_name=ROOT, mtime=EPOCH, fmt="zip")
    zip_in_subprocess(tree_b, tmp_path / "b.zip", {"TZ": "Asia/Kathmandu", "LC_ALL": "C"})
    assert a.path.read_bytes() == (tmp_path / "b.zip").read_bytes()
    # the trees really did differ in the ways that must not matter
    exe_a, exe_b = tree_a / "Scripts/python.exe", tree_b / "Scripts/python.exe"
    assert exe_a.stat().st_mode != exe_b.stat().st_mode and exe_a.stat().st_mtime != exe_b.stat().st_mtime
    assert order_a != order_b


def _dos(when: int) -> tuple[int, int]:
    t = time.gmtime(when)
    return (t.tm_hour << 11 | t.tm_min << 5 | t.tm_sec // 2), ((t.tm_year - 1980) << 9 | t.tm_mon << 5 | t.tm_mday)


def _central_directory(data: bytes) -> list[tuple[tuple[int, ...], str]]:
    """(fields, name) of each central directory record, read with struct alone."""
    eocd = data[-22:]  # no archive comment: the end record is the last 22 bytes
    sig, _, _, n_here, n_total, cd_size, cd_offset, comment_len = struct.unpack("<4s4H2LH", eocd)
    assert sig == b"PK\x05\x06" and n_here == n_total and comment_len == 0
    records, pos = [], cd_offset
    for _ in range(n_total):
        fields = struct.unpack("<4s4B4HL2L5H2L", data[pos:pos + 46])
        name_len, extra_len, comment = fields[12], fields[13], fields[14]
        name = data[pos + 46:pos + 46 + name_len].decode("utf-8")
        records.append((fields, name))
        pos += 46 + name_len + extra_len + comment
    assert pos == cd_offset + cd_size
    return records


def test_zip_bytes_are_normalised(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "build", seed=3, umask=0o002)[0]
    data = write_archive(tree, tmp_path / "w.zip", root_name=ROOT, mtime=EPOCH, fmt="zip").path.read_bytes()
    dostime, dosdate = _dos(EPOCH)
    records = _central_directory(data)
    names = [name for _, name in records]
    dirs = sorted({f"{ROOT}/{'/'.join(Path(rel).parts[:i])}/" for rel in [*FILES, *EMPTY_DIRS]
                   for i in range(1, len(Path(rel).parts) + (rel in EMPTY_DIRS))})
    assert sorted(names) == sorted([f"{ROOT}/", *dirs, *(f"{ROOT}/{rel}" for rel in FILES)])
    # tree order: each folder's entries sorted by name, a folder directly followed by its contents
    assert names == sorted(names, key=lambda n: n.rstrip("/").split("/"))
    for fields, name in records:
        (_, made_by, made_os, need, _, flags, method, mtime, mdate, crc, csize, size,
         _, extra_len, comment_len, disk, internal, external, offset) = fields
        assert (made_os, made_by, need) == (3, 20, 20)  # Unix, zip 2.0: the mode is in the external attributes
        assert flags == (0x800 if not name.isascii() else 0)  # UTF-8 names flagged; never a data descriptor
        assert (mtime, mdate) == (dostime, dosdate)
        assert (extra_len, comment_len, disk, internal) == (0, 0, 0, 0)
        local = struct.unpack("<4s5H3L2H", data[offset:offset + 30])
        assert local == (b"PK\x03\x04", need, flags, method, mtime, mdate, crc, csize, size, len(name.encode()), 0)
        body = data[offset + 30 + len(name.encode()):offset + 30 + len(name.encode()) + csize]
        if name.endswith("/"):
            assert (method, size, external) == (0, 0, (stat.S_IFDIR | 0o755) << 16 | 0x10)
            continue
        content, executable = FILES[name.removeprefix(f"{ROOT}/")]
        assert external == (stat.S_IFREG | (0o755 if executable else 0o644)) << 16
        packer = zlib.compressobj(ZIP_LEVEL, zlib.DEFLATED, -15)  # raw deflate at the recorded level
        assert (method, size, crc) == (zipfile.ZIP_DEFLATED, len(content), zlib.crc32(content))
        assert body == packer.compress(content) + packer.flush()


def test_source_date_epoch_dates_every_member(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(EPOCH + 1))
    epoch, origin = publish.source_date_epoch("2025-08-27T00:00:00+00:00")
    assert (epoch, origin) == (EPOCH + 1, "environment")
    tree = make_tree(tmp_path / "build", seed=4, umask=0o022)[0]
    odd = write_archive(tree, tmp_path / "odd.zip", root_name=ROOT, mtime=epoch, fmt="zip")
    even = write_archive(tree, tmp_path / "even.zip", root_name=ROOT, mtime=EPOCH, fmt="zip")
    with zipfile.ZipFile(odd.path) as zf:
        assert {info.date_time for info in zf.infolist()} == {time.gmtime(EPOCH)[:6]}
    # DOS times count in 2 seconds: an odd epoch is stored as the second before it
    assert odd.sha256 == even.sha256


@pytest.mark.parametrize(("mtime", "stored"), [(0, (1980, 1, 1, 0, 0, 0)), (8**11 - 1, (2107, 12, 31, 23, 59, 58))])
def test_out_of_range_epochs_are_clamped(tmp_path: Path, mtime: int, stored: tuple[int, ...]) -> None:
    tree = make_tree(tmp_path / "build", seed=5, umask=0o022)[0]
    result = write_archive(tree, tmp_path / "w.zip", root_name=ROOT, mtime=mtime, fmt="zip")
    with zipfile.ZipFile(result.path) as zf:
        assert {info.date_time for info in zf.infolist()} == {stored}


def test_zip_unpacks_safely_beside_other_layers(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "build", seed=6, umask=0o022)[0]
    result = write_archive(tree, tmp_path / "w.zip", root_name=ROOT, mtime=EPOCH, fmt="zip")
    dest = tmp_path / "deployed"
    (dest / "cpython-3.11").mkdir(parents=True)
    (dest / "cpython-3.11" / "python.exe").write_bytes(b"MZ runtime")
    top = safe_extract(result.path, dest, top=ROOT)
    assert top == dest / ROOT
    unpacked = {p.relative_to(top).as_posix(): p.read_bytes() for p in top.rglob("*") if p.is_file()}
    assert unpacked == {rel: content for rel, (content, _) in FILES.items()}
    assert all((top / rel).is_dir() for rel in EMPTY_DIRS)
    assert os.access(top / "Scripts/python.exe", os.X_OK) and not os.access(top / "postinstall.py", os.X_OK)
    assert {int(p.stat().st_mtime) for p in top.rglob("*")} == {EPOCH}
    assert sorted(p.name for p in dest.iterdir()) == ["cpython-3.11", ROOT]  # no staging folder left
    assert (dest / "cpython-3.11" / "python.exe").read_bytes() == b"MZ runtime"
    with pytest.raises(VerifyError, match="already exists"):  # never over an existing layer
        safe_extract(result.path, dest, top=ROOT)


@pytest.mark.parametrize(("names", "message"), [
    (["Lib/site-packages/a:b.py"], "'a:b.py', which has characters Windows does not allow"),
    (["Lib/site-packages/CON.txt"], "reserved device name on Windows \\(CON\\)"),
    (["Lib/site-packages/trailing."], "ends with a dot or a space"),
    (["Lib/site-packages/back\\slash.py"], "characters Windows does not allow"),
    (["Lib/site-packages/Foo.py", "Lib/site-packages/foo.py"], "differ only in case"),
    (["Lib/Site-Packages/x.py", "Lib/site-packages/y.py"], "differ only in case"),
])
def test_zip_writer_refuses_names_windows_cannot_hold(tmp_path: Path, names: list[str], message: str) -> None:
    tree = tmp_path / "build"
    for rel in names:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text("x")
    with pytest.raises(PublishError, match=message):
        write_archive(tree, tmp_path / "w.zip", root_name=ROOT, mtime=EPOCH, fmt="zip")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build"]  # no archive, no temporary file
    # the same tree is fine in a tar.xz (Linux and macOS layers)
    write_archive(tree, tmp_path / "w.tar.xz", root_name=ROOT, mtime=EPOCH)


@pytest.mark.parametrize("name", ["top/aux.py", "top/x:y.txt", "top/sub/com1", "top/dir./f", "top/a\\b.py"])
def test_extractor_refuses_zip_names_windows_cannot_hold(tmp_path: Path, name: str) -> None:
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("top/", b"")
        zf.writestr(name, b"x")
    dest = tmp_path / "deploy"
    with pytest.raises(VerifyError, match=re.escape(f"refusing to extract bad.zip: member {name!r} has the name")):
        safe_extract(archive, dest)
    assert list(dest.iterdir()) == []
