"""The ELF policy check on real ELF files: shared libraries compiled here with the system
``cc``, the real runtime archive, and the published sample_project.

The synthetic libraries link a stand-in ``libc.so.6`` / ``libstdc++.so.6`` built with a
version script, so the versions they need (``GLIBC_2.40``...) do not depend on the glibc
of the machine running the tests; one test also links the real glibc.
"""

from __future__ import annotations

import io
import json
import lzma
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from _helpers import Published, cli

from venvstacks_docker.archive import write_archive
from venvstacks_docker.elf_policy import (
    ElfOptions,
    LayerInput,
    Targets,
    check_layers,
    parse_linux_target,
    policy_for,
)
from venvstacks_docker.elf_scan import scan_archive
from venvstacks_docker.errors import SpecError
from venvstacks_docker.verify import verify_output_dir

MTIME = 1_700_000_000
CC = shutil.which("cc") or shutil.which("gcc")
pytestmark = pytest.mark.skipif(CC is None, reason="needs a C compiler (cc)")

FAKE_LIBC_MAP = "GLIBC_2.17 { global: fake_old; };\nGLIBC_2.40 { global: fake_new; };\n"
FAKE_LIBSTDCXX_MAP = "GLIBCXX_3.4.30 { global: fake_cxx; };\n"


def _cc(out: Path, source: str, *args: str) -> Path:
    """Compile ``source`` into the shared object ``out``, without the C runtime unless asked."""
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.parent / f".{out.name}.c"
    src.write_text(source)
    assert CC is not None
    subprocess.run([CC, "-shared", "-fPIC", "-O1", "-o", str(out), str(src), *args], check=True,
                   capture_output=True)
    src.unlink()
    return out


