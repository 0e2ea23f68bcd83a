"""Which wheels a target platform accepts, and which one of a lock's wheels a build installs.

The tags come from ``packaging.tags`` (``mac_platforms``, ``cpython_tags``,
``compatible_tags``) and the choice from ``packaging.pylock``; these tests pin the
outcomes on real wheel file names, with no network:

- pyzmq 27.1.0 and numpy 2.1.0: file names as PyPI lists them for those releases.
- venvstacks 0.8.0's jupyterlab example (``../shared/venvstacks-0.8.0/examples/jupyterlab``,
  the release at commit c2e47ed): its spec and committed locks, read where they are.
  Locking it failed here with "no binary wheel for pyzmq==27.1.0 on macosx_arm64": its
  macOS pyzmq and tornado wheels are ``macosx_10_15_universal2`` ones.
"""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

import pytest
import tomli_w

from venvstacks_docker import lock as _lock
from venvstacks_docker import spec as _spec
from venvstacks_docker.errors import LockError
from venvstacks_docker.lockfiles import install_requirements, lock_paths, pylock_requirements_hash
from venvstacks_docker.platforms import best_wheel, platform_tags, supported_tags

JUPYTERLAB = Path(__file__).resolve().parents[2] / "shared" / "venvstacks-0.8.0" / "examples" / "jupyterlab"

# PyPI's files of pyzmq 27.1.0 for CPython 3.11, and its one abi3 build for 3.12+
PYZMQ = [
    "pyzmq-27.1.0-cp311-cp311-macosx_10_15_universal2.whl",
    "pyzmq-27.1.0-cp311-cp311-manylinux2014_i686.manylinux_2_17_i686.whl",
    "pyzmq-27.1.0-cp311-cp311-manylinux_2_26_aarch64.manylinux_2_28_aarch64.whl",
    "pyzmq-27.1.0-cp311-cp311-manylinux_2_26_x86_64.manylinux_2_28_x86_64.whl",
    "pyzmq-27.1.0-cp311-cp311-musllinux_1_2_aarch64.whl",
    "pyzmq-27.1.0-cp311-cp311-musllinux_1_2_x86_64.whl",
    "pyzmq-27.1.0-cp311-cp311-win32.whl",
    "pyzmq-27.1.0-cp311-cp311-win_amd64.whl",
    "pyzmq-27.1.0-cp311-cp311-win_arm64.whl",
    "pyzmq-27.1.0-cp312-abi3-macosx_10_15_universal2.whl",
]
# PyPI's macOS files of numpy 2.1.0 for CPython 3.11 (the 14_0 ones use Accelerate)
NUMPY_MAC = [
    "numpy-2.1.0-cp311-cp311-macosx_10_9_x86_64.whl",
    "numpy-2.1.0-cp311-cp311-macosx_11_0_arm64.whl",
    "numpy-2.1.0-cp311-cp311-macosx_14_0_arm64.whl",
    "numpy-2.1.0-cp311-cp311-macosx_14_0_x86_64.whl",
]


def pick(names: list[str], plat: str, py: str = "3.11.13", linux: str = "2.28", mac: str = "13.0") -> str | None:
    return best_wheel(names, supported_tags(plat, py, linux, mac))


@pytest.mark.parametrize(("plat", "expected"), [
    ("macosx_arm64", "pyzmq-27.1.0-cp311-cp311-macosx_10_15_universal2.whl"),
    ("macosx_x86_64", "pyzmq-27.1.0-cp311-cp311-macosx_10_15_universal2.whl"),
    ("linux_x86_64", "pyzmq-27.1.0-cp311-cp311-manylinux_2_26_x86_64.manylinux_2_28_x86_64.whl"),
    ("linux_aarch64", "pyzmq-27.1.0-cp311-cp311-manylinux_2_26_aarch64.manylinux_2_28_aarch64.whl"),
    ("win_amd64", "pyzmq-27.1.0-cp311-cp311-win_amd64.whl"),
    ("win_arm64", "pyzmq-27.1.0-cp311-cp311-win_arm64.whl"),
])
def test_every_platform_gets_its_pyzmq_wheel(plat: str, expected: str) -> None:
    assert pick(PYZMQ, plat) == expected


def test_a_newer_python_takes_the_abi3_universal2_wheel_on_arm64() -> None:
    assert pick(PYZMQ, "macosx_arm64", py="3.12.11") == "pyzmq-27.1.0-cp312-abi3-macosx_10_15_universal2.whl"
    assert pick(PYZMQ, "macosx_arm64", py="3.13.5") == "pyzmq-27.1.0-cp312-abi3-macosx_10_15_universal2.whl"
    assert pick(PYZMQ[:-1], "macosx_arm64", py="3.12.11") is None  # a cp311-only wheel is not for 3.12


