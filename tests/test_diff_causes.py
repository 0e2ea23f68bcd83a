"""diff names the real cause: one kind of nondeterminism injected into a copy of a layer
(made by the project's own archive writer), one test each."""

from __future__ import annotations

import lzma
import py_compile
import shutil
import subprocess
from pathlib import Path

import pytest
from test_diff_support import EPOCH, change, layer_files, make_tree, read_tar, rewrite, write_layer

from venvstacks_docker import archive
from venvstacks_docker.diffing import ArchiveReport, compare_archives
from venvstacks_docker.diffing.analyzers import CALLS

SITE = "lib/python3.11/site-packages"


@pytest.fixture
def layer(tmp_path: Path) -> Path:
    tree = make_tree(tmp_path / "tree", layer_files())
    return write_layer(tree, tmp_path / "a.tar.xz", "layer")


def _only(report: ArchiveReport, kind: str) -> list[str]:
    """Names of the members with a finding of ``kind``."""
    return [m.name for m in report.members if kind in m.kinds]


def _explanation(report: ArchiveReport, kind: str) -> str:
    found = [f.explanation for f in report.findings if f.kind == kind]
    found += [f.explanation for m in report.members for f in m.findings if f.kind == kind]
    assert found, f"no {kind} finding in {report.kinds()}"
    return found[0]


def test_identical_archives_are_not_opened(layer: Path, tmp_path: Path) -> None:
    copy = rewrite(layer, tmp_path / "b.tar.xz")  # the injection helper alone changes nothing
    before = CALLS["pairs"]
    report = compare_archives(layer, copy)
    assert report.identical and not report.opened and report.members == []
    assert CALLS["pairs"] == before


def test_equal_members_never_reach_the_analyzers(layer: Path, tmp_path: Path) -> None:
    b = rewrite(layer, tmp_path / "b.tar.xz", change("mod7.py", data=b"def f7():\n    return 'seven'\n"))
    before = CALLS["pairs"]
    report = compare_archives(layer, b)
    assert [m.name for m in report.members] == [f"layer/{SITE}/pkg/mod7.py"]
    assert report.analyzed == 1 and CALLS["pairs"] == before + 1
    assert report.members_equal == report.members_a - 1


def test_mtime(layer: Path, tmp_path: Path) -> None:
    report = compare_archives(layer, rewrite(layer, tmp_path / "b.tar.xz", change("mod3.py", mtime=EPOCH + 3600)))
    assert _only(report, "mtime") == [f"layer/{SITE}/pkg/mod3.py"]
    assert report.analyzed == 0  # same bytes: only the header differs
    text = _explanation(report, "mtime")
    assert "modification time" in text and "2026-10-01T01:00:00Z" in text and "SOURCE_DATE_EPOCH" in text


def test_changed_mode(layer: Path, tmp_path: Path) -> None:
    report = compare_archives(layer, rewrite(layer, tmp_path / "b.tar.xz", change("__init__.py", mode=0o664)))
    assert _only(report, "mode") == [f"layer/{SITE}/pkg/__init__.py"]
    text = _explanation(report, "mode")
    assert "-rw-rw-r--" in text and "umask" in text


def test_owner(layer: Path, tmp_path: Path) -> None:
    report = compare_archives(layer, rewrite(layer, tmp_path / "b.tar.xz",
                                             change("bin/tool", uid=1000, gid=1000, uname="builder", gname="builder")))
    assert _only(report, "owner") == ["layer/bin/tool"]
    assert "builder:builder (uid 1000" in _explanation(report, "owner")


def test_shuffled_member_order(layer: Path, tmp_path: Path) -> None:
    def shuffle(items: list) -> list:  # type: ignore[type-arg]
        head, modules = items[:8], items[8:]
        return head + modules[::-1]

    report = compare_archives(layer, rewrite(layer, tmp_path / "b.tar.xz", order=shuffle))
    assert report.members == []  # every member is the same, only the order differs
    text = _explanation(report, "member-order")
    assert "another order" in text and "sorts members by name" in text


