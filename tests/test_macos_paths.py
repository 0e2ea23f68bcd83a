"""macOS layers on a Linux host: share/venv/dynlib links, the zsh wrapper that puts them on
DYLD_LIBRARY_PATH, and how dyld then finds an ``@rpath/`` library of a lower layer, on a
synthetic stack that is staged, archived, unpacked side by side and run.

What stands in for macOS: the interpreter is ``/bin/sh`` (it prints what it was started
with); the wrapper runs under ``/bin/zsh`` when this machine has it, else under bash (its
text is plain POSIX shell plus ``exec -a``, which both have); dyld's search is the model
written down in ``dyld_search`` below (``man dyld``).  SIP, which strips ``DYLD_*``
variables when a protected binary such as ``/bin/zsh`` starts, does not exist here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from pathlib import Path, PurePosixPath

import pytest

from venvstacks_docker import build as _build
from venvstacks_docker import dynlib
from venvstacks_docker import spec as _spec
from venvstacks_docker.archive import write_archive
from venvstacks_docker.extract import safe_extract
from venvstacks_docker.metadata import LAYER_CONFIG
from venvstacks_docker.staging import stage_layer

PLAT = "macosx_arm64"
MTIME = 1_790_812_800
SITE = "lib/python3.11/site-packages"
MACHO = b"\xcf\xfa\xed\xfe\x0c\x00\x00\x01"  # MH_MAGIC_64, CPU_TYPE_ARM64: the start of a Mach-O file
STACK = """
[[runtimes]]
name = "cpython-3.11"
python_implementation = "cpython@3.11.11"
requirements = []

[[frameworks]]
name = "pub"
runtime = "cpython-3.11"
versioned = true
requirements = []