def test_the_macos_target_version_bounds_the_wheels() -> None:
    assert pick(NUMPY_MAC, "macosx_arm64", mac="13.0") == "numpy-2.1.0-cp311-cp311-macosx_11_0_arm64.whl"
    assert pick(NUMPY_MAC, "macosx_arm64", mac="14.0") == "numpy-2.1.0-cp311-cp311-macosx_14_0_arm64.whl"
    assert pick(NUMPY_MAC, "macosx_arm64", mac="11") == "numpy-2.1.0-cp311-cp311-macosx_11_0_arm64.whl"
    assert pick(NUMPY_MAC, "macosx_x86_64", mac="13.0") == "numpy-2.1.0-cp311-cp311-macosx_10_9_x86_64.whl"
    assert pick(NUMPY_MAC, "macosx_x86_64", mac="14.0") == "numpy-2.1.0-cp311-cp311-macosx_14_0_x86_64.whl"
    assert pick(NUMPY_MAC[2:], "macosx_arm64", mac="13.0") is None  # needs macOS 14


def test_an_intel_only_wheel_is_not_for_arm64() -> None:
    assert pick(["numpy-2.1.0-cp311-cp311-macosx_10_9_x86_64.whl"], "macosx_arm64") is None
    assert "macosx_10_15_universal2" in platform_tags("macosx_arm64", "2.28", "13.0")
    assert "macosx_10_15_arm64" not in platform_tags("macosx_arm64", "2.28", "13.0")  # arm64 began with 11


def test_the_linux_glibc_target_bounds_the_wheels() -> None:
    new = "pkg-1.0-cp311-cp311-manylinux_2_34_x86_64.whl"
    old = "pkg-1.0-cp311-cp311-manylinux2014_x86_64.whl"
    ancient = "pkg-1.0-cp311-cp311-manylinux1_x86_64.whl"
    assert pick([new], "linux_x86_64", linux="2.28") is None
    assert pick([new, old], "linux_x86_64", linux="2.34") == new  # the newest that fits is preferred
    assert pick([new, old], "linux_x86_64", linux="2.28") == old
    assert pick([ancient], "linux_x86_64", linux="2.17") == ancient
    assert pick(["pkg-1.0-cp311-cp311-manylinux1_aarch64.whl"], "linux_aarch64") is None  # never defined
    assert pick(["pkg-1.0-cp311-cp311-musllinux_1_2_x86_64.whl"], "linux_x86_64") is None  # glibc targets
    # a local build without a manylinux tag is accepted, as venvstacks does, but ranks last
    local = "pkg-1.0-cp311-cp311-linux_x86_64.whl"
    assert pick([local], "linux_x86_64") == local
    assert pick([local, old], "linux_x86_64") == old


def test_pure_python_and_bad_names() -> None:
    assert pick(["six-1.16.0-py2.py3-none-any.whl"], "win_arm64") == "six-1.16.0-py2.py3-none-any.whl"
    assert pick(["not-a-wheel.tar.gz", "six-1.16.0-py2.py3-none-any.whl"], "linux_x86_64") \
        == "six-1.16.0-py2.py3-none-any.whl"
    # a wheel with the exact tag beats a pure-Python one of the same package
    assert pick(["x-1-py3-none-any.whl", "x-1-cp311-cp311-win_amd64.whl"], "win_amd64") == \
        "x-1-cp311-cp311-win_amd64.whl"


needs_example = pytest.mark.skipif(not JUPYTERLAB.is_dir(),
                                   reason=f"venvstacks 0.8.0's examples are not at {JUPYTERLAB}")


@needs_example
def test_venvstacks_jupyterlab_lock_passes_the_lock_time_wheel_check() -> None:
    spec = _spec.load(JUPYTERLAB / "venvstacks.toml")
    layer = spec.layer("app-jupyterlab")
    paths = lock_paths(spec, layer)
    doc = tomllib.loads(paths.pylock.read_text(encoding="utf-8"))
    # the check that failed for macosx_arm64; on venvstacks' own result it changes nothing
    checked = _lock.postprocess_pylock(spec, layer, doc, paths.folder)
    assert pylock_requirements_hash(checked) == pylock_requirements_hash(doc)


