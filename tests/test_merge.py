"""``merge``: tagged publications combined into one folder, verified first, all or nothing.

The slow tests merge real publications of a tiny stack (a runtime and two applications
without requirements), published natively with ``--tag-outputs``: two ``--include``
selections merge into exactly what publishing the whole stack gives; a layer edited and
published again conflicts with its first publication.  Only linux_x86_64 can be built
here, so several *platforms* are exercised by the fast tests below, on synthetic
publications (archives of arbitrary bytes with consistent metadata), which is all the
merge plan reads.
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
from _helpers import cli

from venvstacks_docker.errors import SpecError, VerifyError
from venvstacks_docker.merge import merge, merged_order, plan_merge
from venvstacks_docker.metadata import dumps
from venvstacks_docker.verify import verify_output_dir

STACK = """\
[[runtimes]]
name = "cpython-3.11"
python_implementation = "cpython@3.11.2"
requirements = []

[[applications]]
name = "one"
launch_module = "one.py"
runtime = "cpython-3.11"
requirements = []

[[applications]]
name = "two"
launch_module = "two.py"
runtime = "cpython-3.11"
requirements = []

[tool.uv]
exclude-newer = "2026-10-01T00:00:00Z"
"""


def state(out: Path) -> dict[str, str]:
    """Every file of a publication (not the tool's hidden folder), by sha256."""
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*"))
            if p.is_file() and ".venvstacks-docker" not in p.relative_to(out).parts}


# --- synthetic publications (fast) --------------------------------------------------


def fake_publication(out: Path, plat: str, layers: list[tuple[str, str, bytes]], *, tagged: bool = True,
                     block: dict[str, object] | None = None) -> Path:
    """A publication as ``publish --tag-outputs`` lays it out, with arbitrary archive bytes."""
    meta = out / "__venvstacks__" / "env_metadata"
    meta.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[dict[str, object]]] = {"runtimes": [], "frameworks": [], "applications": []}
    suffix = ".zip" if plat.startswith("win") else ".tar.xz"
    for kind, name, data in layers:
        archive = f"{name}-{plat}-1{suffix}" if tagged else f"{name}{suffix}"
        (out / archive).write_bytes(data)
        entry: dict[str, object] = {
            "layer_name": name, "install_target": name, "archive_build": 1, "archive_name": archive,
            "archive_size": len(data), "archive_hashes": {"sha256": hashlib.sha256(data).hexdigest()},
            "target_platform": plat, "runtime_layer": "cpython-3.11", "lock_version": 1}
        if kind != "runtimes":
            entry["required_layers"] = []
        if kind == "applications":
            entry["app_launch_module"] = name
        groups[kind].append(entry)
        (meta / (f"{name}-{plat}.json" if tagged else f"{name}.json")).write_text(dumps(entry), encoding="utf-8")
    manifest = out / "__venvstacks__" / (f"venvstacks-{plat}.json" if tagged else "venvstacks.json")
    manifest.write_text(dumps({"layers": groups, "venvstacks_docker": block or {
        "metadata_version": 1, "spec_name": "venvstacks.toml", "target_platform": plat, "tool_version": "0.1.0"}}),
        encoding="utf-8")
    return out


def three_platforms(tmp_path: Path) -> list[Path]:
    rt, app = ("runtimes", "cpython-3.11"), ("applications", "app-demo")
    return [fake_publication(tmp_path / plat, plat, [(*rt, f"rt {plat}".encode()), (*app, f"app {plat}".encode())])
            for plat in ("win_amd64", "linux_x86_64", "macosx_arm64")]


def test_several_platforms_merge_into_one_manifest_each(tmp_path: Path) -> None:
    inputs = three_platforms(tmp_path)
    result = merge(inputs, tmp_path / "merged")
    out = tmp_path / "merged"
    assert result.plan.platforms == ("linux_x86_64", "macosx_arm64", "win_amd64")
    assert sorted(p.name for p in (out / "__venvstacks__").glob("*.json")) == [
        "venvstacks-linux_x86_64.json", "venvstacks-macosx_arm64.json", "venvstacks-win_amd64.json"]
    for folder in inputs:  # each platform's files are its input's, byte for byte
        assert {k: v for k, v in state(out).items() if k in state(folder)} == state(folder)
    assert len(state(out)) == sum(len(state(folder)) for folder in inputs)
    report = verify_output_dir(out)
    assert report.ok and report.clean and len(report.layers) == 6
    assert not (out / ".venvstacks-docker").exists() or not [
        p for p in (out / ".venvstacks-docker").iterdir() if p.name.startswith(("staging-", "journal"))]


