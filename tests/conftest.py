"""Shared fixtures: the real runtime archive and sample_project published once."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _helpers import Published, cli, copy_sample


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/docker needs the engine: mark it so ``-m "not docker"`` works."""
    docker_dir = Path(__file__).parent / "docker"
    for item in items:
        if docker_dir in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.docker)


@pytest.fixture(scope="session")
def runtime_archive() -> Path:
    """The real CPython 3.11.2 install_only archive (built once, then cached by hash)."""
    from _runtime_fixture import ensure_runtime_archive

    return ensure_runtime_archive()


@pytest.fixture(scope="session")
def published_sample(runtime_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Published:
    """sample_project built and published natively once per test session."""
    root = tmp_path_factory.mktemp("published")
    spec = copy_sample(root / "sample project")
    cli("build", "--native", "--publish", spec)
    return Published(spec=spec, build_dir=spec.parent / "_build", output_dir=spec.parent / "_artifacts")


@pytest.fixture
def sample_spec(tmp_path: Path) -> Iterator[Path]:
    yield copy_sample(tmp_path / "sample project")
