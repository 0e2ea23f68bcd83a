"""A shared library in one layer, linked by name by an extension module in a layer above.

The wheel pair is venvstacks' own test pair, built here from its sources in
``../shared/venvstacks-0.8.0/tests/local_wheels_project/packages`` (the 0.8.0 release,
commit c2e47ed): ``dynlib-publisher`` ships ``libcheckdynlib.so``; ``dynlib-consumer``
is an extension module that links it by name, with an rpath that only works when both
are installed in one ``site-packages``.  They are built with meson-python from PyPI (at
the versions of that project's ``build-requirements.txt``), locked with
``--local-wheels``, and the stack below (the layout of that project's
``venvstacks.toml``, on our runtime) is built and published natively, then deployed.
The launch modules are read from the same folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest
from _helpers import cli

from venvstacks_docker import dynlib
from venvstacks_docker.platforms import current_platform

PROJECT = Path(__file__).resolve().parents[2] / "shared" / "venvstacks-0.8.0" / "tests" / "local_wheels_project"
BUILD_REQUIREMENTS = ["meson-python==0.18.0", "meson==1.9.1", "pkgconf==2.5.1.post0", "ninja"]

pytestmark = [
    pytest.mark.slow, pytest.mark.network, pytest.mark.runtime,
    pytest.mark.skipif(sys.platform != "linux", reason="the wheel pair is built for this Linux machine"),
    pytest.mark.skipif(not PROJECT.is_dir(), reason=f"venvstacks 0.8.0's tests are not at {PROJECT}"),
]

PUBLISHER = "venvstacks-testing-dynlib-publisher"
CONSUMER = "venvstacks-testing-dynlib-consumer"
STACK = """
[[runtimes]]
name = "cpython-3.11"
python_implementation = "cpython@3.11.2"
requirements = []
platforms = ["{platform}"]

[[frameworks]]
name = "both-wheels"
runtime = "cpython-3.11"
requirements = ["{publisher}", "{consumer}"]

[[applications]]
name = "via-combined-layer"
launch_module = "dynlib_import.py"
frameworks = ["both-wheels"]
requirements = []

[[frameworks]]
name = "only-publisher"
runtime = "cpython-3.11"
versioned = true
requirements = ["{publisher}"]

[[frameworks]]
name = "only-consumer"
frameworks = ["only-publisher"]
requirements = ["{consumer}"]

[[applications]]
name = "via-split-layers"
launch_module = "dynlib_import.py"
frameworks = ["only-consumer"]
requirements = []

[[frameworks]]
name = "broken-publisher"
runtime = "cpython-3.11"
requirements = ["{publisher}"]
dynlib_exclude = ["*.so", "*.dylib"]

[[frameworks]]
name = "broken-consumer"
frameworks = ["broken-publisher"]
requirements = ["{consumer}"]

[[applications]]
name = "via-excluded-links"
launch_module = "windows_only_dynlib_import.py"
frameworks = ["broken-consumer"]
requirements = []
"""


def _uv(*args: str | Path, env: dict[str, str] | None = None) -> None:
    from uv import find_uv_bin

    subprocess.run([find_uv_bin(), *map(str, args)], check=True, capture_output=True, env=env)


def build_wheel_pair(work: Path) -> Path:
    """Build both wheels into ``work/wheels`` (venvstacks' recipe: no build isolation, the
    publisher installed in the build env so pkg-config finds its ``.pc`` file)."""
    shutil.copytree(PROJECT / "packages", work / "packages")
    benv, wheels = work / "build-env", work / "wheels"
    _uv("venv", "--quiet", "--python", sys.executable, benv)
    python = benv / "bin" / "python"
    _uv("pip", "install", "--quiet", "--python", python, *BUILD_REQUIREMENTS)
    env = dict(os.environ, PATH=f"{benv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
               PKGCONF_PYPI_EMBEDDED_ONLY="1")
    for package in ("dynlib-publisher", "dynlib-consumer"):
        _uv("build", "--quiet", "--wheel", "--python", python, "--no-build-isolation", "--out-dir", wheels,
            work / "packages" / package, env=env)
        if package == "dynlib-publisher":
            _uv("pip", "install", "--quiet", "--python", python, "--no-index", "--find-links", wheels, PUBLISHER)
    # tagged for the Python that built them; they are abi3 wheels, fine on the 3.11 runtime
    here = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    for wheel in sorted(wheels.glob("*.whl")):
        wheel.rename(wheel.with_name(wheel.name.replace(f"-{here}-", "-cp311-")))
    # the consumer's build rpath points into the build env: it must not be found there
    shutil.rmtree(benv)
    return wheels


def write_stack(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for module in ("dynlib_import.py", "windows_only_dynlib_import.py"):
        shutil.copyfile(PROJECT / module, folder / module)
    spec = folder / "venvstacks.toml"
    spec.write_text(textwrap.dedent(STACK.format(platform=current_platform(), publisher=PUBLISHER,
                                                 consumer=CONSUMER)))
    return spec


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tar.xz"))}


def members(archive: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(archive) as tar:
        return {m.name: m for m in tar.getmembers()}


@pytest.fixture(scope="module")
def published(runtime_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stack locked from the wheel pair, built and published natively: its folder."""
    root = tmp_path_factory.mktemp("dynlib")
    wheels = build_wheel_pair(root / "wheel build")
    spec = write_stack(root / "stack")
    cli("lock", "--native", "--no-index", "--local-wheels", wheels, spec)
    cli("build", "--native", "--publish", spec)
    return spec.parent


