"""``merge``: per-platform tagged publications combined into one output folder.

A CI matrix publishes each target platform on its own runner with ``--tag-outputs``
(archives ``<install_target>-<platform>-<archive_build>.tar.xz``, metadata
``__venvstacks__/venvstacks-<platform>.json`` and ``env_metadata/<layer>-<platform>.json``).
``merge`` puts those publications side by side in one folder:

1. **plan** (:func:`plan_merge`, writes nothing): every input is checked with
   :func:`venvstacks_docker.verify.verify_output_dir` and must pass; untagged
   publications are refused; each platform's layers are gathered from the inputs'
   manifests, and a layer that two inputs publish for one platform must be the very
   same (same metadata, hence the same archive bytes), otherwise the inputs conflict;
2. **execute** (:func:`execute_merge`): under the output folder's lock, into an empty
   folder, every archive is linked or copied (and hashed again), every per-layer file
   copied and one combined manifest per platform written, all staged and committed as
   one :class:`~venvstacks_docker.txn.OutputTransaction`: the folder ends up holding
   the whole merge or nothing of it.  Nothing is written outside the output folder.

The merged folder passes ``verify``; ``deploy --manifest venvstacks-<platform>.json``
deploys one platform of it.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from venvstacks_docker import _testhooks
from venvstacks_docker.errors import Interrupted, PublishError, SpecError, VenvstacksDockerError, VerifyError
from venvstacks_docker.locking import STATE_DIR, folder_lock, hold
from venvstacks_docker.metadata import (
    LAYER_KINDS,
    LAYER_METADATA_DIR,
    METADATA_DIR,
    METADATA_VERSION,
    dumps,
    envelope,
    sha256_file,
)
from venvstacks_docker.txn import OutputTransaction, pending_journal, recover
from venvstacks_docker.verify import VerifyReport, find_manifests, layer_metadata_path, verify_output_dir

_UNTAGGED_HINT = ("publish each platform with `--tag-outputs` (`venvstacks-docker publish --tag-outputs ...`) "
                  "and merge those output folders")
_CHUNK = 1 << 20


@dataclass(frozen=True, kw_only=True)
class MergedLayer:
    """One layer of one platform in the merged folder, and the input it is taken from."""

    platform: str
    kind: str
    entry: dict[str, Any]
    """Its per-layer metadata (identical in every input that has it)."""
    metadata_text: str
    """The per-layer file's text, copied byte for byte."""
    source: Path
    """The first input (in the order given) holding it."""
    also_in: tuple[Path, ...] = ()
    """Other inputs holding the identical layer."""

    @property
    def layer_name(self) -> str:
        """Its build name."""
        return str(self.entry["layer_name"])

    @property
    def archive_name(self) -> str:
        """Its archive's file name (the same in the input and the merged folder)."""
        return str(self.entry["archive_name"])

    @property
    def metadata_file(self) -> str:
        """Its per-layer file, relative to an output folder (POSIX separators)."""
        return f"{METADATA_DIR}/{LAYER_METADATA_DIR}/{self.layer_name}-{self.platform}.json"

    def as_dict(self) -> dict[str, Any]:
        """The ``merge --json`` form of this layer."""
        return {"layer_name": self.layer_name, "install_target": self.entry["install_target"],
                "kind": self.kind, "target_platform": self.platform, "archive_name": self.archive_name,
                "archive_size": self.entry["archive_size"], "archive_sha256": self.entry["archive_hashes"]["sha256"],
                "source": os.fspath(self.source), "also_in": [os.fspath(p) for p in self.also_in]}


@dataclass(frozen=True, kw_only=True)
class MergePlan:
    """What :func:`execute_merge` writes, decided without writing anything."""

    inputs: tuple[Path, ...]
    out: Path
    layers: tuple[MergedLayer, ...]
    """By platform (sorted), then runtimes, frameworks, applications, in manifest order."""
    manifests: dict[str, str] = field(default_factory=dict)
    """Relative path of each combined manifest -> its text."""
    left_out: tuple[str, ...] = ()
    """What the inputs hold that is not merged (older archives, unlisted metadata files)."""

    @property
    def platforms(self) -> tuple[str, ...]:
        """The platforms of the merged folder, sorted."""
        return tuple(sorted({layer.platform for layer in self.layers}))

    def as_dict(self, *, dry_run: bool) -> dict[str, Any]:
        """The ``merge --json`` output (envelope ``venvstacks-docker/merge``)."""
        return envelope("merge", {
            "dry_run": dry_run,
            "inputs": [os.fspath(p) for p in self.inputs],
            "output_dir": os.fspath(self.out),
            "platforms": list(self.platforms),
            "manifests": sorted(self.manifests),
            "layers": [layer.as_dict() for layer in self.layers],
            "left_out": list(self.left_out),
        })


