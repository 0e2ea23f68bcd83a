"""Launch and support modules never ship host files: no links followed, nothing from outside.

A link inside a launch package (``pkg/hostname -> /etc/hostname``) used to be followed
and its target shipped in the application layer; a module outside the stack file's
folder was copied in by native builds while the builder container reported it missing.
Both are now refused when the stack file is loaded, and the copy step re-checks.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from _helpers import cli

from venvstacks_docker import build as _build
from venvstacks_docker import spec as _spec
from venvstacks_docker.errors import BuildError, SpecError
from venvstacks_docker.spec_modules import iter_module_files, module_hash, read_no_follow

RUNTIME = """\
[[runtimes]]
name = "cpython-3.11"
python_implementation = "cpython@3.11.2"
requirements = []

"""


def app_spec(folder: Path, launch: str, support: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    extra = f"support_modules = {support!r}\n".replace("'", '"') if support else ""
    path = folder / "venvstacks.toml"
    path.write_text(RUNTIME + f'[[applications]]\nname = "demo"\nlaunch_module = "{launch}"\n'
                    f'{extra}runtime = "cpython-3.11"\nrequirements = []\n')
    return path


def make_package(folder: Path, name: str = "pkg") -> Path:
    pkg = folder / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text("print('hi')\n")
    return pkg


def secret(tmp_path: Path) -> Path:
    """A host file outside the stack's folder, standing in for /etc/hostname."""
    path = tmp_path / "host" / "secret.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("host secret\n")
    return path


def show(path: Path):  # type: ignore[no-untyped-def]
    """``venvstacks-docker show`` in a subprocess, with lines wide enough not to wrap paths."""
    return cli("show", path, env={**os.environ, "COLUMNS": "500"}, check=False)


def assert_one_clear_error(result, *expected: str) -> None:  # type: ignore[no-untyped-def]
    assert result.returncode == 2, result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr
    assert result.stderr.count("error:") == 1
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr


# --- refused at load ------------------------------------------------------------


def test_link_inside_launch_package_is_refused_with_the_fix(tmp_path: Path) -> None:
    spec_dir = tmp_path / "stack"
    pkg = make_package(spec_dir)
    (pkg / "hostname").symlink_to("/etc/hostname")
    result = show(app_spec(spec_dir, "pkg"))
    assert_one_clear_error(result, "[[applications]] 'demo'", "launch_module 'pkg'",
                           "contains a symbolic link: hostname -> /etc/hostname",
                           "replace the link with a copy of the file, or remove it")


@pytest.mark.parametrize("target", ["inside", "dangling", "folder"])
def test_every_kind_of_link_in_a_support_package_is_refused(tmp_path: Path, target: str) -> None:
    spec_dir = tmp_path / "stack"
    (spec_dir / "app.py").parent.mkdir(parents=True)
    (spec_dir / "app.py").write_text("")
    pkg = make_package(spec_dir, "helpers")
    (pkg / "sub").mkdir()
    link = pkg / "sub" / "link"
    link.symlink_to({"inside": "../__init__.py", "dangling": "nowhere", "folder": "/etc"}[target])
    with pytest.raises(SpecError) as info:
        _spec.load(app_spec(spec_dir, "app.py", ["helpers"]))
    assert "support_modules 'helpers' contains a symbolic link: sub/link" in info.value.message


def test_links_in_caches_and_vcs_folders_are_ignored_as_before(tmp_path: Path) -> None:
    spec_dir = tmp_path / "stack"
    pkg = make_package(spec_dir)
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "x.pyc").symlink_to("/etc/hostname")
    (pkg / ".gitignore").symlink_to("/etc/hostname")
    spec = _spec.load(app_spec(spec_dir, "pkg"))  # never copied, so not refused
    assert spec.applications[0].launch_module == pkg


@pytest.mark.parametrize("how", ["through a linked folder", "linked file"])
def test_module_leading_outside_through_a_link_is_refused(tmp_path: Path, how: str) -> None:
    spec_dir = tmp_path / "project" / "stack"
    spec_dir.mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "x.py").write_text("print('x')\n")
    if how == "through a linked folder":
        (spec_dir / "launch_modules").symlink_to(outside)
        value = "launch_modules/x.py"
    else:
        (spec_dir / "x.py").symlink_to(outside / "x.py")
        value = "x.py"
    result = show(app_spec(spec_dir, value))
    assert_one_clear_error(result, f"launch_module {value!r} leads outside the folder holding the "
                                   f"stack file, {spec_dir}, through a symbolic link",
                           f"it leads to {outside / 'x.py'}", "name the real location")


@pytest.mark.parametrize("how", ["dotdot", "absolute"])
def test_module_named_outside_the_spec_folder_loads_as_in_venvstacks(tmp_path: Path, how: str) -> None:
    # venvstacks' own sample_project names '../minimal_project/empty.py' (a file the stack
    # file names outside its folder on purpose is what the user asked for)
    spec_dir = tmp_path / "project" / "stack"
    spec_dir.mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "x.py").write_text("print('x')\n")
    value = "../../elsewhere/x.py" if how == "dotdot" else str(outside / "x.py")
    spec = _spec.load(app_spec(spec_dir, value))
    app = spec.applications[0]
    assert app.launch_module.resolve() == (outside / "x.py").resolve()
    assert app.launch_module_name == "x"


