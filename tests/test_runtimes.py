"""Runtime acquisition (sources, mirrors, cache, upstream failure) and safe extraction."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from venvstacks_docker.errors import RuntimeArchiveError
from venvstacks_docker.runtimes import (
    PLATFORM_TRIPLES,
    RuntimeRequest,
    acquire_runtime,
    archive_name_pattern,
    cache_root,
    extract_runtime,
)

REQUEST = RuntimeRequest(implementation="cpython", version="3.11.2", platform="linux_x86_64")
NAME = "cpython-3.11.2+20990101-x86_64-unknown-linux-gnu-install_only.tar.gz"
STRIPPED = "cpython-3.11.2+20990101-x86_64-unknown-linux-gnu-install_only_stripped.tar.gz"


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"", *, mode: int = 0o644,
         kind: bytes = tarfile.REGTYPE, linkname: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = linkname
    info.mtime = 0
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    else:
        tar.addfile(info)


def make_runtime_archive(path: Path, marker: str = "one") -> Path:
    """A tiny tarball shaped like a python-build-standalone install_only archive."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, "python", kind=tarfile.DIRTYPE, mode=0o755)
        _add(tar, "python/bin", kind=tarfile.DIRTYPE, mode=0o755)
        _add(tar, "python/bin/python3.11", f"#!/bin/sh\necho {marker}\n".encode(), mode=0o755)
        _add(tar, "python/bin/python3", kind=tarfile.SYMTYPE, linkname="python3.11", mode=0o777)
        _add(tar, "python/lib/python3.11/os.py", b"# stdlib landmark\n")
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("VENVSTACKS_DOCKER_CACHE", str(cache))
    monkeypatch.delenv("VENVSTACKS_DOCKER_RUNTIME_SOURCES", raising=False)
    return cache


def cached_files(cache: Path) -> list[Path]:
    root = cache / "runtimes"
    return sorted(p for p in root.rglob("*.tar.gz")) if root.exists() else []


# ----------------------------------------------------------------------------- cache root


def test_cache_root_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VENVSTACKS_DOCKER_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "explicit"
    monkeypatch.delenv("VENVSTACKS_DOCKER_CACHE")
    assert cache_root() == tmp_path / "xdg" / "venvstacks-docker"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "venvstacks-docker"


# ----------------------------------------------------------------------------- sources


def test_acquire_from_archive_path_copies_into_cache(tmp_path: Path, isolated_cache: Path) -> None:
    src = make_runtime_archive(tmp_path / "dl" / NAME)
    found = acquire_runtime(REQUEST, sources=[str(src)], offline=True)
    assert found.sha256 == sha(src)
    assert found.filename == NAME
    assert found.origin == f"source:{src}"
    assert found.path == isolated_cache / "runtimes" / sha(src) / NAME
    assert found.path.read_bytes() == src.read_bytes()


def test_acquire_from_file_url(tmp_path: Path, isolated_cache: Path) -> None:
    src = make_runtime_archive(tmp_path / "dir with space" / NAME)
    found = acquire_runtime(REQUEST, sources=[src.as_uri()], offline=True)
    assert found.sha256 == sha(src)
    assert found.origin == f"source:{src.as_uri()}"
    assert found.path.parent == isolated_cache / "runtimes" / sha(src)