[[applications]]
name = "app"
launch_module = "launch.py"
frameworks = ["pub"]
requirements = []
"""
LAYERS = ("cpython-3.11", "framework-pub", "app-app")
DEPLOYED = {"cpython-3.11": "cpython-3.11", "framework-pub": "framework-pub@1", "app-app": "app-app"}
# what the consumer's extension module needs (otool -L), and where its rpath points
CONSUMER_NEEDS = "@rpath/libcheck.dylib"


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def macos_build(tmp_path: Path) -> _build.BuildContext:
    """A macOS build folder as the build step leaves it (placeholder Mach-O files)."""
    (tmp_path / "launch.py").write_text("import consumer\n")
    (tmp_path / "venvstacks.toml").write_text(textwrap.dedent(STACK))
    spec = _spec.load(tmp_path / "venvstacks.toml")
    ctx = _build.BuildContext(spec=spec, build_dir=tmp_path / "_build", platform=PLAT)
    rt = ctx.env_dir(spec.layer("cpython-3.11"))
    _write(rt / "bin/python3.11", MACHO + b" python", 0o755)
    (rt / "bin/python3").symlink_to("python3.11")
    (rt / "bin/python").symlink_to("python3")
    _write(rt / "lib/libpython3.11.dylib", MACHO + b" libpython")  # @executable_path/../lib/...
    _write(rt / "lib/python3.11/os.py", b"import abc\n")
    (rt / SITE).mkdir(parents=True)
    pub = ctx.env_dir(spec.layer("framework-pub"))
    _write(pub / SITE / "pub/__init__.py", b"")
    _write(pub / SITE / "pub/libcheck.dylib", MACHO + b" id=@rpath/libcheck.dylib")
    # delocate's vendored libraries: found by @loader_path, and linked by name like any library
    _write(pub / SITE / "pub/.dylibs/libgfortran.5.dylib", MACHO + b" id=@loader_path/libgfortran.5.dylib")
    _write(pub / SITE / "pub/_ext.cpython-311-darwin.so", MACHO + b" needs @loader_path/.dylibs/libgfortran.5.dylib")
    app = ctx.env_dir(spec.layer("app-app"))
    _write(app / SITE / "consumer/_consumer.cpython-311-darwin.so", MACHO + b" needs " + CONSUMER_NEEDS.encode())
    for layer in LAYERS:
        env = ctx.env_dir(spec.layer(layer))
        _write(env / LAYER_CONFIG, b"{}")
        if layer == "cpython-3.11":
            continue
        # what build does for macOS: the dynlib links, then bin/python for the build folder's names
        dynlib.link_shared_libraries(env, env / SITE, (), layer=layer)
        lower = [low.env_name for low in spec.lower_layers(spec.layer(layer))]
        (env / "bin").mkdir()
        _build.link_python(env / "bin", PLAT, "cpython-3.11", lower)
        (env / "bin/python3").symlink_to("python")
        _write(env / "pyvenv.cfg", f"home = {rt / 'bin'}\n".encode())
    return ctx


@pytest.fixture
def deployed(tmp_path: Path) -> Path:
    """The stack staged, archived as tar.xz, and unpacked side by side."""
    ctx = macos_build(tmp_path)
    target = tmp_path / "deployed"
    for layer in LAYERS:
        stage = tmp_path / "stage" / layer
        stage_layer(ctx, ctx.spec.layer(layer), stage)
        archive = write_archive(stage, tmp_path / "out" / f"{layer}.tar.xz", root_name=DEPLOYED[layer],
                                mtime=MTIME, arch="aarch64")
        safe_extract(archive.path, target, top=DEPLOYED[layer])
    return target.resolve()


def test_macos_layer_config_is_the_posix_one(tmp_path: Path) -> None:
    ctx = macos_build(tmp_path)
    config = _build.layer_config(ctx.spec, ctx.spec.layer("app-app"), PLAT)
    assert config["python"] == "bin/python" and config["base_python"] == "../cpython-3.11/bin/python"
    assert config["dynlib_dirs"] == ["../framework-pub@1/share/venv/dynlib", "../cpython-3.11/share/venv/dynlib"]
    assert dynlib.supports_dynlib("macosx") and not dynlib.supports_dynlib("win")


def test_macos_dynlib_links_take_dylibs_and_leave_extension_modules(tmp_path: Path) -> None:
    ctx = macos_build(tmp_path)
    folder = ctx.env_dir(ctx.spec.layer("framework-pub")) / "share/venv/dynlib"
    assert {p.name: os.readlink(p) for p in folder.iterdir()} == {
        "libcheck.dylib": f"../../../{SITE}/pub/libcheck.dylib",
        "libgfortran.5.dylib": f"../../../{SITE}/pub/.dylibs/libgfortran.5.dylib"}
    assert not (ctx.env_dir(ctx.spec.layer("app-app")) / "share/venv/dynlib").exists()  # only extension modules


def test_staged_wrapper_is_zsh_with_dyld_library_path_for_deployed_names(deployed: Path) -> None:
    bin_dir = deployed / "app-app" / "bin"
    text = (bin_dir / "python").read_text(encoding="utf-8")
    assert text == dynlib.wrapper_script(["../framework-pub@1/share/venv/dynlib", "../cpython-3.11/share/venv/dynlib"],
                                         "macosx")
    assert text.startswith("#!/bin/zsh\n") and "export DYLD_LIBRARY_PATH\n" in text and "LD_LIBRARY" not in \
        text.replace("DYLD_LIBRARY", "")
    assert os.readlink(bin_dir / "python_") == "../../cpython-3.11/bin/python"  # the deployed runtime, relative
    assert os.readlink(bin_dir / "python3") == "python"
    assert (bin_dir / "python_").resolve() == deployed / "cpython-3.11" / "bin" / "python3.11"
    assert not (deployed / "app-app" / "pyvenv.cfg").exists()  # written by postinstall.py on the target


def stand_in_interpreter(deployed: Path) -> None:
    """/bin/sh in place of the deployed runtime's interpreter: it prints how it was started."""
    python = deployed / "cpython-3.11" / "bin" / "python3.11"
    python.unlink()
    python.symlink_to(shutil.which("sh") or "/bin/sh")