# --- planning ---------------------------------------------------------------------


def _check_folders(inputs: Sequence[Path], out: Path) -> tuple[Path, ...]:
    if not inputs:
        raise SpecError("merge needs at least one publication to merge", hint="merge OUT_A OUT_B ... -o MERGED")
    seen: dict[Path, Path] = {}
    for folder in inputs:
        if not folder.is_dir():
            raise SpecError(f"{folder} does not exist or is not a folder",
                            hint="pass the output folders of `publish --tag-outputs`")
        real = folder.resolve()
        if real in seen:
            raise SpecError(f"{folder} is given twice (also as {seen[real]})")
        seen[real] = folder
    real_out = out.resolve()
    for real, folder in seen.items():
        if real_out == real or real in real_out.parents or real_out in real.parents:
            raise SpecError(f"the output folder {out} overlaps the input {folder}",
                            hint="merge into a folder of its own, outside every input")
    return tuple(inputs)


def occupants(out: Path) -> list[str]:
    """What ``out`` holds besides the tool's hidden folder (sorted names)."""
    if not out.exists():
        return []
    if not out.is_dir():
        raise SpecError(f"the output folder {out} is a file", hint="give -o a folder (new or empty)")
    return sorted(p.name for p in out.iterdir() if p.name != STATE_DIR)


def _require_empty(out: Path) -> None:
    held = occupants(out)
    if held:
        shown = ", ".join(held[:4]) + (f" and {len(held) - 4} more" if len(held) > 4 else "")
        raise SpecError(f"the output folder {out} is not empty (it holds {shown})",
                        hint="merge into a new or empty folder: merge never replaces or mixes files")


def _verified(folder: Path) -> VerifyReport:
    if pending_journal(folder):
        raise SpecError(f"{folder} holds an interrupted publication that was never finished",
                        hint=f"run `venvstacks-docker verify {folder}` first: it finishes it")
    manifests = find_manifests(folder)
    untagged = [m.name for m in manifests if m.name == "venvstacks.json"]
    if untagged:
        raise SpecError(f"{folder} is an untagged publication ({METADATA_DIR}/venvstacks.json): merge "
                        "needs each layer's platform in its file names", hint=_UNTAGGED_HINT)
    report = verify_output_dir(folder)
    if not report.ok:
        bad = [f"{c.archive_name}: {c.status}" for c in report.layers if not c.ok]
        bad += [f"{p.file}: {p.message}" for p in report.metadata_problems]
        raise VerifyError(f"{folder} fails verification ({'; '.join(bad[:3])}"
                          f"{f'; and {len(bad) - 3} more' if len(bad) > 3 else ''})",
                          hint=f"`venvstacks-docker verify {folder}` shows the whole report; publish it again")
    if not manifests:
        raise SpecError(f"{folder} has per-layer metadata but no {METADATA_DIR}/venvstacks-<platform>.json",
                        hint=_UNTAGGED_HINT)
    return report


@dataclass
class _Found:
    """What one input contributes: layers by platform, their manifest order and top blocks."""

    layers: list[MergedLayer] = field(default_factory=list)
    order: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    blocks: dict[str, dict[str, Any]] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise VerifyError(f"cannot read {path}: {exc}") from exc


def _tagged_entry(folder: Path, manifest: Path, plat: str, entry: dict[str, Any]) -> None:
    name, target = entry["archive_name"], entry.get("install_target")
    if entry.get("target_platform") != plat:
        raise VerifyError(f"{manifest}: layer {entry['layer_name']!r} has target_platform "
                          f"{entry.get('target_platform')!r}, but the manifest is for {plat}")
    if not str(name).startswith(f"{target}-{plat}-"):
        raise SpecError(f"{folder}: archive {name} of {entry['layer_name']!r} has no platform tag "
                        f"(expected {target}-{plat}-<build>...)", hint=_UNTAGGED_HINT)


def _read_input(folder: Path, report: VerifyReport) -> _Found:
    found = _Found()
    claimed: set[Path] = set()
    for manifest in find_manifests(folder):
        plat = manifest.stem[len("venvstacks-"):]
        data = _read_json(manifest)
        found.blocks[plat] = dict(data.get("venvstacks_docker") or {})
        for kind in LAYER_KINDS:
            names = found.order.setdefault((plat, kind), [])
            for entry in data["layers"].get(kind, []):
                _tagged_entry(folder, manifest, plat, entry)
                layer_file = layer_metadata_path(folder, manifest, entry["layer_name"])
                claimed.add(layer_file)
                try:
                    text = layer_file.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    raise VerifyError(f"cannot read {layer_file}: {exc}") from exc
                names.append(entry["layer_name"])
                found.layers.append(MergedLayer(platform=plat, kind=kind, entry=entry, metadata_text=text,
                                                source=folder))
    layer_dir = folder / METADATA_DIR / LAYER_METADATA_DIR
    for layer_file in sorted(layer_dir.glob("*.json")) if layer_dir.is_dir() else []:
        if layer_file not in claimed:
            found.left_out.append(f"{folder / layer_file.relative_to(folder)} (in no manifest of {folder})")
    found.left_out += [f"{folder / name} (named by no metadata)" for name in report.unexpected]
    return found


