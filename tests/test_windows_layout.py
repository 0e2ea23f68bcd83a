"""Windows layers on a Linux host: the layout rules (python.exe, Scripts/, Lib/site-packages,
pyvenv.cfg home), staging without links, and a deploy of the zips, all on synthetic trees.

Nothing here runs a Windows interpreter: the trees are what python-build-standalone's
Windows runtime and ``venv --copies`` make (names and places), with placeholder bytes.
``postinstall.py`` is run by this machine's Python, which is enough to check the
``pyvenv.cfg`` and ``sitecustomize.py`` it writes for a Windows layout.
"""

from __future__ import annotations

import json
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import pytest

from venvstacks_docker import build as _build
from venvstacks_docker import oslayout
from venvstacks_docker import spec as _spec
from venvstacks_docker.archive import write_archive
from venvstacks_docker.deploy import deploy
from venvstacks_docker.errors import PublishError
from venvstacks_docker.metadata import LAYER_CONFIG
from venvstacks_docker.staging import stage_layer
from venvstacks_docker.verify import sha256_file

MTIME = 1_790_812_800
PLAT = "win_amd64"
STACK = """
[[runtimes]]
name = "cpython-3.11"
python_implementation = "cpython@3.11.11"
requirements = []

[[frameworks]]
name = "sci"
runtime = "cpython-3.11"
requirements = []

[[applications]]
name = "app"
launch_module = "launch.py"
frameworks = ["sci"]
requirements = []
"""


def load_spec(tmp_path: Path) -> _spec.StackSpec:
    (tmp_path / "launch.py").write_text("print('hello from windows')\n")
    path = tmp_path / "venvstacks.toml"
    path.write_text(textwrap.dedent(STACK))
    return _spec.load(path)


# --- the rules, as data ---------------------------------------------------------------------


@pytest.mark.parametrize(("target_os", "kind", "python", "site", "scripts", "dynlib"), [
    ("win", "runtime", "python.exe", "Lib/site-packages", "Scripts", "Library/bin"),
    ("win", "framework", "Scripts/python.exe", "Lib/site-packages", "Scripts", "Library/bin"),
    ("win", "application", "Scripts/python.exe", "Lib/site-packages", "Scripts", "Library/bin"),
    ("linux", "runtime", "bin/python", "lib/python3.12/site-packages", "bin", "share/venv/dynlib"),
    ("macosx", "application", "bin/python", "lib/python3.12/site-packages", "bin", "share/venv/dynlib"),
])
def test_layouts(target_os: str, kind: str, python: str, site: str, scripts: str, dynlib: str) -> None:
    assert oslayout.layout(target_os, kind, "3.12") == oslayout.Layout(python, site, scripts, dynlib)


def test_windows_layer_config(tmp_path: Path) -> None:
    spec = load_spec(tmp_path)
    rt, app = spec.layer("cpython-3.11"), spec.layer("app-app")
    assert _build.layer_config(spec, rt, PLAT) == {
        "python": "python.exe", "py_version": "3.11.11", "base_python": "python.exe",
        "site_dir": "Lib/site-packages", "pylib_dirs": [], "dynlib_dirs": []}
    assert _build.layer_config(spec, app, PLAT) == {
        "python": "Scripts/python.exe", "py_version": "3.11.11",
        "base_python": "../cpython-3.11/python.exe",  # the launcher's pyvenv.cfg home is that folder
        "site_dir": "Lib/site-packages",
        "pylib_dirs": ["../framework-sci/Lib/site-packages", "../cpython-3.11/Lib/site-packages"],
        "dynlib_dirs": ["../framework-sci/Library/bin", "../cpython-3.11/Library/bin"],
        "launch_module": "launch"}
    # Linux (the default) keeps the POSIX layout, and macOS has the same one
    linux = _build.layer_config(spec, app)
    assert linux["python"] == "bin/python" and linux["base_python"] == "../cpython-3.11/bin/python"
    assert linux["dynlib_dirs"] == ["../framework-sci/share/venv/dynlib", "../cpython-3.11/share/venv/dynlib"]
    assert _build.layer_config(spec, app, "macosx_arm64") == linux


