"""venvstacks 0.8's own stack specs, run through this tool: the outcomes venvstacks' tests assert.

Every stack file here is read from venvstacks 0.8.0's test suite, in
``../shared/venvstacks-0.8.0/tests`` (release commit c2e47ed): ``stack_specs/`` (the
error, warning and lock-failure cases of its ``test_stack_specs.py``) and
``minimal_project/`` (its ``test_minimal_project.py``).  The expected outcomes are
venvstacks' (which spec fails, which layer fails to lock, the framework order of each
layer, the ``show`` tree); the message texts are this tool's own words for the same
finding, so each case names the words it looks for.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from _helpers import cli

VENVSTACKS_TESTS = Path(__file__).resolve().parents[2] / "shared" / "venvstacks-0.8.0" / "tests"
STACK_SPECS = VENVSTACKS_TESTS / "stack_specs"
MINIMAL = VENVSTACKS_TESTS / "minimal_project"

pytestmark = pytest.mark.skipif(not VENVSTACKS_TESTS.is_dir(),
                                reason=f"venvstacks 0.8.0's test suite is not at {VENVSTACKS_TESTS}")

# the exact override venvstacks suggests for its inconsistent-index cases
_OVERRIDE = r'inconsistent package index.*index_overrides = \{pytorch-cpu = "pytorch-cu128"\}'
# venvstacks' EXPECTED_STACK_SPEC_ERRORS, case by case: what our message must say
SPEC_ERRORS = {
    "error_inconsistent_app_indexes.toml": _OVERRIDE,
    "error_inconsistent_framework_indexes.toml": _OVERRIDE,
    "error_inconsistent_runtime_indexes.toml": _OVERRIDE,
    "error_inconsistent_platforms.toml": r"'invalid'.*win_amd64.*not supported by lower layers",
    "error_inconsistent_runtimes.toml": r"inconsistent frameworks",
    "error_invalid_linux_target_variant.toml": r"libc variant.*'glibc'.*not 'unknown'",
    "error_invalid_linux_target_version.toml": r"'X\.Y'.*'235'",
    "error_invalid_requirement_syntax.toml": r"invalid requirement",
    "error_launch_support_conflict.toml": r"'name'.*conflicts with|conflict.*'name'",
    "error_layer_dep_C3_conflict.toml": r"linearisation failed.*\['layer[A-D]', 'layer[A-D]'\]",
    "error_layer_dep_cycle.toml": r"unknown framework",
    "error_layer_dep_forward_reference.toml": r"unknown framework",
    "error_missing_launch_module.toml": r"launch_module.*does not exist",
    "error_missing_layer_name.toml": r"missing 'name'",
    "error_missing_support_modules.toml": r"support_modules.*does not exist",
    "error_support_modules_conflict.toml": r"support module names|conflicting support module",
    "error_unknown_framework.toml": r"unknown framework",
    "error_unknown_runtime.toml": r"unknown runtime",
    "error_unknown_package_index.toml": r"unknown package index",
    "error_unknown_platform.toml": r"cpython-3\.11.*unknown platform 'win32_x86_64'",
    "error_unknown_priority_index.toml": r"unknown package index",
}


def test_every_error_case_of_venvstacks_is_covered() -> None:
    assert sorted(p.name for p in STACK_SPECS.glob("error_*")) == sorted(SPEC_ERRORS)


@pytest.mark.parametrize("name", sorted(SPEC_ERRORS))
def test_a_spec_venvstacks_refuses_is_refused_with_one_clear_message(name: str) -> None:
    result = cli("show", STACK_SPECS / name, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert re.search(SPEC_ERRORS[name], result.stderr, re.IGNORECASE | re.DOTALL), result.stderr


def test_at_symbol_layer_names_load_with_their_versioning() -> None:
    data = json.loads(cli("show", STACK_SPECS / "at_symbol.toml", "--json").stdout)
    targets = {r["name"]: r["install_target"] for r in data["runtimes"]}
    assert list(targets) == ["cpython@3.11", "cpython@3.12"]
    # unversioned: deployed under its name; versioned: name@<lock version> ('@???' until locked)
    assert targets["cpython@3.11"] == "cpython@3.11" and targets["cpython@3.12"] == "cpython@3.12@???"


@pytest.mark.parametrize(("name", "field"), [("warning_fully_versioned.toml", "fully_versioned_name"),
                                             ("warning_build_requirements.toml", "build_requirements")])
def test_deprecated_fields_warn_and_the_spec_still_loads(name: str, field: str) -> None:
    result = cli("show", STACK_SPECS / name)
    assert field in result.stderr and "warning" in result.stderr.lower(), result.stderr


def test_show_prints_venvstacks_tree_for_the_minimal_project() -> None:
    # venvstacks 0.8.0 tests/test_minimal_project.py EXPECTED_SHOW_RESULT, with every
    # layer unlocked (a copy without locks) and the disabled layer (platforms = []) left out
    result = cli("show", MINIMAL / "venvstacks.toml", env={**_env(), "COLUMNS": "200"})
    lines = result.stdout.splitlines()[1:]
    assert lines[:4] == ["├── Runtimes", "│   └── *cpython-3.11", "├── Frameworks", "│   ├── *framework-layerA"]
    assert "│   │   └── *cpython-3.11" in lines  # lower layers carry their own lock mark
    assert not any("app-disabled" in line for line in lines)
    app = lines.index("    ├── *app-empty")
    assert [line.strip(" │├└─*") for line in lines[app + 1:app + 8]] == [
        "framework-layerD", "framework-layerF@1", "framework-layerE", "framework-layerB", "framework-layerC",
        "framework-layerA", "cpython-3.11"]


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


# --- locking and building (network, runtime) -----------------------------------------


@pytest.fixture(scope="module")
def runtime_3_11_11(runtime_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Our CPython 3.11.2 runtime archive, offered under the 3.11.11 that venvstacks'
    specs name (as ../shared/venvstacks-0.8.0/README.md suggests for venvstacks itself)."""
    folder = tmp_path_factory.mktemp("runtimes")
    shutil.copyfile(runtime_archive, folder / runtime_archive.name.replace("3.11.2", "3.11.11"))
    return folder


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.runtime
@pytest.mark.parametrize(("name", "layer"), [("lock_failure_conflict_between_layers.toml", "framework-numpy"),
                                             ("lock_failure_conflict_within_layer.toml", "cpython-3.11")])
