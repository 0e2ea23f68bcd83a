"""Each tool's copy of ``sample_project`` and what can be read back from it after a command."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tarfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import RELEASE, SAMPLE
from .harness import capture
from .tools import Tools


@dataclass
class Project:
    """One tool's work folder: spec, lock files, build and output folders, extra environment."""

    tool: str
    root: Path
    spec_changes: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def spec(self) -> Path:
        return self.root / "venvstacks.toml"

    @property
    def build_dir(self) -> Path:
        return self.root / "_build"

    @property
    def output_dir(self) -> Path:
        return self.root / "_artifacts"

    @property
    def requirements(self) -> Path:
        return self.root / "requirements"


def drop_toml_table(text: str, table: str) -> tuple[str, bool]:
    """Remove ``[table]`` and its ``[table.*]`` subtables from TOML text (line based)."""
    out: list[str] = []
    skipping = False
    removed = False
    header = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    for line in text.splitlines(keepends=True):
        match = header.match(line)
        if match:
            name = match.group(1).strip().strip('"')
            skipping = name == table or name.startswith(table + ".")
            removed = removed or skipping
        if not skipping:
            out.append(line)
    return "".join(out), removed


def prepare_project(tool: str, root: Path) -> Project:
    """A fresh copy of the sample spec and launch modules under ``root``, adapted for ``tool``."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    shutil.copytree(SAMPLE / "launch_modules", root / "launch_modules")
    text = (SAMPLE / "venvstacks.toml").read_text()
    project = Project(tool=tool, root=root)
    text, removed = drop_toml_table(text, "tool.venvstacks-docker")
    if removed:
        project.spec_changes.append("dropped the [tool.venvstacks-docker] table")
    data = tomllib.loads(text)  # still valid TOML
    project.spec.write_text(text)
    release = RELEASE.get(tool)
    if release is not None and not release.reads_tool_uv:
        # [tool.uv] is new in venvstacks 0.8.0; 0.7.0 ignores it silently (and runs
        # `uv pip compile --no-config`), so the one setting sample_project uses is handed
        # to its uv through the environment instead, to lock the same package versions.
        uv_config = data.get("tool", {}).get("uv", {})
        for key, value in uv_config.items():
            if key == "exclude-newer":
                project.env["UV_EXCLUDE_NEWER"] = str(value)
                project.spec_changes.append(
                    f"[tool.uv] exclude-newer (ignored by {release.version}) passed as UV_EXCLUDE_NEWER={value}"
                )
            else:
                project.spec_changes.append(f"[tool.uv] {key} is ignored by {release.version} and NOT passed on")
    # venvstacks filters launch-module files through the .gitignore rules of the enclosing
    # git repository; this folder is inside the project's ignored benchmarks/.work/, which
    # would silently drop package-style launch modules (report_demo/).  A repository of its
    # own (no ignore rules) makes the copy behave like the tracked sample_project/.
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return project


# --------------------------------------------------------------------------- published output


def archive_sizes(output_dir: Path) -> dict[str, int]:
    """layer -> size in bytes of its ``.tar.xz`` archive."""
    return {p.name.removesuffix(".tar.xz"): p.stat().st_size for p in sorted(output_dir.glob("*.tar.xz"))}


def archive_state(output_dir: Path) -> dict[str, tuple[int, int]]:
    """name -> (mtime_ns, size): tells whether a command rewrote an archive."""
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(output_dir.glob("*.tar.xz"))}


def app_metadata(output_dir: Path, app: str) -> dict[str, Any] | None:
    """The published metadata of application layer ``app`` (the file with its launch module hash)."""
    candidates = sorted((output_dir / "__venvstacks__").rglob(f"{app}*.json"))
    for path in candidates:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and "app_launch_module_hash" in data:
            return data
    return None


def archive_members(path: Path) -> dict[str, int]:
    """member name (without the top folder) -> size, for a .tar.xz layer archive."""
    members: dict[str, int] = {}
    with tarfile.open(path) as tar:
        for info in tar:
            name = info.name.split("/", 1)[1] if "/" in info.name else ""
            if name:
                members[name + ("/" if info.isdir() else "")] = info.size
    return members


def compare_archives(vs_dir: Path, our_dir: Path) -> dict[str, Any]:
    """Per layer: uncompressed size and the entries only one of the two archives has."""
    out: dict[str, Any] = {}
    for vs_path in sorted(vs_dir.glob("*.tar.xz")):
        our_path = our_dir / vs_path.name
        if not our_path.exists():
            continue
        a, b = archive_members(vs_path), archive_members(our_path)
        only_vs = sorted(set(a) - set(b))
        only_ours = sorted(set(b) - set(a))
        out[vs_path.name.removesuffix(".tar.xz")] = {
            "entries": [len(a), len(b)],
            "uncompressed": [sum(a.values()), sum(b.values())],
            "only_venvstacks": only_vs,
            "only_ours": only_ours,
            "same_name_different_size": sorted(n for n in set(a) & set(b) if a[n] != b[n]),
        }
    return out


def locked_packages(project: Project) -> dict[str, list[str]]:
    """layer -> sorted ``name==version`` pins installed in the layer itself, from the
    packages-*.txt summaries both tools write (the "Shared packages inherited from other
    layers" section is left out: 0.7.0 feeds lower layers' requirements into upper locks,
    0.8.0 and ours only use them as constraints, so those sections differ by design)."""
    layers: dict[str, list[str]] = {}
    for folder in sorted(p for p in project.requirements.glob("*") if p.is_dir()):
        pins: set[str] = set()
        for summary in folder.glob("packages-*.txt"):
            for line in summary.read_text().splitlines():
                if line.lower().startswith("# shared packages"):
                    break
                line = line.split("#", 1)[0].strip()
                if "==" in line:
                    name, _, version = line.partition("==")
                    pins.add(f"{re.sub(r'[-_.]+', '-', name).lower()}=={version.strip()}")
        layers[folder.name] = sorted(pins)
    return layers


def expected_module_hash(tool: str, tools: Tools, path: Path) -> str:
    """The hash the tool itself computes for ``path`` (0.7.0's algorithm differs from 0.8.0's and ours)."""
    if tool in RELEASE:
        code = (
            "import sys, pathlib, warnings; warnings.simplefilter('ignore');"
            "from venvstacks._hash_content import hash_module;"
            "print(hash_module(pathlib.Path(sys.argv[1])))"
        )
        return capture([tools.python(tool), "-c", code, str(path)])
    code = (
        "import sys, pathlib; from venvstacks_docker.spec import module_hash;"
        "print(module_hash(pathlib.Path(sys.argv[1])))"
    )
    return capture([tools.ours_python, "-c", code, str(path)])