def test_acquire_from_mirror_prefers_stripped_and_ignores_other_versions(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    make_runtime_archive(mirror / NAME, "full")
    stripped = make_runtime_archive(mirror / STRIPPED, "stripped")
    make_runtime_archive(mirror / NAME.replace("3.11.2", "3.11.9"), "other-version")
    make_runtime_archive(mirror / NAME.replace("x86_64-unknown-linux-gnu", "aarch64-apple-darwin"), "mac")
    found = acquire_runtime(REQUEST, sources=[str(mirror)], offline=True)
    assert found.filename == STRIPPED
    assert found.sha256 == sha(stripped)

    mac = RuntimeRequest(implementation="cpython", version="3.11.2", platform="macosx_arm64")
    found_mac = acquire_runtime(mac, sources=[str(mirror)], offline=True)
    assert "aarch64-apple-darwin" in found_mac.filename


def test_acquire_from_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    src = make_runtime_archive(mirror / NAME)
    monkeypatch.setenv(
        "VENVSTACKS_DOCKER_RUNTIME_SOURCES",
        os.pathsep.join([str(tmp_path / "does-not-exist"), str(mirror)]),
    )
    found = acquire_runtime(REQUEST, offline=True)
    assert found.sha256 == sha(src)
    assert found.origin == f"source:{mirror}"


def test_explicit_sources_come_before_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_src = make_runtime_archive(tmp_path / "env" / NAME, "env")
    cli_src = make_runtime_archive(tmp_path / "cli" / NAME, "cli")
    monkeypatch.setenv("VENVSTACKS_DOCKER_RUNTIME_SOURCES", str(env_src))
    found = acquire_runtime(REQUEST, sources=[str(cli_src)], offline=True)
    assert found.sha256 == sha(cli_src) != sha(env_src)


def test_acquire_from_cache_without_sources(tmp_path: Path, isolated_cache: Path) -> None:
    src = make_runtime_archive(tmp_path / NAME)
    first = acquire_runtime(REQUEST, sources=[str(src)], offline=True)
    src.unlink()  # the cache copy must be enough from now on
    again = acquire_runtime(REQUEST, offline=True)
    assert again.origin == "cache"
    assert again.path == first.path
    by_hash = acquire_runtime(REQUEST, expected_sha256=first.sha256, offline=True)
    assert by_hash.path == first.path and by_hash.origin == "cache"


def test_nothing_is_copied_twice(tmp_path: Path, isolated_cache: Path) -> None:
    src = make_runtime_archive(tmp_path / NAME)
    first = acquire_runtime(REQUEST, sources=[str(src)], offline=True)
    inode = first.path.stat().st_ino
    mtime = first.path.stat().st_mtime_ns
    second = acquire_runtime(REQUEST, sources=[str(src)], offline=True)
    assert second.path == first.path
    assert second.path.stat().st_ino == inode
    assert second.path.stat().st_mtime_ns == mtime
    assert cached_files(isolated_cache) == [first.path]


def test_wrong_expected_hash_is_a_clear_error(tmp_path: Path) -> None:
    src = make_runtime_archive(tmp_path / NAME)
    wrong = "0" * 64
    with pytest.raises(RuntimeArchiveError) as excinfo:
        acquire_runtime(REQUEST, sources=[str(src)], expected_sha256=wrong, offline=True)
    message = str(excinfo.value)
    assert wrong in message
    assert sha(src) in message
    assert "hint:" in message


def test_expected_hash_skips_other_candidates(tmp_path: Path) -> None:
    wrong = make_runtime_archive(tmp_path / "a" / NAME, "a")
    right = make_runtime_archive(tmp_path / "b" / NAME, "b")
    found = acquire_runtime(
        REQUEST, sources=[str(wrong), str(right)], expected_sha256=sha(right), offline=True
    )
    assert found.sha256 == sha(right)


def test_missing_runtime_offline_names_the_fix() -> None:
    with pytest.raises(RuntimeArchiveError) as excinfo:
        acquire_runtime(REQUEST, offline=True)
    message = str(excinfo.value)
    assert "venvstacks-docker runtime build --python-version 3.11.2" in message
    assert "VENVSTACKS_DOCKER_RUNTIME_SOURCES" in message


def test_archive_with_wrong_name_is_not_used(tmp_path: Path) -> None:
    src = make_runtime_archive(tmp_path / "python-3.11.2.tar.gz")
    with pytest.raises(RuntimeArchiveError, match="does not match"):
        acquire_runtime(REQUEST, sources=[str(src)], offline=True)


def test_upstream_unreachable_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # 3.11.13 is in pbs-installer's table; route HTTPS to a closed local port so the
    # download fails the same way it does when GitHub is unreachable.
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    request = RuntimeRequest(implementation="cpython", version="3.11.13", platform="linux_x86_64")
    with pytest.raises(RuntimeArchiveError) as excinfo:
        acquire_runtime(request)
    message = str(excinfo.value)
    assert "GitHub is unreachable" in message
    # the builder has no sources of 3.11.13: the hint names the 3.11 it can build
    assert "venvstacks-docker runtime build --python-version 3.11.2" in message
    assert "--python-version 3.11.13" not in message


def test_upstream_without_such_build_suggests_building() -> None:
    # python-build-standalone never published 3.11.2, so no download is even attempted
    with pytest.raises(RuntimeArchiveError) as excinfo:
        acquire_runtime(REQUEST)
    assert "has no build" in str(excinfo.value)
    assert "venvstacks-docker runtime build" in str(excinfo.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [("implementation", "jython"), ("version", "3.11"), ("platform", "linux_sparc")],
)
def test_invalid_requests_are_rejected(field: str, value: str) -> None:
    kwargs = {"implementation": "cpython", "version": "3.11.2", "platform": "linux_x86_64"}
    kwargs[field] = value
    with pytest.raises(RuntimeArchiveError, match=value):
        acquire_runtime(RuntimeRequest(**kwargs), offline=True)


def test_platform_triples_match_pbs_names() -> None:
    for platform_tag, triple in PLATFORM_TRIPLES.items():
        req = RuntimeRequest(implementation="cpython", version="3.12.1", platform=platform_tag)
        assert archive_name_pattern(req).match(f"cpython-3.12.1+20240107-{triple}-install_only.tar.gz")
    assert PLATFORM_TRIPLES["macosx_arm64"] == "aarch64-apple-darwin"
    assert PLATFORM_TRIPLES["win_amd64"] == "x86_64-pc-windows-msvc"


# ----------------------------------------------------------------------------- extraction


def test_extract_runtime_unpacks_python_folder_contents(tmp_path: Path) -> None:
    archive = make_runtime_archive(tmp_path / NAME, "hello")
    dest = tmp_path / "runtime with space"
    extract_runtime(archive, dest)
    exe = dest / "bin" / "python3.11"
    assert exe.read_text() == "#!/bin/sh\necho hello\n"
    assert exe.stat().st_mode & stat.S_IXUSR
    assert (dest / "bin" / "python3").is_symlink()
    assert os.readlink(dest / "bin" / "python3") == "python3.11"
    assert (dest / "lib" / "python3.11" / "os.py").is_file()
    assert not (dest / "python").exists()


def test_extract_runtime_refuses_non_empty_destination(tmp_path: Path) -> None:
    archive = make_runtime_archive(tmp_path / NAME)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(RuntimeArchiveError, match="not an empty folder"):
        extract_runtime(archive, dest)
    assert (dest / "keep.txt").read_text() == "mine"


def _malicious(path: Path, *members: tuple[str, bytes, str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, "python/bin/python3", b"ok", mode=0o755)
        for name, kind, linkname in members:
            _add(tar, name, b"evil", kind=kind, linkname=linkname)
    return path


@pytest.mark.parametrize(
    ("members", "complaint"),
    [
        ([("/tmp/evil-abs", tarfile.REGTYPE, "")], "absolute"),
        ([("python/../../evil-dotdot", tarfile.REGTYPE, "")], "'..'"),
        ([("python/lib/escape", tarfile.SYMTYPE, "../../../outside")], "outside"),
        ([("python/lib/abs-link", tarfile.SYMTYPE, "/etc/passwd")], "absolute"),
        # a link that is harmless alone, then one that escapes through it
        ([("python/here", tarfile.SYMTYPE, "."), ("python/here/up", tarfile.SYMTYPE, "../x")],
         "outside"),
        ([("python/dev", tarfile.CHRTYPE, "")], "special file"),
        ([("other/file", tarfile.REGTYPE, "")], "outside the top-level python/"),
        # the same checks as layer archives: no duplicates, hard links only to earlier files
        ([("python/bin/python3", tarfile.REGTYPE, "")], "same name as an earlier file"),
        ([("python/lib/os.py", tarfile.LNKTYPE, "area/victim.txt")], "not an earlier regular file"),
        ([("python/bin/alias", tarfile.LNKTYPE, "python/bin/python3"),
          ("python/bin/alias", tarfile.REGTYPE, "")], "same name as an earlier hard link"),
    ],
)
def test_extract_runtime_refuses_malicious_archives(
    tmp_path: Path, members: list[tuple[str, bytes, str]], complaint: str
) -> None:
    archive = _malicious(tmp_path / "evil.tar.gz", *members)
    dest = tmp_path / "area" / "dest"
    (tmp_path / "area").mkdir()
    (tmp_path / "area" / "victim.txt").write_text("not the runtime's")
    with pytest.raises(RuntimeArchiveError, match=complaint):
        extract_runtime(archive, dest)
    # nothing at dest, no staging folder, the neighbour untouched
    assert sorted(p.name for p in (tmp_path / "area").iterdir()) == ["victim.txt"]
    assert (tmp_path / "area" / "victim.txt").read_text() == "not the runtime's"
    assert not (tmp_path / "area" / "evil-dotdot").exists()
    assert not (tmp_path / "area" / "x").exists()
    assert not (tmp_path / "outside").exists()


def test_extract_runtime_rejects_garbage(tmp_path: Path) -> None:
    bogus = tmp_path / NAME
    bogus.write_bytes(b"not a tarball at all")
    with pytest.raises(RuntimeArchiveError, match="cannot unpack"):
        extract_runtime(bogus, tmp_path / "dest")


# ----------------------------------------------------------------------------- build inputs


def test_source_with_wrong_hash_is_refused_and_not_cached(tmp_path: Path) -> None:
    from venvstacks_docker.runtime_build import SourcePin, fetch_source

    tarball = tmp_path / "upstream" / "python3.11_3.11.2.orig.tar.gz"
    tarball.parent.mkdir()
    tarball.write_bytes(b"tampered")
    pin = SourcePin(version="3.11.2", url=tarball.as_uri(), sha256="1" * 64, size=8,
                    source_date_epoch=0)
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeArchiveError) as excinfo:
        fetch_source(pin, cache)
    assert "1" * 64 in str(excinfo.value)
    assert sha(tarball) in str(excinfo.value)
    assert not list((cache / "sources").rglob("*.tar.gz"))


def test_source_is_downloaded_once(tmp_path: Path) -> None:
    from venvstacks_docker.runtime_build import SourcePin, fetch_source

    tarball = tmp_path / "upstream" / "python3.11_3.11.2.orig.tar.gz"
    tarball.parent.mkdir()
    tarball.write_bytes(b"pristine source")
    pin = SourcePin(version="3.11.2", url=tarball.as_uri(), sha256=sha(tarball), size=15,
                    source_date_epoch=0)
    first = fetch_source(pin, tmp_path / "cache")
    assert first == tmp_path / "cache" / "sources" / sha(tarball) / tarball.name
    tarball.unlink()  # a second call must not need the origin any more
    assert fetch_source(pin, tmp_path / "cache") == first


def test_build_cli_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    from venvstacks_docker.cli import run

    assert run(["runtime", "build", "--python-version", "2.7.18"]) == 8
    assert "no pinned source for CPython 2.7.18" in capsys.readouterr().err
    assert run(["runtime", "build", "--jobs", "0"]) == 2
    assert "Invalid value for '--jobs'" in capsys.readouterr().err


def test_deterministic_archive_writer(tmp_path: Path) -> None:
    from venvstacks_docker.runtime_build import write_archive

    trees = []
    for n, umask_mode in enumerate((0o644, 0o664)):
        tree = tmp_path / f"tree{n}"
        (tree / "bin").mkdir(parents=True)
        (tree / "bin" / "tool").write_text("#!/bin/sh\n")
        (tree / "bin" / "tool").chmod(0o775 if n else 0o755)
        (tree / "bin" / "alias").symlink_to("tool")
        (tree / "data.txt").write_text("data")
        (tree / "data.txt").chmod(umask_mode)
        os.utime(tree / "data.txt", (n * 1000, n * 1000))
        trees.append(tree)
    outs = []
    for n, tree in enumerate(trees):
        out = tmp_path / f"out{n}.tar.gz"
        write_archive(tree, out, mtime=1675814400)
        outs.append(out)
    assert outs[0].read_bytes() == outs[1].read_bytes()
    with tarfile.open(outs[0]) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["python/bin/tool"].mode == 0o755
    assert members["python/data.txt"].mode == 0o644
    assert members["python/bin/alias"].issym()
