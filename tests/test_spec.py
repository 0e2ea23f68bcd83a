"""Stack files: venvstacks syntax accepted unchanged; every mistake gets one clear message."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from _helpers import SAMPLE, cli

from venvstacks_docker import spec as _spec
from venvstacks_docker.errors import SpecError

RUNTIME = """
[[runtimes]]
name = "cpython-3.11"
python_implementation = "cpython@3.11.2"
requirements = []
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "launch.py").write_text("print('hi')\n")
    path = tmp_path / "venvstacks.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_sample_project_loads_with_layer_graph() -> None:
    spec = _spec.load(SAMPLE / "venvstacks.toml")
    assert [layer.env_name for layer in spec.all_layers()] == [
        "cpython-3.11", "framework-sklearn", "framework-reporting",
        "app-classification-demo", "app-clustering-demo", "app-report-demo",
    ]
    report = spec.layer("app-report-demo")
    assert [layer.env_name for layer in spec.lower_layers(report)] == [
        "framework-reporting", "framework-sklearn", "cpython-3.11"]
    assert report.launch_module_name == "report_demo"
    assert spec.layer("app-classification-demo").launch_module_name == "sklearn_classification"
    assert report.py_version == "3.11.2"
    assert report.platforms == ("linux_x86_64", "linux_aarch64")  # inherited from the runtime


def test_c3_linearisation_matches_venvstacks_example(tmp_path: Path) -> None:
    # the diamond + C3 case from venvstacks' minimal project: D->[B,C], B->A, C->A, E->B, F->E
    fws = "".join(
        f'[[frameworks]]\nname = "{n}"\n{deps}\nrequirements = []\n\n'
        for n, deps in [
            ("A", 'runtime = "cpython-3.11"'), ("B", 'frameworks = ["A"]'), ("C", 'frameworks = ["A"]'),
            ("D", 'frameworks = ["B", "C"]'), ("E", 'frameworks = ["B"]'), ("F", 'frameworks = ["E"]'),
        ]
    )
    path = write(tmp_path, RUNTIME + fws + """
[[applications]]
name = "app"
launch_module = "launch.py"
frameworks = ["D", "F"]
requirements = []
""")
    spec = _spec.load(path)
    order = [layer.name for layer in spec.lower_layers(spec.layer("app-app"))]
    assert order == ["D", "F", "E", "B", "C", "A", "cpython-3.11"]


BAD_SPECS = {
    "malformed TOML": ("[[runtimes]\nname = 'x'", "not valid TOML"),
    "unknown key with suggestion": (RUNTIME.replace("requirements = []", "requirments = []\nrequirements = []"),
                                    "did you mean 'requirements'"),
    "unknown runtime": (RUNTIME + '[[frameworks]]\nname = "f"\nruntime = "cpython-3.12"\nrequirements = []\n',
                        "unknown runtime 'cpython-3.12'"),
    "unknown framework (also how cycles are rejected)": (
        RUNTIME + '[[frameworks]]\nname = "a"\nframeworks = ["b"]\nrequirements = []\n'
        '[[frameworks]]\nname = "b"\nframeworks = ["a"]\nrequirements = []\n',
        "unknown framework 'b'"),
    "self reference": (RUNTIME + '[[frameworks]]\nname = "a"\nframeworks = ["a"]\nrequirements = []\n',
                       "cannot depend on itself"),
    "duplicate names": (RUNTIME + RUNTIME, "duplicate layer name 'cpython-3.11'"),
    "missing launch module": (RUNTIME + '[[applications]]\nname = "a"\nlaunch_module = "nope.py"\n'
                              'runtime = "cpython-3.11"\nrequirements = []\n', "does not exist"),
    "bad requirement": (RUNTIME.replace("requirements = []", 'requirements = ["numpy >>> 1"]'),
                        "invalid requirement"),
    "unknown platform": (RUNTIME.replace("requirements = []", 'requirements = []\nplatforms = ["linux_sparc"]'),
                         "unknown platform 'linux_sparc'"),
    "unknown implementation": (RUNTIME.replace("cpython@", "jython@"), "unknown Python implementation"),
    "missing requirements": (RUNTIME.replace("requirements = []", ""), "missing 'requirements'"),
    "runtime and frameworks both": (
        RUNTIME + '[[frameworks]]\nname = "a"\nruntime = "cpython-3.11"\nrequirements = []\n'
        '[[frameworks]]\nname = "b"\nruntime = "cpython-3.11"\nframeworks = ["a"]\nrequirements = []\n',
        "exactly one of 'runtime' and 'frameworks'"),
    "reserved runtime prefix": (RUNTIME.replace('name = "cpython-3.11"', 'name = "app-x"'), "reserved"),
    "bad linux target": (RUNTIME.replace("requirements = []", 'requirements = []\nlinux_target = "musl"'),
                         "libc variant"),
    "unknown top-level key": ("[[runtime]]\nname = 'x'\n" + RUNTIME, "did you mean 'runtimes'"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec_is_one_clear_error(tmp_path: Path, case: str) -> None:
    text, expected = BAD_SPECS[case]
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        _spec.load(path)
    assert expected in str(info.value)


@pytest.mark.parametrize("case", ["unknown key with suggestion", "malformed TOML",
                                  "unknown framework (also how cycles are rejected)"])
def test_bad_spec_on_the_command_line_has_no_traceback(tmp_path: Path, case: str) -> None:
    text, expected = BAD_SPECS[case]
    path = write(tmp_path, text)
    result = cli("lock", "--native", path, check=False)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.count("error:") == 1


def test_missing_spec_file_message() -> None:
    result = cli("show", "/nonexistent/venvstacks.toml", check=False)
    assert result.returncode == 2
    assert "stack file not found" in result.stderr


def test_unmatched_include_is_an_error_unless_allowed() -> None:
    spec = SAMPLE / "venvstacks.toml"
    result = cli("show", "--include", "app-nope", spec, check=False)
    assert result.returncode == 2 and "matches no layer" in result.stderr
    allowed = cli("show", "--json", "--include", "app-nope", "--allow-missing", spec)
    assert "matches no layer" in allowed.stderr


def test_module_hash_covers_name_and_content(tmp_path: Path) -> None:
    a = tmp_path / "a.py"
    a.write_text("x = 1\n")
    first = _spec.module_hash(a)
    a.write_text("x = 2\n")
    assert _spec.module_hash(a) != first
    b = tmp_path / "b.py"
    b.write_text("x = 2\n")
    assert _spec.module_hash(b) != _spec.module_hash(a)
    pkg = tmp_path / "pkg"
    (pkg / "__pycache__").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    before = _spec.module_hash(pkg)
    (pkg / "__pycache__" / "junk.pyc").write_bytes(b"\0")
    assert _spec.module_hash(pkg) == before  # caches never count
