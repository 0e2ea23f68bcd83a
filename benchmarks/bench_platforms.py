#!/usr/bin/env python3
"""Other platforms: an emulated linux_aarch64 publish, and where the runtime is built.

Run from the repository root with the project's dev venv, on an x86-64 Linux machine
with Docker, qemu user-mode emulation enabled and the arm64 base, the aarch64 runtime
and the builder images made (``docs/how-to/linux-aarch64.md``)::

    .venv/bin/python benchmarks/bench_platforms.py [--repeat N] [--skip-runtimes]
        [--update-doc docs/benchmarks.md]

1. **Publish**: ``tests/data/aarch64_stack`` (a runtime, markupsafe, one app), locked
   once, then ``build --publish --clean`` into a new output folder per round, for
   ``linux_aarch64`` (emulated builder) and, from a copy whose platforms say
   ``linux_x86_64``, natively: the ratio is what emulation costs.
2. **Runtime** (unless ``--skip-runtimes``): CPython 3.11.2 built with ``--force`` on
   the host (``--on-host``), in the bullseye container (the default), and
   cross-compiled for aarch64 in the cross container (images already made: the
   one-off preparation is not timed).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

from _bench import digests, timed  # the script's own folder is on sys.path
from _docblock import update_block

ROOT = Path(__file__).resolve().parent.parent
STACK = ROOT / "tests" / "data" / "aarch64_stack"
CLI = [sys.executable, "-m", "venvstacks_docker"]
PLATFORMS = ("linux_aarch64", "linux_x86_64")
RUNTIME_BUILDS = {
    "on the host (`runtime build --on-host --force`, this Debian 12 machine)":
        ["runtime", "build", "--on-host", "--force"],
    "in the container (`runtime build --force`, Debian 11: the default)": ["runtime", "build", "--force"],
    "cross, for aarch64 (`runtime build --target linux_aarch64 --force`, in the cross container)":
        ["runtime", "build", "--target", "linux_aarch64", "--force"],
}


def _stack_for(work: Path, plat: str) -> Path:
    folder = work / plat
    shutil.copytree(STACK, folder)
    spec = folder / "venvstacks.toml"
    spec.write_text(spec.read_text(encoding="utf-8").replace("linux_aarch64", plat), encoding="utf-8")
    timed([*CLI, "lock", str(spec), "--platform", plat])
    return spec


def measure_publish(work: Path, repeat: int) -> dict[str, list[float]]:
    specs = {plat: _stack_for(work, plat) for plat in PLATFORMS}
    times: dict[str, list[float]] = {plat: [] for plat in PLATFORMS}
    for index in range(repeat):
        for plat in PLATFORMS:
            out = specs[plat].parent / f"_out{index}"
            times[plat].append(timed([*CLI, "build", str(specs[plat]), "--platform", plat, "--publish", "--clean",
                                      "--output-dir", str(out)]))
            if not digests(out):
                raise SystemExit(f"{plat}: nothing published in {out}")
        print(f"round {index + 1}: " + ", ".join(f"{p} {times[p][-1]:.1f}s" for p in PLATFORMS), flush=True)
    return times


def measure_runtimes() -> dict[str, float]:
    results = {}
    for label, argv in RUNTIME_BUILDS.items():
        results[label] = timed([*CLI, *argv])
        print(f"{label}: {results[label]:.0f}s", flush=True)
    return results


def report(publish: dict[str, list[float]], runtimes: dict[str, float], repeat: int) -> list[str]:
    load = os.getloadavg()
    emulated, native = min(publish["linux_aarch64"]), min(publish["linux_x86_64"])
    lines = [
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load average at the end "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}; publish: best of {repeat} round(s) (wall seconds: "
        + "; ".join(f"{p} {', '.join(f'{t:.1f}' for t in publish[p])}" for p in PLATFORMS) + ").",
        "",
        "| tests/data/aarch64_stack, `build --publish --clean` into a new output folder | time | |",
        "|---|---:|---|",
        f"| `--platform linux_aarch64`: arm64 builder under qemu | {emulated:.1f} s | "
        f"{emulated / native:.1f}x the native publish |",
        f"| the same stack for `linux_x86_64`: native builder | {native:.1f} s | |",
    ]
    if runtimes:
        lines += ["", "| CPython 3.11.2 runtime, built once (images already made) | time |", "|---|---:|"]
        lines += [f"| {label} | {seconds:.0f} s |" for label, seconds in runtimes.items()]
    return lines


INTRO = """\
## Other platforms: emulated aarch64, and where the runtime is built

`benchmarks/bench_platforms.py` times a publish of the small `tests/data/aarch64_stack`
(CPython 3.11.2, markupsafe, one application) for `linux_aarch64` in the arm64 builder
container under qemu user-mode emulation, and of the same stack for `linux_x86_64` in the
native builder: lock once, then `build --publish --clean` into a new output folder per
round. It also times one build of the runtime on the host, in the Debian 11 container,
and cross-compiled for aarch64 (their images made beforehand; preparing them is a one-off
cost, given in [linux_aarch64](how-to/linux-aarch64.md) and
[platforms](reference/platforms.md)). This section is written by the script
(`--update-doc docs/benchmarks.md`)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=2, help="measured publish rounds (best reported)")
    parser.add_argument("--skip-runtimes", action="store_true", help="time the publishes only")
    parser.add_argument("--update-doc", type=Path, metavar="MARKDOWN",
                        help="write the results between the bench_platforms markers of this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-platforms-") as tmp:
        publish = measure_publish(Path(tmp), args.repeat)
    runtimes = {} if args.skip_runtimes else measure_runtimes()
    lines = report(publish, runtimes, args.repeat)
    print("\n".join(lines))
    if args.update_doc:
        command = (f".venv/bin/python benchmarks/bench_platforms.py --repeat {args.repeat}"
                   f"{' --skip-runtimes' if args.skip_runtimes else ''} --update-doc {args.update_doc}")
        update_block(args.update_doc, "bench_platforms", [INTRO, "", f"Results of `{command}`:", "", *lines])


if __name__ == "__main__":
    main()
