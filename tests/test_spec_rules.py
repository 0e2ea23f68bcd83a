"""venvstacks 0.8's smaller stack-file rules: deprecated keys warn, ``platforms = []``
disables a layer, references and module names are checked in venvstacks' order.

The venvstacks behaviour each test mirrors is named in it (its ``stacks.py`` and
``tests/test_stack_specs.py`` / ``tests/test_minimal_project.py`` at 0.8.0).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _helpers import cli

from venvstacks_docker import spec as _spec
from venvstacks_docker.errors import SpecError

RUNTIME = """
[[runtimes]]
name = "rt"
python_implementation = "cpython@3.11.2"
requirements = []
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "app.py").write_text("print('hi')\n")
    path = tmp_path / "venvstacks.toml"
    path.write_text(textwrap.dedent(text))
    return path


def refused(tmp_path: Path, text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        _spec.load(write(tmp_path, text))
    return info.value


# --- deprecated keys ------------------------------------------------------------------

DEPRECATED = """
[[runtimes]]
name = "rt"
fully_versioned_name = "cpython@3.11.2"
requirements = []
build_requirements = ["setuptools"]

[[frameworks]]
name = "fw"
runtime = "rt"
requirements = []
build_requirements = []

[[applications]]
name = "app"
frameworks = ["fw"]
requirements = []
build_requirements = []
launch_module = "app.py"
"""


def test_deprecated_keys_still_load_with_one_warning_each(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    # venvstacks: a FutureWarning per layer for build_requirements (dropped) and one for
    # fully_versioned_name (converted to python_implementation)
    with caplog.at_level(logging.WARNING, logger="venvstacks_docker"):
        spec = _spec.load(write(tmp_path, DEPRECATED))
    assert spec.layer("rt").python_implementation == "cpython@3.11.2"
    assert list(spec.warnings) == [
        "[[runtimes]] 'rt': 'fully_versioned_name' is the deprecated name of 'python_implementation' "
        "(a FutureWarning in venvstacks): rename it",
        *(f"{where}: 'build_requirements' is deprecated and has no effect (a FutureWarning in venvstacks, "
          "which dropped it): remove it" for where in ("[[runtimes]] 'rt'", "[[frameworks]] 'fw'",
                                                        "[[applications]] 'app'")),
    ]
    assert [r.getMessage() for r in caplog.records] == list(spec.warnings)


def test_deprecated_keys_warn_through_the_output_channel_once(tmp_path: Path) -> None:
    result = cli("show", write(tmp_path, DEPRECATED))
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 4, result.stderr
    assert "fully_versioned_name" in notes[0] and all("build_requirements" in n for n in notes[1:])
    assert "*rt" in result.stdout  # and the stack is shown as usual


def test_a_builder_container_leaves_the_notes_to_the_host(tmp_path: Path) -> None:
    # inside a container (events on stderr) the file is loaded again: the host, which
    # loaded it first, has printed the notes already
    probe = ("import sys\nfrom venvstacks_docker import spec, ui\n"
             "ui.install(ui.EventReporter(verbosity=1))\nspec.load(sys.argv[1])\n")
    result = subprocess.run([sys.executable, "-c", probe, str(write(tmp_path, DEPRECATED))],
                            capture_output=True, text=True, check=True)
    events = [json.loads(line.partition(" ")[2]) for line in result.stderr.splitlines()]
    assert [e["event"] for e in events] == ["detail"] * 4
    assert "fully_versioned_name" in events[0]["message"]


def test_both_names_of_the_runtime_version_is_an_error(tmp_path: Path) -> None:
    text = DEPRECATED.replace('requirements = []\nbuild_requirements = ["setuptools"]',
                              'requirements = []\npython_implementation = "cpython@3.11.2"', 1)
    assert "set only one of 'python_implementation' and 'fully_versioned_name'" in refused(tmp_path, text).message


# --- platforms = [] ---------------------------------------------------------------------

DISABLED = RUNTIME + """
[[frameworks]]
name = "off"
runtime = "rt"
requirements = []
platforms = []

[[applications]]
name = "on"
runtime = "rt"
requirements = []
launch_module = "app.py"

[[applications]]
name = "inherits-off"
frameworks = ["off"]
requirements = []
launch_module = "app.py"
"""


def test_a_layer_without_platforms_is_left_out_of_everything(tmp_path: Path) -> None:
    # venvstacks: BuildEnvironment.all_environments() skips layers whose platforms are
    # empty, so they are never locked, built, published or shown (test_minimal_project.py)
    spec = _spec.load(write(tmp_path, DISABLED))
    assert [layer.env_name for layer in spec.declared_layers()] == ["rt", "framework-off", "app-on",
                                                                    "app-inherits-off"]
    assert [layer.env_name for layer in spec.all_layers()] == ["rt", "app-on"]
    assert spec.layer("app-inherits-off").platforms == ()  # inherited from its framework
    assert spec.derived_layers(spec.layer("rt")) == (spec.layer("app-on"),)


@pytest.mark.parametrize("command", [["show", "--json"], ["lock", "--json"], ["build", "--json"],
                                     ["publish", "--json"]])
def test_commands_never_select_a_disabled_layer(tmp_path: Path, command: list[str]) -> None:
    data = json.loads(cli(*command, write(tmp_path, DISABLED)).stdout)
    shown = [layer["name"] for kind in ("runtimes", "frameworks", "applications") for layer in data[kind]]
    assert shown == ["rt", "app-on"]
    if "plan" in data:
        assert [step["layer_name"] for step in data["plan"]["steps"]] == ["rt", "app-on"]


def test_including_a_disabled_layer_matches_nothing(tmp_path: Path) -> None:
    result = cli("lock", "--show-only", "--include", "*-off", write(tmp_path, DISABLED), check=False)
    assert result.returncode == 2 and "matches no layer" in result.stderr


# --- references and module names ------------------------------------------------------


@pytest.mark.parametrize(("tables", "expected"), [
    ('[[applications]]\nname = "empty"\nlaunch_module = "app.py"\nframeworks = ["framework"]\nrequirements = []\n',
     "[[applications]] 'empty': unknown framework 'framework'"),
    ('[[frameworks]]\nname = "layer"\nruntime = "cpython-3.11"\nrequirements = []\n',
     "[[frameworks]] 'layer': unknown runtime 'cpython-3.11'"),
])
def test_a_reference_to_a_missing_layer_is_named_even_without_runtimes(tmp_path: Path, tables: str,
                                                                       expected: str) -> None:
    # venvstacks' error_unknown_framework.toml / error_unknown_runtime.toml define no runtime
    assert refused(tmp_path, tables).message == expected


def test_a_stack_without_layers_still_asks_for_a_runtime(tmp_path: Path) -> None:
    assert refused(tmp_path, "[tool.uv]\n").message == "venvstacks.toml defines no [[runtimes]]"


@pytest.mark.parametrize(("modules", "expected"), [
    ('launch_module = "name.py"\nsupport_modules = ["conflicting/name"]',
     "the launch module 'name.py' and the support module 'conflicting/name' are both imported as 'name'"),
    ('launch_module = "app.py"\nsupport_modules = ["name.py", "conflicting/name"]',
     "conflicting support module names: 'conflicting/name' and 'name.py' are both imported as 'name'"),
])
def test_module_names_conflict_before_files_are_looked_for(tmp_path: Path, modules: str, expected: str) -> None:
    # venvstacks' error_launch_support_conflict.toml / error_support_modules_conflict.toml:
    # none of these modules exists, and the name conflict is what is reported
    text = RUNTIME + f'[[applications]]\nname = "layer"\nruntime = "rt"\nrequirements = []\n{modules}\n'
    assert expected in refused(tmp_path, text).message


def test_a_linearisation_failure_names_the_layer(tmp_path: Path) -> None:
    fws = "".join(f'[[frameworks]]\nname = "{n}"\n{deps}\nrequirements = []\n' for n, deps in [
        ("A", 'runtime = "rt"'), ("B", 'runtime = "rt"'), ("C", 'frameworks = ["A", "B"]'),
        ("D", 'frameworks = ["B", "A"]')])
    app = '[[applications]]\nname = "app"\nlaunch_module = "app.py"\nframeworks = ["C", "D"]\nrequirements = []\n'
    assert refused(tmp_path, RUNTIME + fws + app).message.startswith(
        "[[applications]] 'app': framework dependency linearisation failed")


def test_a_bad_linux_target_version_is_named(tmp_path: Path) -> None:
    text = RUNTIME.replace("requirements = []", 'requirements = []\nlinux_target = "glibc@235"')
    assert refused(tmp_path, text).message.endswith("linux_target version must be of the form 'X.Y', not '235'")
