"""diff of two output folders and of metadata files: pairing by layer, metadata fields, run
fields (counted only with --strict), the JSON envelope, the text report and exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _helpers import cli
from test_diff_support import EPOCH, change, layer_files, make_tree, publish_like, rewrite

from venvstacks_docker import metadata
from venvstacks_docker.diffing import RUN_FIELDS, compare, compare_outputs, render_text
from venvstacks_docker.errors import EXIT_CODES, DifferenceFound


@pytest.fixture
def trees(tmp_path: Path) -> dict[str, Path]:
    return {
        "framework-a": make_tree(tmp_path / "fa", layer_files(10)),
        "framework-b": make_tree(tmp_path / "fb", {"share/data.txt": "data\n"}),
    }


def _edit(out: Path, layer: str, **fields: object) -> None:
    """Change fields of a layer's metadata, in its per-layer file and in the manifest."""
    def apply(entry: dict) -> None:  # type: ignore[type-arg]
        for key, value in fields.items():
            if key.startswith("venvstacks_docker."):
                entry["venvstacks_docker"][key.split(".", 1)[1]] = value
            else:
                entry[key] = value

    per_layer = out / "__venvstacks__" / "env_metadata" / f"{layer}.json"
    entry = json.loads(per_layer.read_text())
    apply(entry)
    metadata.write_json(per_layer, entry)
    manifest_path = out / "__venvstacks__" / "venvstacks.json"
    manifest = json.loads(manifest_path.read_text())
    for item in manifest["layers"]["frameworks"]:
        if item["layer_name"] == layer:
            apply(item)
    metadata.write_json(manifest_path, manifest)


def test_exit_code_12_is_registered() -> None:
    assert DifferenceFound.return_code == 12 and 12 in EXIT_CODES and "diff" in EXIT_CODES[12]


def test_identical_folders(tmp_path: Path, trees: dict[str, Path]) -> None:
    a = publish_like(tmp_path / "a", trees)
    b = publish_like(tmp_path / "b", trees)
    report = compare_outputs(a, b)
    assert report.identical and len(report.archives) == 2 and not any(x.opened for x in report.archives)
    assert [m.status for m in report.metadata] == ["identical"] * 3
    result = cli("diff", a, b)
    assert result.returncode == 0 and "IDENTICAL: 2 archive(s), 3 metadata file(s)" in result.stdout


def test_run_fields_count_only_with_strict(tmp_path: Path, trees: dict[str, Path]) -> None:
    assert "venvstacks_docker.builder_image" in RUN_FIELDS
    a = publish_like(tmp_path / "a", trees)
    b = publish_like(tmp_path / "b", trees)
    _edit(b, "framework-a", **{"venvstacks_docker.builder_image": {"tag": "vsd-builder:1234"},
                               "archive_build": 3})
    report = compare_outputs(a, b)
    assert report.identical
    runs = sorted(f.path for _, f in report.run_field_differences())
    assert runs == ["archive_build", "venvstacks_docker.builder_image"]  # per-layer file; the manifest is covered
    assert "run fields (describe the run, not counted without --strict)" in render_text(report)
    assert compare_outputs(a, b, strict=True).identical is False
    assert cli("diff", a, b).returncode == 0
    strict = cli("diff", "--strict", a, b, check=False)
    assert strict.returncode == 12 and "run fields (counted: --strict)" in strict.stdout


def test_metadata_field_difference(tmp_path: Path, trees: dict[str, Path]) -> None:
    a = publish_like(tmp_path / "a", trees)
    b = publish_like(tmp_path / "b", trees)
    _edit(b, "framework-b", **{"venvstacks_docker.uv_version": "0.14.0"})
    report = compare_outputs(a, b)
    assert not report.identical
    [(file, field)] = report.metadata_differences()
    assert file == "__venvstacks__/env_metadata/framework-b.json"
    assert (field.path, field.a, field.b) == ("venvstacks_docker.uv_version", "0.13.9", "0.14.0")
    assert "another uv" in field.explanation
    result = cli("diff", a, b, check=False)
    assert result.returncode == 12 and "venvstacks_docker.uv_version: '0.13.9' -> '0.14.0'" in result.stdout


def test_archives_are_paired_by_layer(tmp_path: Path, trees: dict[str, Path]) -> None:
    a = publish_like(tmp_path / "a", trees, names={"framework-a": "framework-a-linux_x86_64-1.tar.xz"})
    b = publish_like(tmp_path / "b", trees, names={"framework-a": "framework-a-linux_x86_64-2.tar.xz"})
    archive_b = b / "framework-a-linux_x86_64-2.tar.xz"
    rewrite(archive_b, tmp_path / "x.tar.xz", change("mod4.py", mtime=EPOCH + 7))
    shutil.move(tmp_path / "x.tar.xz", archive_b)
    report = compare_outputs(a, b)
    by_label = {x.label: x for x in report.archives}
    assert set(by_label) == {"framework-a", "framework-b"}
    assert by_label["framework-a"].status == "different" and by_label["framework-b"].identical
    assert [m.kinds for m in by_label["framework-a"].members] == [["mtime"]]
    assert report.layer_verdicts() == {"framework-a": "different", "framework-b": "identical"}


