"""Package index settings: package_indexes, priority_indexes and index_overrides, as venvstacks 0.8.

Checked when the stack file loads (exit code 2, one message naming the layer and the fix):
unknown index names, a distribution spelt twice, and lower layers that disagree about
an index without an ``index_overrides`` entry accepting it.  What uv then gets for a
layer is one source per normalised distribution name, the override's choice winning;
the last test locks a real stack against two local indexes to show it.
"""

from __future__ import annotations

import json
import textwrap
import tomllib
from pathlib import Path

import pytest
import tomli_w
from _helpers import cli

from venvstacks_docker import lock as _lock
from venvstacks_docker import spec as _spec
from venvstacks_docker.errors import SpecError

VENVSTACKS_SPECS = Path(__file__).resolve().parents[2] / "shared" / "venvstacks-0.8.0" / "tests" / "stack_specs"

INDEXES = """
[[tool.uv.index]]
name = "pytorch-cpu"
url = "https://download.pytorch.org/whl/cpu"
explicit = true

[[tool.uv.index]]
name = "pytorch-cu128"
url = "https://download.pytorch.org/whl/cu128"
explicit = true
"""

RUNTIME = """
[[runtimes]]
name = "rt"
python_implementation = "cpython@3.11.2"
requirements = []
"""


def load(tmp_path: Path, text: str) -> _spec.StackSpec:
    (tmp_path / "app.py").write_text("print('hi')\n")
    path = tmp_path / "venvstacks.toml"
    path.write_text(textwrap.dedent(text))
    return _spec.load(path)


def layer_table(name: str, deps: str, indexes: str = "", overrides: str = "", kind: str = "frameworks") -> str:
    extra = 'launch_module = "app.py"\n' if kind == "applications" else ""
    text = f'\n[[{kind}]]\nname = "{name}"\n{deps}\nrequirements = []\n{extra}'
    if indexes:
        text += f"package_indexes = {{ {indexes} }}\n"
    if overrides:
        text += f"index_overrides = {{ {overrides} }}\n"
    return text


