#!/usr/bin/env python3
"""Bundle size and time for sample_project, and the offline publish against the connected one.

Run from the repository root with the project's dev venv (the runtime archive and the
builder image are made on first use; run as root, or where ``unshare --net`` works)::

    .venv/bin/python benchmarks/bench_bundle.py [--repeat N] [--update-doc docs/benchmarks.md]

Per repetition, on a fresh copy of sample_project (its committed locks):

* **connected**: ``build --publish --clean`` in the builder container (wheels, runtime
  and builder image from the warm caches of this machine, as on a connected host; an
  empty uv cache, as the offline side has);
* **bundle**: ``bundle SPEC -o FILE`` (builder image included; wheels already cached);
* **offline**: ``publish --from-bundle FILE`` in a network namespace of its own with an
  empty tool cache and uv cache (so the bundle is verified and unpacked first), in the
  builder container, into a new build and output folder.

The archives of the offline run are compared with the connected run's (sha256).
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
SAMPLE = ROOT / "sample_project"
CLI = [sys.executable, "-m", "venvstacks_docker"]


def one_round(work: Path) -> dict[str, float | int | bool]:
    spec_dir = work / "sample"
    shutil.copytree(SAMPLE, spec_dir, ignore=shutil.ignore_patterns("_build", "_artifacts", "_export", "_audit"))
    # both publishes start with an empty uv cache (uv unpacks every wheel into it once); the
    # connected one keeps this machine's wheel, runtime and image caches, as a connected host does
    fresh_uv = {**os.environ, "UV_CACHE_DIR": str(work / "uv-connected")}
    connected = timed([*CLI, "build", "--publish", "--clean", str(spec_dir), "--output-dir", str(work / "conn")],
                     env=fresh_uv)
    bundle = work / "sample.bundle.tar"
    bundling = timed([*CLI, "bundle", str(spec_dir), "-o", str(bundle)])
    home = work / "offline-home"
    env = {**os.environ, "VENVSTACKS_DOCKER_CACHE": str(home / "cache"), "UV_CACHE_DIR": str(home / "uv")}
    offline = timed(["unshare", "--net", "--", *CLI, "publish", "--from-bundle", str(bundle),
                    "--build-dir", str(work / "off-build"), "--output-dir", str(work / "off")], env=env)
    return {"connected": connected, "bundle": bundling, "offline": offline, "size": bundle.stat().st_size,
            "same": digests(work / "conn") == digests(work / "off") != {}}


def measure(repeat: int) -> list[str]:
    rounds = []
    for index in range(repeat):
        with tempfile.TemporaryDirectory(prefix="bench-bundle-") as tmp:
            rounds.append(one_round(Path(tmp)))
        print(f"round {index + 1}: {rounds[-1]}", flush=True)
    best = {key: min(float(r[key]) for r in rounds) for key in ("connected", "bundle", "offline")}
    size = int(rounds[0]["size"])
    extra = (best["offline"] / best["connected"] - 1) * 100
    load = os.getloadavg()
    return [
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load average at the end "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}; best of {repeat} rounds (wall seconds: "
        + "; ".join(f"{k} {', '.join(f'{float(r[k]):.1f}' for r in rounds)}" for k in ("connected", "bundle",
                                                                                       "offline")) + ").",
        "",
        "| step | time | |",
        "|---|---:|---|",
        f"| connected publish (`build --publish --clean`, container, warm tool caches, empty uv cache) "
        f"| {best['connected']:.1f} s | |",
        f"| `bundle` (builder image included, wheels cached) | {best['bundle']:.1f} s | "
        f"bundle size {size / 2**20:.1f} MiB |",
        f"| offline `publish --from-bundle` (`unshare --net`, empty caches: verify, unpack, build, publish) "
        f"| {best['offline']:.1f} s | {extra:+.1f} % against connected (target: within 10 %) |",
        "",
        f"Offline archives byte-identical to the connected ones in every round: "
        f"{'yes' if all(r['same'] for r in rounds) else 'NO'}.",
    ]


INTRO = """\
## Air-gapped publish: `bundle` and `publish --from-bundle`

`benchmarks/bench_bundle.py` publishes a fresh copy of sample_project in the builder
container (connected: warm wheel, runtime and image caches; an empty uv cache), bundles
it, and publishes from the bundle in a network namespace of its own with empty caches.
The offline time includes verifying the bundle and unpacking it into the empty cache (the builder image is in the engine
already; loading it from the bundle adds the time of `docker load`, about the time of
saving it). This section is written by the script (`--update-doc docs/benchmarks.md`).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=2, help="rounds (best reported)")
    parser.add_argument("--update-doc", type=Path, metavar="MARKDOWN",
                        help="write the results between the bench_bundle markers of this file")
    args = parser.parse_args()
    if shutil.which("unshare") is None:
        raise SystemExit("needs unshare (util-linux) for the offline side")
    lines = measure(args.repeat)
    print("\n".join(lines))
    if args.update_doc:
        command = f".venv/bin/python benchmarks/bench_bundle.py --repeat {args.repeat} --update-doc {args.update_doc}"
        update_block(args.update_doc, "bench_bundle", [INTRO, f"Results of `{command}`:", "", *lines])


if __name__ == "__main__":
    main()
