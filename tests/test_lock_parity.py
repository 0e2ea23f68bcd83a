"""Locks and module hashes are interchangeable with venvstacks 0.8.

The data here is venvstacks 0.8.0's own, read from its test suite in
``../shared/venvstacks-0.8.0/tests`` (the release at commit c2e47ed): its hashing test
fodder and the values its ``tests/test_hashing.py`` documents, its sample project's
committed ``requirements/`` tree, and its expected manifests.  Nothing is copied into
this project; a copy of the sample project is made in a temporary folder where a test
needs to change it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from venvstacks_docker import spec as _spec
from venvstacks_docker.lockfiles import lock_problems, pylock_requirements_hash, read_meta
from venvstacks_docker.spec_modules import module_hash, module_name

VENVSTACKS_TESTS = Path(__file__).resolve().parents[2] / "shared" / "venvstacks-0.8.0" / "tests"
HASH_FODDER = VENVSTACKS_TESTS / "hash_fodder"
SAMPLE = VENVSTACKS_TESTS / "sample_project"

pytestmark = pytest.mark.skipif(not VENVSTACKS_TESTS.is_dir(),
                                reason=f"venvstacks 0.8.0's test suite is not at {VENVSTACKS_TESTS}")

# from venvstacks 0.8.0 tests/test_hashing.py: sha256sum of each fodder file, and the
# "combined" (name and content) hashes its file hashing gives
CONTENT_SHA256 = {
    "file.txt": "84dae841773532dcc56da3a65a4c992534c385649645bf0340873da2e2ce7d6a",
    "file_duplicate.txt": "84dae841773532dcc56da3a65a4c992534c385649645bf0340873da2e2ce7d6a",
    "different_file.txt": "43691ae21f1fd9540bb5b9a6f2ab07fd5be4c2a0545231dc505a5f33a1619337",
}
COMBINED_SHA256 = {
    "file.txt": "6f0923fd3e132d2a05f0ee67b906d10af52e5993454ef38d024820a6fa3b2a12",
    "file_duplicate.txt": "a6d265b49ae38e1539d613d194befa0984bc0d6dcad66f46082e3e532dafc0e1",
    "different_file.txt": "4a23fc5657c4c15fce3f99c22af471a7432ac96e74ea3ca2ab7720da6b892756",
}
# the order in which that test says a folder's parts enter its hash
DIR_SEQUENCE = [
    ("name", "hash_fodder"), ("file", "different_file.txt"), ("file", "file.txt"),
    ("file", "file_duplicate.txt"), ("name", "folder1"), ("file", "file.txt"), ("name", "subfolder"),
    ("file", "file.txt"), ("name", "folder2"), ("file", "file_duplicate.txt"),
]


@pytest.mark.parametrize("name", sorted(COMBINED_SHA256))
def test_a_module_file_hashes_as_venvstacks_hashes_it(name: str) -> None:
    assert hashlib.sha256((HASH_FODDER / name).read_bytes()).hexdigest() == CONTENT_SHA256[name]
    assert module_hash(HASH_FODDER / name) == f"sha256:{COMBINED_SHA256[name]}"


def test_a_module_folder_hashes_as_venvstacks_hashes_it() -> None:
    expected = hashlib.sha256()
    for kind, text in DIR_SEQUENCE:
        expected.update(text.encode())
        if kind == "file":
            expected.update(f"sha256:{CONTENT_SHA256[text]}".encode())
    assert module_hash(HASH_FODDER) == f"sha256/{expected.hexdigest()}"


def _expected_manifests() -> list[Path]:
    return sorted((SAMPLE / "expected_manifests").rglob("venvstacks.json"))


@pytest.mark.parametrize("manifest", _expected_manifests(), ids=lambda p: str(p.parent.relative_to(SAMPLE)))
def test_launch_and_support_module_hashes_equal_venvstacks_expected_manifests(manifest: Path) -> None:
    stack = _spec.load(SAMPLE / "venvstacks.toml")
    apps = {layer.env_name: layer for layer in stack.applications}
    checked = 0
    for entry in json.loads(manifest.read_text())["layers"]["applications"]:
        app = apps[entry["layer_name"]]
        assert app.launch_module is not None
        assert module_hash(app.launch_module) == entry["app_launch_module_hash"]
        ours = {module_name(m): module_hash(m) for m in app.support_modules}
        for support in entry.get("app_support_modules", []):
            assert ours[support["name"]] == support["hash"], support["name"]
            checked += 1
    assert checked or "linux" not in str(manifest)  # the Linux apps carry support modules


def test_venvstacks_committed_locks_are_valid_for_us() -> None:
    stack = _spec.load(SAMPLE / "venvstacks.toml")
    layers = list(stack.all_layers())
    assert len(layers) == 8
    for layer in layers:
        assert lock_problems(stack, layer) == [], layer.env_name


def test_venvstacks_recorded_pylock_hashes_are_ours(tmp_path: Path) -> None:
    import tomllib

    stack = _spec.load(SAMPLE / "venvstacks.toml")
    for layer in stack.all_layers():
        meta = read_meta(stack, layer)
        assert meta is not None
        pylock = next((SAMPLE / "requirements" / layer.env_name).glob("pylock.*.toml"))
        assert pylock_requirements_hash(tomllib.loads(pylock.read_text())) == meta["requirements_hash"]


@pytest.mark.parametrize("edit", ["requirement", "launch module", "python version"])
def test_an_edit_makes_a_venvstacks_lock_stale_for_us(tmp_path: Path, edit: str) -> None:
    root = tmp_path / "tests"
    shutil.copytree(SAMPLE, root / "sample_project", ignore=shutil.ignore_patterns("expected_manifests"))
    shutil.copytree(VENVSTACKS_TESTS / "minimal_project", root / "minimal_project")
    spec_file = root / "sample_project" / "venvstacks.toml"
    text = spec_file.read_text()
    if edit == "requirement":
        spec_file.write_text(text.replace('"scikit-learn",', '"scikit-learn>=1",', 1))
    elif edit == "launch module":
        (root / "sample_project" / "launch_modules" / "scipy_import.py").write_text("# edited\n")
    else:
        spec_file.write_text(text.replace('= "cpython@3.11.11"', '= "cpython@3.12.9"', 1))
    stack = _spec.load(spec_file)
    stale = {layer.env_name for layer in stack.all_layers() if lock_problems(stack, layer)}
    assert stale, edit
    expected = {"requirement": "app-sklearn-import", "launch module": "app-scipy-import",
                "python version": "cpython-3.11"}[edit]
    assert expected in stale