def test_support_package_named_outside_loads(tmp_path: Path) -> None:
    spec_dir = tmp_path / "stack"
    spec_dir.mkdir()
    (spec_dir / "app.py").write_text("")
    make_package(tmp_path, "shared")
    spec = _spec.load(app_spec(spec_dir, "app.py", ["../shared"]))
    assert [m.name for m in spec.applications[0].support_modules] == ["shared"]


def test_links_that_stay_inside_the_folder_still_load(tmp_path: Path) -> None:
    # accepted before and still accepted: the module path itself may be a link into the folder
    spec_dir = tmp_path / "stack"
    real = make_package(spec_dir / "src", "real_pkg")
    (spec_dir / "src" / "tool.py").write_text("print('tool')\n")
    (spec_dir / "pkg").symlink_to("src/real_pkg")
    (spec_dir / "tool.py").symlink_to("src/tool.py")
    spec = _spec.load(app_spec(spec_dir, "pkg", ["tool.py", "../stack/src/tool.py"][:1]))
    app = spec.applications[0]
    assert app.launch_module_name == "pkg" and app.launch_module == spec_dir / "pkg"
    assert module_hash(spec_dir / "pkg") != module_hash(real)  # the name counts, as before
    assert _spec.module_hash(app.support_modules[0]) == module_hash(spec_dir / "tool.py")


# --- hashing and listing never follow links -----------------------------------------


def test_hash_and_listing_do_not_follow_links(tmp_path: Path) -> None:
    target = secret(tmp_path)
    pkg = make_package(tmp_path / "stack")
    before = module_hash(pkg)
    (pkg / "data").symlink_to(target)
    (pkg / "tree").symlink_to(target.parent, target_is_directory=True)
    listed = iter_module_files(pkg)
    assert [p.name for p in listed] == ["__init__.py", "__main__.py", "data", "tree"]  # links as links
    with_link = module_hash(pkg)
    assert with_link != before  # a new link changes the hash...
    target.write_text("changed\n")
    (target.parent / "more.txt").write_text("more\n")
    assert module_hash(pkg) == with_link  # ...but what it points at never counts
    assert read_no_follow(pkg / "data") is None
    assert read_no_follow(pkg / "__main__.py") == b"print('hi')\n"


# --- the copy step re-checks (the folder may change after loading) -----------------------


def loaded_app(tmp_path: Path) -> tuple[_build.BuildContext, _spec.LayerSpec, Path]:
    spec_dir = tmp_path / "stack"
    pkg = make_package(spec_dir)
    (pkg / "sub").mkdir()
    (pkg / "sub" / "data.txt").write_text("data\n")
    spec = _spec.load(app_spec(spec_dir, "pkg"))
    ctx = _build.BuildContext(spec=spec, build_dir=tmp_path / "_build")
    return ctx, spec.applications[0], pkg


def test_modules_are_copied_file_by_file(tmp_path: Path) -> None:
    ctx, app, _ = loaded_app(tmp_path)
    _build._install_modules(ctx, app)
    dest = ctx.site_packages(app) / "pkg"
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == [
        "__init__.py", "__main__.py", "sub", "sub/data.txt"]
    assert not any(p.is_symlink() for p in dest.rglob("*"))


def test_link_made_after_loading_is_a_build_error_and_nothing_leaks(tmp_path: Path) -> None:
    ctx, app, pkg = loaded_app(tmp_path)
    (pkg / "sub" / "hostname").symlink_to(secret(tmp_path))
    with pytest.raises(BuildError) as info:
        _build._install_modules(ctx, app)
    assert "app-demo" in info.value.message
    assert "contains a symbolic link: sub/hostname" in info.value.message
    assert "replace the link with a copy of the file, or remove it" in (info.value.hint or "")
    site = ctx.site_packages(app)
    copied = list(site.rglob("*")) if site.exists() else []
    assert not [p for p in copied if p.is_file() and "host secret" in p.read_text()]


def test_link_swapped_in_during_the_copy_is_not_followed(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, app, pkg = loaded_app(tmp_path)
    host_file = secret(tmp_path)
    real_listing = iter_module_files

    def listing_then_swap(path: Path) -> list[Path]:
        files = real_listing(path)  # the check has passed; now the file becomes a link
        (pkg / "sub" / "data.txt").unlink()
        (pkg / "sub" / "data.txt").symlink_to(host_file)
        return files

    monkeypatch.setattr(_build, "iter_module_files", listing_then_swap)
    with pytest.raises(BuildError, match=r"symbolic link sub/data\.txt"):
        _build._install_modules(ctx, app)
    copied = ctx.site_packages(app) / "pkg" / "sub" / "data.txt"
    assert not copied.exists()


def test_module_moved_outside_after_loading_is_a_build_error(tmp_path: Path) -> None:
    ctx, app, pkg = loaded_app(tmp_path)
    outside = make_package(tmp_path / "elsewhere", "pkg")
    (outside / "secret.txt").write_text("host secret\n")
    pkg.rename(tmp_path / "old-pkg")
    pkg.symlink_to(outside)
    with pytest.raises(BuildError, match="now leads outside the folder holding the stack file"):
        _build._install_modules(ctx, app)
    assert not (ctx.site_packages(app) / "pkg" / "secret.txt").exists()