def test_build_context_paths(tmp_path: Path) -> None:
    spec = load_spec(tmp_path)
    ctx = _build.BuildContext(spec=spec, build_dir=tmp_path / "_build", platform=PLAT)
    rt, app = spec.layer("cpython-3.11"), spec.layer("app-app")
    assert ctx.python(rt) == tmp_path / "_build" / "cpython-3.11" / "python.exe"
    assert ctx.python(app) == tmp_path / "_build" / "app-app" / "Scripts" / "python.exe"
    assert ctx.site_packages(app) == tmp_path / "_build" / "app-app" / "Lib" / "site-packages"
    linux = _build.BuildContext(spec=spec, build_dir=tmp_path / "_build", platform="linux_x86_64")
    assert linux.python(rt).relative_to(tmp_path / "_build").as_posix() == "cpython-3.11/bin/python3"
    assert linux.site_packages(app).relative_to(tmp_path / "_build").as_posix() == \
        "app-app/lib/python3.11/site-packages"


@pytest.mark.parametrize(("config", "files", "expected"), [
    ({"python": "Scripts\\python.exe"}, [], "Scripts/python.exe"),  # venvstacks on Windows writes '\'
    ({}, ["Scripts/python.exe", "bin/python"], "Scripts/python.exe"),  # no config: the tree decides
    ({}, ["bin/python"], "bin/python"),
])
def test_deploy_finds_an_app_interpreter_by_layout(tmp_path: Path, config: dict[str, Any], files: list[str],
                                                   expected: str) -> None:
    for rel in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert oslayout.layer_python(tmp_path, config, runtime=False) == tmp_path / expected


def test_deploy_finds_a_runtime_interpreter_by_layout(tmp_path: Path) -> None:
    (tmp_path / "python.exe").write_bytes(b"MZ")
    assert oslayout.layer_python(tmp_path, {}, runtime=True) == tmp_path / "python.exe"
    assert oslayout.layer_python(tmp_path, {"python": "bin/python"}, runtime=True) == tmp_path / "bin/python"


@pytest.mark.parametrize(("name", "problem"), [
    ("python.exe", None), ("Lib", None), ("framework-sci@2", None), ("numpy-2.1.dist-info", None),
    ("..", None), (".hidden", None),
    ("a:b", "(':')"), ("what?", "('?')"), ('say"hi"', "('\"')"), ("back\\slash", "('\\\\')"),
    ("tab\there", "('\\t')"), ("trailing.", "dot or a space"), ("trailing ", "dot or a space"),
    ("CON", "(CON)"), ("nul.txt", "(NUL)"), ("Com1.py", "(COM1)"), ("lpt9", "(LPT9)"),
    ("console", None), ("com10", None),
])
def test_windows_names(name: str, problem: str | None) -> None:
    why = oslayout.windows_name_problem(name)
    assert (why is None) == (problem is None), why
    if problem is not None:
        assert why is not None and problem in why


def test_windows_path_names_the_bad_component() -> None:
    assert oslayout.windows_path_problem("layer/Lib/site-packages/ok.py") is None
    assert oslayout.windows_path_problem("layer/Lib/aux.py") == \
        "has the name 'aux.py', which is a reserved device name on Windows (AUX)"
    seen: dict[str, str] = {}
    assert oslayout.case_clash(seen, "layer/Lib/Foo.py") is None
    assert oslayout.case_clash(seen, "layer/Lib/foo.PY") == "layer/Lib/Foo.py"


# --- a Windows build tree, staged, archived and deployed ----------------------------------------


