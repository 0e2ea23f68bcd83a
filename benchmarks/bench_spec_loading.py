#!/usr/bin/env python3
"""Time loading big stack files: diamond-shaped framework graphs and a 500-layer stack.

Run from the repository root with the project's dev venv::

    .venv/bin/python benchmarks/bench_spec_loading.py [--repeat N] [--depths 10,20,30,40]
        [--baseline-ref REF --baseline-depths 12,14,16 --baseline-timeout 120]
        [--update-doc docs/benchmarks.md]

It writes the stack files into a temporary folder and, for each one, times
``venvstacks_docker.spec.load`` (best and median of ``--repeat`` loads, each in the same
fresh worker process) and then ``derived_layers`` for every layer (what ``--include``
with dependants does).  Stacks:

* ``diamond-N``: a runtime, then N levels of two frameworks ``a<i>``/``b<i>`` that both
  list ``[a<i-1>, b<i-1>]``, and one application on ``[a<N-1>, b<N-1>]``;
* ``wide-500``: a runtime, 250 frameworks ``f<i>`` listing ``[f<i-1>, f<i-2>]`` and 249
  applications, each with its own launch module, on ``f<i>``: 500 layers.

With ``--baseline-ref`` the same stacks are also loaded with the ``src/`` of that git
commit (``git archive``), with a timeout per stack, to show the difference; a baseline
that linearises frameworks recursively grows exponentially with the diamond depth, so
keep ``--baseline-depths`` small.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _docblock import update_block  # the script's own folder is on sys.path

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = """\
[[runtimes]]
name = "cpython-3.11"
python_implementation = "cpython@3.11.2"
requirements = []

"""


def _framework(name: str, deps: list[str]) -> str:
    ref = f"frameworks = {json.dumps(deps)}" if deps else 'runtime = "cpython-3.11"'
    return f'[[frameworks]]\nname = "{name}"\n{ref}\nrequirements = []\n\n'


def _application(name: str, deps: list[str], module: str) -> str:
    return (f'[[applications]]\nname = "{name}"\nlaunch_module = "{module}"\n'
            f"frameworks = {json.dumps(deps)}\nrequirements = []\n\n")


def diamond_spec(folder: Path, depth: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "launch.py").write_text("print('hi')\n")
    text = RUNTIME
    for i in range(depth):
        deps = [] if i == 0 else [f"a{i - 1}", f"b{i - 1}"]
        text += _framework(f"a{i}", deps) + _framework(f"b{i}", deps)
    text += _application("top", [f"a{depth - 1}", f"b{depth - 1}"], "launch.py")
    (folder / "venvstacks.toml").write_text(text)
    return folder / "venvstacks.toml"


def wide_spec(folder: Path, frameworks: int = 250, apps: int = 249) -> Path:
    (folder / "launch_modules").mkdir(parents=True, exist_ok=True)
    text = RUNTIME
    for i in range(frameworks):
        text += _framework(f"f{i}", [f"f{j}" for j in (i - 1, i - 2) if j >= 0])
    for i in range(apps):
        (folder / "launch_modules" / f"app{i}.py").write_text(f"print({i})\n")
        text += _application(f"app{i}", [f"f{i}"], f"launch_modules/app{i}.py")
    (folder / "venvstacks.toml").write_text(text)
    return folder / "venvstacks.toml"


# --- worker: runs in a fresh process, with the source tree under test on sys.path -----


def worker(spec_path: str, repeat: int) -> None:
    from venvstacks_docker import spec as _spec

    loads = []
    for _ in range(repeat):
        start = time.perf_counter()
        spec = _spec.load(spec_path)
        loads.append(time.perf_counter() - start)
    start = time.perf_counter()
    for layer in spec.all_layers():
        spec.derived_layers(layer)
    derived = time.perf_counter() - start
    print(json.dumps({"loads": loads, "derived": derived, "layers": len(spec.all_layers()),
                      "module": _spec.__file__}))


def run_worker(spec_path: Path, repeat: int, src: Path | None, timeout: float) -> dict | None:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    try:
        proc = subprocess.run([sys.executable, __file__, "--worker", str(spec_path), "--repeat", str(repeat)],
                              capture_output=True, text=True, env=env, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return None
    return json.loads(proc.stdout)


def baseline_src(ref: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "src"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def measure(args: argparse.Namespace, root: Path) -> list[str]:
    """Generate the stacks under ``root``, time them; the report as Markdown lines."""
    depths = [int(d) for d in args.depths.split(",")]
    stacks = {f"diamond-{d}": diamond_spec(root / f"diamond-{d}", d) for d in depths}
    stacks["wide-500"] = wide_spec(root / "wide-500")
    lines = [f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load average at the start "
             f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())} (1/5/15 min); best and median of "
             f"{args.repeat} loads in one process.", "",
             "| stack | layers | `spec.load`, best | `spec.load`, median | `derived_layers` of every layer |",
             "|---|---:|---:|---:|---:|"]
    print("\n".join(lines), flush=True)
    for name, path in stacks.items():
        result = run_worker(path, args.repeat, None, timeout=600)
        assert result is not None
        lines.append(f"| {name} | {result['layers']} | {_ms(min(result['loads']))} | "
                     f"{_ms(statistics.median(result['loads']))} | {_ms(result['derived'])} |")
        print(lines[-1], flush=True)
    if not args.baseline_ref:
        return lines
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", args.baseline_ref],
                            capture_output=True, text=True, check=True).stdout.strip()
    src = baseline_src(args.baseline_ref, root)
    base_depths = [int(d) for d in args.baseline_depths.split(",")]
    base = {f"diamond-{d}": diamond_spec(root / f"base-diamond-{d}", d) for d in base_depths}
    lines += ["", f"Baseline: the same stacks loaded once with `src/` of commit `{commit}` "
                  f"(`--baseline-ref {args.baseline_ref}`), timeout {args.baseline_timeout:.0f} s "
                  "per stack:", "",
              "| stack | layers | `spec.load` | `derived_layers` of every layer |", "|---|---:|---:|---:|"]
    print("\n".join(lines[-5:]), flush=True)
    for name, path in {**base, "wide-500": stacks["wide-500"]}.items():
        result = run_worker(path, 1, src, timeout=args.baseline_timeout)
        if result is None:
            tables = sum(line.startswith("[[") for line in path.read_text().splitlines())
            lines.append(f"| {name} | {tables} | not finished after {args.baseline_timeout:.0f} s | |")
        else:
            lines.append(f"| {name} | {result['layers']} | {result['loads'][0]:.2f} s | "
                         f"{result['derived']:.2f} s |")
        print(lines[-1], flush=True)
    return lines




INTRO = """\
## Loading big stack files

