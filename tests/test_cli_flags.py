"""The command line as venvstacks 0.8 users know it.

A missing-runtime hint names a Python the runtime builder can make.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from venvstacks_docker.errors import RuntimeArchiveError
from venvstacks_docker.runtimes import RuntimeRequest, acquire_runtime

# --- the missing runtime hint -------------------------------------------------------------


@pytest.mark.parametrize(("wanted", "buildable"), [("3.11.2", "3.11.2"), ("3.11.13", "3.11.2"),
                                                   ("3.13.5", "3.13.5"), ("3.12.11", "3.13.5")])
def test_the_missing_runtime_hint_names_a_version_the_builder_makes(
        wanted: str, buildable: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from venvstacks_docker.runtime_build.recipe import PINS

    monkeypatch.setenv("VENVSTACKS_DOCKER_CACHE", str(tmp_path))  # nothing cached
    monkeypatch.delenv("VENVSTACKS_DOCKER_RUNTIME_SOURCES", raising=False)
    with pytest.raises(RuntimeArchiveError) as excinfo:
        acquire_runtime(RuntimeRequest(implementation="cpython", version=wanted, platform="linux_x86_64"),
                        offline=True)
    hint = excinfo.value.hint or ""
    assert buildable in PINS
    assert f"`venvstacks-docker runtime build --python-version {buildable}`" in hint
    assert (f'"cpython@{buildable}"' in hint) == (wanted != buildable)  # then the stack must name it
    assert "VENVSTACKS_DOCKER_RUNTIME_SOURCES" in hint


def test_no_runtime_build_is_suggested_where_it_cannot_build(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VENVSTACKS_DOCKER_CACHE", str(tmp_path))
    with pytest.raises(RuntimeArchiveError) as excinfo:
        acquire_runtime(RuntimeRequest(implementation="cpython", version="3.11.2", platform="macosx_arm64"),
                        offline=True)
    assert "--python-version" not in (excinfo.value.hint or "")
    assert "Linux only" in (excinfo.value.hint or "")
