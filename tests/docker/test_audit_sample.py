"""`audit` of sample_project under every variation, for real: every layer identical.

This is also the proof that a publish in a builder container gives the same bytes as a
native one (the `container` variation), on a builder made from another Debian suite
too (`base-image`), and it checks what a container run leaves: builder metadata,
outputs owned by the caller, no stray files in the stack folder.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from _helpers import cli, copy_sample

from venvstacks_docker.audit_plan import VARIATIONS

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.runtime]


def test_sample_project_is_identical_under_every_variation(base_image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spec = copy_sample(tmp_path / "sample project")
    html = tmp_path / "audit.html"
    result = cli("audit", "--json", "--keep", "--html", html, spec, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["schema"] == "venvstacks-docker/audit" and report["identical"] is True
    if os.environ.get("CI"):
        assert report["skipped"] == {}, "on CI every variation must run"
    ran = set(VARIATIONS) - set(report["skipped"])
    assert set(report["verdicts"]) == ran
    layers = {"cpython-3.11", "framework-sklearn", "framework-reporting", "app-classification-demo",
              "app-clustering-demo", "app-report-demo"}
    for variation, per_layer in report["verdicts"].items():
        assert per_layer == dict.fromkeys(layers, "identical"), variation
    assert "Every layer is identical under every variation" in html.read_text()

    if "container" in ran:
        run = spec.parent / "_audit" / "container" / "stack"
        out = run / "_artifacts"
        meta = json.loads((out / "__venvstacks__" / "env_metadata" / "framework-sklearn.json").read_text())
        builder = meta["venvstacks_docker"]["builder_image"]
        assert builder["tag"].startswith("venvstacks-docker-builder:") and builder["id"].startswith("sha256:")
        # the image records the runtime the tool runs on (any cached CPython 3.11.2 archive: not
        # necessarily the one the stack pins, when the cache holds several builds of it)
        assert re.fullmatch(r"[0-9a-f]{64}", builder["inputs"]["runtime"]["sha256"])
        assert re.fullmatch(r"[0-9a-f]{64}", meta["venvstacks_docker"]["runtime_archive_sha256"])
        # outputs belong to the caller, not to the container's user
        assert {p.lstat().st_uid for p in out.rglob("*")} == {os.getuid()}
        # only what the command writes appeared next to the stack file
        assert sorted(p.name for p in run.iterdir()) == ["_artifacts", "_build", "launch_modules", "requirements",
                                                          "venvstacks.toml"]
