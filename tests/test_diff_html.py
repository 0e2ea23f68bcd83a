"""diff --html: one self-contained file, checked in a real headless Chromium (Debian's)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from _helpers import cli
from test_diff_support import change, layer_files, make_tree, publish_like, rewrite

from venvstacks_docker.diffing import compare_outputs, render_html


def _chromium() -> str | None:
    """Debian's chromium; installed here (as root, like scripts/setup does) when missing."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"], env=env,
                   capture_output=True, check=False)
    return shutil.which("chromium")


@pytest.fixture
def differing(tmp_path: Path) -> tuple[Path, Path]:
    trees = {"framework-a": make_tree(tmp_path / "fa", layer_files(5))}
    a = publish_like(tmp_path / "a", trees)
    b = publish_like(tmp_path / "b", trees)
    script = b"#!/tmp/build-42/_build/framework-a/bin/python\n<script>alert('x')</script>\n"
    rewrite(a / "framework-a.tar.xz", tmp_path / "x.tar.xz", change("bin/tool", data=script))
    shutil.move(tmp_path / "x.tar.xz", b / "framework-a.tar.xz")
    return a, b


def test_html_is_self_contained_and_escaped(differing: tuple[Path, Path]) -> None:
    page = render_html(compare_outputs(*differing))
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert "<script" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "http://" not in page and "https://" not in page  # nothing loaded from elsewhere
    assert "DIFFERENT: 1 of 1 archive(s) differ, 1 member(s)" in page


def test_html_report_in_headless_chromium(differing: tuple[Path, Path], tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        message = ("chromium is not installed and cannot be (needs root and apt-get): the HTML report was NOT "
                   "checked in a browser; scripts/setup installs it")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    report = tmp_path / "report.html"
    result = cli("diff", "--html", report, *differing, check=False)
    assert result.returncode == 12 and f"HTML report: {report}" in result.stdout
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}"]
    png = tmp_path / "report.png"
    subprocess.run([*args, f"--screenshot={png}", "--window-size=1200,900", report.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert png.is_file() and png.stat().st_size > 10_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dom = subprocess.run([*args, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    assert "DIFFERENT: 1 of 1 archive(s) differ, 1 member(s)" in dom  # the summary, as the browser rendered it
    assert "<td>framework-a</td><td>different</td>" in dom
    assert "/tmp/build-42/_build/framework-a/bin/python" in dom and "shebang" in dom
    assert "<script>alert" not in dom  # the member's content stayed text