def _write(path: Path, data: bytes | str = b"") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def windows_build(tmp_path: Path) -> _build.BuildContext:
    """What a Windows build folder holds for the stack (placeholder binaries)."""
    spec = load_spec(tmp_path)
    ctx = _build.BuildContext(spec=spec, build_dir=tmp_path / "_build", platform=PLAT)
    rt = ctx.env_dir(spec.layer("cpython-3.11"))
    for rel in ("python.exe", "pythonw.exe", "python3.dll", "python311.dll", "DLLs/_ssl.pyd"):
        _write(rt / rel, b"MZ " + rel.encode())
    _write(rt / "Lib/os.py", "import abc\n")
    _write(rt / "Lib/__pycache__/os.cpython-311.pyc", b"\x00")
    _write(rt / "Lib/site-packages/README.txt", "site\n")
    _write(rt / LAYER_CONFIG, json.dumps(_build.layer_config(spec, spec.layer("cpython-3.11"), PLAT)))
    for name in ("framework-sci", "app-app"):
        env = ctx.env_dir(spec.layer(name))
        _write(env / "pyvenv.cfg", f"home = {rt}\nversion = 3.11.11\n")  # absolute: never shipped
        _write(env / "Scripts/python.exe", b"MZ venvlauncher")
        _write(env / "Scripts/pythonw.exe", b"MZ venvwlauncher")
        _write(env / "Lib/site-packages/sitecustomize.py", f"import site\nsite.addsitedir({str(rt)!r})\n")
        _write(env / LAYER_CONFIG, json.dumps(_build.layer_config(spec, spec.layer(name), PLAT)))
    sci = ctx.env_dir(spec.layer("framework-sci"))
    _write(sci / "Lib/site-packages/sci/__init__.py", "VALUE = 42\n")
    _write(sci / "Lib/site-packages/sci/_core.cp311-win_amd64.pyd", b"MZ pyd")
    _write(sci / "Library/bin/sci_helper.dll", b"MZ dll")
    (sci / "Lib/site-packages/sci/alias.py").symlink_to("__init__.py")  # a link inside the layer
    app = ctx.env_dir(spec.layer("app-app"))
    _write(app / "Lib/site-packages/launch.py", "import sci\nprint('sci', sci.VALUE)\n")
    return ctx


def staged(ctx: _build.BuildContext, name: str, dest: Path) -> list[str]:
    stage_layer(ctx, ctx.spec.layer(name), dest)
    return sorted(p.relative_to(dest).as_posix() + ("/" if p.is_dir() else "") for p in dest.rglob("*"))


def test_staging_a_windows_layer_keeps_the_launcher_and_ships_no_links(tmp_path: Path) -> None:
    ctx = windows_build(tmp_path)
    dest = tmp_path / "stage" / "sci"
    assert staged(ctx, "framework-sci", dest) == [
        "Lib/", "Lib/site-packages/", "Lib/site-packages/sci/", "Lib/site-packages/sci/__init__.py",
        "Lib/site-packages/sci/_core.cp311-win_amd64.pyd", "Lib/site-packages/sci/alias.py",
        "Library/", "Library/bin/", "Library/bin/sci_helper.dll",
        "Scripts/", "Scripts/python.exe", "Scripts/pythonw.exe",  # the launcher copies, as built
        "postinstall.py", "share/", "share/venv/", "share/venv/metadata/",
        "share/venv/metadata/venvstacks_layer.json"]  # no bin/, no pyvenv.cfg, no sitecustomize.py
    assert not any(p.is_symlink() for p in dest.rglob("*"))
    assert (dest / "Lib/site-packages/sci/alias.py").read_text() == "VALUE = 42\n"
    rt = staged(ctx, "cpython-3.11", tmp_path / "stage" / "rt")
    assert "python.exe" in rt and "Lib/os.py" in rt and "Lib/__pycache__/" not in rt
    assert "Lib/site-packages/README.txt" in rt and not any(n.startswith("bin") for n in rt)


@pytest.mark.parametrize("where", ["outside", "folder", "broken"])
def test_a_windows_layer_refuses_links_it_cannot_copy(tmp_path: Path, where: str) -> None:
    ctx = windows_build(tmp_path)
    scripts = ctx.env_dir(ctx.spec.layer("app-app")) / "Scripts"
    (scripts / "python.exe").unlink()
    target = {"outside": ctx.env_dir(ctx.spec.layer("cpython-3.11")) / "python.exe",  # a `venv --symlinks`
              "folder": scripts.parent / "Lib", "broken": scripts / "missing.exe"}[where]
    (scripts / "python.exe").symlink_to(target)
    with pytest.raises(PublishError, match=r"Scripts/python.exe is a symlink to .*no links") as info:
        stage_layer(ctx, ctx.spec.layer("app-app"), tmp_path / "stage")
    assert "venv --copies" in str(info.value.hint)


