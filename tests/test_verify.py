"""verify_output_dir against a publish folder built by the test from real archives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from venvstacks_docker.archive import write_archive
from venvstacks_docker.errors import VerifyError
from venvstacks_docker.verify import verify_output_dir

MTIME = 1_700_000_000


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _layer_tree(root: Path, name: str) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "postinstall.py").write_text(f"print({name!r})\n")
    (root / "bin" / "tool").write_text("#!/bin/sh\necho " + name + "\n")
    (root / "bin" / "tool").chmod(0o755)
    (root / "data.txt").write_text(name * 200)
    return root


def publish_folder(tmp_path: Path, *, plat: str | None = None) -> Path:
    """Two layers (runtime + app) as `publish` would lay them out."""
    out = tmp_path / "published"
    suffix = f"-{plat}" if plat else ""
    platform = plat or "linux_x86_64"
    layers: dict[str, list[dict[str, Any]]] = {"runtimes": [], "frameworks": [], "applications": []}
    for kind, layer_name, target in (
        ("runtimes", "cpython-3.11", "cpython@3.11"),
        ("applications", "app-hello", "app-hello@1"),
    ):
        src = _layer_tree(tmp_path / "src" / f"{target}{suffix}", layer_name)
        archive_name = f"{target}{'-' + plat + '-1' if plat else ''}.tar.xz"
        result = write_archive(src, out / archive_name, root_name=target, mtime=MTIME)
        entry: dict[str, Any] = {
            "layer_name": layer_name,
            "install_target": target,
            "runtime_layer": "cpython@3.11",
            "archive_build": 1,
            "archive_name": archive_name,
            "archive_size": result.size,
            "archive_hashes": {"sha256": result.sha256},
            "target_platform": platform,
        }
        if kind == "applications":
            entry["required_layers"] = []
            entry["app_launch_module"] = "hello"
        layers[kind].append(entry)
        _write_json(out / "__venvstacks__" / "env_metadata" / f"{layer_name}{suffix}.json", entry)
    _write_json(out / "__venvstacks__" / f"venvstacks{suffix}.json", {"layers": layers})
    return out


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return publish_folder(tmp_path)


def statuses(out: Path) -> dict[str, str]:
    return {layer.install_target: layer.status for layer in verify_output_dir(out).layers}


def test_fresh_publish_verifies(out: Path) -> None:
    report = verify_output_dir(out)
    assert report.ok and report.clean
    assert [(c.kind, c.install_target, c.status) for c in report.layers] == [
        ("runtimes", "cpython@3.11", "ok"),
        ("applications", "app-hello@1", "ok"),
    ]
    rt = report.layers[0]
    assert rt.actual_size == rt.expected_size == (out / "cpython@3.11.tar.xz").stat().st_size
    assert rt.actual_sha256 == rt.expected_sha256
    assert rt.metadata_files == (
        "__venvstacks__/venvstacks.json",
        "__venvstacks__/env_metadata/cpython-3.11.json",
    )
    assert report.manifests == ("__venvstacks__/venvstacks.json",)

    text = report.render_text()
    lines = text.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("ok") and "cpython@3.11.tar.xz" in lines[0]
    assert lines[-1].startswith("OK: 2 layer archive(s), 2 ok")

    as_json = report.to_json()
    assert as_json == verify_output_dir(out).to_json()  # stable
    data = json.loads(as_json)
    assert (data["schema"], data["schema_version"]) == ("venvstacks-docker/verify", 1)
    assert data["ok"] is True
    assert as_json == json.dumps(data, indent=2, sort_keys=True) + "\n"  # sorted keys
    assert [layer["status"] for layer in data["layers"]] == ["ok", "ok"]


def test_one_flipped_byte_is_a_hash_mismatch(out: Path) -> None:
    archive = out / "app-hello@1.tar.xz"
    blob = bytearray(archive.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    archive.write_bytes(bytes(blob))
    report = verify_output_dir(out)
    assert not report.ok
    assert statuses(out) == {"cpython@3.11": "ok", "app-hello@1": "hash-mismatch"}
    bad = next(c for c in report.layers if c.status != "ok")
    assert bad.actual_size == bad.expected_size
    assert bad.actual_sha256 and bad.actual_sha256 != bad.expected_sha256
    assert "hash-mismatch" in report.render_text()
    assert report.render_text().splitlines()[-1].startswith("FAILED")
    assert json.loads(report.to_json())["ok"] is False


def test_truncated_archive_is_a_size_mismatch(out: Path) -> None:
    archive = out / "cpython@3.11.tar.xz"
    blob = archive.read_bytes()
    archive.write_bytes(blob[:-10])
    report = verify_output_dir(out)
    assert not report.ok
    bad = report.layers[0]
    assert (bad.install_target, bad.status) == ("cpython@3.11", "size-mismatch")
    assert (bad.expected_size, bad.actual_size) == (len(blob), len(blob) - 10)
    assert f"expected {len(blob)} bytes, found {len(blob) - 10}" in report.render_text()


def test_deleted_archive_is_missing(out: Path) -> None:
    (out / "app-hello@1.tar.xz").unlink()
    report = verify_output_dir(out)
    assert not report.ok
    assert statuses(out) == {"cpython@3.11": "ok", "app-hello@1": "missing"}
    assert report.layers[1].actual_size is None


def test_stray_archive_is_unexpected(out: Path) -> None:
    (out / "framework-old@3.tar.xz").write_bytes(b"not in any metadata")
    (out / "notes.txt").write_text("not an archive")
    report = verify_output_dir(out)
    assert report.unexpected == ("framework-old@3.tar.xz",)
    assert report.ok  # archives of earlier builds may legitimately linger
    assert not report.clean
    assert "unexpected    framework-old@3.tar.xz" in report.render_text()
    assert json.loads(report.to_json())["unexpected"] == ["framework-old@3.tar.xz"]


def test_no_metadata_is_an_error(tmp_path: Path, out: Path) -> None:
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    (empty / "cpython@3.11.tar.xz").write_bytes(b"x")
    with pytest.raises(VerifyError, match=r"no __venvstacks__ metadata in .*did you mean the publish output folder"):
        verify_output_dir(empty)
    with pytest.raises(VerifyError, match="does not exist"):
        verify_output_dir(tmp_path / "nope")


def test_local_export_folder_is_refused(tmp_path: Path) -> None:
    export = tmp_path / "_export"
    entry = {"layer_name": "cpython-3.11", "install_target": "cpython@3.11", "lock_version": 1}
    _write_json(export / "__venvstacks__" / "venvstacks.json", {"layers": {"runtimes": [entry]}})
    _write_json(export / "__venvstacks__" / "env_metadata" / "cpython-3.11.json", entry)
    with pytest.raises(VerifyError, match="local-export"):
        verify_output_dir(export)


def test_manifest_and_layer_file_disagreeing_is_reported(out: Path) -> None:
    layer_file = out / "__venvstacks__" / "env_metadata" / "app-hello.json"
    data = json.loads(layer_file.read_text())
    data["archive_build"] = 2
    _write_json(layer_file, data)
    report = verify_output_dir(out)
    assert not report.ok
    assert all(c.status == "ok" for c in report.layers)
    (problem,) = report.metadata_problems
    assert problem.file == "__venvstacks__/env_metadata/app-hello.json"
    assert "archive_build" in problem.message


def test_missing_layer_file_and_unsafe_archive_name(out: Path) -> None:
    (out / "__venvstacks__" / "env_metadata" / "cpython-3.11.json").unlink()
    manifest = out / "__venvstacks__" / "venvstacks.json"
    data = json.loads(manifest.read_text())
    data["layers"]["applications"][0]["archive_name"] = "../../etc/passwd"
    _write_json(manifest, data)
    report = verify_output_dir(out)
    assert not report.ok
    messages = [p.message for p in report.metadata_problems]
    assert any("not a plain file name" in m for m in messages)
    assert any("cpython-3.11" in m and "missing" in m for m in messages)
    # the app's own per-layer file still names its (intact) archive
    assert {c.install_target: c.status for c in report.layers}["app-hello@1"] == "ok"


def test_tagged_outputs_for_two_platforms(tmp_path: Path) -> None:
    out = publish_folder(tmp_path / "a", plat="linux_x86_64")
    other = publish_folder(tmp_path / "b", plat="linux_aarch64")
    for path in other.rglob("*"):
        if path.is_file():
            dest = out / path.relative_to(other)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(path.read_bytes())
    report = verify_output_dir(out)
    assert report.ok and report.clean
    assert report.manifests == (
        "__venvstacks__/venvstacks-linux_aarch64.json",
        "__venvstacks__/venvstacks-linux_x86_64.json",
    )
    assert sorted(c.archive_name for c in report.layers) == [
        "app-hello@1-linux_aarch64-1.tar.xz",
        "app-hello@1-linux_x86_64-1.tar.xz",
        "cpython@3.11-linux_aarch64-1.tar.xz",
        "cpython@3.11-linux_x86_64-1.tar.xz",
    ]
    (out / "cpython@3.11-linux_aarch64-1.tar.xz").unlink()
    assert not verify_output_dir(out).ok