`benchmarks/bench_spec_loading.py` times `venvstacks_docker.spec.load` on generated stack
files, each in a fresh worker process, and then `derived_layers` for every layer:

- `diamond-N`: a runtime, N levels of two frameworks `a<i>` and `b<i>` that both list
  `[a<i-1>, b<i-1>]`, and one application on the top level (2N + 2 layers);
- `wide-500`: a runtime, 250 frameworks `f<i>` listing `[f<i-1>, f<i-2>]` and 249
  applications with a launch module each (500 layers).

Each framework's C3 linearisation is computed once per loaded stack and reused, so the
load time grows with the size of the stack, not with the number of paths through its
framework graph. Before (`--baseline-ref`), every framework was linearised again,
recursively, for every layer above it: exponential in the depth of a diamond, so the
baseline is only run on small depths. Other load on the machine inflates the medians
more than the best times, so compare the best ones. This section is written by the script
(`--update-doc docs/benchmarks.md`, which replaces it between its markers), not by
`run_benchmarks.py`.
"""


def update_doc(doc: Path, lines: list[str], argv: list[str]) -> None:
    """Replace (or append) this benchmark's section, between its markers, in ``doc``."""
    command = " ".join([".venv/bin/python benchmarks/bench_spec_loading.py", *argv, "--update-doc", str(doc)])
    update_block(doc, "bench_spec_loading", [INTRO, f"Results of `{command}`:", "", *lines])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="loads per stack (best and median reported)")
    parser.add_argument("--depths", default="10,20,30,40", help="diamond depths (comma-separated)")
    parser.add_argument("--baseline-ref", help="also time this git commit's src/ (e.g. cf09250)")
    parser.add_argument("--baseline-depths", default="12,14,16", help="diamond depths for the baseline")
    parser.add_argument("--baseline-timeout", type=float, default=120.0, help="seconds per baseline stack")
    parser.add_argument("--update-doc", type=Path, metavar="MARKDOWN",
                        help="write the results between the bench_spec_loading markers of this file "
                             "(appended if missing), e.g. docs/benchmarks.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.repeat)
        return
    with tempfile.TemporaryDirectory(prefix="bench-spec-") as tmp:
        lines = measure(args, Path(tmp))
    if args.update_doc:
        argv = [a for a in sys.argv[1:] if a != "--update-doc" and Path(a) != args.update_doc]
        update_doc(args.update_doc, lines, argv)


if __name__ == "__main__":
    main()
