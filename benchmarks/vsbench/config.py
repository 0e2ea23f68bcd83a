"""Constants shared by the benchmark: where things are, what is compared, the targets."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent  # benchmarks/
ROOT = HERE.parent
# the scratch area (venvs, project copies, logs); VSBENCH_WORK_DIR puts it elsewhere, e.g.
# outside the checkout while others run tests that walk benchmarks/
WORK = Path(os.environ.get("VSBENCH_WORK_DIR") or HERE / ".work").resolve()
SAMPLE = ROOT / "sample_project"
# venvstacks 0.8.0 is not on this machine's PyPI: its wheel and tried versions live here
SHARED_080 = Path(os.environ.get("VSBENCH_VENVSTACKS_080_DIR") or ROOT.parent / "shared" / "venvstacks-0.8.0")
RUNTIME_VERSION = "3.11.2"
RUNTIME_PLATFORM = "linux_x86_64"
STAGE_NAME = f"cpython@{RUNTIME_VERSION}"
EDITED_MODULE = "launch_modules/sklearn_clustering.py"
EDITED_APP = "app-clustering-demo"

TARGET_SPEEDUP = 1.8  # clean build + publish, against venvstacks 0.7.0
TARGET_SIZE_PCT = 2.0
TARGET_PUBLISH_S = 1.0


@dataclass(frozen=True)
class Release:
    """A venvstacks release under test: where it comes from and how it is installed."""

    key: str  # the tool's name in the results, logs and work folders
    version: str
    constraints: Path  # pip constraints of its venv
    requirement: str  # what pip installs
    origin: str  # for the report
    reads_tool_uv: bool  # whether it honours the spec's [tool.uv] table itself
    installer: str  # what installs the packages into its layers


RELEASES = (
    Release("venvstacks-0.7.0", "0.7.0", HERE / "venvstacks-0.7.0-constraints.txt", "venvstacks==0.7.0",
            "PyPI, pinned by `benchmarks/venvstacks-0.7.0-constraints.txt` (same uv as ours)", False, "pip"),
    Release("venvstacks-0.8.0", "0.8.0", SHARED_080 / "constraints.txt",
            str(SHARED_080 / "venvstacks-0.8.0-py3-none-any.whl"),
            "the wheel in `../shared/venvstacks-0.8.0/` (built from its release), pinned by the "
            "`constraints.txt` next to it: the versions it was tried with", True, "uv"),
)
RELEASE = {r.key: r for r in RELEASES}
VENVSTACKS = tuple(r.key for r in RELEASES)  # the references, oldest first
NEWEST = VENVSTACKS[-1]
TOOLS = (*VENVSTACKS, "ours")
TOOL_LABEL = {
    **{r.key: f"venvstacks {r.version}" for r in RELEASES},
    "ours": "venvstacks-docker (native)",
    "ours-container": "venvstacks-docker (container)",
}

# the steps compared between the tools, in report order
STEP_LABEL = {
    "lock": "lock (fresh, warm package caches)",
    "build-clean": "clean build + publish",
    "publish": "publish, unchanged stack",
    "build-edit": "build + publish after editing one launch module",
}