def test_the_result_does_not_depend_on_the_order_of_the_inputs(tmp_path: Path) -> None:
    inputs = three_platforms(tmp_path)
    merge(inputs, tmp_path / "forward")
    merge(list(reversed(inputs)), tmp_path / "backward")
    assert state(tmp_path / "forward") == state(tmp_path / "backward")


def test_layers_of_one_platform_from_several_inputs_share_one_manifest(tmp_path: Path) -> None:
    plat = "macosx_arm64"
    a = fake_publication(tmp_path / "a", plat, [("runtimes", "cpython-3.11", b"rt"), ("applications", "app-b", b"b")])
    b = fake_publication(tmp_path / "b", plat, [("runtimes", "cpython-3.11", b"rt"), ("applications", "app-a", b"a")])
    plan = plan_merge([a, b], tmp_path / "merged")
    manifest = json.loads(plan.manifests[f"__venvstacks__/venvstacks-{plat}.json"])
    assert [e["layer_name"] for e in manifest["layers"]["applications"]] == ["app-a", "app-b"]
    assert [e["layer_name"] for e in manifest["layers"]["runtimes"]] == ["cpython-3.11"]
    runtime = next(layer for layer in plan.layers if layer.layer_name == "cpython-3.11")
    assert (runtime.source, runtime.also_in) == (a, (b,))


def test_a_manifest_block_keeps_what_the_inputs_agree_on(tmp_path: Path) -> None:
    plat = "linux_x86_64"
    blocks = [{"metadata_version": 1, "spec_name": "venvstacks.toml", "target_platform": plat, "tool_version": v}
              for v in ("0.1.0", "0.2.0")]
    a = fake_publication(tmp_path / "a", plat, [("applications", "app-a", b"a")], block=blocks[0])
    b = fake_publication(tmp_path / "b", plat, [("applications", "app-b", b"b")], block=blocks[1])
    manifest = json.loads(plan_merge([a, b], tmp_path / "m").manifests[f"__venvstacks__/venvstacks-{plat}.json"])
    assert manifest["venvstacks_docker"] == {"metadata_version": 1, "spec_name": "venvstacks.toml",
                                             "target_platform": plat}


def test_same_layer_and_platform_with_other_bytes_is_refused(tmp_path: Path) -> None:
    a = fake_publication(tmp_path / "a", "win_arm64", [("applications", "app-x", b"first")])
    b = fake_publication(tmp_path / "b", "win_arm64", [("applications", "app-x", b"second")])
    with pytest.raises(VerifyError, match=r"app-x for win_arm64: .*different bytes") as info:
        plan_merge([a, b], tmp_path / "merged")
    assert str(a) in info.value.message and str(b) in info.value.message
    assert not (tmp_path / "merged").exists()


def test_same_bytes_with_other_metadata_is_refused_naming_the_keys(tmp_path: Path) -> None:
    a = fake_publication(tmp_path / "a", "linux_aarch64", [("applications", "app-x", b"same")])
    b = fake_publication(tmp_path / "b", "linux_aarch64", [("applications", "app-x", b"same")])
    layer_file = b / "__venvstacks__" / "env_metadata" / "app-x-linux_aarch64.json"
    manifest_file = b / "__venvstacks__" / "venvstacks-linux_aarch64.json"
    for path in (layer_file, manifest_file):  # the same change in both, so b still verifies
        path.write_text(path.read_text(encoding="utf-8").replace('"lock_version": 1', '"lock_version": 2'),
                        encoding="utf-8")
    with pytest.raises(VerifyError, match=r"same archive bytes but different metadata \(lock_version\)"):
        plan_merge([a, b], tmp_path / "merged")


def test_untagged_publications_are_refused_with_a_hint(tmp_path: Path) -> None:
    a = fake_publication(tmp_path / "a", "linux_x86_64", [("runtimes", "cpython-3.11", b"rt")], tagged=False)
    with pytest.raises(SpecError, match="untagged publication") as info:
        plan_merge([a], tmp_path / "merged")
    assert "--tag-outputs" in str(info.value.hint)


