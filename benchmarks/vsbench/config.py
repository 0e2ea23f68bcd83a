"""Constants shared by the benchmark: where things are, what is compared, the targets."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent.parent  # benchmarks/
ROOT = HERE.parent
WORK = HERE / ".work"
SAMPLE = ROOT / "sample_project"
CONSTRAINTS = HERE / "venvstacks-0.7.0-constraints.txt"
VENVSTACKS_VERSION = "0.7.0"
RUNTIME_VERSION = "3.11.2"
RUNTIME_PLATFORM = "linux_x86_64"
STAGE_NAME = f"cpython@{RUNTIME_VERSION}"
EDITED_MODULE = "launch_modules/sklearn_clustering.py"
EDITED_APP = "app-clustering-demo"

TARGET_SPEEDUP = 1.8
TARGET_SIZE_PCT = 2.0
TARGET_PUBLISH_S = 1.0

TOOLS = ("venvstacks", "ours")
TOOL_LABEL = {
    "venvstacks": f"venvstacks {VENVSTACKS_VERSION}",
    "ours": "venvstacks-docker (native)",
    "ours-container": "venvstacks-docker (container)",
}

# the steps compared between the two tools, in report order
STEP_LABEL = {
    "lock": "lock (fresh, warm package caches)",
    "build-clean": "clean build + publish",
    "publish": "publish, unchanged stack",
    "build-edit": "build + publish after editing one launch module",
}
