"""Shared libraries across layers (dynlib.py) on synthetic trees: the scan, dynlib_exclude,
the share/venv/dynlib links and the bin/python wrapper script.  No network, no runtime.

The real thing (a wheel's library linked by an upper layer's extension module) is
tests/test_dynlib_layers.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path, PurePosixPath

import pytest

from venvstacks_docker import build as _build
from venvstacks_docker import dynlib
from venvstacks_docker import spec as _spec
from venvstacks_docker.errors import BuildError, SpecError

SITE = "lib/python3.11/site-packages"
LIBS = ("libpng", "libcodec", "libother")
LINKED = (".so", ".dylib")
# extension modules of any Python, versioned sonames and other files: never linked
NOT_LINKED = (".cpython-311-x86_64-linux-gnu.so", ".abi3.so", ".cpython-313t-darwin.so",
              ".pypy310-pp73-x86_64-linux-gnu.so", ".cpython-312-aarch64-linux-gnu.so",
              ".so.1", ".so.12.0", ".py", ".a", ".dylib.dSYM")
FOLDERS = ("project1", "project2/libs", "project3/_files/libs", "project4/.hidden")


def make_tree(env: Path) -> set[Path]:
    """Every name with every suffix in every folder; returns the libraries expected."""
    expected = set()
    for folder in FOLDERS:
        base = env / SITE / folder
        base.mkdir(parents=True)
        for lib in LIBS:
            for suffix in (*LINKED, *NOT_LINKED):
                (base / (lib + suffix)).touch()
                if suffix in LINKED:
                    expected.add(base / (lib + suffix))
    return expected


def test_only_shared_libraries_are_found_in_sorted_order(tmp_path: Path) -> None:
    expected = make_tree(tmp_path)
    found = dynlib.find_shared_libraries(tmp_path, tmp_path / SITE)
    assert set(found) == expected
    assert found == sorted(found, key=lambda p: (p.parent.as_posix(), p.name))
    assert dynlib.find_shared_libraries(tmp_path, tmp_path / "missing") == []


@pytest.mark.parametrize(("name", "is_module"), [
    ("_multiarray_umath.cpython-311-x86_64-linux-gnu.so", True),
    ("dynlib_consumer.abi3.so", True),
    ("_ext.cpython-313t-darwin.so", True),
    ("_ext.pypy310-pp73-x86_64-linux-gnu.so", True),
    ("libcheckdynlib.so", False),
    ("libscipy_openblas64_-32a4b2a6.so", False),
    ("libfoo-1.2.so", False),
    ("a.b.abi3.so", False),  # no module name has a dot: a library
    ("libfoo.dylib", False),
])
def test_extension_modules_are_told_apart_by_name(name: str, is_module: bool) -> None:
    assert dynlib.is_extension_module(name) is is_module


def test_exclusions_match_the_end_of_the_path(tmp_path: Path) -> None:
    expected = make_tree(tmp_path)
    exclude = ["project1/**/libpng.*", "project2/**/libcodec.*", "project3/**/libother.*"]
    found = set(dynlib.find_shared_libraries(tmp_path, tmp_path / SITE, exclude))

    def dropped(p: Path) -> bool:
        return any(f"{project}/" in p.as_posix() and p.name.startswith(lib + ".")
                   for project, lib in [("project1", "libpng"), ("project2", "libcodec"), ("project3", "libother")])

    assert found == {p for p in expected if not dropped(p)}


@pytest.mark.parametrize(("pattern", "matches"), [
    ("*.so", True), ("*", True), ("**", True), ("libfoo.so", True), ("lib?oo.so", True),
    ("lib[a-f]oo.so", True), ("lib[!f]oo.so", False),
    ("triton/**", True), ("triton/_C/*", True), ("_C/libfoo.so", True), ("site-packages/triton/**", True),
    ("lib/**/libfoo.so", True), ("**/_C/libfoo.so", True), ("triton/**/_C/**", True),
    ("*.dylib", False), ("C/libfoo.so", False), ("riton/**", False), ("_C", False),
    ("triton/libfoo.so", False), ("libfoo.so/**", False), ("LIBFOO.SO", False),
])
def test_glob_semantics(pattern: str, matches: bool) -> None:
    path = PurePosixPath(f"{SITE}/triton/_C/libfoo.so")
    assert dynlib.excluded(path, [pattern]) is matches


def test_hidden_names_are_matched_by_wildcards() -> None:
    path = PurePosixPath(f"{SITE}/pkg/.libs/libfoo.so")
    assert dynlib.excluded(path, ["pkg/*/libfoo.so"])
    assert dynlib.excluded(path, ["pkg/**"])
    assert dynlib.excluded(path, [".libs/*.so"])


def test_link_mapping_reports_names_two_libraries_want() -> None:
    assert dynlib.map_link_names([]) == ({}, {})
    targets = [Path("targets") / f"lib{n}.so" for n in range(3)]
    assert dynlib.map_link_names(targets) == ({t.name: t for t in targets}, {})
    other = Path("targets/conflict/lib0.so")
    chosen, clashes = dynlib.map_link_names([*targets, *targets, other])
    assert chosen == {t.name: t for t in targets[1:]}
    assert clashes == {"lib0.so": [other, targets[0]]}  # sorted


def test_links_are_relative_sorted_and_stale_ones_go(tmp_path: Path) -> None:
    site = tmp_path / SITE
    (site / "pub").mkdir(parents=True)
    (site / "pub" / "libcheck.so").write_text("lib")
    (site / "pub" / "mod.abi3.so").write_text("module")
    (site / "other" / "libs").mkdir(parents=True)
    (site / "other" / "libs" / "libz.dylib").write_text("z")
    folder = tmp_path / "share/venv/dynlib"
    folder.mkdir(parents=True)
    (folder / "libstale.so").symlink_to("../../../nowhere/libstale.so")
    assert dynlib.link_shared_libraries(tmp_path, site, (), layer="framework-pub") == ["libcheck.so", "libz.dylib"]
    assert sorted(p.name for p in folder.iterdir()) == ["libcheck.so", "libz.dylib"]
    assert os.readlink(folder / "libcheck.so") == f"../../../{SITE}/pub/libcheck.so"
    assert (folder / "libz.dylib").read_text() == "z"
    # everything excluded: no links and no empty folder left behind
    assert dynlib.link_shared_libraries(tmp_path, site, ["*"], layer="framework-pub") == []
    assert not folder.exists()


def test_two_libraries_with_one_name_are_an_error_that_suggests_dynlib_exclude(tmp_path: Path) -> None:
    site = tmp_path / SITE
    for pkg in ("a", "b"):
        (site / pkg).mkdir(parents=True)
        (site / pkg / "libdup.so").write_text(pkg)
    with pytest.raises(BuildError, match=r"libdup\.so") as info:
        dynlib.link_shared_libraries(tmp_path, site, (), layer="framework-x")
    assert "framework-x" in str(info.value) and "dynlib_exclude" in str(info.value)
    assert f"{SITE}/a/libdup.so" in str(info.value) and f"{SITE}/b/libdup.so" in str(info.value)
    assert dynlib.link_shared_libraries(tmp_path, site, ["b/libdup.so"], layer="framework-x") == ["libdup.so"]


STACK = """
[[runtimes]]
name = "cpython-3.11"
python_implementation = "cpython@3.11.2"
requirements = []