def _stub(folder: Path, soname: str, version_map: str | None = None, symbols: tuple[str, ...] = ("stub",)) -> Path:
    """A library called ``soname`` that defines ``symbols`` (in the versions of ``version_map``)."""
    args = ["-nostdlib", f"-Wl,-soname,{soname}"]
    if version_map:
        (folder / f".{soname}.map").parent.mkdir(parents=True, exist_ok=True)
        (folder / f".{soname}.map").write_text(version_map)
        args.append(f"-Wl,--version-script={folder / f'.{soname}.map'}")
    body = "".join(f"int {name}(void) {{ return 1; }}\n" for name in symbols)
    return _cc(folder / soname, body, *args)


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stand-ins to link against: libc.so.6, libstdc++.so.6 (versioned) and libmissing.so.1."""
    folder = tmp_path_factory.mktemp("stubs")
    _stub(folder, "libc.so.6", FAKE_LIBC_MAP, ("fake_old", "fake_new"))
    _stub(folder, "libstdc++.so.6", FAKE_LIBSTDCXX_MAP, ("fake_cxx",))
    _stub(folder, "libmissing.so.1")
    _stub(folder, "libz.so.1")
    return folder


def user_lib(out: Path, stubs: Path, calls: tuple[str, ...], links: tuple[str, ...], *extra: str) -> Path:
    """A shared object calling ``calls`` from the stub libraries ``links`` (no real libc)."""
    decls = "".join(f"int {name}(void);\n" for name in calls)
    body = decls + "int use(void) { return 0" + "".join(f" + {name}()" for name in calls) + "; }\n"
    return _cc(out, body, "-nostdlib", *(str(stubs / name) for name in links), *extra)


def _entry(name: str, target: str, archive: str, size: int, sha: str, lower: tuple[str, ...] = ()) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "layer_name": name, "install_target": target, "runtime_layer": lower[0] if lower else target,
        "archive_build": 1, "archive_name": archive, "archive_size": size, "archive_hashes": {"sha256": sha},
        "target_platform": "linux_x86_64", "bound_to_implementation": not lower,
    }
    if lower:
        entry["required_layers"] = list(lower[1:])
    return entry


def publish(tmp_path: Path, trees: dict[str, Path], lower: dict[str, tuple[str, ...]] | None = None) -> Path:
    """A publication of ``trees`` (layer name -> folder), runtime first, as ``publish`` lays it out."""
    out = tmp_path / "published"
    layers: dict[str, list[dict[str, Any]]] = {"runtimes": [], "frameworks": [], "applications": []}
    for name, tree in trees.items():
        below = (lower or {}).get(name, ())
        result = write_archive(tree, out / f"{name}.tar.xz", root_name=name, mtime=MTIME)
        entry = _entry(name, name, f"{name}.tar.xz", result.size, result.sha256, below)
        layers["frameworks" if below else "runtimes"].append(entry)
        path = out / "__venvstacks__" / "env_metadata" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(entry, indent=2, sort_keys=True) + "\n")
    (out / "__venvstacks__" / "venvstacks.json").write_text(json.dumps({"layers": layers}, indent=2) + "\n")
    return out


def elf_report(out: Path, target: str | None = None, strict: bool = False) -> Any:
    report = verify_output_dir(out, elf=ElfOptions(targets=Targets(forced=target), strict=strict))
    assert report.elf_policy is not None
    return report


def violations(report: Any) -> list[tuple[str, str, str, str | None]]:
    return [(v.file, v.kind, v.needed, v.symbol) for layer in report.elf_policy.layers for v in layer.violations]


# ---------------------------------------------------------------------------------
# symbol versions
# ---------------------------------------------------------------------------------


def test_a_glibc_version_newer_than_the_target_is_named_with_a_symbol_that_needs_it(tmp_path: Path,
                                                                                   stubs: Path) -> None:
    tree = tmp_path / "rt"
    user_lib(tree / "lib" / "libuser.so", stubs, ("fake_old", "fake_new"), ("libc.so.6",))
    out = publish(tmp_path, {"rt": tree})
    report = elf_report(out)
    assert report.ok, "violations are warnings unless strict"
    assert violations(report) == [("rt/lib/libuser.so", "symbol-version", "GLIBC_2.40", "fake_new")]
    layer = report.elf_policy.layers[0]
    assert (layer.target, layer.policy, layer.needs_glibc, layer.needs_glibc_file) == (
        "2.28", "manylinux_2_28", "2.40", "rt/lib/libuser.so")
    assert "venvstacks' default" in layer.target_from
    fix = layer.violations[0].fix
    assert "glibc 2.28 or older" in fix and 'linux_target = "glibc@2.40"' in fix, "the runtime's fix"
    text = report.render_text()
    assert "rt/lib/libuser.so: needs GLIBC_2.40 (libc.so.6, e.g. for fake_new)" in text
    assert "1 ELF policy violation(s) (warnings: --strict-elf fails on them)" in text
    assert elf_report(out, "2.40").elf_policy.violations == 0
    assert elf_report(out, "2.39").elf_policy.violations == 1


def test_strict_makes_violations_fail_and_json_lists_them(tmp_path: Path, stubs: Path) -> None:
    tree = tmp_path / "rt"
    user_lib(tree / "lib" / "libuser.so", stubs, ("fake_new",), ("libc.so.6",))
    report = elf_report(publish(tmp_path, {"rt": tree}), strict=True)
    assert not report.ok and report.elf_policy.fails
    data = json.loads(report.to_json())
    assert data["ok"] is False
    (layer,) = data["elf_policy"]["layers"]
    assert layer["linux_target"] == "glibc@2.28" and layer["needs_glibc"] == "2.40"
    assert layer["violations"][0]["needed"] == "GLIBC_2.40" and layer["violations"][0]["library"] == "libc.so.6"
    assert data["elf_policy"]["policy_source"]["repository"] == "https://github.com/pypa/auditwheel"


def test_libstdcxx_versions_follow_the_policy_of_the_target_glibc(tmp_path: Path, stubs: Path) -> None:
    tree = tmp_path / "fw"
    user_lib(tree / "lib" / "libcxxuser.so", stubs, ("fake_cxx",), ("libstdc++.so.6",))
    out = publish(tmp_path, {"fw": tree})
    assert violations(elf_report(out, "2.28")) == [
        ("fw/lib/libcxxuser.so", "symbol-version", "GLIBCXX_3.4.30", "fake_cxx")]  # manylinux_2_28: 3.4.24
    assert violations(elf_report(out, "2.35")) == []  # manylinux_2_35 allows GLIBCXX_3.4.30
    # a target between policies uses the newest policy not newer than it
    assert policy_for((2, 30), "x86_64").name == "manylinux_2_28"


def test_versions_of_a_library_the_layers_ship_are_not_judged(tmp_path: Path, stubs: Path) -> None:
    tree = tmp_path / "rt"
    user_lib(tree / "lib" / "libuser.so", stubs, ("fake_cxx",), ("libstdc++.so.6",), "-Wl,-rpath,$ORIGIN")
    shutil.copy(stubs / "libstdc++.so.6", tree / "lib" / "libstdc++.so.6")
    assert violations(elf_report(publish(tmp_path, {"rt": tree}))) == []


def test_the_real_glibc_of_this_machine(tmp_path: Path) -> None:
    """``dlopen`` moved into libc.so.6 as GLIBC_2.34: a library built here needs that."""
    glibc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    if not glibc.startswith("glibc ") or tuple(map(int, glibc.split()[1].split(".")[:2])) < (2, 34):
        pytest.skip(f"needs glibc 2.34 or newer, this is {glibc!r}")
    tree = tmp_path / "rt"
    _cc(tree / "lib" / "libreal.so", '#include <dlfcn.h>\nvoid *use(void) { return dlopen("x", RTLD_NOW); }\n')
    found = violations(elf_report(publish(tmp_path, {"rt": tree})))
    assert found == [("rt/lib/libreal.so", "symbol-version", "GLIBC_2.34", "dlopen")]


# ---------------------------------------------------------------------------------
# libraries
# ---------------------------------------------------------------------------------


def test_a_library_nothing_provides_is_a_violation(tmp_path: Path, stubs: Path) -> None:
    tree = tmp_path / "rt"
    user_lib(tree / "lib" / "libuser.so", stubs, ("stub", "fake_old"), ("libmissing.so.1", "libc.so.6", "libz.so.1"))
    report = elf_report(publish(tmp_path, {"rt": tree}))
    assert violations(report) == [("rt/lib/libuser.so", "library", "libmissing.so.1", None)]
    text = report.render_text()
    assert "needs libmissing.so.1, which no layer below it and no system library provides" in text
    assert "fix: ship libmissing.so.1 in this layer or a lower one" in text


def test_libraries_of_the_layer_and_of_lower_layers_count_but_not_of_upper_ones(tmp_path: Path,
                                                                                stubs: Path) -> None:
    runtime, framework, app = tmp_path / "rt", tmp_path / "fw", tmp_path / "app"
    (runtime / "lib").mkdir(parents=True)
    user_lib(framework / "lib" / "libuser.so", stubs, ("stub",), ("libmissing.so.1",))
    user_lib(app / "lib" / "libapp.so", stubs, ("stub",), ("libmissing.so.1",))
    trees = {"rt": runtime, "fw": framework, "app": app}
    below = {"fw": ("rt",), "app": ("rt", "fw")}
    # in the application layer only: the framework below it cannot see it
    shutil.copy(stubs / "libmissing.so.1", app / "lib" / "libmissing.so.1")
    assert violations(elf_report(publish(tmp_path / "up", trees, below))) == [
        ("fw/lib/libuser.so", "library", "libmissing.so.1", None)]
    # in the runtime: every layer above sees it
    (app / "lib" / "libmissing.so.1").unlink()
    shutil.copy(stubs / "libmissing.so.1", runtime / "lib" / "libmissing.so.1")
    assert violations(elf_report(publish(tmp_path / "down", trees, below))) == []


def test_an_origin_runpath_into_another_layer_counts_an_absolute_one_does_not(tmp_path: Path,
                                                                            stubs: Path) -> None:
    elsewhere, user = tmp_path / "other", tmp_path / "user"
    (elsewhere / "libs").mkdir(parents=True)
    shutil.copy(stubs / "libmissing.so.1", elsewhere / "libs" / "libmissing.so.1")
    user_lib(user / "lib" / "libuser.so", stubs, ("stub",), ("libmissing.so.1",),
             "-Wl,--enable-new-dtags,-rpath,$ORIGIN/../../other/libs")
    user_lib(user / "lib" / "libabs.so", stubs, ("stub",), ("libmissing.so.1",), f"-Wl,-rpath,{elsewhere / 'libs'}")
    report = elf_report(publish(tmp_path, {"other": elsewhere, "user": user}))
    assert violations(report) == [("user/lib/libabs.so", "library", "libmissing.so.1", None)]


def test_symlinked_names_and_sonames_count(tmp_path: Path, stubs: Path) -> None:
    tree = tmp_path / "rt"
    user_lib(tree / "lib" / "libuser.so", stubs, ("stub",), ("libmissing.so.1",))
    shutil.copy(stubs / "libmissing.so.1", tree / "lib" / "libmissing-1234abcd.so.1")  # soname libmissing.so.1
    assert violations(elf_report(publish(tmp_path, {"rt": tree}))) == []


# ---------------------------------------------------------------------------------
# what is read, and bad input
# ---------------------------------------------------------------------------------


def test_scan_notes_names_paths_and_skips_objects_that_do_not_load(tmp_path: Path, stubs: Path) -> None:
    tree = tmp_path / "rt"
    user_lib(tree / "lib" / "libuser.so", stubs, ("fake_new",), ("libc.so.6",))
    assert CC is not None
    (tree / "lib" / "x.c").write_text("int x(void) { return 0; }\n")
    subprocess.run([CC, "-c", "-o", str(tree / "lib" / "x.o"), str(tree / "lib" / "x.c")], check=True)
    (tree / "lib" / "libuser.so.1").symlink_to("libuser.so")
    (tree / "notes.txt").write_bytes(b"\x7fELF but not really")
    archive = write_archive(tree, tmp_path / "rt.tar.xz", root_name="rt", mtime=MTIME).path
    scan = scan_archive(archive, lambda name: name == "GLIBC_2.40")
    assert [e.path for e in scan.elves] == ["rt/lib/libuser.so"], "a .o file and a fake are not read"
    assert {"libuser.so", "libuser.so.1", "x.o", "notes.txt"} <= scan.names
    assert "rt/lib/libuser.so.1" in scan.paths
    (needs,) = scan.elves
    assert needs.needed == ("libc.so.6",)
    assert [(v.library, v.version, v.symbol) for v in needs.versions] == [("libc.so.6", "GLIBC_2.40", "fake_new")]


def test_archives_of_several_xz_streams_are_read_to_the_end(tmp_path: Path, stubs: Path) -> None:
    """Published archives are 32 MiB xz streams one after another: tarfile's r|xz stops after one."""
    tree = tmp_path / "rt"
    user_lib(tree / "lib" / "libuser.so", stubs, ("fake_new",), ("libc.so.6",))
    (tree / "padding.bin").write_bytes(os.urandom(64 << 10))
    user_lib(tree / "zzz" / "liblast.so", stubs, ("fake_new",), ("libc.so.6",))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(tree, arcname="rt")
    data = buffer.getvalue()
    cut = len(data) // 2
    archive = tmp_path / "rt.tar.xz"
    archive.write_bytes(lzma.compress(data[:cut]) + lzma.compress(data[cut:]))
    scan = scan_archive(archive, lambda name: True)
    assert scan.error is None
    assert sorted(e.path for e in scan.elves) == ["rt/lib/libuser.so", "rt/zzz/liblast.so"]