def publish_windows(tmp_path: Path) -> Path:
    """Stage and zip every layer, with a manifest as publish writes it."""
    ctx = windows_build(tmp_path)
    out = tmp_path / "out"
    entries: dict[str, list[dict[str, Any]]] = {"runtimes": [], "frameworks": [], "applications": []}
    for name, kind in (("cpython-3.11", "runtimes"), ("framework-sci", "frameworks"), ("app-app", "applications")):
        stage = tmp_path / "stage" / name
        stage_layer(ctx, ctx.spec.layer(name), stage)
        result = write_archive(stage, out / f"{name}.zip", root_name=name, mtime=MTIME, fmt="zip")
        entries[kind].append({"layer_name": name, "install_target": name, "archive_name": result.path.name,
                              "archive_size": result.size, "archive_hashes": {"sha256": sha256_file(result.path)},
                              "runtime_layer": "cpython-3.11", "target_platform": PLAT})
    entries["applications"][0]["app_launch_module"] = "launch"
    (out / "__venvstacks__").mkdir()
    (out / "__venvstacks__" / "venvstacks.json").write_text(json.dumps({"layers": entries}), encoding="utf-8")
    return out


def test_windows_zips_deploy_with_pyvenv_cfg_home_at_the_runtime(tmp_path: Path) -> None:
    out = publish_windows(tmp_path)
    with zipfile.ZipFile(out / "app-app.zip") as zf:
        assert "app-app/Scripts/python.exe" in zf.namelist()
        assert not any(n.startswith("app-app/bin/") for n in zf.namelist())
    target = tmp_path / "deployed"
    result = deploy(out, target, python=sys.executable)  # this machine's Python runs postinstall.py
    root = result.target
    assert [app.python for app in result.applications] == [root / "app-app" / "Scripts" / "python.exe"]
    for layer in ("framework-sci", "app-app"):
        cfg = (root / layer / "pyvenv.cfg").read_text(encoding="utf-8").splitlines()
        # the venv launcher (Scripts/python.exe) starts <home>/python.exe: the runtime's folder
        assert cfg == [f"home = {root / 'cpython-3.11'}", "include-system-site-packages = false",
                       "version = 3.11.11", f"executable = {root / 'cpython-3.11' / 'python.exe'}"]
    custom = (root / "app-app/Lib/site-packages/sitecustomize.py").read_text(encoding="utf-8")
    assert f"site.addsitedir({str(root / 'framework-sci/Lib/site-packages')!r})" in custom
    assert f"site.addsitedir({str(root / 'cpython-3.11/Lib/site-packages')!r})" in custom
    assert list((root / "framework-sci/Lib/site-packages/sci/__pycache__").glob("*.pyc"))  # compiled on target
    assert (root / "framework-sci/Library/bin/sci_helper.dll").read_bytes() == b"MZ dll"


def test_windows_portability_pass_cleans_scripts(tmp_path: Path) -> None:
    """Entry points and activate scripts go from Scripts/ (with their RECORD rows); the launchers stay."""
    ctx = windows_build(tmp_path)
    app = ctx.spec.layer("app-app")
    env = ctx.env_dir(app)
    for name in ("tool.exe", "activate.bat", "Activate.ps1", "deactivate.bat"):
        _write(env / "Scripts" / name, b"x")
    info = env / "Lib/site-packages/tool-1.0.dist-info"
    _write(info / "RECORD", "../../Scripts/tool.exe,sha256=abc,1\ntool/__init__.py,,\n")
    _write(info / "INSTALLER", "uv\n")
    _build._portability_pass(ctx, app)
    assert sorted(p.name for p in (env / "Scripts").iterdir()) == ["python.exe", "pythonw.exe"]
    assert (info / "RECORD").read_text() == "tool/__init__.py,,\n"
    assert not (info / "INSTALLER").exists()
