#!/usr/bin/env python3
"""Copy mode against mount mode: what sending files through the Engine API costs.

Run from the repository root with the project's dev venv, on a machine with Docker (the
runtime archive and the builder image are made on first use)::

    .venv/bin/python benchmarks/bench_transfer.py [--repeat N] [--update-doc docs/benchmarks.md]

Both modes publish sample_project with the local engine, so only the transfer differs:
``build --publish --clean`` in the builder container, ``--transfer mount`` (the host's
folders bind-mounted) against ``--transfer copy`` (inputs sent into volumes, the
publication copied back, verified and committed).  Each mode has a project copy of its
own, warmed up by one unmeasured publish (wheels and runtimes in the engine's store,
warm uv caches, built environments), then every measured round publishes into a new
output folder: the whole publication is written (and, in copy mode, comes back).  The
archives of both modes are compared (sha256).  The volumes the script made are removed
at the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _bench import digests, timed  # the script's own folder is on sys.path
from _docblock import update_block

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_project"
CLI = [sys.executable, "-m", "venvstacks_docker"]
MODES = ("mount", "copy")


def _publish(spec: Path, out: Path, mode: str) -> float:
    argv = [*CLI, "build", "--publish", "--clean", "--transfer", mode, "--output-dir", str(out), str(spec)]
    return timed(argv)


def _remove_volumes(prefix: Path) -> None:
    """The per-project volumes of the copies below ``prefix`` (the store is kept)."""
    listed = subprocess.run(["docker", "volume", "ls", "-q", "--filter", "label=venvstacks-docker.path"],
                            capture_output=True, text=True, check=False).stdout.split()
    for name in listed:
        label = subprocess.run(["docker", "volume", "inspect", "-f",
                                '{{ index .Labels "venvstacks-docker.path" }}', name],
                               capture_output=True, text=True, check=False).stdout.strip()
        if label.startswith(str(prefix)):
            subprocess.run(["docker", "volume", "rm", "-f", name], capture_output=True, check=False)


def measure(work: Path, repeat: int) -> dict[str, list[float] | bool]:
    specs = {}
    for mode in MODES:
        folder = work / mode
        shutil.copytree(SAMPLE, folder, ignore=shutil.ignore_patterns("_build", "_artifacts", "_export", "_audit"))
        specs[mode] = folder / "venvstacks.toml"
        warm = _publish(specs[mode], folder / "_warm", mode)
        print(f"warm-up {mode}: {warm:.1f}s", flush=True)
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    same = True
    for index in range(repeat):
        for mode in MODES:  # alternate, so a change of load hits both
            times[mode].append(_publish(specs[mode], specs[mode].parent / f"_out{index}", mode))
        same = same and digests(work / "mount" / f"_out{index}") == digests(work / "copy" / f"_out{index}") != {}
        print(f"round {index + 1}: " + ", ".join(f"{m} {times[m][-1]:.1f}s" for m in MODES), flush=True)
    return {**times, "same": same}


def report(results: dict[str, list[float] | bool], repeat: int) -> list[str]:
    mount, copy = results["mount"], results["copy"]
    assert isinstance(mount, list) and isinstance(copy, list)
    best_mount, best_copy = min(mount), min(copy)
    load = os.getloadavg()
    extra = (best_copy / best_mount - 1) * 100
    return [
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load average at the end "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}; best of {repeat} round(s) (wall seconds: mount "
        f"{', '.join(f'{t:.1f}' for t in mount)}; copy {', '.join(f'{t:.1f}' for t in copy)}).",
        "",
        "| sample_project, `build --publish --clean` into a new output folder | time | |",
        "|---|---:|---|",
        f"| `--transfer mount` (host folders bind-mounted) | {best_mount:.1f} s | |",
        f"| `--transfer copy` (through the Engine API, same engine) | {best_copy:.1f} s | "
        f"{extra:+.1f} % against mount (target: under 10 %) |",
        "",
        f"Archives byte-identical between the two modes in every round: {'yes' if results['same'] else 'NO'}.",
    ]


INTRO = """\
## Copy mode against mount mode

`benchmarks/bench_transfer.py` publishes sample_project in the builder container on the
local engine twice per round: with the host's folders bind-mounted (`--transfer mount`,
what a local engine gets), and with everything sent through the Engine API into volumes
and the publication copied back, verified and committed (`--transfer copy`, what a
remote engine gets; see [remote engines](how-to/remote-engines.md)). Each mode is warmed
up once (store, uv cache, built environments), then each round publishes into a new
output folder, so the whole publication comes back. The difference is the cost of the
transfer itself, on one machine: over a network, add the time the bytes take on the
wire (inputs, the wheels and runtimes the engine's store lacks, and the publication).
Run as root, mount mode also hands its writable folders (build folder, uv cache, output
folder) to the sandbox user and back, entry by entry, which copy mode's volumes do not
need: that can make copy mode the faster of the two. This section is written by the
script (`--update-doc docs/benchmarks.md`)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=2, help="measured rounds (best reported)")
    parser.add_argument("--update-doc", type=Path, metavar="MARKDOWN",
                        help="write the results between the bench_transfer markers of this file")
    args = parser.parse_args()
    if shutil.which("docker") is None:
        raise SystemExit("needs the docker CLI (to remove the volumes made)")
    with tempfile.TemporaryDirectory(prefix="bench-transfer-") as tmp:
        try:
            results = measure(Path(tmp), args.repeat)
        finally:
            _remove_volumes(Path(tmp))
    lines = report(results, args.repeat)
    print("\n".join(lines))
    if args.update_doc:
        command = f".venv/bin/python benchmarks/bench_transfer.py --repeat {args.repeat} --update-doc {args.update_doc}"
        update_block(args.update_doc, "bench_transfer", [INTRO, "", f"Results of `{command}`:", "", *lines])


if __name__ == "__main__":
    main()