def test_archives_carry_the_links_and_the_wrapper(published: Path) -> None:
    out = published / "_artifacts"
    publisher = members(out / "framework-only-publisher@1.tar.xz")
    link = publisher["framework-only-publisher@1/share/venv/dynlib/libcheckdynlib.so"]
    assert link.issym()
    assert link.linkname == "../../../lib/python3.11/site-packages/dynlib_publisher/libcheckdynlib.so"
    # dynlib_exclude: the same wheel, no link at all
    assert not [n for n in members(out / "framework-broken-publisher.tar.xz") if "share/venv/dynlib" in n]
    # the consumer's own extension module is not a library to link
    assert not [n for n in members(out / "framework-only-consumer.tar.xz") if "share/venv/dynlib" in n]
    app = members(out / "app-via-split-layers.tar.xz")
    assert app["app-via-split-layers/bin/python_"].issym()
    assert app["app-via-split-layers/bin/python_"].linkname == "../../cpython-3.11/bin/python"
    assert app["app-via-split-layers/bin/python3"].linkname == "python"
    wrapper = app["app-via-split-layers/bin/python"]
    assert wrapper.isreg() and wrapper.mode & 0o111
    with tarfile.open(out / "app-via-split-layers.tar.xz") as tar:
        text = tar.extractfile(wrapper).read().decode()  # type: ignore[union-attr]
        config = json.load(tar.extractfile(  # type: ignore[arg-type]
            "app-via-split-layers/share/venv/metadata/venvstacks_layer.json"))
    assert config["dynlib_dirs"] == [
        "../framework-only-consumer/share/venv/dynlib",
        "../framework-only-publisher@1/share/venv/dynlib",  # the deployed name, not the build name
        "../cpython-3.11/share/venv/dynlib",
    ]
    assert text == dynlib.wrapper_script(config["dynlib_dirs"], "linux")


def test_the_split_layers_app_runs_once_deployed(published: Path, tmp_path: Path) -> None:
    target = tmp_path / "deployed"
    result = json.loads(cli("deploy", "--json", published / "_artifacts", target).stdout)
    apps = {a["layer_name"]: a for a in result["applications"]}
    clean_env = {"PATH": "/usr/bin:/bin"}
    for name in ("app-via-split-layers", "app-via-combined-layer", "app-via-excluded-links"):
        module = Path(apps[name]["launch_module"]).stem
        run = subprocess.run([apps[name]["python"], "-m", module], capture_output=True, text=True,
                             check=False, env=clean_env)
        assert run.returncode == 0, f"{name}: {run.stderr}"
        assert "Environment launch module executed successfully" in run.stdout
    probe = "import dynlib_consumer; print(dynlib_consumer.checkdynlib_sum(40, 2))"
    app_bin = target / "app-via-split-layers" / "bin"
    ok = subprocess.run([app_bin / "python", "-c", probe], capture_output=True, text=True, env=clean_env,
                        check=False)
    assert (ok.returncode, ok.stdout.strip()) == (0, "42"), ok.stderr
    # without the wrapper (the interpreter link it runs), the import fails as it did before
    bare = subprocess.run([app_bin / "python_", "-c", probe], capture_output=True, text=True, env=clean_env,
                          check=False)
    assert bare.returncode != 0 and "ImportError: libcheckdynlib.so" in bare.stderr
    # and with the links excluded (dynlib_exclude), it fails through the wrapper too
    excluded = subprocess.run([target / "app-via-excluded-links" / "bin" / "python", "-c", probe],
                              capture_output=True, text=True, env=clean_env, check=False)
    assert excluded.returncode != 0 and "ImportError: libcheckdynlib.so" in excluded.stderr


def test_a_second_publish_elsewhere_is_byte_identical(published: Path, tmp_path: Path) -> None:
    other = tmp_path / "another stack folder"
    shutil.copytree(published, other, ignore=shutil.ignore_patterns("_build", "_artifacts", ".venvstacks-docker"))
    cli("build", "--native", "--publish", "--build-dir", tmp_path / "another build", other / "venvstacks.toml")
    first, second = digests(published / "_artifacts"), digests(other / "_artifacts")
    assert len(first) == 9
    assert second == first
