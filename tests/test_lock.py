"""Integrated locking with uv against PyPI, using the real runtime archive."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from _helpers import SAMPLE, cli

from venvstacks_docker import lock as _lock
from venvstacks_docker import spec as _spec

pytestmark = [pytest.mark.runtime, pytest.mark.network]

STACK = """
[[runtimes]]
name = "cpython-3.11"
python_implementation = "cpython@3.11.2"
requirements = ["six==1.16.0"]
platforms = ["linux_x86_64"]

[[frameworks]]
name = "base"
runtime = "cpython-3.11"
requirements = ["six", "tabulate==0.9.0"]

[[frameworks]]
name = "top"
frameworks = ["base"]
requirements = ["tabulate"]

[[applications]]
name = "app"
launch_module = "app.py"
frameworks = ["top"]
requirements = ["tabulate", "six"]

[[applications]]
name = "pinned"
launch_module = "pinned.py"
versioned = true
runtime = "cpython-3.11"
requirements = []

[tool.uv]
exclude-newer = "2025-06-01T00:00:00Z"
"""


@pytest.fixture
def stack(tmp_path: Path, runtime_archive: Path) -> Path:
    (tmp_path / "app.py").write_text("import tabulate, six\nprint('app ok')\n")
    (tmp_path / "pinned.py").write_text("print('pinned')\n")
    path = tmp_path / "venvstacks.toml"
    path.write_text(textwrap.dedent(STACK))
    cli("lock", "--native", path)
    return path


def packages(spec_path: Path, env: str) -> dict[str, str | None]:
    spec = _spec.load(spec_path)
    doc = _lock.read_pylock(_lock.lock_paths(spec, spec.layer(env)).pylock)
    return {p.name: p.marker for p in _lock.locked_packages(doc)}


def test_lower_pins_constrain_and_shared_packages_are_marked(stack: Path) -> None:
    runtime = packages(stack, "cpython-3.11")
    assert runtime == {"six": None}
    base = packages(stack, "framework-base")
    assert base["six"] == _lock.SHARED_CLAUSE  # provided by the runtime: never installed twice
    assert base["tabulate"] is None
    top = packages(stack, "framework-top")
    assert top["tabulate"] == _lock.SHARED_CLAUSE
    app = packages(stack, "app-app")
    assert app == {"six": _lock.SHARED_CLAUSE, "tabulate": _lock.SHARED_CLAUSE}
    spec = _spec.load(stack)
    pylock = _lock.read_pylock(_lock.lock_paths(spec, spec.layer("framework-base")).pylock)
    tab = next(p for p in _lock.locked_packages(pylock) if p.name == "tabulate")
    assert tab.version == "0.9.0" and tab.wheels  # wheels and hashes kept for installable packages
    assert all("sha256" in w["hashes"] for w in tab.wheels)
    meta = json.loads(_lock.lock_paths(spec, spec.layer("cpython-3.11")).meta.read_text())
    assert len(meta["runtime_archive"]["sha256"]) == 64
    assert meta["locked_at"] == "2025-06-01T00:00:00+00:00"  # exclude-newer is the lock time
    for layer in spec.all_layers():
        assert not _lock.lock_problems(spec, layer), layer.env_name


def test_lock_invalidation_follows_real_dependencies(stack: Path) -> None:
    spec = _spec.load(stack)
    # an edited launch module only matters to versioned app layers
    (stack.parent / "app.py").write_text("print('changed')\n")
    (stack.parent / "pinned.py").write_text("print('changed too')\n")
    spec = _spec.load(stack)
    assert not _lock.lock_problems(spec, spec.layer("app-app"))
    assert _lock.lock_problems(spec, spec.layer("app-pinned")) == ["versioned layer inputs changed"]
    # changing a framework's requirements invalidates it and everything above, not below
    stack.write_text(stack.read_text().replace('"six", "tabulate==0.9.0"', '"six", "tabulate==0.8.10"'))
    spec = _spec.load(stack)
    assert not _lock.lock_problems(spec, spec.layer("cpython-3.11"))
    assert "declared requirements changed" in _lock.lock_problems(spec, spec.layer("framework-base"))
    assert _lock.lock_problems(spec, spec.layer("framework-top"))
    assert _lock.lock_problems(spec, spec.layer("app-app"))
    assert not _lock.lock_problems(spec, spec.layer("app-pinned"))[1:]  # only its own module change
    # relocking with --if-needed fixes exactly those and bumps the versioned layer
    out = cli("lock", "--native", "--if-needed", "--show", "--json", stack)
    statuses = {row["layer_name"]: row["status"] for row in json.loads(out.stdout)["locks"]}
    assert statuses["cpython-3.11"] == "skipped"
    assert statuses["framework-base"] == "locked"
    spec = _spec.load(stack)
    assert _lock.read_meta(spec, spec.layer("app-pinned"))["lock_version"] == 2
    assert packages(stack, "framework-base")["tabulate"] is None
    assert all(not _lock.lock_problems(spec, layer) for layer in spec.all_layers())


def test_relock_of_unchanged_stack_rewrites_nothing(stack: Path) -> None:
    files = sorted((stack.parent / "requirements").rglob("*"))
    before = {f: f.stat().st_mtime_ns for f in files if f.is_file()}
    cli("lock", "--native", stack)
    after = {f: f.stat().st_mtime_ns for f in files if f.is_file()}
    assert before == after


def test_unresolvable_requirements_are_one_clear_error(stack: Path) -> None:
    stack.write_text(stack.read_text().replace('requirements = ["tabulate"]', 'requirements = ["tabulate==0.8.10"]'))
    result = cli("lock", "--native", stack, check=False)
    assert result.returncode == 3
    assert "resolving framework-top" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_index_is_one_clear_error(stack: Path) -> None:
    text = stack.read_text().replace('requirements = ["tabulate"]', 'requirements = ["tabulate", "rich"]')
    text += '\n[[tool.uv.index]]\nname = "dead"\nurl = "http://127.0.0.1:9/simple"\ndefault = true\n'
    stack.write_text(text)
    result = cli("lock", "--native", stack, check=False)
    assert result.returncode == 3
    assert "index is unreachable" in result.stderr and "Traceback" not in result.stderr


def test_committed_sample_locks_are_valid() -> None:
    spec = _spec.load(SAMPLE / "venvstacks.toml")
    problems = {layer.env_name: _lock.lock_problems(spec, layer) for layer in spec.all_layers()}
    assert problems == {layer.env_name: [] for layer in spec.all_layers()}
