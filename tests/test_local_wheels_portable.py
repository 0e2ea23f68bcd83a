"""``--local-wheels`` locks are portable: a checkout moved elsewhere still builds.

uv names a find-links wheel by its absolute ``file://`` URL; the lock stores it, as
venvstacks 0.8 does, by a path relative to the lock file's folder.  The wheel used here
is a small pure-Python one written by the test (no network, no build backend).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import tomllib
import zipfile
from pathlib import Path

import pytest
from _helpers import cli
from packaging.pylock import PackageWheel

from venvstacks_docker import lock as _lock
from venvstacks_docker import spec as _spec
from venvstacks_docker.lockfiles import lock_paths, pylock_requirements_hash
from venvstacks_docker.wheels import portable_wheel_entry, wheel_ref

STACK = """\
[[runtimes]]
name = "cpython-3.11"
python_implementation = "cpython@3.11.2"
requirements = []

[[applications]]
name = "portable"
launch_module = "portable_app.py"
runtime = "cpython-3.11"
requirements = ["portable-demo"]
"""
APP = "import portable_demo\n\nprint('portable_demo says', portable_demo.VALUE)\n"


def make_wheel(folder: Path, name: str = "portable_demo", version: str = "1.0") -> Path:
    """A minimal valid pure-Python wheel, byte for byte the same on every run."""
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": "VALUE = 42\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    rows = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        rows.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join([*rows, f"{info}/RECORD,,"]) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(zipfile.ZipInfo(path, (2020, 1, 1, 0, 0, 0)), text)
    return wheel


def write_checkout(root: Path) -> Path:
    """A checkout: the stack file, its launch module and a wheels folder next to them."""
    root.mkdir(parents=True)
    (root / "venvstacks.toml").write_text(STACK, encoding="utf-8")
    (root / "portable_app.py").write_text(APP, encoding="utf-8")
    make_wheel(root / "local wheels")
    return root / "venvstacks.toml"


def test_a_file_url_from_uv_is_stored_relative_to_the_lock(tmp_path: Path) -> None:
    spec_path = write_checkout(tmp_path / "my checkout")
    spec = _spec.load(spec_path)
    app = spec.layer("app-portable")
    lock_dir = lock_paths(spec, app).folder
    wheels = spec_path.parent / "local wheels"
    url = (wheels / "portable_demo-1.0-py3-none-any.whl").as_uri()  # what uv writes: percent-encoded
    assert url.startswith("file:///") and "%20" in url
    sha = hashlib.sha256((wheels / "portable_demo-1.0-py3-none-any.whl").read_bytes()).hexdigest()
    doc = {"lock-version": "1.0", "created-by": "uv", "requires-python": "==3.11.*", "packages": [
        {"name": "portable-demo", "version": "1.0", "index": wheels.as_uri(),
         "wheels": [{"url": url, "hashes": {"sha256": sha}}]},
    ]}
    lock_paths(spec, spec.layer("cpython-3.11")).folder.mkdir(parents=True)
    lock_paths(spec, spec.layer("cpython-3.11")).pylock.write_text(
        'lock-version = "1.0"\ncreated-by = "uv"\npackages = []\n', encoding="utf-8")
    stored = _lock.postprocess_pylock(spec, app, doc, lock_dir)
    entry = stored["packages"][0]["wheels"][0]
    assert entry == {"path": "../../local wheels/portable_demo-1.0-py3-none-any.whl", "hashes": {"sha256": sha}}
    # the wheel keeps its name, so the lock's requirements_hash is the one venvstacks computes
    assert pylock_requirements_hash(stored) == pylock_requirements_hash(doc)
    ref = wheel_ref(PackageWheel(path=entry["path"], hashes=entry["hashes"]), lock_dir)
    assert ref.path == wheels / "portable_demo-1.0-py3-none-any.whl" and ref.url is None


def test_absolute_paths_become_relative_and_index_urls_lose_credentials(tmp_path: Path) -> None:
    lock_dir = tmp_path / "stack" / "requirements" / "app-x"
    absolute = {"path": str(tmp_path / "wheels" / "x-1-py3-none-any.whl"), "hashes": {"sha256": "ab" * 32}}
    assert portable_wheel_entry(absolute, lock_dir)["path"] == "../../../wheels/x-1-py3-none-any.whl"
    relative = {"path": "../../wheels/x-1-py3-none-any.whl", "hashes": {"sha256": "ab" * 32}}
    assert portable_wheel_entry(relative, lock_dir) == relative
    remote = {"url": "https://user:secret@index.example/x-1-py3-none-any.whl", "hashes": {"sha256": "ab" * 32}}
    assert portable_wheel_entry(remote, lock_dir)["url"] == "https://index.example/x-1-py3-none-any.whl"


def test_a_lock_written_with_a_file_url_still_builds_where_it_was(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "w i")
    ref = wheel_ref(PackageWheel(url=wheel.as_uri(), hashes={"sha256": "ab" * 32}), tmp_path / "elsewhere")
    assert ref.path == wheel and ref.filename == wheel.name and ref.url is None


@pytest.mark.slow
@pytest.mark.runtime
def test_a_moved_checkout_builds_publishes_and_runs(runtime_archive: Path, tmp_path: Path) -> None:
    # a cache of its own: the wheel must come from the moved checkout, not from a cache
    env = {**os.environ, "VENVSTACKS_DOCKER_CACHE": str(tmp_path / "cache")}
    spec = write_checkout(tmp_path / "first place" / "checkout")
    cli("lock", "--native", "--no-index", "--local-wheels", "local wheels", "--runtime-source", runtime_archive,
        spec, env=env)
    pylock = spec.parent / "requirements" / "app-portable" / "pylock.app-portable.toml"
    text = pylock.read_text(encoding="utf-8")
    assert "file://" not in text.split("[[packages.wheels]]", 1)[1] and str(tmp_path) not in text.split(
        "[[packages.wheels]]", 1)[1]
    wheels = tomllib.loads(text)["packages"][0]["wheels"]
    assert [w["path"] for w in wheels] == ["../../local wheels/portable_demo-1.0-py3-none-any.whl"]

    moved = tmp_path / "second place" / "renamed checkout"
    moved.parent.mkdir()
    shutil.move(spec.parent, moved)
    assert not spec.parent.exists()
    spec = moved / "venvstacks.toml"
    assert "*" not in cli("show", spec, env=env).stdout  # every lock is still valid after the move
    cli("build", "--native", "--publish", spec, env=env)
    deployed = json.loads(cli("deploy", "--json", moved / "_artifacts", tmp_path / "deployed", env=env).stdout)
    app = next(a for a in deployed["applications"] if a["layer_name"] == "app-portable")
    run = subprocess.run([app["python"], "-m", "portable_app"], capture_output=True, text=True, check=False)
    assert (run.returncode, run.stdout.strip()) == (0, "portable_demo says 42"), run.stderr
