"""What the stand-alone benchmark scripts share: timing one command, hashing the archives it wrote."""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path


def timed(argv: list[str], *, env: dict[str, str] | None = None) -> float:
    """Run ``argv``; its wall time in seconds (a failure stops the benchmark, with its stderr)."""
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(argv)}\n{proc.stderr[-3000:]}")
    return elapsed


def digests(folder: Path) -> dict[str, str]:
    """Archive name -> sha256 for the ``.tar.xz`` archives in ``folder``."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tar.xz"))}
