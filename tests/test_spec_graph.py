"""Framework graphs: C3 order as venvstacks computes it, each framework linearised once.

Loading used to re-linearise every framework recursively for every layer above it, which
is exponential in the depth of a diamond-shaped graph (depth 18 took a minute, depth 40
never finished).  Speed is measured by ``benchmarks/bench_spec_loading.py``; the tests
here check the results, and that the big specs load at all within a generous timeout.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from venvstacks_docker import spec as _spec
from venvstacks_docker.errors import SpecError
from venvstacks_docker.spec_graph import FrameworkGraph, c3_merge

RUNTIME = """\
[[runtimes]]
name = "cpython-3.11"
python_implementation = "cpython@3.11.2"
requirements = []

"""


def framework(name: str, deps: list[str]) -> str:
    ref = f"frameworks = {json.dumps(deps)}" if deps else 'runtime = "cpython-3.11"'
    return f'[[frameworks]]\nname = "{name}"\n{ref}\nrequirements = []\n\n'


def application(name: str, deps: list[str], module: str = "launch.py") -> str:
    return (f'[[applications]]\nname = "{name}"\nlaunch_module = "{module}"\n'
            f"frameworks = {json.dumps(deps)}\nrequirements = []\n\n")


def diamond_spec(folder: Path, depth: int) -> Path:
    """Each level: frameworks a<i> and b<i>, both listing [a<i-1>, b<i-1>]; one app on top."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "launch.py").write_text("print('hi')\n")
    text = RUNTIME
    for i in range(depth):
        deps = [] if i == 0 else [f"a{i - 1}", f"b{i - 1}"]
        text += framework(f"a{i}", deps) + framework(f"b{i}", deps)
    text += application("top", [f"a{depth - 1}", f"b{depth - 1}"])
    (folder / "venvstacks.toml").write_text(text)
    return folder / "venvstacks.toml"


def test_small_diamond_in_exact_c3_order(tmp_path: Path) -> None:
    spec = _spec.load(diamond_spec(tmp_path, 3))
    order = [layer.name for layer in spec.lower_layers(spec.layer("app-top"))]
    assert order == ["a2", "b2", "a1", "b1", "a0", "b0", "cpython-3.11"]
    assert [layer.name for layer in spec.lower_layers(spec.layer("framework-b1"))] == [
        "a0", "b0", "cpython-3.11"]
    # derived layers, from the memoised table: everything above a0, in file order
    assert [layer.env_name for layer in spec.derived_layers(spec.layer("framework-a0"))] == [
        "framework-a1", "framework-b1", "framework-a2", "framework-b2", "app-top"]
    assert [layer.env_name for layer in spec.derived_layers(spec.layer("app-top"))] == []
    assert len(spec.derived_layers(spec.layer("cpython-3.11"))) == 7


def _textbook_c3(seqs: list[list[str]]) -> list[str]:
    """The former implementation's merge loop, kept as the reference."""
    seqs = [list(s) for s in seqs]
    result: list[str] = []
    while True:
        seqs = [s for s in seqs if s]
        if not seqs:
            return result
        for seq in seqs:
            head = seq[0]
            if not any(head in s[1:] for s in seqs):
                break
        else:
            raise SpecError(f"framework dependency linearisation failed (remaining sequences: {seqs})")
        result.append(head)
        for s in seqs:
            if s and s[0] == head:
                del s[0]


def test_fast_merge_gives_the_textbook_result_and_error() -> None:
    rng = random.Random(7)
    outcomes = {"merged": 0, "failed": 0}
    for _ in range(3000):
        names = [f"f{i}" for i in range(rng.randint(1, 7))]
        seqs = [rng.sample(names, rng.randint(0, len(names))) for _ in range(rng.randint(1, 4))]
        try:
            expected: list[str] | str = _textbook_c3(seqs)
        except SpecError as exc:
            expected = exc.message
        try:
            got: list[str] | str = c3_merge(seqs)
        except SpecError as exc:
            got = exc.message
        assert got == expected, seqs
        outcomes["merged" if isinstance(got, list) else "failed"] += 1
    assert min(outcomes.values()) > 100  # both paths were exercised