@needs_example
def test_venvstacks_jupyterlab_lock_installs_on_every_platform_of_the_example() -> None:
    spec = _spec.load(JUPYTERLAB / "venvstacks.toml")
    layer = spec.layer("app-jupyterlab")
    for plat in layer.platforms:
        chosen = {pkg.name: wheel.filename for pkg, wheel in install_requirements(spec, layer, plat)}
        assert len(chosen) > 90, plat
        if plat.startswith("macosx"):
            assert chosen["pyzmq"] == "pyzmq-27.1.0-cp311-cp311-macosx_10_15_universal2.whl"
        if plat == "macosx_arm64":
            assert chosen["tornado"] == "tornado-6.5.2-cp39-abi3-macosx_10_9_universal2.whl"
    assert "appnope" in {p.name for p, _ in install_requirements(spec, layer, "macosx_arm64")}  # darwin only
    assert "appnope" not in {p.name for p, _ in install_requirements(spec, layer, "linux_x86_64")}


# --- reading locks with packaging.pylock -------------------------------------------------


def _stack_with_lock(tmp_path: Path, packages: list[dict[str, object]]) -> _spec.StackSpec:
    (tmp_path / "venvstacks.toml").write_text(
        '[[runtimes]]\nname = "cpython-3.11"\npython_implementation = "cpython@3.11.2"\n'
        'requirements = ["demo"]\n', encoding="utf-8")
    spec = _spec.load(tmp_path / "venvstacks.toml")
    paths = lock_paths(spec, spec.layer("cpython-3.11"))
    paths.folder.mkdir(parents=True)
    doc = {"lock-version": "1.0", "created-by": "uv", "requires-python": "==3.11.*", "packages": packages}
    paths.pylock.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return spec


WHEEL = {"url": "https://example.invalid/demo-1.0-py3-none-any.whl", "hashes": {"sha256": "ab" * 32}}


def test_a_malformed_lock_is_one_clear_error_naming_the_file(tmp_path: Path) -> None:
    spec = _stack_with_lock(tmp_path, [{"name": "other", "version": "1.0", "wheels": [WHEEL]}])
    with pytest.raises(LockError) as excinfo:
        install_requirements(spec, spec.layer("cpython-3.11"), "linux_x86_64")
    message = str(excinfo.value)
    assert "is not a valid pylock file" in message and "pylock.cpython-3_11.toml" in message
    assert "not consistent with package name 'other'" in message


NO_LINUX_WHEEL = re.escape("the lock has no wheel of demo==1.0 for linux_x86_64")


def test_a_package_with_only_a_source_is_no_wheel(tmp_path: Path) -> None:
    sdist = {"url": "https://example.invalid/demo-1.0.tar.gz", "hashes": {"sha256": "cd" * 32}}
    win = {**WHEEL, "url": "https://example.invalid/demo-1.0-cp311-cp311-win_amd64.whl"}
    spec = _stack_with_lock(tmp_path, [{"name": "demo", "version": "1.0", "sdist": sdist, "wheels": [win]}])
    layer = spec.layer("cpython-3.11")
    assert [w.filename for _, w in install_requirements(spec, layer, "win_amd64")] == \
        ["demo-1.0-cp311-cp311-win_amd64.whl"]
    with pytest.raises(LockError, match=NO_LINUX_WHEEL):
        install_requirements(spec, layer, "linux_x86_64")
    shutil.rmtree(tmp_path / "requirements")
    spec = _stack_with_lock(tmp_path, [{"name": "demo", "version": "1.0", "wheels": [win]}])
    with pytest.raises(LockError, match=NO_LINUX_WHEEL):
        install_requirements(spec, layer, "linux_x86_64")


def test_packages_of_lower_layers_and_other_platforms_are_not_installed(tmp_path: Path) -> None:
    spec = _stack_with_lock(tmp_path, [
        {"name": "demo", "version": "1.0", "wheels": [WHEEL]},
        {"name": "shared", "version": "2.0", "marker": "sys_platform == 'from_lower_layer'"},
        {"name": "winonly", "version": "3.0", "marker": "sys_platform == 'win32'",
         "wheels": [{**WHEEL, "url": "https://example.invalid/winonly-3.0-py3-none-any.whl"}]},
    ])
    chosen = install_requirements(spec, spec.layer("cpython-3.11"), "linux_x86_64")
    assert [(p.name, p.version, w.filename) for p, w in chosen] == [("demo", "1.0", "demo-1.0-py3-none-any.whl")]
    assert len(install_requirements(spec, spec.layer("cpython-3.11"), "win_amd64")) == 2
