"""``scripts/build-python-runtime`` (``python -m venvstacks_docker.runtime_build``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from venvstacks_docker.errors import RuntimeArchiveError, VenvstacksDockerError
from venvstacks_docker.runtime_build.build import build_runtime
from venvstacks_docker.runtime_build.package import read_sidecar
from venvstacks_docker.runtime_build.recipe import PINS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="build-python-runtime",
        description="Build a relocatable CPython install_only archive from pinned Debian sources.",
    )
    parser.add_argument("--version", default="3.11.2", choices=sorted(PINS),
                        help="CPython version to build (default: %(default)s)")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="also copy the archive and its .json sidecar into this folder")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="cache root (default: $VENVSTACKS_DOCKER_CACHE or the user cache folder)")
    parser.add_argument("--jobs", "-j", type=int, default=None, help="parallel make jobs")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument("--json", action="store_true", help="print the sidecar metadata as JSON")
    parser.add_argument("--verbose", "-v", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    if args.jobs is not None and args.jobs < 1:
        parser.error("--jobs must be at least 1")
    try:
        archive = build_runtime(args.version, cache=args.cache_dir, jobs=args.jobs,
                                force=args.force, output_dir=args.output_dir)
    except VenvstacksDockerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.return_code
    except OSError as exc:
        error = RuntimeArchiveError(f"building the runtime failed: {exc}")
        print(f"error: {error}", file=sys.stderr)
        return error.return_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    meta = read_sidecar(archive)
    try:
        if args.json:
            meta = dict(meta, path=str(archive))
            print(json.dumps(meta, indent=2, sort_keys=True))
        else:
            print(archive)
            print(f"sha256 {meta['sha256']}  glibc>={meta['glibc_floor']}")
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. piped into `head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