def _differing(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _conflict(first: MergedLayer, other: MergedLayer) -> str:
    a_sha, b_sha = first.entry["archive_hashes"]["sha256"], other.entry["archive_hashes"]["sha256"]
    head = f"{first.layer_name} for {first.platform}: "
    if a_sha != b_sha:
        return (head + f"{first.source} has {first.archive_name} (sha256 {a_sha[:12]}...), {other.source} has "
                f"{other.archive_name} (sha256 {b_sha[:12]}...): different bytes")
    return head + (f"{first.source} and {other.source} hold the same archive bytes but different metadata "
                   f"({', '.join(_differing(first.entry, other.entry))})")


def _combine(found: list[_Found]) -> list[MergedLayer]:
    """One layer per (platform, layer name), refusing any two inputs that disagree."""
    by_key: dict[tuple[str, str], MergedLayer] = {}
    by_archive: dict[str, MergedLayer] = {}
    conflicts: list[str] = []
    for item in found:
        for layer in item.layers:
            key = (layer.platform, layer.layer_name)
            first = by_key.get(key) or by_archive.get(layer.archive_name)
            if first is None:
                by_key[key] = by_archive[layer.archive_name] = layer
            elif first.entry != layer.entry or (first.platform, first.layer_name) != key:
                conflicts.append(_conflict(first, layer))
            elif layer.source not in (first.source, *first.also_in):
                merged = MergedLayer(platform=first.platform, kind=first.kind, entry=first.entry,
                                     metadata_text=first.metadata_text, source=first.source,
                                     also_in=(*first.also_in, layer.source))
                by_key[key] = by_archive[layer.archive_name] = merged
    if conflicts:
        more = f" (and {len(conflicts) - 3} more)" if len(conflicts) > 3 else ""
        raise VerifyError("the publications conflict: " + "; ".join(conflicts[:3]) + more,
                          hint="merge only publications of the same build of each layer: publish each "
                          "platform once and merge those folders, or leave one of the conflicting inputs out")
    return list(by_key.values())


def merged_order(sequences: Sequence[Sequence[str]]) -> list[str]:
    """One order of the names of ``sequences`` that keeps each sequence's own order.

    A topological sort of "a comes before b in some input" (a stable merge of the inputs'
    stack-file orders); names the inputs do not order are taken alphabetically, and any
    contradiction is settled alphabetically too, so the result never depends on the
    order of the inputs.
    """
    after: dict[str, set[str]] = {}
    for seq in sequences:
        for name in seq:
            after.setdefault(name, set())
        for a, b in itertools.pairwise(seq):
            if a != b:
                after[a].add(b)
    waiting = dict.fromkeys(after, 0)
    for targets in after.values():
        for b in targets:
            waiting[b] += 1
    ready = sorted(name for name, n in waiting.items() if n == 0)
    remaining = set(waiting)
    order: list[str] = []
    while remaining:
        # a contradiction (a cycle) leaves nothing ready: release the smallest remaining name
        name = heapq.heappop(ready) if ready else min(remaining)
        if name not in remaining:
            continue
        remaining.discard(name)
        order.append(name)
        for b in sorted(after[name]):
            waiting[b] -= 1
            if waiting[b] == 0 and b in remaining:
                heapq.heappush(ready, b)
    return order


def _manifest_block(plat: str, blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest's ``venvstacks_docker`` block: the keys every input agrees on."""
    agreed = {k: v for k, v in blocks[0].items() if all(b.get(k, _NONE) == v for b in blocks[1:])}
    return {**agreed, "metadata_version": METADATA_VERSION, "target_platform": plat}


_NONE = object()


def _arrange(found: list[_Found], layers: list[MergedLayer]) -> tuple[list[MergedLayer], dict[str, str]]:
    by_key = {(layer.platform, layer.kind, layer.layer_name): layer for layer in layers}
    arranged: list[MergedLayer] = []
    manifests: dict[str, str] = {}
    for plat in sorted({layer.platform for layer in layers}):
        groups: dict[str, list[dict[str, Any]]] = {}
        for kind in LAYER_KINDS:
            names = merged_order([item.order.get((plat, kind), []) for item in found])
            chosen = [by_key[(plat, kind, name)] for name in names if (plat, kind, name) in by_key]
            arranged += chosen
            groups[kind] = [layer.entry for layer in chosen]
        blocks = [item.blocks[plat] for item in found if plat in item.blocks]
        manifest = {"layers": groups, "venvstacks_docker": _manifest_block(plat, blocks)}
        manifests[f"{METADATA_DIR}/venvstacks-{plat}.json"] = dumps(manifest)
    return arranged, manifests


def plan_merge(inputs: Sequence[Path], out: Path) -> MergePlan:
    """Check every input and decide the merged folder's files; writes nothing.

    :raises SpecError: (exit 2) no input, an input missing or given twice, an output
        folder that overlaps an input or is not empty, an untagged publication.
    :raises VerifyError: (exit 7) an input fails verification, or two inputs hold
        different archives or metadata for one layer and platform.
    """
    out = Path(out).absolute()
    folders = _check_folders([Path(p) for p in inputs], out)
    _require_empty(out)
    found = [_read_input(folder, _verified(folder)) for folder in folders]
    layers, manifests = _arrange(found, _combine(found))
    if not layers:
        raise SpecError("the inputs list no layers", hint="publish some layers with --tag-outputs first")
    return MergePlan(inputs=folders, out=out, layers=tuple(layers), manifests=manifests,
                     left_out=tuple(note for item in found for note in item.left_out))


# --- executing --------------------------------------------------------------------


def _copy_hashed(source: Path, target: Path) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with source.open("rb") as src, target.open("wb") as dst:
        for chunk in iter(lambda: src.read(_CHUNK), b""):
            digest.update(chunk)
            dst.write(chunk)
            size += len(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    target.chmod(0o644)
    return size, digest.hexdigest()


def _stage_archive(txn: OutputTransaction, layer: MergedLayer) -> str:
    """Link (or copy) the archive into the staging folder and prove its bytes; how it was staged."""
    source = layer.source / layer.archive_name
    target = txn.path_for(layer.archive_name)
    try:
        try:
            os.link(source, target)
            how = "linked"
            size, sha = target.stat().st_size, sha256_file(target)
        except OSError:
            target.unlink(missing_ok=True)
            how = "copied"
            size, sha = _copy_hashed(source, target)
    except OSError as exc:
        raise PublishError(f"cannot copy {source} into the output folder {txn.out}: {exc.strerror or exc}",
                           hint="free some space or fix the permissions, then merge again") from exc
    if (size, sha) != (layer.entry["archive_size"], layer.entry["archive_hashes"]["sha256"]):
        raise VerifyError(f"{source} changed while it was merged (now {size} bytes, sha256 {sha[:12]}...)",
                          hint="merge again once nothing writes the input folders")
    return how


@dataclass(frozen=True, kw_only=True)
class MergeResult:
    """What :func:`execute_merge` did."""

    plan: MergePlan
    staged: dict[str, str]
    """Archive name -> ``"linked"`` or ``"copied"``."""


def execute_merge(plan: MergePlan, *, on_event: Callable[[str], None] | None = None) -> MergeResult:
    """Write the merged folder as one transaction: all of it, or (interrupted) nothing.

    Holds the output folder's lock, finishes or clears what an interrupted run left
    there, checks again that it is empty, then stages and commits.
    """
    say = on_event or (lambda message: None)
    out = plan.out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PublishError(f"cannot create the output folder {out}: {exc.strerror or exc}") from exc
    with hold([folder_lock(out, "the output folder")], command="merge", say=say):
        for note in recover(out):
            say(note)
        _require_empty(out)
        txn = OutputTransaction(out)
        staged: dict[str, str] = {}
        try:
            for layer in plan.layers:
                staged[layer.archive_name] = _stage_archive(txn, layer)
                say(f"{staged[layer.archive_name]} {layer.archive_name}")
                txn.stage_text(layer.metadata_file, layer.metadata_text)
            for rel, text in sorted(plan.manifests.items()):
                txn.stage_text(rel, text)
            _testhooks.pause("merge-staged")
            txn.commit()
        except KeyboardInterrupt:
            if txn.committed:
                raise Interrupted(f"interrupted just after merging finished: {out} holds the merge") from None
            txn.abort()
            raise Interrupted(f"merging was interrupted: nothing was written into {out}") from None
        except VenvstacksDockerError as exc:
            txn.abort()
            exc.hint = f"{exc.hint}; nothing was written into {out}" if exc.hint else f"nothing was written into {out}"
            raise
        except BaseException:
            txn.abort()
            raise
    return MergeResult(plan=plan, staged=staged)


def merge(inputs: Sequence[Path], out: Path, *, on_event: Callable[[str], None] | None = None) -> MergeResult:
    """Plan and execute a merge of ``inputs`` into ``out`` (see the module docstring)."""
    return execute_merge(plan_merge(inputs, out), on_event=on_event)


__all__ = ["MergePlan", "MergeResult", "MergedLayer", "execute_merge", "merge", "merged_order", "occupants",
           "plan_merge"]
