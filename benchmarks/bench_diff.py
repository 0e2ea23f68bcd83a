#!/usr/bin/env python3
"""Time ``venvstacks-docker diff`` against diffoscope on sample_project output folders.

Run from the repository root with the project's dev venv, after ``scripts/publish-sample``
(it needs ``sample_project/_artifacts``) and ``apt-get install --no-install-recommends
diffoscope``::

    .venv/bin/python benchmarks/bench_diff.py [--repeat N] [--update-doc docs/benchmarks.md]

Folder A is a copy of ``sample_project/_artifacts``.  Each scenario makes a folder B that
differs from A in exactly one member of one layer, the way a non-reproducible build
would, and updates B's metadata for the new archive (size, sha256, tar sha256):

* ``mtime``: one module of ``framework-sklearn`` keeps its own mtime (an hour later);
* ``build-path``: ``numpy/__config__.py`` in ``cpython-3.11`` names another pip build
  environment (``/tmp/build-env-<8 random characters>``, the same length);
* ``rpath``: one extension module of ``framework-sklearn`` gets an absolute RUNPATH into
  a build folder (``patchelf --set-rpath``: the file grows, shifting the rest of the tar).

The first two change bytes in place, so B's archive is what the tool's writer makes of
the changed tar stream: only the 32 MiB xz stream holding the change is compressed
again.  The third extracts the layer, patches the library and archives it again with
``write_archive``.  Both tools then compare A and B, in one run: ``diff --json`` (best of
``--repeat``) and ``diffoscope --text`` (once).  "Found" means the tool's output names the
member and shows the injected value.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import platform
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _docblock import update_block  # the script's own folder is on sys.path

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "sample_project" / "_artifacts"
SKLEARN_MODULE = "framework-sklearn/lib/python3.11/site-packages/sklearn/utils/_tags.py"
NUMPY_CONFIG = "cpython-3.11/lib/python3.11/site-packages/numpy/__config__.py"
SO = "framework-sklearn/lib/python3.11/site-packages/scipy/_lib/_fpumode.cpython-311-x86_64-linux-gnu.so"
BUILD_PATH = "/tmp/build-7f3a9c2e/_build/framework-sklearn/lib"


@dataclass
class Scenario:
    name: str
    layer: str
    member: str
    kind: str
    marker: str
    """A string the injected change put into the archive: what a tool must show."""
    description: str
    b: Path | None = None


def _header_offset(tar_bytes: bytes, member: str) -> tuple[tarfile.TarInfo, int]:
    import io

    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
        for info in tar:
            if info.name == member:
                return info, info.offset
    raise SystemExit(f"{member} not found")


def _recompress(src: Path, dst: Path, tar_bytes: bytes, changed: range) -> None:
    """Write ``tar_bytes`` as the tool does, re-compressing only the chunks that overlap ``changed``."""
    sys.path.insert(0, str(ROOT / "src"))
    from venvstacks_docker.archive import XZ_CHUNK_SIZE, xz_filters
    from venvstacks_docker.diffing.container import xz_info

    info = xz_info(src)
    assert info is not None
    with src.open("rb") as fin, dst.open("wb") as out:
        for stream in info.streams:
            start, end = stream.uncompressed_offset, stream.uncompressed_offset + stream.uncompressed_size
            if start < changed.stop and changed.start < end:
                out.write(lzma.compress(tar_bytes[start:end], format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64,
                                        filters=xz_filters("x86_64")))
            else:
                fin.seek(stream.offset)
                out.write(fin.read(stream.size))
            assert end - start <= XZ_CHUNK_SIZE


def _inject_mtime(src: Path, dst: Path, member: str) -> None:
    tar_bytes = bytearray(lzma.decompress(src.read_bytes()))
    info, offset = _header_offset(bytes(tar_bytes), member)
    info.mtime += 3600
    header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    assert len(header) == 512, "expected a plain ustar header"
    tar_bytes[offset:offset + 512] = header
    _recompress(src, dst, bytes(tar_bytes), range(offset, offset + 512))


def _inject_text(src: Path, dst: Path, member: str, old: bytes, new: bytes) -> None:
    assert len(old) == len(new)
    tar_bytes = bytearray(lzma.decompress(src.read_bytes()))
    info, _ = _header_offset(bytes(tar_bytes), member)
    data = bytes(tar_bytes[info.offset_data:info.offset_data + info.size])
    at = info.offset_data + data.index(old)
    tar_bytes[at:at + len(new)] = new
    _recompress(src, dst, bytes(tar_bytes), range(at, at + len(new)))


def _inject_rpath(src: Path, dst: Path, member: str, work: Path) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from venvstacks_docker.archive import write_archive
    from venvstacks_docker.extract import safe_extract

    top = safe_extract(src, work / "tree")
    subprocess.run(["patchelf", "--set-rpath", BUILD_PATH, str(work / "tree" / member)], check=True)
    meta = json.loads((ARTIFACTS / "__venvstacks__" / "env_metadata" / "framework-sklearn.json").read_text())
    write_archive(top, dst, root_name=top.name, mtime=meta["venvstacks_docker"]["source_date_epoch"],
                  arch="x86_64")
    shutil.rmtree(work / "tree")


def _update_metadata(out: Path, layer: str) -> None:
    """B's metadata names B's archive (as a publish would write it)."""
    import hashlib

    per_layer = out / "__venvstacks__" / "env_metadata" / f"{layer}.json"
    entry = json.loads(per_layer.read_text())
    archive = out / entry["archive_name"]
    fresh = {"archive_size": archive.stat().st_size,
             "archive_hashes": {"sha256": hashlib.sha256(archive.read_bytes()).hexdigest()}}
    tar_sha = hashlib.sha256(lzma.decompress(archive.read_bytes())).hexdigest()
    for path in [per_layer, out / "__venvstacks__" / "venvstacks.json"]:
        data = json.loads(path.read_text())
        entries = [data] if path == per_layer else [e for group in data["layers"].values() for e in group]
        for e in entries:
            if e["layer_name"] == layer:
                e.update(fresh)
                e["venvstacks_docker"]["archive_tar_sha256"] = tar_sha
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def prepare(work: Path) -> tuple[Path, list[Scenario]]:
    a = work / "a"
    shutil.copytree(ARTIFACTS, a, ignore=shutil.ignore_patterns(".venvstacks-docker"))
    scenarios = [
        Scenario("mtime", "framework-sklearn", SKLEARN_MODULE, "mtime", "01:00:00",
                 "one module of framework-sklearn kept its own mtime (an hour later)"),
        Scenario("build-path", "cpython-3.11", NUMPY_CONFIG, "absolute-path", "/tmp/build-env-q8x2k1mz",
                 "numpy/__config__.py names another pip build environment (same length)"),
        Scenario("rpath", "framework-sklearn", SO, "elf-rpath", BUILD_PATH,
                 "an extension module got an absolute RUNPATH (the file grows)"),
    ]
    for s in scenarios:
        s.b = work / f"b-{s.name}"
        shutil.copytree(a, s.b)
        src, dst = a / f"{s.layer}.tar.xz", s.b / f"{s.layer}.tar.xz"
        if s.name == "mtime":
            _inject_mtime(src, dst, s.member)
        elif s.name == "build-path":
            _inject_text(src, dst, s.member, b"/tmp/build-env-gjolnpt6", s.marker.encode())
        else:
            _inject_rpath(src, dst, s.member, work)
        _update_metadata(s.b, s.layer)
    return a, scenarios


def _timed(argv: list[str]) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Wall seconds, CPU seconds (user + system of the process tree) and the result of a command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, proc


def run_ours(a: Path, b: Path, s: Scenario, repeat: int) -> tuple[float, float, bool, str]:
    runs, data = [], {}
    for _ in range(repeat):
        wall, cpu, proc = _timed([sys.executable, "-m", "venvstacks_docker", "diff", "--json", str(a), str(b)])
        runs.append((wall, cpu))
        assert proc.returncode == 12, proc.stderr
        data = json.loads(proc.stdout)
    members = [m for x in data["archives"] for m in x["members"]]
    hits = [f for m in members if m["name"] == s.member for f in m["findings"] if f["kind"] == s.kind]
    found = bool(hits) and len(members) == 1 and s.marker in json.dumps(hits)
    skipped = sum(x["xz_streams_skipped"] for x in data["archives"])
    wall, cpu = min(runs)
    return wall, cpu, found, (hits[0]["explanation"] if hits else "") + f" [{skipped} xz stream(s) skipped]"


def run_diffoscope(a: Path, b: Path, s: Scenario, work: Path) -> tuple[float, float, bool, bool, str]:
    out = work / f"diffoscope-{s.name}.txt"
    elapsed, cpu, proc = _timed(["diffoscope", "--text", str(out), "--no-progress", str(a), str(b)])
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    text = out.read_text(errors="replace")
    named = s.member in text or s.member.split("/", 1)[1] in text
    lines = [line for line in text.splitlines() if s.marker in line and line.lstrip("│ ").startswith(("+", "-"))]
    return elapsed, cpu, named, bool(lines), (lines[0].strip(" │") if lines else "")[:160]


def measure(args: argparse.Namespace, work: Path) -> list[str]:
    version = subprocess.run(["diffoscope", "--version"], capture_output=True, text=True, check=True).stdout.strip()
    a, scenarios = prepare(work)
    lines = [f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load average at the start "
             f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())} (1/5/15 min); {version} from Debian's "
             "repositories (`apt-get install --no-install-recommends diffoscope`: diffoscope and "
             "diffoscope-minimal, no optional tools; `readelf` comes from binutils, which gcc pulls in). "
             f"venvstacks-docker: best of {args.repeat} runs of `diff --json A B`, process start included; "
             "diffoscope: one run of `diffoscope --text out.txt A B`. CPU is user + system time of the command's "
             "process tree, which other load on the machine affects much less than wall time.", "",
             "| scenario | layer | diff: wall / CPU | found the cause | diffoscope: wall / CPU | "
             "names the member / shows the value | speed-up: wall / CPU |",
             "|---|---|---:|---|---:|---|---:|"]
    details = ["", "What each tool said about the injected change:", ""]
    print("\n".join(lines), flush=True)
    for s in scenarios:
        assert s.b is not None
        ours, ours_cpu, found, explanation = run_ours(a, s.b, s, args.repeat)
        theirs, theirs_cpu, named, shown, excerpt = run_diffoscope(a, s.b, s, work)
        size = (a / f"{s.layer}.tar.xz").stat().st_size / 2**20
        lines.append(f"| {s.name}: {s.description} | {s.layer} ({size:.1f} MiB) | {ours:.2f} s / {ours_cpu:.2f} s | "
                     f"{'yes: `' + s.kind + '`' if found else 'NO'} | {theirs:.2f} s / {theirs_cpu:.2f} s | "
                     f"{'yes' if named else 'no'} / {'yes' if shown else 'no'} | "
                     f"{theirs / ours:.1f}x / {theirs_cpu / ours_cpu:.1f}x |")
        print(lines[-1], flush=True)
        details += [f"- **{s.name}**: diff: `{s.kind}`: {explanation}",
                    f"  diffoscope: `{excerpt}`" if excerpt else "  diffoscope: (no line with the injected value)"]
    return lines + details


INTRO = """\
## `diff` against diffoscope