def test_graph_without_recursion_and_cycle_safe() -> None:
    chain = {f"f{i}": ([f"f{i - 1}"] if i else []) for i in range(1500)}
    graph = FrameworkGraph(chain)
    order = graph.linearise(["f1499"])  # deeper than Python's recursion limit
    assert len(order) == 1500 and order[0] == "f1499" and order[-1] == "f0"
    with pytest.raises(SpecError, match="cycle"):
        FrameworkGraph({"a": ["b"], "b": ["a"]}).linearise(["a"])


def test_inconsistent_order_is_still_reported_at_load(tmp_path: Path) -> None:
    (tmp_path / "launch.py").write_text("")
    path = tmp_path / "venvstacks.toml"
    path.write_text(RUNTIME + framework("A", []) + framework("B", ["A"]) + framework("C", ["A", "B"]))
    with pytest.raises(SpecError, match=r"linearisation failed \(remaining sequences: "
                                        r"\[\['A'\], \['B', 'A'\], \['A', 'B'\]\]\)"):
        _spec.load(path)


LOAD_BIG_SPECS = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from test_spec_graph import diamond_spec, wide_spec
    from venvstacks_docker import spec

    root = Path(sys.argv[1])
    deep = spec.load(diamond_spec(root / "diamond", 40))
    wide = spec.load(wide_spec(root / "wide"))
    top = [layer.name for layer in deep.lower_layers(deep.layer("app-top"))]
    app = wide.applications[-1]
    print(json.dumps({
        "deep_top": top,
        "deep_derived_a0": len(deep.derived_layers(deep.layer("framework-a0"))),
        "wide_layers": len(wide.all_layers()),
        "wide_last_app": [app.name, [layer.name for layer in wide.lower_layers(app)]],
        "wide_derived": [len(wide.derived_layers(layer)) for layer in wide.all_layers()],
    }))
""")


def wide_spec(folder: Path, frameworks: int = 250, apps: int = 249) -> Path:
    """A 500-layer stack: a runtime, frameworks f<i> listing [f<i-1>, f<i-2>], and
    applications app<i> (each with its own launch module) on framework f<i>."""
    (folder / "launch_modules").mkdir(parents=True, exist_ok=True)
    text = RUNTIME
    for i in range(frameworks):
        text += framework(f"f{i}", [f"f{j}" for j in (i - 1, i - 2) if j >= 0])
    for i in range(apps):
        (folder / "launch_modules" / f"app{i}.py").write_text(f"print({i})\n")
        text += application(f"app{i}", [f"f{i}"], f"launch_modules/app{i}.py")
    (folder / "venvstacks.toml").write_text(text)
    return folder / "venvstacks.toml"


def test_deep_diamond_and_500_layer_specs_load(tmp_path: Path) -> None:
    # exponential linearisation never finishes these; memoised it takes a fraction of a
    # second (benchmarks/bench_spec_loading.py measures it): the timeout is generous
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_BIG_SPECS, str(tmp_path), str(Path(__file__).parent)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    top = result["deep_top"]
    assert len(top) == 81 and top[:4] == ["a39", "b39", "a38", "b38"]
    assert top[-3:] == ["a0", "b0", "cpython-3.11"]
    assert top[:-1] == [f"{n}{i}" for i in range(39, -1, -1) for n in "ab"]
    assert result["deep_derived_a0"] == 2 * 39 + 1
    assert result["wide_layers"] == 500
    name, lower = result["wide_last_app"]
    assert name == "app248"
    assert lower == [f"f{i}" for i in range(248, -1, -1)] + ["cpython-3.11"]
    derived = result["wide_derived"]
    assert derived[0] == 499  # everything sits on the runtime
    assert derived[1] == 249 + 249  # f0: every framework above it and every application
    assert derived[-1] == 0