[[frameworks]]
name = "pub"
runtime = "cpython-3.11"
versioned = true
requirements = []
dynlib_exclude = {exclude}

[[frameworks]]
name = "con"
frameworks = ["pub"]
requirements = []

[[applications]]
name = "app"
launch_module = "launch.py"
frameworks = ["con"]
requirements = []
"""


def load(tmp_path: Path, exclude: str) -> _spec.StackSpec:
    (tmp_path / "launch.py").write_text("print('hi')\n")
    path = tmp_path / "venvstacks.toml"
    path.write_text(textwrap.dedent(STACK.format(exclude=exclude)))
    return _spec.load(path)


def test_dynlib_exclude_is_read_from_the_stack_file(tmp_path: Path) -> None:
    spec = load(tmp_path, '["*.so", "triton/**"]')
    assert spec.layer("framework-pub").dynlib_exclude == ("*.so", "triton/**")
    assert spec.layer("framework-con").dynlib_exclude == ()


@pytest.mark.parametrize(("value", "message"), [
    ('"*.so"', "'dynlib_exclude' must be an array of strings"),
    ("[1]", "'dynlib_exclude' must be an array of strings"),
    ('[""]', "pattern '' is empty"),
    ('["/usr/lib/*.so"]', "is absolute"),
    ('["triton/"]', "empty path segment"),
    ('["a//b.so"]', "empty path segment"),
    ('["../x.so"]', "'.' or '..' segment"),
])
def test_patterns_that_can_never_match_are_refused(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(SpecError, match=message) as info:
        load(tmp_path, value)
    assert "[[frameworks]] 'pub'" in str(info.value)


def test_layer_config_lists_the_lower_layers_dynlib_folders(tmp_path: Path) -> None:
    spec = load(tmp_path, "[]")
    config = _build.layer_config(spec, spec.layer("app-app"))
    assert config["dynlib_dirs"] == [
        "../framework-con/share/venv/dynlib",
        "../framework-pub@1/share/venv/dynlib",  # deployed names (versioned, not locked yet: @1)
        "../cpython-3.11/share/venv/dynlib",
    ]
    assert _build.layer_config(spec, spec.layer("cpython-3.11"))["dynlib_dirs"] == []


DIRS = ["../framework-con/share/venv/dynlib", "../framework-pub@1/share/venv/dynlib",
        "../cpython-3.11/share/venv/dynlib"]


@pytest.mark.parametrize(("target_os", "shell", "var"), [
    ("linux", "/usr/bin/bash", "LD_LIBRARY_PATH"), ("macosx", "/bin/zsh", "DYLD_LIBRARY_PATH")])
def test_wrapper_text_is_fixed_and_relative(target_os: str, shell: str, var: str) -> None:
    text = dynlib.wrapper_script(DIRS, target_os)
    assert text == dynlib.wrapper_script(list(DIRS), target_os)
    assert text.startswith(f"#!{shell}\n") and text.endswith("\n")
    assert f"export {var}\n" in text
    adds = [line for line in text.splitlines() if line.startswith("add_libdir ")]
    assert adds == [f'add_libdir "$here"/../{d}' for d in DIRS]  # in sys.path order
    # no folder of this machine: the only absolute paths are the shell and /dev/null
    assert set(re.findall(r'(?<![\w.$"])/[\w/.-]+', text)) == {shell, "/dev/null"}
    assert 'base="$here/python_"' in text and 'exec -a "$here/python" "$base" "$@"' in text
    assert not dynlib.supports_dynlib("win")


def test_folder_names_are_quoted_for_the_shell() -> None:
    text = dynlib.wrapper_script(["../it's@2/share/venv/dynlib"], "linux")
    assert """add_libdir "$here"/'../../it'"'"'s@2/share/venv/dynlib'""" in text


@pytest.fixture
def deployment(tmp_path: Path) -> Path:
    """target/app/bin/python is the wrapper; python_ is /bin/sh, which prints $0 and the path."""
    if not Path("/usr/bin/bash").exists() or sys.platform != "linux":
        pytest.skip("the Linux wrapper needs /usr/bin/bash")
    bin_dir = tmp_path / "deployed" / "app" / "bin"
    bin_dir.mkdir(parents=True)
    dynlib.write_interpreter(bin_dir, shutil.which("sh") or "/bin/sh", DIRS, "linux")
    (bin_dir / "python3").symlink_to("python")
    return bin_dir


def probe(python: Path, env: dict[str, str]) -> list[str]:
    script = 'printf "%s\\n" "$0" "${LD_LIBRARY_PATH-unset}"'
    result = subprocess.run([str(python), "-c", script], env=env, capture_output=True, text=True, check=True)
    return result.stdout.splitlines()


def test_the_wrapper_appends_each_folder_once_and_runs_under_its_own_name(deployment: Path) -> None:
    bin_dir = deployment.resolve()
    expected = [f"{bin_dir}/../{d}" for d in DIRS]
    argv0, path = probe(deployment / "python3", {"PATH": "/usr/bin:/bin"})
    assert argv0 == f"{bin_dir}/python"
    assert path.split(":") == expected
    # the caller's own setting comes first and a folder already there is not added again
    _, path = probe(deployment / "python", {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": f"/opt/x:{expected[1]}"})
    assert path.split(":") == ["/opt/x", expected[1], expected[0], expected[2]]


def test_the_wrapper_refuses_a_missing_interpreter_link(deployment: Path) -> None:
    (deployment / "python_").unlink()
    result = subprocess.run([str(deployment / "python"), "-c", "true"], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 127
    assert "python_ must be a symlink to the runtime's interpreter" in result.stderr