`benchmarks/bench_diff.py` copies `sample_project/_artifacts` (A) and makes, per scenario, a
folder B that differs from A in one member of one layer, with B's metadata updated for
the new archive; then it times `venvstacks-docker diff --json A B` and `diffoscope A B` on
the same pair, in one run. "found" is whether `diff` named the member with the expected
finding kind (and nothing else); for diffoscope, whether its report names the member and
shows the injected value. `diff` skips archives whose sha256 is equal and, inside a
`.tar.xz`, the 32 MiB xz streams whose compressed bytes are equal; a change of size (the
`rpath` scenario) shifts every later stream, so that archive is read to its end. diffoscope
unpacks and compares every member of the differing archive and shows bytes, `readelf`
output and text diffs; `diff` says what the difference is in Python terms. This section
is written by the script (`--update-doc docs/benchmarks.md`), not by `run_benchmarks.py`.
"""


def update_doc(doc: Path, lines: list[str], argv: list[str]) -> None:
    command = " ".join([".venv/bin/python benchmarks/bench_diff.py", *argv, "--update-doc", str(doc)])
    update_block(doc, "bench_diff", [INTRO, f"Results of `{command}`:", "", *lines])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of diff per scenario (best reported)")
    parser.add_argument("--update-doc", type=Path, metavar="MARKDOWN",
                        help="write the results between the bench_diff markers of this file")
    args = parser.parse_args()
    if not ARTIFACTS.is_dir() or shutil.which("diffoscope") is None or shutil.which("patchelf") is None:
        raise SystemExit("needs sample_project/_artifacts (scripts/publish-sample), diffoscope and patchelf")
    with tempfile.TemporaryDirectory(prefix="bench-diff-") as tmp:
        lines = measure(args, Path(tmp))
    if args.update_doc:
        argv = [a for a in sys.argv[1:] if a != "--update-doc" and Path(a) != args.update_doc]
        update_doc(args.update_doc, lines, argv)


if __name__ == "__main__":
    main()