def run_wrapper(deployed: Path, env: dict[str, str]) -> tuple[str, str, str]:
    """Run the deployed app's bin/python3 (its wrapper): $0, DYLD_LIBRARY_PATH and LD_LIBRARY_PATH it passes on."""
    wrapper = deployed / "app-app" / "bin" / "python3"
    argv = [str(wrapper)] if Path("/bin/zsh").exists() else ["/usr/bin/bash", str(wrapper)]
    script = 'printf "%s\\n" "$0" "${DYLD_LIBRARY_PATH-unset}" "${LD_LIBRARY_PATH-unset}"'
    result = subprocess.run([*argv, "-c", script], env={"PATH": "/usr/bin:/bin", **env},
                            capture_output=True, text=True, check=True)
    argv0, dyld, ld = result.stdout.splitlines()
    return argv0, dyld, ld


def dyld_search(install_name: str, dyld_library_path: str, loader_dir: Path, rpaths: list[str]) -> Path | None:
    """Where dyld finds ``install_name`` (man dyld): first each DYLD_LIBRARY_PATH folder with
    the name's last component, whatever its prefix (``@rpath/`` included); then the name
    itself, with ``@loader_path`` the loading file's folder and ``@rpath`` each LC_RPATH."""
    leaf = PurePosixPath(install_name).name
    for folder in filter(None, dyld_library_path.split(":")):
        if (Path(folder) / leaf).exists():
            return Path(folder) / leaf
    prefix, _, rest = install_name.partition("/")
    candidates = [rpath.replace("@loader_path", str(loader_dir)) + "/" + rest for rpath in rpaths] \
        if prefix == "@rpath" else [install_name.replace("@loader_path", str(loader_dir))]
    return next((Path(c) for c in candidates if Path(c).exists()), None)


@pytest.mark.skipif(not Path("/usr/bin/bash").exists(), reason="needs /usr/bin/bash or /bin/zsh")
def test_wrapper_puts_lower_dynlib_folders_on_dyld_library_path(deployed: Path) -> None:
    stand_in_interpreter(deployed)
    argv0, dyld, ld = run_wrapper(deployed, {})
    here = deployed / "app-app" / "bin"
    assert argv0 == f"{here}/python"  # sys.executable and the pyvenv.cfg lookup see bin/python
    assert [Path(os.path.normpath(p)) for p in dyld.split(":")] == [
        deployed / "framework-pub@1/share/venv/dynlib", deployed / "cpython-3.11/share/venv/dynlib"]
    assert ld == "unset"  # macOS layers set DYLD_LIBRARY_PATH only
    # the consumer's @rpath/libcheck.dylib: its own rpath (its layer) has no such file,
    # DYLD_LIBRARY_PATH finds the lower layer's link by its leaf name
    consumer_dir = deployed / "app-app" / SITE / "consumer"
    found = dyld_search(CONSUMER_NEEDS, dyld, consumer_dir, ["@loader_path/../pub"])
    assert found is not None and found.resolve() == deployed / "framework-pub@1" / SITE / "pub" / "libcheck.dylib"
    assert dyld_search(CONSUMER_NEEDS, "", consumer_dir, ["@loader_path/../pub"]) is None  # not without it
    # delocate's @loader_path references stay inside their own layer: no DYLD needed
    ext_dir = deployed / "framework-pub@1" / SITE / "pub"
    assert dyld_search("@loader_path/.dylibs/libgfortran.5.dylib", "", ext_dir, []) == \
        ext_dir / ".dylibs" / "libgfortran.5.dylib"


@pytest.mark.skipif(not Path("/usr/bin/bash").exists(), reason="needs /usr/bin/bash or /bin/zsh")
def test_a_callers_dyld_library_path_comes_first_and_folders_are_not_repeated(deployed: Path) -> None:
    """What the script does with a caller's value (on macOS, SIP strips it when /bin/zsh starts)."""
    stand_in_interpreter(deployed)
    _, dyld, _ = run_wrapper(deployed, {"DYLD_LIBRARY_PATH": "/opt/mine"})
    assert dyld.split(":")[0] == "/opt/mine" and len(dyld.split(":")) == 3
    _, again, _ = run_wrapper(deployed, {"DYLD_LIBRARY_PATH": dyld})  # a nested start adds nothing twice
    assert again == dyld