def test_inputs_and_output_are_checked_before_anything_is_read(tmp_path: Path) -> None:
    a = fake_publication(tmp_path / "a", "linux_x86_64", [("runtimes", "cpython-3.11", b"rt")])
    with pytest.raises(SpecError, match="overlaps the input"):
        plan_merge([a], a / "merged")
    with pytest.raises(SpecError, match="given twice"):
        plan_merge([a, tmp_path / "a" / "."], tmp_path / "merged")
    with pytest.raises(SpecError, match="does not exist"):
        plan_merge([tmp_path / "nope"], tmp_path / "merged")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "something").write_text("x", encoding="utf-8")
    with pytest.raises(SpecError, match="is not empty"):
        plan_merge([a], tmp_path / "full")


def test_an_input_that_fails_verification_is_refused(tmp_path: Path) -> None:
    a = fake_publication(tmp_path / "a", "macosx_x86_64", [("runtimes", "cpython-3.11", b"runtime bytes")])
    (a / "cpython-3.11-macosx_x86_64-1.tar.xz").write_bytes(b"runtime bytez")
    with pytest.raises(VerifyError, match=r"fails verification .*hash-mismatch"):
        plan_merge([a], tmp_path / "merged")


def test_a_failure_while_staging_writes_nothing(tmp_path: Path) -> None:
    from venvstacks_docker.merge import execute_merge

    plan = plan_merge(three_platforms(tmp_path), tmp_path / "merged")
    last = plan.layers[-1]  # the others are staged by then
    (last.source / last.archive_name).write_bytes(b"changed after the plan")
    with pytest.raises(VerifyError, match="changed while it was merged") as info:
        execute_merge(plan)
    assert "nothing was written" in str(info.value.hint)
    assert state(tmp_path / "merged") == {}
    assert sorted(p.name for p in (tmp_path / "merged" / ".venvstacks-docker").iterdir()) <= ["lock", "lock.owner"]


@pytest.mark.parametrize(("sequences", "expected"), [
    ([["a", "b", "c"]], ["a", "b", "c"]),
    ([["z", "y"], ["y", "x"]], ["z", "y", "x"]),
    ([["c"], ["b"], ["a"]], ["a", "b", "c"]),
    ([["a", "b"], ["b", "a"]], ["a", "b"]),  # a contradiction is settled alphabetically
    ([["fw-b", "fw-a"], ["fw-c"]], ["fw-b", "fw-a", "fw-c"]),
    ([], []),
])
def test_merged_order_keeps_every_input_order(sequences: list[list[str]], expected: list[str]) -> None:
    assert merged_order(sequences) == expected
    assert merged_order(list(reversed(sequences))) == expected


def test_the_cli_reports_bad_input_without_a_traceback(tmp_path: Path) -> None:
    a = fake_publication(tmp_path / "a", "linux_x86_64", [("runtimes", "cpython-3.11", b"rt")], tagged=False)
    result = cli("merge", a, "-o", tmp_path / "merged", check=False)
    assert result.returncode == 2
    assert "untagged publication" in result.stderr and "--tag-outputs" in result.stderr
    assert "Traceback" not in result.stderr
    b = fake_publication(tmp_path / "b", "win_amd64", [("runtimes", "cpython-3.11", b"rt")])
    shown = cli("merge", "--dry-run", "--json", b, "-o", tmp_path / "merged")
    body = json.loads(shown.stdout)
    assert body["schema"] == "venvstacks-docker/merge" and body["dry_run"] is True
    assert body["platforms"] == ["win_amd64"] and not (tmp_path / "merged").exists()


# --- real publications (slow) --------------------------------------------------------


def publish(spec: Path, out: Path, *args: str) -> None:
    cli("publish", "--native", "--tag-outputs", "--output-dir", out, *args, spec)