def test_layer_only_on_one_side_and_loose_archives(tmp_path: Path, trees: dict[str, Path]) -> None:
    a = publish_like(tmp_path / "a", trees)
    b = publish_like(tmp_path / "b", {"framework-a": trees["framework-a"]})
    shutil.copy(a / "framework-a.tar.xz", a / "old-build.tar.xz")
    report = compare_outputs(a, b)
    statuses = {x.label: x.status for x in report.archives}
    assert statuses == {"framework-a": "identical", "framework-b": "only-in-a", "old-build.tar.xz": "only-in-a"}
    assert {m.file: m.status for m in report.metadata}["__venvstacks__/env_metadata/framework-b.json"] == "only-in-a"


def test_folders_without_metadata_pair_by_file_name(tmp_path: Path, trees: dict[str, Path]) -> None:
    a = publish_like(tmp_path / "a", trees)
    b = publish_like(tmp_path / "b", trees)
    for out in (a, b):
        shutil.rmtree(out / "__venvstacks__")
    rewrite(a / "framework-b.tar.xz", tmp_path / "x.tar.xz", change("data.txt", mode=0o600))
    shutil.move(tmp_path / "x.tar.xz", b / "framework-b.tar.xz")
    report = compare_outputs(a, b)
    assert {x.label: x.status for x in report.archives} == {"framework-a.tar.xz": "identical",
                                                            "framework-b.tar.xz": "different"}


def test_metadata_files_and_their_archives(tmp_path: Path, trees: dict[str, Path]) -> None:
    a = publish_like(tmp_path / "a", trees)
    b = publish_like(tmp_path / "b", trees)
    _edit(b, "framework-a", locked_at="2026-11-01T00:00:00+00:00")
    layer_file = Path("__venvstacks__/env_metadata/framework-a.json")
    report = compare(a / layer_file, b / layer_file)
    assert report.input_kind == "metadata" and not report.identical
    assert [f.path for _, f in report.metadata_differences()] == ["locked_at"]
    assert [x.label for x in report.archives] == ["framework-a"] and report.archives[0].identical
    manifest = Path("__venvstacks__/venvstacks.json")
    report = compare(a / manifest, b / manifest)
    assert [f.path for _, f in report.metadata_differences()] == ["layers.frameworks.framework-a.locked_at"]


def test_json_envelope_has_stable_keys(tmp_path: Path, trees: dict[str, Path]) -> None:
    a = publish_like(tmp_path / "a", trees)
    b = publish_like(tmp_path / "b", trees)
    rewrite(a / "framework-a.tar.xz", tmp_path / "x.tar.xz", change("mod1.py", data=b"x = 2\n"))
    shutil.move(tmp_path / "x.tar.xz", b / "framework-a.tar.xz")
    result = cli("diff", "--json", a, b, check=False)
    assert result.returncode == 12
    data = json.loads(result.stdout)
    assert data["schema"] == "venvstacks-docker/diff" and data["schema_version"] == 1
    assert set(data) == {"schema", "schema_version", "a", "b", "input_kind", "strict", "identical", "verdict",
                         "summary", "run_fields", "archives", "metadata"}
    assert data["run_fields"] == list(RUN_FIELDS)
    assert set(data["summary"]) == {"archives", "archives_identical", "archives_different", "archives_only_in_a",
                                    "archives_only_in_b", "members_different", "metadata_files",
                                    "metadata_differences", "run_field_differences", "kinds"}
    archive = next(x for x in data["archives"] if x["status"] == "different")
    assert set(archive) >= {"label", "layer_name", "status", "a", "b", "sha256_a", "sha256_b", "members",
                            "findings", "kinds", "members_equal", "members_analyzed", "xz_streams_skipped"}
    member = archive["members"][0]
    assert set(member) == {"name", "status", "size_a", "size_b", "findings"}
    assert {f["kind"] for f in member["findings"]} == {"content-text"}
    assert set(member["findings"][0]) == {"kind", "explanation", "details"}
    assert data["summary"]["kinds"] == {"content-text": 1}  # the metadata was left as it was


def test_text_report_and_usage_errors(tmp_path: Path, trees: dict[str, Path]) -> None:
    a = publish_like(tmp_path / "a", trees)
    b = publish_like(tmp_path / "b", trees)
    rewrite(a / "framework-a.tar.xz", tmp_path / "x.tar.xz", change("mod1.py", data=b"x = 2\n"))
    shutil.move(tmp_path / "x.tar.xz", b / "framework-a.tar.xz")
    text = render_text(compare_outputs(a, b))
    assert "framework-a: different" in text and "content-text: the text differs" in text and "+x = 2" in text
    assert "DIFFERENT: 1 of 2 archive(s) differ, 1 member(s)" in text
    both = cli("diff", "--json", "--html", tmp_path / "r.html", a, b, check=False)
    assert both.returncode == 2 and "cannot be combined" in both.stderr
    mixed = cli("diff", a, a / "framework-a.tar.xz", check=False)
    assert mixed.returncode == 2 and "cannot compare a folder with a file" in mixed.stderr
