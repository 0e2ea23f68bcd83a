"""File system primitives: no-replace rename (renameat2 / fallback), exclusive file creation."""

from __future__ import annotations

import io
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from venvstacks_docker import _fs
from venvstacks_docker._fs import rename_noreplace, rename_noreplace_fallback


def _snapshot(folder: Path) -> dict[str, tuple[str, bytes | str]]:
    """Everything below ``folder``: path -> (kind, content or link target)."""
    found: dict[str, tuple[str, bytes | str]] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            found[rel] = ("symlink", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            found[rel] = ("dir", "")
        else:
            found[rel] = ("file", path.read_bytes())
    return found


RENAMERS: dict[str, Callable[[Path, Path], None]] = {
    "native": rename_noreplace, "fallback": rename_noreplace_fallback,
}


def _make(path: Path, kind: str) -> None:
    if kind == "folder":
        path.mkdir()
        (path / "inside.txt").write_text("moved")
    elif kind == "empty folder":
        path.mkdir()
    elif kind == "file":
        path.write_text("existing")
    else:
        path.symlink_to("nowhere")


@pytest.mark.parametrize("renamer", sorted(RENAMERS))
@pytest.mark.parametrize("src_kind", ["folder", "file"])
@pytest.mark.parametrize("dst_kind", ["empty folder", "file", "dangling symlink"])
def test_rename_noreplace_refuses_existing_destination(
    tmp_path: Path, renamer: str, src_kind: str, dst_kind: str
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _make(src, src_kind)
    _make(dst, dst_kind)
    before = _snapshot(tmp_path)
    with pytest.raises(FileExistsError):
        RENAMERS[renamer](src, dst)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("renamer", sorted(RENAMERS))
@pytest.mark.parametrize("src_kind", ["folder", "file"])
def test_rename_noreplace_moves_to_a_free_name(tmp_path: Path, renamer: str, src_kind: str) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _make(src, src_kind)
    expected = {k.replace("src", "dst", 1): v for k, v in _snapshot(tmp_path).items()}
    RENAMERS[renamer](src, dst)
    assert not os.path.lexists(src)
    assert _snapshot(tmp_path) == expected


@pytest.mark.skipif(sys.platform != "linux", reason="renameat2 is Linux-only")
def test_rename_noreplace_uses_renameat2_on_linux(tmp_path: Path) -> None:
    """The kernel refuses atomically: no check-then-rename window on Linux."""
    assert _fs._native() is not None
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    with pytest.raises(FileExistsError) as excinfo:
        rename_noreplace(tmp_path / "src", tmp_path / "dst")
    assert excinfo.value.filename == str(tmp_path / "src")
    assert excinfo.value.filename2 == str(tmp_path / "dst")


@pytest.mark.parametrize("existing", ["file", "symlink to a file"])
def test_write_new_file_never_truncates_or_writes_through(tmp_path: Path, existing: str) -> None:
    """The last line of defence under every member the extractor writes."""
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    path = victim if existing == "file" else tmp_path / "link"
    if existing != "file":
        path.symlink_to(victim.name)
    with pytest.raises(FileExistsError):
        _fs.write_new_file(str(path), io.BytesIO(b"evil"), 0o644)
    assert victim.read_bytes() == b"precious"
