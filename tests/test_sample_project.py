"""sample_project end to end, natively: publish, reproducibility, verify, deploy, incremental.

These use the real runtime archive, real wheels from PyPI (cached) and real xz, so
they take minutes; the session fixture publishes once and the reproducibility test
publishes a second time under different conditions.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _helpers import Published, cli, copy_sample

pytestmark = [pytest.mark.slow, pytest.mark.runtime]

APPS = {
    "app-classification-demo": ("sklearn_classification", "classification-demo: iris test accuracy"),
    "app-clustering-demo": ("sklearn_clustering", "clustering-demo: cluster sizes [100, 100, 100]"),
    "app-report-demo": ("report_demo", "logistic regression"),
}


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tar.xz"))}


def manifest(out: Path) -> dict:
    return json.loads((out / "__venvstacks__" / "venvstacks.json").read_text())


def test_publish_writes_one_archive_per_layer_with_venvstacks_metadata(published_sample: Published) -> None:
    out = published_sample.output_dir
    assert sorted(digests(out)) == sorted(
        f"{n}.tar.xz" for n in ["cpython-3.11", "framework-sklearn", "framework-reporting", *APPS])
    layers = manifest(out)["layers"]
    assert [layer["layer_name"] for layer in layers["frameworks"]] == ["framework-sklearn", "framework-reporting"]
    report = next(layer for layer in layers["applications"] if layer["layer_name"] == "app-report-demo")
    for key in ("install_target", "requirements_hash", "lock_version", "locked_at", "runtime_layer",
                "python_implementation", "bound_to_implementation", "required_layers", "app_launch_module",
                "app_launch_module_hash", "archive_build", "archive_name", "target_platform",
                "archive_size", "archive_hashes"):
        assert key in report, key
    assert report["required_layers"] == ["framework-reporting", "framework-sklearn"]
    assert report["app_launch_module"] == "report_demo"
    ours = report["venvstacks_docker"]
    assert ours["source_date_epoch"] == 1790812800  # derived from locked_at (exclude-newer)
    assert ours["source_date_epoch_from"] == "locked_at"
    assert len(ours["runtime_archive_sha256"]) == 64
    assert ours["uv_version"] and ours["tool_version"]
    per_layer = json.loads((out / "__venvstacks__" / "env_metadata" / "app-report-demo.json").read_text())
    assert per_layer == report
    # the archive itself: single top folder, fixed mtime, root owner, no volatile files
    import tarfile

    with tarfile.open(out / "framework-sklearn.tar.xz") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert all(n == "framework-sklearn" or n.startswith("framework-sklearn/") for n in names)
    assert {m.mtime for m in members} == {1790812800}
    assert {(m.uid, m.gid) for m in members} == {(0, 0)}
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", "direct_url.json", "INSTALLER"))]
    assert "framework-sklearn/postinstall.py" in names
    assert "framework-sklearn/pyvenv.cfg" not in names
    assert not [n for n in names if n.endswith("site-packages/sitecustomize.py")]
    # bin/python is the script that puts the lower layers' shared libraries on the loader
    # path; it runs the runtime's interpreter through bin/python_ (dynlib.py)
    by_name = {m.name: m for m in members}
    assert by_name["framework-sklearn/bin/python"].isreg()
    link = by_name["framework-sklearn/bin/python_"]
    assert link.issym() and link.linkname == "../../cpython-3.11/bin/python"
    # numpy's OpenBLAS, in the runtime, is linked for the layers above
    with tarfile.open(out / "cpython-3.11.tar.xz") as tar:
        dynlibs = [m for m in tar.getmembers() if m.name.startswith("cpython-3.11/share/venv/dynlib/")]
    assert [m.name.rsplit("/", 1)[1].startswith("libscipy_openblas") for m in dynlibs] == [True]
    assert dynlibs[0].issym() and dynlibs[0].linkname.startswith("../../../lib/python3.11/site-packages/numpy.libs/")


def test_verify_passes_and_catches_a_flipped_byte(published_sample: Published, tmp_path: Path) -> None:
    ok = cli("verify", "--json", published_sample.output_dir)
    report = json.loads(ok.stdout)
    assert report["ok"] is True
    out = tmp_path / "copy"
    shutil.copytree(published_sample.output_dir, out)
    victim = out / "framework-reporting.tar.xz"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    bad = cli("verify", out, check=False)
    assert bad.returncode == 7
    assert "framework-reporting" in bad.stdout + bad.stderr


def test_deploy_in_a_path_with_spaces_and_run_every_app(published_sample: Published, tmp_path: Path) -> None:
    target = tmp_path / "deployed here with spaces"
    result = json.loads(cli("deploy", "--json", published_sample.output_dir, target).stdout)
    assert {a["layer_name"] for a in result["applications"]} == set(APPS)
    for app in result["applications"]:
        module, expected = APPS[app["layer_name"]]
        run = subprocess.run([app["python"], "-m", module], capture_output=True, text=True, check=False,
                             env={"PATH": "/usr/bin:/bin"})
        assert run.returncode == 0, run.stderr
        assert expected in run.stdout
    # the deployed app sees its layers in sys.path order, then nothing from the build folder
    probe = subprocess.run([str(target / "app-report-demo" / "bin" / "python"), "-c",
                            "import sys, json; print(json.dumps(sys.path))"],
                           capture_output=True, text=True, check=True)
    paths = [p for p in json.loads(probe.stdout) if "site-packages" in p]
    assert [Path(p).parts[-4] for p in paths] == [
        "app-report-demo", "framework-reporting", "framework-sklearn", "cpython-3.11"]
    assert not [p for p in json.loads(probe.stdout) if str(published_sample.build_dir) in p]


def test_two_publishes_under_different_conditions_are_identical_then_incremental(
    published_sample: Published, tmp_path: Path
) -> None:
    spec = copy_sample(tmp_path / "other place")
    env = dict(os.environ, TZ="America/St_Johns", LC_ALL="C", LANG="C")
    env.pop("SOURCE_DATE_EPOCH", None)
    # umask 002 and another build folder; the first publish ran with the default umask
    cmd = [sys.executable, "-c",
           "import os, sys; os.umask(0o002); from venvstacks_docker.cli import main; main(sys.argv[1:])",
           "build", "--native", "--publish", "--build-dir", str(tmp_path / "elsewhere build"), str(spec)]
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    out = spec.parent / "_artifacts"
    assert digests(out) == digests(published_sample.output_dir)

    # unchanged stack: republish is fast, reuses every archive and rewrites nothing
    # (the tool's own lock file in .venvstacks-docker/ is not part of the publication)
    published = [p for p in out.rglob("*") if p.is_file() and ".venvstacks-docker" not in p.parts]
    before = {p: p.stat().st_mtime_ns for p in published}
    start = time.monotonic()
    res = cli("publish", "--native", "--show", "--json", "--build-dir", tmp_path / "elsewhere build", spec)
    elapsed = time.monotonic() - start
    assert {layer["status"] for layer in json.loads(res.stdout)["publication"]["layers"]} == {"reused"}
    assert {p: p.stat().st_mtime_ns for p in published} == before
    assert elapsed < 30  # generous: the benchmark measures the real figure

    # an edited launch module IS picked up (venvstacks 0.8 reuses the stale archive)
    module = spec.parent / "launch_modules" / "sklearn_clustering.py"
    module.write_text(module.read_text().replace("cluster sizes", "cluster sizes (edited)"))
    cli("build", "--native", "--publish", "--build-dir", tmp_path / "elsewhere build", spec)
    after = digests(out)
    changed = {name for name in after if after[name] != digests(published_sample.output_dir)[name]}
    assert changed == {"app-clustering-demo.tar.xz"}
    meta = manifest(out)
    clustering = next(layer for layer in meta["layers"]["applications"]
                      if layer["layer_name"] == "app-clustering-demo")
    assert clustering["archive_build"] == 2

    # --include publishes one layer but keeps every layer in the combined manifest
    cli("publish", "--native", "--include", "app-report-demo", "--force",
        "--build-dir", tmp_path / "elsewhere build", spec)
    meta = manifest(out)
    assert sum(len(v) for v in meta["layers"].values()) == 6
    assert cli("verify", out).returncode == 0


def test_interrupted_publish_leaves_no_half_written_output(published_sample: Published, tmp_path: Path) -> None:
    """Real signals while the big layers are being compressed (no pause points)."""
    out = tmp_path / "out"
    staging_root = out / ".venvstacks-docker"
    for sig in (signal.SIGINT, signal.SIGKILL):
        proc = subprocess.Popen(
            [sys.executable, "-m", "venvstacks_docker", "publish", "--native", "--force",
             "--build-dir", str(published_sample.build_dir), "--output-dir", str(out), str(published_sample.spec)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # wait until archiving is under way (a staging folder appears), then interrupt
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(staging_root.glob("staging-*/*")):
            time.sleep(0.05)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode != 0
        if sig == signal.SIGINT:
            assert list(staging_root.glob("staging-*")) == []  # cleaned up on the way out
            assert "nothing of this run was kept" in stderr
        assert list(out.glob("*.tar.xz")) == []  # nothing was ever visible under an archive name
        assert not (out / "__venvstacks__").exists()
    # the next run cleans up after a killed one and publishes normally (the small
    # layers only, to keep the test quick)
    cli("publish", "--native", "--include", "app-*", "--build-dir", published_sample.build_dir,
        "--output-dir", out, published_sample.spec)
    assert list(staging_root.glob("staging-*")) == []
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".venvstacks-docker"]
    published = digests(out)
    assert sorted(published) == sorted(f"{app}.tar.xz" for app in APPS)
    assert all(published[name] == digests(published_sample.output_dir)[name] for name in published)
    assert cli("verify", out).returncode == 0


def test_local_export_runs_every_app_and_skips_unchanged_layers(published_sample: Published, tmp_path: Path) -> None:
    out = tmp_path / "exported here"
    args = ("local-export", "--native", "--show", "--json", "--build-dir", published_sample.build_dir,
            "--output-dir", out, published_sample.spec)
    first = json.loads(cli(*args).stdout)
    assert {layer["status"] for layer in first["export"]["layers"]} == {"exported"}
    for env_name, (module, expected) in APPS.items():
        run = subprocess.run([str(out / env_name / "bin" / "python"), "-m", module],
                             capture_output=True, text=True, check=False)
        assert run.returncode == 0, run.stderr
        assert expected in run.stdout
    combined = json.loads((out / "__venvstacks__" / "venvstacks.json").read_text())
    assert sum(len(v) for v in combined["layers"].values()) == 6
    assert all("archive_name" not in entry for v in combined["layers"].values() for entry in v)
    again = json.loads(cli(*args).stdout)
    assert {layer["status"] for layer in again["export"]["layers"]} == {"unchanged"}