def test_a_damaged_archive_is_not_read_and_a_truncated_one_is_reported(tmp_path: Path, stubs: Path) -> None:
    tree = tmp_path / "rt"
    user_lib(tree / "lib" / "libuser.so", stubs, ("fake_new",), ("libc.so.6",))
    out = publish(tmp_path, {"rt": tree})
    archive = out / "rt.tar.xz"
    archive.write_bytes(archive.read_bytes()[:200])
    report = elf_report(out)
    assert not report.ok  # the size check fails verify, whatever the ELF check says
    assert report.elf_policy.layers[0].skipped == "its archive failed verification"
    layer = LayerInput(layer_name="rt", install_target="rt", target_platform="linux_x86_64", archive=archive,
                       lower=(), is_runtime=True)
    (result,) = check_layers([layer], ElfOptions()).layers
    assert result.skipped is not None and result.skipped.startswith("cannot read rt.tar.xz")


def test_layers_of_other_platforms_are_not_checked(tmp_path: Path, stubs: Path) -> None:
    tree = tmp_path / "rt"
    user_lib(tree / "lib" / "libuser.so", stubs, ("fake_new",), ("libc.so.6",))
    archive = write_archive(tree, tmp_path / "rt.tar.xz", root_name="rt", mtime=MTIME).path
    layer = LayerInput(layer_name="rt", install_target="rt", target_platform="win_amd64", archive=archive,
                       lower=(), is_runtime=True)
    assert check_layers([layer], ElfOptions()).layers == ()


