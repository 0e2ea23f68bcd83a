"""The bundle file itself: deterministic bytes, and every kind of damage refused.

Bundles here are small real tar files written by the real writer
(:func:`venvstacks_docker.bundle_format.write_bundle`), then damaged the way a bad copy,
an editor or a hostile archive would damage them.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from venvstacks_docker import bundle_format as fmt
from venvstacks_docker import bundle_use
from venvstacks_docker.errors import BundleError


def _files(tmp: Path, **contents: bytes) -> dict[str, Path]:
    sources = {}
    for name, data in contents.items():
        path = tmp / "src" / name.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        sources[name.replace("__", "/")] = path
    return sources


def _entries(sources: dict[str, Path], role: str = "wheel") -> list[fmt.Entry]:
    return [fmt.Entry(name=n, size=p.stat().st_size, sha256=hashlib.sha256(p.read_bytes()).hexdigest(), role=role)
            for n, p in sources.items()]


def make(tmp: Path, name: str = "b.tar", *, since: str | None = None, version: str = "x", **contents: bytes) -> Path:
    sources = _files(tmp / f"{name}.src", **(contents or {"wheels__a-1-py3-none-any.whl": b"A" * 3000,
                                                 "stack__venvstacks.toml": b"[[runtimes]]\n"}))
    body = {"tool": {"name": "venvstacks-docker", "version": version}, "platforms": ["linux_x86_64"],
            "stack": {"stack_file": "stack/venvstacks.toml", "layers": {}}, "builder_images": {},
            "since": {"manifest_sha256": since, "bundle": "old.tar"} if since else None}
    out = tmp / name
    fmt.write_bundle(out, fmt.manifest(body, _entries(sources)), sources)
    return out


def test_the_same_inputs_give_the_same_bytes(tmp_path: Path) -> None:
    one = make(tmp_path / "1")
    two = make(tmp_path / "2")
    assert one.read_bytes() == two.read_bytes()
    with tarfile.open(one) as tar:
        members = tar.getmembers()
        manifest = tar.extractfile(f"{fmt.TOP}/{fmt.MANIFEST}").read()  # type: ignore[union-attr]
    names = [m.name for m in members]
    assert names[0] == fmt.TOP and names == sorted(names)
    assert {m.mtime for m in members} == {fmt.MTIME} and {m.uid for m in members} == {0}
    assert bundle_use.verify(one).manifest_sha256 == hashlib.sha256(manifest).hexdigest()


def _rewrite(src: Path, dest: Path, change) -> Path:  # type: ignore[no-untyped-def]
    """Copy the tar ``src`` member by member, letting ``change(info, data)`` alter or drop each."""
    with tarfile.open(src) as old, tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as new:
        for info in old:
            data = old.extractfile(info).read() if info.isreg() else None  # type: ignore[union-attr]
            result = change(info, data)
            if result is None:
                continue
            info, data = result
            new.addfile(info, io.BytesIO(data) if data is not None else None)
    return dest


def _refused(path: Path, *expected: str) -> str:
    with pytest.raises(BundleError) as info:
        bundle_use.verify(path)
    assert info.value.return_code == 14
    for text in expected:
        assert text in str(info.value), str(info.value)
    return str(info.value)


def test_a_flipped_byte_is_named(tmp_path: Path) -> None:
    good = make(tmp_path)

    def flip(info: tarfile.TarInfo, data: bytes | None):  # type: ignore[no-untyped-def]
        if info.name.endswith(".whl"):
            assert data is not None
            data = data[:100] + bytes([data[100] ^ 1]) + data[101:]
        return info, data

    _refused(_rewrite(good, tmp_path / "bad.tar", flip), "wheels/a-1-py3-none-any.whl: 3000 bytes with sha256")


def test_a_missing_and_an_extra_member_are_named(tmp_path: Path) -> None:
    good = make(tmp_path)

    def swap(info: tarfile.TarInfo, data: bytes | None):  # type: ignore[no-untyped-def]
        if info.name.endswith(".whl"):
            info.name = info.name.replace("a-1", "evil-1")
        return info, data

    _refused(_rewrite(good, tmp_path / "bad.tar", swap), "wheels/a-1-py3-none-any.whl: missing",
             "wheels/evil-1-py3-none-any.whl: not listed in the manifest")


@pytest.mark.parametrize("name", ["venvstacks-bundle/../escape.txt", "/etc/passwd", "elsewhere/x.txt"])
def test_a_member_escaping_the_bundle_is_refused(tmp_path: Path, name: str) -> None:
    good = make(tmp_path)
    bad = tmp_path / "bad.tar"

    def add(info: tarfile.TarInfo, data: bytes | None):  # type: ignore[no-untyped-def]
        return info, data

    _rewrite(good, bad, add)
    with tarfile.open(bad, "a") as tar:
        extra = tarfile.TarInfo(name)
        extra.size = 1
        tar.addfile(extra, io.BytesIO(b"x"))
    message = _refused(bad)
    assert "escape" in message or "outside the bundle" in message


def test_a_link_member_is_refused(tmp_path: Path) -> None:
    bad = _rewrite(make(tmp_path), tmp_path / "bad.tar", lambda i, d: (i, d))
    with tarfile.open(bad, "a") as tar:
        link = tarfile.TarInfo(f"{fmt.TOP}/wheels/link.whl")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    _refused(bad, "not a plain file")


def test_a_truncated_bundle_is_refused(tmp_path: Path) -> None:
    good = make(tmp_path)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(good.read_bytes()[:5000])
    _refused(cut, "truncated")


def test_an_edited_manifest_is_refused(tmp_path: Path) -> None:
    good = make(tmp_path)

    def edit(info: tarfile.TarInfo, data: bytes | None):  # type: ignore[no-untyped-def]
        if info.name.endswith(fmt.MANIFEST):
            assert data is not None
            manifest = json.loads(data)
            manifest["platforms"] = ["macosx_arm64"]
            data = json.dumps(manifest).encode()
            info.size = len(data)
        return info, data

    _refused(_rewrite(good, tmp_path / "bad.tar", edit), "was edited after the bundle was made")


def test_not_a_bundle(tmp_path: Path) -> None:
    missing = tmp_path / "nope.tar"
    _refused(missing, "does not exist")
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    _refused(junk, "truncated or not a tar file")


def test_unpack_is_all_or_nothing(tmp_path: Path) -> None:
    good = make(tmp_path)
    dest = tmp_path / "unpacked"
    checked = bundle_use.unpack([good], dest)
    assert (dest / "wheels" / "a-1-py3-none-any.whl").read_bytes() == b"A" * 3000
    assert bundle_use.verify(dest).manifest_sha256 == checked.manifest_sha256
    # a damaged bundle leaves nothing behind
    cut = tmp_path / "cut.tar"
    cut.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(BundleError):
        bundle_use.unpack([cut], tmp_path / "never")
    assert not (tmp_path / "never").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # an existing folder with something in it is never overwritten
    with pytest.raises(BundleError, match="not an empty folder"):
        bundle_use.unpack([good], dest)
    assert bundle_use.verify(dest).manifest_sha256 == checked.manifest_sha256


def test_an_unpacked_folder_that_was_changed_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "unpacked"
    bundle_use.unpack([make(tmp_path)], dest)
    (dest / "wheels" / "a-1-py3-none-any.whl").write_bytes(b"B" * 3000)
    (dest / "wheels" / "extra.whl").write_bytes(b"")
    with pytest.raises(BundleError) as info:
        bundle_use.open_bundle(dest, tmp_path / "cache")
    assert "a-1-py3-none-any.whl: 3000 bytes" in str(info.value) and "extra.whl: not listed" in str(info.value)


def test_an_incremental_bundle_unpacks_only_after_its_base(tmp_path: Path) -> None:
    old = make(tmp_path, "old.tar")
    old_sha = bundle_use.verify(old).manifest_sha256
    # the new bundle lists both wheels but carries only the new one
    sources = _files(tmp_path / "new", **{"wheels__b-1-py3-none-any.whl": b"B" * 10})
    old_entries = [fmt.Entry.from_dict(e) for e in bundle_use.verify(old).manifest["files"]]
    entries = [fmt.Entry(**{**e.__dict__, "in_base": True}) for e in old_entries] + _entries(sources)
    body = {"tool": {"name": "venvstacks-docker", "version": "x"}, "platforms": ["linux_x86_64"],
            "stack": {"stack_file": "stack/venvstacks.toml", "layers": {}}, "builder_images": {},
            "since": {"manifest_sha256": old_sha, "bundle": "old.tar"}}
    new = tmp_path / "new.tar"
    fmt.write_bundle(new, fmt.manifest(body, entries), sources)
    assert bundle_use.verify(new).since == old_sha
    with pytest.raises(BundleError, match="holds only what is new since"):
        bundle_use.unpack([new], tmp_path / "alone")
    with pytest.raises(BundleError, match="does not continue"):
        bundle_use.unpack([make(tmp_path, "other.tar", version="y"), new], tmp_path / "wrong")
    both = bundle_use.unpack([old, new], tmp_path / "both")
    assert sorted(p.name for p in (tmp_path / "both" / "wheels").iterdir()) == [
        "a-1-py3-none-any.whl", "b-1-py3-none-any.whl"]
    assert bundle_use.verify(both.path, with_base=True).manifest_sha256 == bundle_use.verify(new).manifest_sha256


def test_a_bundle_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    from venvstacks_docker import __version__

    checked = bundle_use.verify(make(tmp_path, version=__version__))
    with pytest.raises(BundleError, match="is for linux_x86_64, not win_amd64"):
        bundle_use.check_fits(checked, platform="win_amd64", layers={})
    with pytest.raises(BundleError, match="does not hold layer framework-x"):
        bundle_use.check_fits(checked, platform="linux_x86_64", layers={"framework-x": "sha256:1"})
    other = bundle_use.verify(make(tmp_path, "other.tar", version="0.0.1"))
    with pytest.raises(BundleError, match=f"made by venvstacks-docker 0.0.1; this is {__version__}") as info:
        bundle_use.check_fits(other, platform="linux_x86_64", layers={})
    assert "--find-links" in str(info.value)