def test_different_compressor_preset(layer: Path, tmp_path: Path) -> None:
    preset9 = [{"id": lzma.FILTER_LZMA2, "preset": 9}]
    report = compare_archives(layer, rewrite(layer, tmp_path / "b.tar.xz", filters=preset9))
    assert report.members == [] and report.tar_sha256_a == report.tar_sha256_b
    text = _explanation(report, "compression")
    assert "only the compression differs" in text and "preset 9" in text and "preset 5 or 6" in text


def test_bcj_filter_and_streams(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree", layer_files(200))
    a = write_layer(tree, tmp_path / "a.tar.xz", "layer")
    b = write_layer(tree, tmp_path / "b.tar.xz", "layer", arch="x86_64", chunk_size=64 * 1024)
    text = _explanation(compare_archives(a, b), "compression")
    assert "x86 BCJ" in text and "streams" in text


def _pyc(tmp_path: Path, name: str, source: str, mode: py_compile.PycInvalidationMode, *,
         dfile: str | None = None, mtime: int = EPOCH) -> bytes:
    src = tmp_path / f"{name}.py"
    src.write_text(source)
    import os

    os.utime(src, (mtime, mtime))
    out = tmp_path / f"{name}.pyc"
    py_compile.compile(str(src), cfile=str(out), dfile=dfile, invalidation_mode=mode, doraise=True)
    return out.read_bytes()


def _pyc_pair(tmp_path: Path, pyc_a: bytes, pyc_b: bytes) -> ArchiveReport:
    name = f"{SITE}/pkg/__pycache__/mod.cpython-311.pyc"
    a = write_layer(make_tree(tmp_path / "ta", {name: pyc_a}), tmp_path / "a.tar.xz", "layer")
    b = write_layer(make_tree(tmp_path / "tb", {name: pyc_b}), tmp_path / "b.tar.xz", "layer")
    return compare_archives(a, b)


def test_pyc_with_a_timestamp(tmp_path: Path) -> None:
    source = "def f():\n    return 1\n"
    hashed = _pyc(tmp_path, "a", source, py_compile.PycInvalidationMode.CHECKED_HASH, dfile="pkg/mod.py")
    stamped = _pyc(tmp_path, "b", source, py_compile.PycInvalidationMode.TIMESTAMP, dfile="pkg/mod.py")
    report = _pyc_pair(tmp_path, hashed, stamped)
    text = _explanation(report, "pyc-invalidation-mode")
    assert "checked-hash" in text and "timestamp-based" in text and "SOURCE_DATE_EPOCH" in text


def test_pyc_source_mtime_and_embedded_path(tmp_path: Path) -> None:
    source = "def f():\n    return 1\n"
    mode = py_compile.PycInvalidationMode.TIMESTAMP
    a = _pyc(tmp_path, "a", source, mode, dfile=f"/work/_build/app/{SITE}/pkg/mod.py")
    b = _pyc(tmp_path, "b", source, mode, dfile=f"/tmp/xyz/_build/app/{SITE}/pkg/mod.py", mtime=EPOCH + 60)
    report = _pyc_pair(tmp_path, a, b)
    assert "2026-10-01T00:01:00Z" in _explanation(report, "pyc-source-mtime")
    text = _explanation(report, "pyc-embedded-path")
    assert "co_filename" in text and f"/tmp/xyz/_build/app/{SITE}/pkg/mod.py" in text
    assert "build folder" in text


def test_absolute_path_in_a_script(layer: Path, tmp_path: Path) -> None:
    script = b"#!/tmp/tmpk3x9/_build/app-demo/bin/python\nimport pkg\npkg.main()\n"
    report = compare_archives(layer, rewrite(layer, tmp_path / "b.tar.xz", change("bin/tool", data=script)))
    text = _explanation(report, "shebang")
    assert "/tmp/tmpk3x9/_build/app-demo/bin/python" in text and "venvstacks build folder" in text
    diff = next(f for f in report.members[0].findings if f.kind == "content-text").details["diff"]
    assert "+#!/tmp/tmpk3x9/_build/app-demo/bin/python" in diff and "-#!/bin/sh" in diff


def test_absolute_path_in_a_text_file(layer: Path, tmp_path: Path) -> None:
    body = f"BUILD = '/home/ci/project/_build/app/{SITE}/pkg/__init__.py'\n".encode()
    report = compare_archives(layer, rewrite(layer, tmp_path / "b.tar.xz", change("pkg/__init__.py", data=body)))
    text = _explanation(report, "absolute-path")
    assert "only B has /home/ci/project/_build/app/" in text and "own location when it was built" in text


def test_record_rows_and_installer_metadata(layer: Path, tmp_path: Path) -> None:
    import tarfile

    record = b"pkg/__init__.py,sha256=abc,10\npkg/mod0.py,sha256=XYZ,20\npkg-1.0.dist-info/RECORD,,\n" \
             b"../../../bin/tool,sha256=new,33\n"
    info = tarfile.TarInfo(f"layer/{SITE}/pkg-1.0.dist-info/direct_url.json")
    data = b'{"url": "file:///tmp/wheels/pkg-1.0-py3-none-any.whl", "archive_info": {}}'
    info.size, info.mtime, info.mode, info.uname, info.gname = len(data), EPOCH, 0o644, "root", "root"
    b = rewrite(layer, tmp_path / "b.tar.xz", change("dist-info/RECORD", data=record), extra=[(info, data)])
    report = compare_archives(layer, b)
    rows = _explanation(report, "record-rows")
    assert "1 row(s) only in B (../../../bin/tool)" in rows and "pkg/mod0.py" in rows
    only = next(m for m in report.members if m.name.endswith("direct_url.json"))
    assert only.status == "only-in-b" and "installer-metadata" in only.kinds
    assert "UV_NO_INSTALLER_METADATA" in _explanation(report, "installer-metadata")


def test_pyvenv_cfg(layer: Path, tmp_path: Path) -> None:
    import tarfile

    def cfg(home: str) -> tuple[tarfile.TarInfo, bytes]:
        data = f"home = {home}\ninclude-system-site-packages = false\nversion = 3.11.2\n".encode()
        info = tarfile.TarInfo("layer/pyvenv.cfg")
        info.size, info.mtime, info.mode, info.uname, info.gname = len(data), EPOCH, 0o644, "root", "root"
        return info, data

    a = rewrite(layer, tmp_path / "a2.tar.xz", extra=[cfg("/opt/py/bin")])
    b = rewrite(layer, tmp_path / "b2.tar.xz", extra=[cfg("/tmp/build/bin")])
    text = _explanation(compare_archives(a, b), "pyvenv-cfg")
    assert "home" in text and "postinstall.py" in text


def _shared_library(tmp_path: Path, name: str, *flags: str) -> bytes:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed: no ELF file to compare")
    src = tmp_path / "lib.c"
    src.write_text('const char *where(void) { return "hello"; }\n')
    out = tmp_path / f"{name}.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(out), str(src), *flags], check=True)
    return out.read_bytes()


def test_elf_build_id_and_rpath(tmp_path: Path) -> None:
    a = _shared_library(tmp_path, "a", "-Wl,--build-id=sha1", "-Wl,-rpath,$ORIGIN/../lib")
    b = _shared_library(tmp_path, "b", "-Wl,--build-id=md5", "-Wl,-rpath,/tmp/build-1234/_build/fw/lib")
    report = _pyc_pair_like(tmp_path, f"{SITE}/pkg/_native.so", a, b)
    assert "GNU build-id" in _explanation(report, "elf-build-id")
    rpath = _explanation(report, "elf-rpath")
    assert "'$ORIGIN/../lib' in A" in rpath and "/tmp/build-1234/_build/fw/lib" in rpath
    assert "/tmp/build-1234/_build/fw/lib" in _explanation(report, "elf-embedded-path")


def _pyc_pair_like(tmp_path: Path, name: str, data_a: bytes, data_b: bytes) -> ArchiveReport:
    a = write_layer(make_tree(tmp_path / "ta", {name: data_a}), tmp_path / "a.tar.xz", "layer")
    b = write_layer(make_tree(tmp_path / "tb", {name: data_b}), tmp_path / "b.tar.xz", "layer")
    return compare_archives(a, b)


def test_zip_timestamps(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree", layer_files(3))
    a = write_layer(tree, tmp_path / "a.zip", "layer", fmt="zip")
    b = write_layer(tree, tmp_path / "b.zip", "layer", fmt="zip", mtime=EPOCH + 86400)
    report = compare_archives(a, b)
    assert len(_only(report, "zip-timestamp")) == len(read_zip_names(a))
    assert "DOS timestamp" in _explanation(report, "zip-timestamp")


def read_zip_names(path: Path) -> list[str]:
    import zipfile

    with zipfile.ZipFile(path) as zf:
        return zf.namelist()


def test_members_on_one_side_and_text_diff(layer: Path, tmp_path: Path) -> None:
    b = rewrite(layer, tmp_path / "b.tar.xz", change("mod1.py", data=b"def f1():\n    return 'one'\n"),
                order=lambda items: [i for i in items if not i[0].name.endswith("mod2.py")])
    report = compare_archives(layer, b)
    statuses = {m.name.rsplit("/", 1)[1]: m.status for m in report.members}
    assert statuses == {"mod1.py": "different", "mod2.py": "only-in-a"}
    diff = next(f for f in report.members[0].findings if f.kind == "content-text").details["diff"]
    assert "+    return 'one'" in diff


def test_skips_equal_xz_streams(tmp_path: Path) -> None:
    """Multi-stream archives: streams with equal bytes are never decompressed."""
    tree = make_tree(tmp_path / "tree", layer_files(400))
    a = write_layer(tree, tmp_path / "a.tar.xz", "layer", chunk_size=64 * 1024)
    assert len(read_tar(a)) > 400
    b = rewrite(a, tmp_path / "b.tar.xz", change("mod200.py", mtime=EPOCH + 1, mode=0o755), chunk_size=64 * 1024)
    report = compare_archives(a, b)
    assert report.streams_skipped >= 3 and report.members_a < 200
    assert report.members[0].kinds == ["mtime", "mode"]
    # a size change shifts the rest of the tar stream: still found, with the streams before it skipped
    c = rewrite(a, tmp_path / "c.tar.xz", change("mod300.py", data=b"x = 1\n" * 500), chunk_size=64 * 1024)
    report = compare_archives(a, c)
    assert [m.name.rsplit("/", 1)[1] for m in report.members] == ["mod300.py"]
    assert "content-text" in report.members[0].kinds


def test_archive_chunk_size_is_the_writers(tmp_path: Path) -> None:
    """The rewriter really reproduces write_archive's bytes (so injected changes are the only ones)."""
    tree = make_tree(tmp_path / "tree", layer_files(5))
    a = write_layer(tree, tmp_path / "a.tar.xz", "layer", chunk_size=archive.XZ_CHUNK_SIZE)
    assert rewrite(a, tmp_path / "b.tar.xz").read_bytes() == a.read_bytes()


def test_changes_inside_members_that_span_xz_streams(tmp_path: Path) -> None:
    """A member bigger than a stream, changed in its middle or in its header: still named."""
    files = layer_files(50)
    big = bytes(range(256)) * 1200  # 300 KiB: spans several 64 KiB streams
    files[f"{SITE}/pkg/blob.bin"] = big
    tree = make_tree(tmp_path / "tree", files)
    a = write_layer(tree, tmp_path / "a.tar.xz", "layer", chunk_size=64 * 1024)
    changed = big[:150_000] + b"\xff" + big[150_001:]
    b = rewrite(a, tmp_path / "b.tar.xz", change("blob.bin", data=changed), chunk_size=64 * 1024)
    report = compare_archives(a, b)
    assert [m.name.rsplit("/", 1)[1] for m in report.members] == ["blob.bin"]
    assert next(f for f in report.members[0].findings if f.kind == "content-binary").details[
        "first_difference"] == 150_000
    c = rewrite(a, tmp_path / "c.tar.xz", change("blob.bin", mode=0o600), chunk_size=64 * 1024)
    report = compare_archives(a, c)
    assert [m.kinds for m in report.members] == [["mode"]] and report.streams_skipped >= 1