@pytest.mark.parametrize("text", ["glibc@2.28", "2.28", " glibc@2.28 "])
def test_linux_targets_are_read(text: str) -> None:
    assert parse_linux_target(text) == "2.28"


@pytest.mark.parametrize("text", ["musl@1.2", "glibc@2", "glibc@latest", "2.28.1", ""])
def test_other_linux_targets_are_refused(text: str) -> None:
    with pytest.raises(SpecError, match="is not a Linux target"):
        parse_linux_target(text)


# ---------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------


@pytest.fixture
def flagged(tmp_path: Path, stubs: Path) -> Path:
    tree = tmp_path / "cpython-3.11"
    user_lib(tree / "lib" / "libuser.so", stubs, ("fake_new",), ("libc.so.6",))
    return publish(tmp_path, {"cpython-3.11": tree})


def test_verify_warns_by_default_and_fails_with_strict_elf(flagged: Path) -> None:
    default = cli("verify", flagged)
    assert "cpython-3.11/lib/libuser.so: needs GLIBC_2.40" in default.stdout
    assert "note: 1 ELF policy violation(s) (warnings)" in default.stderr
    strict = cli("verify", "--strict-elf", flagged, check=False)
    assert strict.returncode == 7
    assert "FAILED:" in strict.stdout and "note:" not in strict.stderr
    off = cli("verify", "--no-elf-policy", flagged)
    assert "elf-policy" not in off.stdout
    assert json.loads(cli("verify", "--json", "--no-elf-policy", flagged).stdout)["elf_policy"] is None
    assert cli("verify", "--strict-elf", "--linux-target", "glibc@2.40", flagged).returncode == 0