def refused(tmp_path: Path, text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        load(tmp_path, text)
    return info.value


# --- unknown names and double spellings ---------------------------------------------


def test_an_unknown_index_in_package_indexes_is_refused_at_load_with_a_suggestion(tmp_path: Path) -> None:
    err = refused(tmp_path, RUNTIME + layer_table("fw", 'runtime = "rt"', 'torch = "pytorch-cu12"') + INDEXES)
    assert err.message == ("[[frameworks]] 'fw': package_indexes takes 'torch' from an unknown package index "
                           "'pytorch-cu12'")
    assert err.hint == "did you mean 'pytorch-cu128'?"


def test_an_unknown_priority_index_is_refused_at_load(tmp_path: Path) -> None:
    text = RUNTIME.replace("requirements = []", 'requirements = []\npriority_indexes = ["gpu"]') + INDEXES
    err = refused(tmp_path, text)
    assert err.message == "[[runtimes]] 'rt': priority_indexes names an unknown package index 'gpu'"
    assert err.hint is not None and "pytorch-cpu, pytorch-cu128" in err.hint


def test_a_stack_without_named_indexes_says_how_to_define_one(tmp_path: Path) -> None:
    err = refused(tmp_path, RUNTIME + layer_table("fw", 'runtime = "rt"', 'torch = "gpu"'))
    assert err.hint == 'define it as a [[tool.uv.index]] table with name = "gpu" and its url'


def test_an_unknown_index_in_uv_sources_is_refused_at_load(tmp_path: Path) -> None:
    err = refused(tmp_path, RUNTIME + INDEXES + '\n[tool.uv.sources]\ntorch = { index = "pytorch-cuda" }\n')
    assert "[tool.uv.sources] 'torch' names an unknown package index 'pytorch-cuda'" in err.message


@pytest.mark.parametrize("where", ["layer", "sources"])
def test_one_distribution_spelt_twice_is_refused(tmp_path: Path, where: str) -> None:
    if where == "layer":
        text = RUNTIME + layer_table("fw", 'runtime = "rt"', 'torch = "pytorch-cpu", Torch = "pytorch-cpu"') + INDEXES
    else:
        text = RUNTIME + INDEXES + ('\n[tool.uv.sources]\ntorch = { index = "pytorch-cpu" }\n'
                                    'Torch = { index = "pytorch-cpu" }\n')
    err = refused(tmp_path, text)
    assert "names the distribution 'torch' twice ('torch' and 'Torch')" in err.message
    assert err.hint is not None and "normalised" in err.hint


def test_an_override_naming_no_index_is_a_warning_not_an_error(tmp_path: Path) -> None:
    text = RUNTIME + layer_table("fw", 'runtime = "rt"', overrides='pytorch-cpu = "pytorch-cu129"') + INDEXES
    spec = load(tmp_path, text)
    assert spec.warnings == ("[[frameworks]] 'fw': index_overrides entry pytorch-cpu = 'pytorch-cu129' names "
                             "'pytorch-cu129', not a named index of [[tool.uv.index]]; it can never apply",)


# --- inheritance, conflicts and overrides ------------------------------------------


def test_names_are_normalised_and_tables_inherited(tmp_path: Path) -> None:
    text = (RUNTIME.replace("requirements = []", 'requirements = []\npackage_indexes = { "Torch_Vision" = '
                            '"pytorch-cpu" }')
            + layer_table("fw", 'runtime = "rt"', 'torcH = "pytorch-cpu"')
            + layer_table("app", 'frameworks = ["fw"]', kind="applications") + INDEXES)
    spec = load(tmp_path, text)
    assert spec.layer("rt").package_indexes == (("torch-vision", "pytorch-cpu"),)
    expected = {"torch": "pytorch-cpu", "torch-vision": "pytorch-cpu"}
    assert spec.package_indexes_of(spec.layer("framework-fw")) == expected
    assert spec.package_indexes_of(spec.layer("app-app")) == expected


def test_frameworks_that_disagree_need_an_override_and_the_first_one_wins(tmp_path: Path) -> None:
    fws = (RUNTIME + layer_table("cpu", 'runtime = "rt"', 'torcH = "pytorch-cpu"')
           + layer_table("gpu", 'runtime = "rt"', 'Torch = "pytorch-cu128"'))
    err = refused(tmp_path, fws + layer_table("app", 'frameworks = ["gpu", "cpu"]', kind="applications") + INDEXES)
    assert err.message == ("[[applications]] 'app': inconsistent package index settings for 'torch': "
                           "framework-gpu takes it from 'pytorch-cu128', framework-cpu from 'pytorch-cpu'")
    assert err.hint is not None and err.hint.endswith('index_overrides = {pytorch-cpu = "pytorch-cu128"}')
    spec = load(tmp_path, fws + layer_table("app", 'frameworks = ["gpu", "cpu"]',
                                            overrides='pytorch-cpu = "pytorch-cu128"', kind="applications")
                + INDEXES)
    assert spec.package_indexes_of(spec.layer("app-app")) == {"torch": "pytorch-cu128"}


@pytest.mark.parametrize("below", ["runtime", "framework"])
def test_a_layer_that_overrides_what_it_inherits_must_say_so(tmp_path: Path, below: str) -> None:
    if below == "runtime":
        stack, deps, lower = (RUNTIME.replace("requirements = []", 'requirements = []\npackage_indexes = '
                                              '{ torcH = "pytorch-cpu" }'), 'runtime = "rt"', "rt")
    else:
        stack, deps, lower = (RUNTIME + layer_table("cpu", 'runtime = "rt"', 'torcH = "pytorch-cpu"'),
                              'frameworks = ["cpu"]', "framework-cpu")
    err = refused(tmp_path, stack + layer_table("app", deps, 'Torch = "pytorch-cu128"', kind="applications")
                  + INDEXES)
    assert err.message == ("[[applications]] 'app': inconsistent package index settings for 'torch': its "
                           f"package_indexes take it from 'pytorch-cu128', but the lower layer {lower} takes it "
                           "from 'pytorch-cpu'")
    assert err.hint == ("to take it from 'pytorch-cu128' in this layer anyway, add "
                        'index_overrides = {pytorch-cpu = "pytorch-cu128"}')
    spec = load(tmp_path, stack + layer_table("app", deps, 'Torch = "pytorch-cu128"',
                                              'pytorch-cpu = "pytorch-cu128"', kind="applications") + INDEXES)
    assert spec.package_indexes_of(spec.layer("app-app")) == {"torch": "pytorch-cu128"}
    assert spec.package_indexes_of(spec.layer(lower)) == {"torch": "pytorch-cpu"}  # below: unchanged


def test_the_suggested_override_quotes_index_names_toml_needs_quoted(tmp_path: Path) -> None:
    indexes = INDEXES.replace('"pytorch-cpu"', '"pytorch.cpu"')
    stack = RUNTIME + layer_table("cpu", 'runtime = "rt"', 'torch = "pytorch.cpu"')
    app = 'frameworks = ["cpu"]', 'torch = "pytorch-cu128"'
    hint = refused(tmp_path, stack + layer_table("app", *app, kind="applications") + indexes).hint
    assert hint is not None and hint.endswith('index_overrides = {"pytorch.cpu" = "pytorch-cu128"}')
    spec = load(tmp_path, stack + layer_table("app", *app, '"pytorch.cpu" = "pytorch-cu128"', kind="applications")
                + indexes)
    assert spec.package_indexes_of(spec.layer("app-app")) == {"torch": "pytorch-cu128"}


def test_a_conflict_is_one_clear_error_on_the_command_line(tmp_path: Path) -> None:
    text = (RUNTIME + layer_table("cpu", 'runtime = "rt"', 'torch = "pytorch-cpu"')
            + layer_table("app", 'frameworks = ["cpu"]', 'torch = "pytorch-cu128"', kind="applications") + INDEXES)
    (tmp_path / "app.py").write_text("")
    (tmp_path / "venvstacks.toml").write_text(text)
    result = cli("lock", "--native", tmp_path / "venvstacks.toml", check=False)
    assert result.returncode == 2
    assert result.stderr.count("error:") == 1 and "Traceback" not in result.stderr
    assert 'index_overrides = {pytorch-cpu = "pytorch-cu128"}' in result.stderr


@pytest.mark.skipif(not VENVSTACKS_SPECS.is_dir(), reason=f"venvstacks 0.8.0's tests are not at {VENVSTACKS_SPECS}")
@pytest.mark.parametrize("case", ["app", "framework", "runtime"])
def test_the_layers_venvstacks_accepts_with_an_override_load_here(tmp_path: Path, case: str) -> None:
    # venvstacks 0.8.0 tests/stack_specs/error_inconsistent_<case>_indexes.toml: its
    # 'override' application is accepted, its 'invalid' one refused (test_stack_specs.py)
    data = tomllib.loads((VENVSTACKS_SPECS / f"error_inconsistent_{case}_indexes.toml").read_text("utf-8"))
    data["applications"] = [app for app in data["applications"] if app["name"] == "override"]
    (tmp_path / "specs").mkdir()
    (tmp_path / "minimal_project").mkdir()
    (tmp_path / "minimal_project" / "empty.py").write_text("")
    path = tmp_path / "specs" / "venvstacks.toml"
    path.write_text(tomli_w.dumps(data))
    spec = _spec.load(path)
    assert spec.package_indexes_of(spec.layer("app-override")) == {"torch": "pytorch-cu128"}


# --- what uv gets -------------------------------------------------------------------


def test_uv_gets_one_source_per_name_and_priority_indexes_only_where_set(tmp_path: Path) -> None:
    text = (RUNTIME.replace("requirements = []", 'requirements = []\npackage_indexes = { torcH = "pytorch-cpu" }')
            + layer_table("gpu", 'runtime = "rt"', 'TORCH = "pytorch-cu128"', 'pytorch-cpu = "pytorch-cu128"')
            + 'priority_indexes = ["pytorch-cu128", "pytorch-cpu"]\n'
            + layer_table("app", 'frameworks = ["gpu"]', kind="applications")
            + INDEXES + '\n[tool.uv.sources]\n"Numpy" = { index = "pytorch-cpu" }\n')
    spec = load(tmp_path, text)
    options = _lock.IndexOptions()
    rt, gpu, app = (_lock._uv_config(spec, spec.layer(name), options) for name in ("rt", "framework-gpu", "app-app"))
    assert rt["sources"] == {"numpy": {"index": "pytorch-cpu"}, "torch": {"index": "pytorch-cpu"}}
    assert gpu["sources"] == app["sources"] == {"numpy": {"index": "pytorch-cpu"},
                                                "torch": {"index": "pytorch-cu128"}}
    assert [(i["name"], i["explicit"]) for i in gpu["index"]] == [("pytorch-cu128", False), ("pytorch-cpu", False)]
    assert [(i["name"], i["explicit"]) for i in app["index"]] == [("pytorch-cpu", True), ("pytorch-cu128", True)]
    json.dumps(app)  # plain data, ready for the resolve project's pyproject.toml


# --- a real lock ----------------------------------------------------------------------

LOCKED_STACK = """
[[runtimes]]
name = "cpython-3.11"
python_implementation = "cpython@3.11.2"
requirements = []
platforms = ["linux_x86_64"]
package_indexes = { Tabulate = "index-a" }

[[applications]]
name = "inherits"
launch_module = "app.py"
runtime = "cpython-3.11"
requirements = ["tabulate", "six"]

[[applications]]
name = "overrides"
launch_module = "app.py"
runtime = "cpython-3.11"
requirements = ["tabulate", "six"]
package_indexes = { TABULATE = "index-b", six = "index-b" }
index_overrides = { index-a = "index-b" }

[[applications]]
name = "disabled"
launch_module = "app.py"
runtime = "cpython-3.11"
requirements = ["tabulate"]
platforms = []

[[tool.uv.index]]
name = "index-a"
url = "INDEX_A"
explicit = true

[[tool.uv.index]]
name = "index-b"
url = "INDEX_B"
explicit = true

[tool.uv.sources]
Six = { index = "index-a" }
"""


@pytest.mark.network  # the served wheels come from PyPI once (then from the cache)
@pytest.mark.runtime
@pytest.mark.slow
def test_a_real_lock_takes_each_package_from_the_index_its_settings_name(tmp_path: Path,
                                                                         runtime_archive: Path) -> None:
    from _private_index import private_index

    with private_index(require_auth=False) as a, private_index(require_auth=False) as b:
        (tmp_path / "app.py").write_text("import tabulate, six\n")
        path = tmp_path / "venvstacks.toml"
        path.write_text(LOCKED_STACK.replace("INDEX_A", a.url).replace("INDEX_B", b.url))
        cli("lock", "--native", path)
        spec = _spec.load(path)

        def resolved(env: str) -> tuple[dict[str, object], dict[str, str]]:
            project = tomllib.loads((tmp_path / "_build" / f"{env}_resolve" / "pyproject.toml").read_text())
            pylock = _lock.read_pylock(_lock.lock_paths(spec, spec.layer(env)).pylock)
            return project["tool"]["uv"]["sources"], {p["name"]: p["index"] for p in pylock["packages"]}

        # one source per normalised name (Six/six, Tabulate/TABULATE), the layer's own winning
        sources, taken = resolved("app-inherits")
        assert sources == {"six": {"index": "index-a"}, "tabulate": {"index": "index-a"}}
        assert taken == {"six": a.url, "tabulate": a.url}
        sources, taken = resolved("app-overrides")
        assert sources == {"six": {"index": "index-b"}, "tabulate": {"index": "index-b"}}
        assert taken == {"six": b.url, "tabulate": b.url}
        assert any(r.path == "/simple/tabulate/" for r in b.requests)
    assert not (tmp_path / "requirements" / "app-disabled").exists()  # platforms = []: never locked
    assert sorted(p.name for p in (tmp_path / "requirements").iterdir()) == [
        "app-inherits", "app-overrides", "cpython-3.11"]