@pytest.fixture(scope="module")
def real(runtime_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tagged publications of the tiny stack: two selections, the whole, untagged, edited."""
    root = tmp_path_factory.mktemp("merge")
    stack = root / "stack"
    stack.mkdir()
    (stack / "venvstacks.toml").write_text(STACK, encoding="utf-8")
    for name in ("one", "two"):
        (stack / f"{name}.py").write_text(f"print('this is {name}')\n", encoding="utf-8")
    spec = stack / "venvstacks.toml"
    cli("lock", "--native", "--no-index", "--runtime-source", runtime_archive, spec)
    cli("build", "--native", "--runtime-source", runtime_archive, spec)
    pubs = {name: root / name for name in ("a", "b", "full", "untagged", "edited")}
    publish(spec, pubs["a"], "--include", "app-one", "--publish-dependencies")
    publish(spec, pubs["b"], "--include", "app-two")
    shutil.copytree(pubs["a"], pubs["full"])  # the runtime and app-one are reused, not archived again
    publish(spec, pubs["full"])
    cli("publish", "--native", "--include", "app-one", "--output-dir", pubs["untagged"], spec)
    (stack / "two.py").write_text("print('this is two, edited')\n", encoding="utf-8")
    cli("build", "--native", "--include", "app-two", "--runtime-source", runtime_archive, spec)
    publish(spec, pubs["edited"], "--include", "app-two")
    return pubs


@pytest.mark.slow
@pytest.mark.runtime
def test_two_include_selections_merge_into_the_whole_publication(real: dict[str, Path], tmp_path: Path) -> None:
    merged = tmp_path / "merged"
    result = cli("merge", real["a"], real["b"], "-o", merged)
    assert "Manifest: __venvstacks__/venvstacks-linux_x86_64.json (3 layer(s))" in result.stdout
    assert state(merged) == state(real["full"])
    assert cli("verify", merged).returncode == 0
    cli("merge", real["b"], real["a"], "-o", tmp_path / "backward")
    assert state(tmp_path / "backward") == state(merged)


@pytest.mark.slow
@pytest.mark.runtime
def test_the_merged_folder_deploys_and_its_apps_run(real: dict[str, Path], tmp_path: Path) -> None:
    merged = tmp_path / "merged"
    cli("merge", real["a"], real["b"], "-o", merged)
    deployed = json.loads(cli("deploy", "--json", merged, tmp_path / "deployed").stdout)
    for app in deployed["applications"]:
        run = subprocess.run([app["python"], "-m", app["launch_module"]], capture_output=True, text=True,
                             check=False)
        assert (run.returncode, run.stdout) == (0, f"this is {app['launch_module']}\n"), run.stderr


@pytest.mark.slow
@pytest.mark.runtime
def test_a_layer_in_two_inputs_is_merged_once_and_conflicts_are_refused(real: dict[str, Path],
                                                                        tmp_path: Path) -> None:
    shown = json.loads(cli("merge", "--json", real["a"], real["full"], "-o", tmp_path / "twice").stdout)
    runtime = next(layer for layer in shown["layers"] if layer["layer_name"] == "cpython-3.11")
    assert (runtime["source"], runtime["also_in"]) == (str(real["a"]), [str(real["full"])])
    assert state(tmp_path / "twice") == state(real["full"])

    # app-two edited and published again: the same archive name, other bytes
    assert (real["edited"] / "app-two-linux_x86_64-1.tar.xz").is_file()
    conflict = cli("merge", real["b"], real["edited"], "-o", tmp_path / "conflict", check=False)
    assert conflict.returncode == 7, conflict.stderr
    assert "the publications conflict: app-two for linux_x86_64" in conflict.stderr
    assert "different bytes" in conflict.stderr and "Traceback" not in conflict.stderr
    assert not (tmp_path / "conflict").exists()

    untagged = cli("merge", real["a"], real["untagged"], "-o", tmp_path / "untagged", check=False)
    assert untagged.returncode == 2 and "--tag-outputs" in untagged.stderr
    busy = cli("merge", real["a"], "-o", real["b"], check=False)
    assert busy.returncode == 2 and "is not empty" in busy.stderr


@pytest.mark.slow
@pytest.mark.runtime
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_an_interrupted_merge_leaves_nothing(real: dict[str, Path], tmp_path: Path, sig: signal.Signals) -> None:
    merged, flag = tmp_path / "merged", tmp_path / "paused"
    proc = subprocess.Popen([sys.executable, "-m", "venvstacks_docker", "merge", str(real["a"]), str(real["b"]),
                             "-o", str(merged)],
                            env={**os.environ, "VENVSTACKS_DOCKER_TEST_PAUSE": f"merge-staged:{flag}"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not flag.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert state(merged) == {}
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "nothing was written into" in stderr and "Traceback" not in stderr
    cli("merge", real["a"], real["b"], "-o", merged)  # the next run clears what was left, and merges
    assert state(merged) == state(real["full"])
    assert sorted(p.name for p in (merged / ".venvstacks-docker").iterdir() if p.name.startswith("staging")) == []
