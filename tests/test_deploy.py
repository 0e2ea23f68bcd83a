"""deploy: unpack published layers side by side and run their postinstall.py in order."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from _helpers import cli

from venvstacks_docker.archive import write_archive
from venvstacks_docker.deploy import deploy
from venvstacks_docker.errors import CommandError, DeployError, SpecError, VerifyError
from venvstacks_docker.verify import sha256_file

MTIME = 1_700_000_000

# Each layer's postinstall.py records that (and where, and how) it ran.
POSTINSTALL = """\
import json, os, sys
from pathlib import Path
here = Path(__file__).resolve().parent
with open(here.parent / "deploy-order.log", "a", encoding="utf-8") as log:
    log.write(here.name + "\\n")
ran = {"cwd": os.getcwd(), "isolated": sys.flags.isolated, "utf8": sys.flags.utf8_mode,
       "python": sys.executable}
(here / "postinstall-ran.json").write_text(json.dumps(ran), encoding="utf-8")
"""

RUNTIME = "cpython@3.11"
FRAMEWORK = "framework-x@1"
APP = "app-hello@1"


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _layer_src(root: Path, name: str, *, config: dict[str, Any], postinstall: str = POSTINSTALL) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "postinstall.py").write_text(postinstall, encoding="utf-8")
    _write_json(root / "share" / "venv" / "metadata" / "venvstacks_layer.json", config)
    (root / "lib" / "python3.11" / "site-packages").mkdir(parents=True)
    (root / "lib" / "python3.11" / "site-packages" / f"{name.split('@')[0].replace('-', '_')}.py").write_text(
        "VALUE = 1\n"
    )
    return root


def _entry(kind: str, layer_name: str, target: str, archive: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "layer_name": layer_name,
        "install_target": target,
        "runtime_layer": RUNTIME,
        "archive_build": 1,
        "archive_name": archive.name,
        "archive_size": archive.stat().st_size,
        "archive_hashes": {"sha256": sha256_file(archive)},
        "target_platform": "linux_x86_64",
    }
    if kind != "runtimes":
        entry["required_layers"] = [FRAMEWORK] if kind == "applications" else []
    if kind == "applications":
        entry["app_launch_module"] = "hello"
    return entry


def _write_metadata(out: Path, entries: dict[str, list[dict[str, Any]]], manifest: str = "venvstacks.json") -> None:
    _write_json(out / "__venvstacks__" / manifest, {"layers": entries})
    for kind_entries in entries.values():
        for entry in kind_entries:
            _write_json(out / "__venvstacks__" / "env_metadata" / f"{entry['layer_name']}.json", entry)


def publish(tmp_path: Path, *, app_postinstall: str = POSTINSTALL) -> Path:
    """A runtime (whose python wraps this interpreter), a framework and an app."""
    src = tmp_path / "src"
    out = tmp_path / "published"
    rt = _layer_src(src / RUNTIME, "cpython", config={"python": "bin/python3", "base_python": "bin/python3"})
    wrapper = rt / "bin" / "python3"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    (rt / "lib" / "python3.11" / "os.py").write_text("# the runtime's own os.py\n")
    fw = _layer_src(src / FRAMEWORK, "framework-x", config={"python": "bin/python"})
    (fw / "bin" / "python").symlink_to(f"../../{RUNTIME}/bin/python3")
    app = _layer_src(
        src / APP, "app-hello", config={"python": "bin/python", "launch_module": "hello"},
        postinstall=app_postinstall,
    )
    (app / "bin" / "python").symlink_to(f"../../{RUNTIME}/bin/python3")
    (app / "lib" / "python3.11" / "site-packages" / "hello.py").write_text("print('hello')\n")

    entries: dict[str, list[dict[str, Any]]] = {"runtimes": [], "frameworks": [], "applications": []}
    for kind, layer_name, tree in (
        ("applications", "app-hello", app),  # written first: order must come from the kind
        ("runtimes", "cpython-3.11", rt),
        ("frameworks", "framework-x", fw),
    ):
        result = write_archive(tree, out / f"{tree.name}.tar.xz", root_name=tree.name, mtime=MTIME)
        entries[kind].append(_entry(kind, layer_name, tree.name, result.path))
    _write_metadata(out, entries)
    return out


def test_deploy_unpacks_and_runs_postinstall_in_order(tmp_path: Path) -> None:
    out = publish(tmp_path)
    target = tmp_path / "deploy target with space"
    result = deploy(out, target)

    assert result.target == target.resolve()
    assert result.manifest == out / "__venvstacks__" / "venvstacks.json"
    assert [(layer.kind, layer.install_target) for layer in result.layers] == [
        ("runtimes", RUNTIME),
        ("frameworks", FRAMEWORK),
        ("applications", APP),
    ]
    assert [layer.path for layer in result.layers] == [target.resolve() / n for n in (RUNTIME, FRAMEWORK, APP)]
    assert (target / "deploy-order.log").read_text().splitlines() == [RUNTIME, FRAMEWORK, APP]
    for name in (RUNTIME, FRAMEWORK, APP):
        ran = json.loads((target / name / "postinstall-ran.json").read_text())
        assert ran["cwd"] == str(target.resolve() / name)
        assert ran["isolated"] == 1 and ran["utf8"] == 1

    (app,) = result.applications
    assert (app.install_target, app.launch_module) == (APP, "hello")
    assert app.python == target.resolve() / APP / "bin" / "python"
    # the app's python is a relative link into the runtime layer, and it works
    assert os.readlink(app.python) == f"../../{RUNTIME}/bin/python3"
    proc = subprocess.run(
        [app.python, "-c", "import sys; print(sys.version_info[:2])"],
        check=True, capture_output=True, text=True,
    )
    assert proc.stdout.strip() == str(sys.version_info[:2])
    assert f"{app.python} -m hello" in result.render_text()
    as_dict = result.as_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert [layer["install_target"] for layer in as_dict["layers"]] == [RUNTIME, FRAMEWORK, APP]
    assert as_dict["applications"] == [
        {"layer_name": "app-hello", "install_target": APP, "launch_module": "hello", "python": str(app.python)}
    ]


def test_deploy_with_explicit_python(tmp_path: Path) -> None:
    out = publish(tmp_path)
    result = deploy(out, tmp_path / "t", python=sys.executable)
    ran = json.loads((result.layers[0].path / "postinstall-ran.json").read_text())
    assert Path(ran["python"]).resolve() == Path(sys.executable).resolve()
    assert len(result.layers) == 3


def test_escaping_member_is_refused_and_nothing_is_left(tmp_path: Path) -> None:
    out = publish(tmp_path)
    # replace the app archive with a hand-made one whose second member escapes
    evil = out / f"{APP}.tar.xz"
    with tarfile.open(evil, "w:xz") as tar:
        top = tarfile.TarInfo(APP)
        top.type = tarfile.DIRTYPE
        tar.addfile(top)
        payload = b"escaped\n"
        info = tarfile.TarInfo(f"{APP}/../../escaped.txt")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    manifest_path = out / "__venvstacks__" / "venvstacks.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["layers"]["applications"][0].update(
        archive_size=evil.stat().st_size, archive_hashes={"sha256": sha256_file(evil)}
    )
    _write_json(manifest_path, manifest)

    target = tmp_path / "deploy target"
    with pytest.raises(VerifyError, match=r"refusing to extract .*'\.\.'"):
        deploy(out, target)
    assert not (tmp_path / "escaped.txt").exists()
    assert not (target.parent / "escaped.txt").exists()
    assert list(target.iterdir()) == []  # runtime and framework were rolled back, no postinstall ran


def _hand_made_layer(out: Path, install_target: str, members: list[tuple[str, str, bytes | str]]) -> Path:
    """Publish one application layer whose archive is written member by member
    (name, "dir" | "file" | "hard", data or hard link target), with a matching manifest."""
    out.mkdir(parents=True)
    archive = out / f"{install_target}.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = MTIME
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, str(data)
                tar.addfile(info)
            else:
                assert isinstance(data, bytes)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    entry = _entry("applications", install_target.split("@")[0], install_target, archive)
    _write_metadata(out, {"runtimes": [], "frameworks": [], "applications": [entry]})
    return out


def _unpacking_leftovers(target: Path) -> list[str]:
    return sorted(p.name for p in target.iterdir() if ".unpacking-" in p.name)


@pytest.mark.parametrize(
    "victim", ["notes.txt", f"{RUNTIME}/lib/python3.11/os.py"], ids=["user-file", "other-layer-file"]
)
def test_hard_link_then_file_cannot_overwrite_files_in_the_target(tmp_path: Path, victim: str) -> None:
    """The filed bug: a hard link to a file already in the target, then a regular member
    of the same name, used to truncate that file (exit 0).  Now refused, exit 7."""
    target = tmp_path / "target"
    deploy(publish(tmp_path), target)
    (target / "notes.txt").write_text("the user's own notes\n")
    victim_bytes = (target / victim).read_bytes()
    evil = _hand_made_layer(tmp_path / "evil", "app-evil@1", [
        ("app-evil@1", "dir", ""),
        ("app-evil@1/os.py", "hard", victim),
        ("app-evil@1/os.py", "file", b"import evil\n"),
    ])
    with pytest.raises(VerifyError) as excinfo:
        deploy(evil, target)
    message = str(excinfo.value)
    assert "refusing to extract app-evil@1.tar.xz: member 'app-evil@1/os.py' is a hard link" in message
    assert "not an earlier regular file of this archive" in message
    assert (target / victim).read_bytes() == victim_bytes
    assert (target / victim).stat().st_nlink == 1
    assert not (target / "app-evil@1").exists()
    assert _unpacking_leftovers(target) == []

    proc = cli("deploy", evil, target, check=False)  # what a user sees
    assert proc.returncode == VerifyError.return_code == 7
    assert "member 'app-evil@1/os.py' is a hard link" in proc.stderr
    assert (target / victim).read_bytes() == victim_bytes
    assert not (target / "app-evil@1").exists() and _unpacking_leftovers(target) == []


def test_hard_link_to_earlier_member_deploys(tmp_path: Path) -> None:
    out = _hand_made_layer(tmp_path / "out", "app-links@1", [
        ("app-links@1", "dir", ""),
        ("app-links@1/postinstall.py", "file", b"open('ran', 'w').close()\n"),
        ("app-links@1/data.bin", "file", b"payload"),
        ("app-links@1/alias.bin", "hard", "app-links@1/data.bin"),
    ])
    result = deploy(out, tmp_path / "target", python=sys.executable)
    (layer,) = result.layers
    assert (layer.path / "alias.bin").read_bytes() == b"payload"
    assert (layer.path / "alias.bin").stat().st_ino == (layer.path / "data.bin").stat().st_ino
    assert (layer.path / "ran").exists()


def test_layer_failing_midway_leaves_no_layer_and_no_staging_folder(tmp_path: Path) -> None:
    """The app archive is cut short (its manifest entry matches the cut file): unpacking
    fails after some members were written.  Nothing of any layer is left."""
    out = publish(tmp_path)
    big = tmp_path / "src" / APP / "zz-big.bin"
    big.write_bytes(random.Random(3).randbytes(512 * 1024))
    archive = write_archive(tmp_path / "src" / APP, out / f"{APP}.tar.xz", root_name=APP, mtime=MTIME).path
    blob = archive.read_bytes()
    archive.write_bytes(blob[: len(blob) * 3 // 4])
    manifest_path = out / "__venvstacks__" / "venvstacks.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["layers"]["applications"][0].update(
        archive_size=archive.stat().st_size, archive_hashes={"sha256": sha256_file(archive)}
    )
    _write_json(manifest_path, manifest)
    target = tmp_path / "target"
    with pytest.raises(VerifyError, match=f"cannot unpack {APP}.tar.xz: the archive is corrupt"):
        deploy(out, target)
    assert list(target.iterdir()) == []  # no layer folder, no .unpacking- folder, no postinstall


def test_tampered_archive_is_refused_before_unpacking(tmp_path: Path) -> None:
    out = publish(tmp_path)
    archive = out / f"{FRAMEWORK}.tar.xz"
    blob = bytearray(archive.read_bytes())
    blob[-20] ^= 0xFF
    archive.write_bytes(bytes(blob))
    target = tmp_path / "t"
    with pytest.raises(VerifyError, match=f"{FRAMEWORK}.tar.xz has sha256"):
        deploy(out, target)
    assert not target.exists()


def test_existing_layer_folder_is_refused(tmp_path: Path) -> None:
    out = publish(tmp_path)
    target = tmp_path / "t"
    (target / FRAMEWORK).mkdir(parents=True)
    (target / FRAMEWORK / "keep.txt").write_text("mine")
    with pytest.raises(DeployError, match=f"already contains {FRAMEWORK}") as caught:
        deploy(out, target)
    assert caught.value.return_code == 11  # its own exit code, not "invalid stack file" (2)
    assert sorted(p.name for p in target.iterdir()) == [FRAMEWORK]
    assert (target / FRAMEWORK / "keep.txt").read_text() == "mine"


def test_failing_postinstall_rolls_back(tmp_path: Path) -> None:
    out = publish(tmp_path, app_postinstall="import sys\nsys.exit('app postinstall broke')\n")
    target = tmp_path / "t"
    with pytest.raises(CommandError, match=f"(?s)postinstall.py of layer {APP} failed.*app postinstall broke"):
        deploy(out, target)
    assert sorted(p.name for p in target.iterdir()) == ["deploy-order.log"]
    assert (target / "deploy-order.log").read_text().splitlines() == [RUNTIME, FRAMEWORK]


def test_several_manifests_need_a_choice(tmp_path: Path) -> None:
    out = publish(tmp_path)
    meta = out / "__venvstacks__"
    (meta / "venvstacks.json").rename(meta / "venvstacks-linux_x86_64.json")
    (meta / "venvstacks-linux_aarch64.json").write_text('{"layers": {}}\n')
    with pytest.raises(SpecError, match=r"venvstacks-linux_aarch64\.json, venvstacks-linux_x86_64\.json"):
        deploy(out, tmp_path / "t")
    result = deploy(out, tmp_path / "t", manifest=Path("venvstacks-linux_x86_64.json"))
    assert result.manifest == meta / "venvstacks-linux_x86_64.json"
    assert len(result.layers) == 3


def test_wrong_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="did you mean the publish output folder"):
        deploy(tmp_path, tmp_path / "t")
    export = tmp_path / "_export"
    entry = {"layer_name": "cpython-3.11", "install_target": RUNTIME}
    _write_json(export / "__venvstacks__" / "venvstacks.json", {"layers": {"runtimes": [entry]}})
    with pytest.raises(SpecError, match="local-export"):
        deploy(export, tmp_path / "t")