def test_verify_reads_each_layers_target_from_the_stack_file(flagged: Path, tmp_path: Path) -> None:
    spec = tmp_path / "stack" / "venvstacks.toml"
    spec.parent.mkdir()
    spec.write_text('[[runtimes]]\nname = "cpython-3.11"\npython_implementation = "cpython@3.11.2"\n'
                    'requirements = []\nlinux_target = "glibc@2.40"\n')
    result = cli("verify", "--strict-elf", "--spec", spec, flagged)
    assert "glibc@2.40 (manylinux_2_40; from venvstacks.toml)" in result.stdout


def test_an_audit_checks_its_reference_with_the_stack_files_targets(flagged: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from venvstacks_docker import spec as _spec
    from venvstacks_docker import ui
    from venvstacks_docker.audit import _elf_policy

    notes = io.StringIO()
    monkeypatch.setattr(ui, "_current", [ui.Reporter(console=Console(file=notes, width=400))])

    path = tmp_path / "stack" / "venvstacks.toml"
    path.parent.mkdir()
    path.write_text('[[runtimes]]\nname = "cpython-3.11"\npython_implementation = "cpython@3.11.2"\n'
                    'requirements = []\nlinux_target = "glibc@2.39"\n')
    data = _elf_policy(_spec.load(path), flagged)
    assert data is not None and data["violations"] == 1
    assert data["layers"][0]["linux_target_from"] == "from venvstacks.toml"
    assert "ELF policy: 1 violation(s) in the reference publication (cpython-3.11)" in notes.getvalue()


@pytest.mark.parametrize(("args", "message"), [
    (("--linux-target", "musl@1.2"), "'musl@1.2' is not a Linux target"),
    (("--no-elf-policy", "--strict-elf"), "which --no-elf-policy turns off"),
])
def test_bad_elf_options_are_one_message_and_exit_2(flagged: Path, args: tuple[str, ...], message: str) -> None:
    result = cli("verify", *args, flagged, check=False)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------
# the real runtime and the published sample
# ---------------------------------------------------------------------------------


def _runtime_layer(archive: Path) -> LayerInput:
    return LayerInput(layer_name="cpython-3.11", install_target="python", target_platform="linux_x86_64",
                      archive=archive, lower=(), is_runtime=True)


def _below(floor: str) -> str:
    major, minor = (int(x) for x in floor.split("."))
    return f"{major}.{minor - 1}"


@pytest.mark.runtime
def test_the_runtime_needs_the_glibc_its_sidecar_records(runtime_archive: Path) -> None:
    """Flagged under any target below its recorded floor, clean at the floor; under venvstacks'
    default glibc@2.28 it is flagged exactly when its floor is newer (2.36 when built natively
    on Debian bookworm)."""
    floor = json.loads(Path(f"{runtime_archive}.json").read_text())["glibc_floor"]
    (below,) = check_layers([_runtime_layer(runtime_archive)],
                            ElfOptions(targets=Targets(forced=_below(floor)))).layers
    assert below.needs_glibc == floor
    assert f"GLIBC_{floor}" in {v.needed for v in below.violations}
    assert all(v.kind == "symbol-version" and v.library in ("libc.so.6", "libm.so.6") for v in below.violations)
    (at_floor,) = check_layers([_runtime_layer(runtime_archive)],
                               ElfOptions(targets=Targets(forced=floor))).layers
    assert at_floor.violations == (), "every library the runtime links is carried or a system library"
    (at_default,) = check_layers([_runtime_layer(runtime_archive)], ElfOptions()).layers
    assert bool(at_default.violations) == (tuple(map(int, floor.split("."))) > (2, 28))


def _layer_lines(stdout: str) -> dict[str, str]:
    return {line.split()[1].rstrip(":"): line for line in stdout.splitlines() if line.startswith("elf-policy")}


@pytest.mark.slow
@pytest.mark.runtime
@pytest.mark.network
def test_the_published_sample_is_judged_by_its_runtimes_floor(published_sample: Published,
                                                               runtime_archive: Path) -> None:
    """The sample targets glibc@2.28 and its wheels respect manylinux_2_28; its runtime is
    flagged exactly when it needs a newer glibc: built on a Debian 12 host (2.36) it is,
    built in the Debian 11 container (the default, and the sample's pin: 2.28) it is not."""
    with tarfile.open(published_sample.output_dir / "cpython-3.11.tar.xz") as tar:
        assert tar.getmembers()[0].name.split("/")[0] == "cpython-3.11"
    result = cli("verify", "--spec", published_sample.spec, published_sample.output_dir)
    lines = _layer_lines(result.stdout)
    others = {name: line for name, line in lines.items() if name != "cpython-3.11"}
    assert len(others) == 5 and all(line.endswith(", ok") for line in others.values()), others
    runtime = json.loads(cli("verify", "--json", published_sample.output_dir).stdout)["elf_policy"]["layers"][0]
    assert (runtime["layer_name"], runtime["linux_target"]) == ("cpython-3.11", "glibc@2.28")
    sidecar = json.loads(Path(f"{runtime_archive}.json").read_text())
    published = json.loads((published_sample.output_dir / "__venvstacks__" / "env_metadata" /
                            "cpython-3.11.json").read_text())["venvstacks_docker"]["runtime_archive_sha256"]
    if published == sidecar["sha256"]:
        assert runtime["needs_glibc"] == sidecar["glibc_floor"]
    strict = cli("verify", "--strict-elf", published_sample.output_dir, check=False)
    if tuple(map(int, runtime["needs_glibc"].split("."))) > (2, 28):  # today's host-built runtime
        assert "violation(s)" in lines["cpython-3.11"]
        assert "glibc@2.28 (manylinux_2_28; from venvstacks.toml)" in lines["cpython-3.11"]
        assert "ELF policy violation(s) (warnings)" in result.stderr
        assert strict.returncode == 7
    else:  # a runtime built for glibc 2.28 or older (issue 10, point 1)
        assert lines["cpython-3.11"].endswith(", ok") and strict.returncode == 0