def test_a_lock_venvstacks_cannot_make_fails_naming_the_layer(name: str, layer: str, runtime_3_11_11: Path,
                                                              tmp_path: Path) -> None:
    shutil.copyfile(STACK_SPECS / name, tmp_path / name)
    result = cli("lock", "--native", tmp_path / name, "--runtime-source", runtime_3_11_11, check=False)
    assert result.returncode == 3, result.stderr
    assert re.search(rf"lock.*{re.escape(layer)}|{re.escape(layer)}.*lock", result.stderr, re.IGNORECASE), \
        result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.runtime
def test_the_minimal_project_locks_publishes_and_deploys_as_in_venvstacks(runtime_3_11_11: Path,
                                                                          tmp_path: Path) -> None:
    project = tmp_path / "minimal_project"
    shutil.copytree(MINIMAL, project)
    spec = project / "venvstacks.toml"
    cli("lock", "--native", spec, "--runtime-source", runtime_3_11_11)
    assert not (project / "requirements" / "app-disabled").exists()  # platforms = []: never locked
    cli("build", "--native", "--publish", spec, "--runtime-source", runtime_3_11_11)
    out = project / "_artifacts"
    manifest = json.loads((out / "__venvstacks__" / "venvstacks.json").read_text())
    apps = {a["install_target"]: a for a in manifest["layers"]["applications"]}
    assert sorted(apps) == ["app-empty", "app-no-framework"]
    frameworks = {f["install_target"] for f in manifest["layers"]["frameworks"]}
    assert "framework-layerF@1" in frameworks  # '@' in a layer name, as venvstacks allows
    # empty.py's hash as venvstacks' own expected manifests record it (tests/sample_project)
    assert apps["app-empty"]["app_launch_module_hash"] == \
        "sha256:f0db47066ec1e276e17579c221969006dde88da71e26bf5ddbfae356fa7c8fe7"
    deployed = tmp_path / "deployed"
    cli("deploy", out, deployed)
    python = deployed / "app-empty" / "bin" / "python"
    paths = subprocess.run([str(python), "-c", "import sys, json; print(json.dumps(sys.path))"], capture_output=True,
                           text=True, check=True).stdout
    layers = [p.split("/")[-4] for p in json.loads(paths) if p.endswith("site-packages")]
    # venvstacks' EXPECTED_APPLICATIONS: the app, then D, F@1, E, B, C, A, then the runtime
    assert layers == ["app-empty", "framework-layerD", "framework-layerF@1", "framework-layerE",
                      "framework-layerB", "framework-layerC", "framework-layerA", "cpython-3.11"]
