"""How the CLI shows plans and outcomes: trees and tables on stdout, or JSON."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from venvstacks_docker import build as _build
from venvstacks_docker.cli._common import STATE, emit_json, out, rel
from venvstacks_docker.execute import Outcome
from venvstacks_docker.metadata import dumps
from venvstacks_docker.plan import Plan, lock_status
from venvstacks_docker.spec import LayerSpec, StackSpec


def spec_name(spec: StackSpec) -> str:
    """The stack file as venvstacks names it: absolute and normalised (no ``.`` or ``..``),
    symbolic links kept."""
    return os.path.abspath(spec.path)  # noqa: PTH100 - Path.resolve() would resolve symbolic links


def install_target(spec: StackSpec, layer: LayerSpec, valid: bool) -> str:
    """The deployed name ``show`` prints: ``name@???`` for a versioned layer without a valid
    lock (its next ``lock_version`` is not known until it is locked), as venvstacks prints it."""
    if layer.versioned and not valid:
        return f"{layer.env_name}@???"
    return _build.deployed_name(spec, layer)


def _layer_json(spec: StackSpec, layer: LayerSpec, ops: dict[str, list[str]] | None) -> dict[str, Any]:
    valid = lock_status(spec, layer)
    data: dict[str, Any] = {
        "layer_name": layer.env_name,
        "name": layer.env_name,  # venvstacks' key for the same thing, kept for its users
        "install_target": install_target(spec, layer, valid),
        "has_valid_lock": valid,
        "selected_operations": ops.get(layer.env_name) if ops is not None else None,
    }
    if layer.kind != "runtime":
        data["dependencies"] = [_layer_json(spec, low, ops) for low in spec.lower_layers(layer)]
    return data


def stack_json(spec: StackSpec, names: list[str], ops: dict[str, list[str]] | None) -> dict[str, Any]:
    """venvstacks' selection JSON (``spec_name``, ``runtimes``, ...), for ``show`` and ``--json``."""
    chosen = set(names)
    return {
        "spec_name": spec_name(spec),
        "runtimes": [_layer_json(spec, layer, ops) for layer in spec.runtimes if layer.env_name in chosen],
        "frameworks": [_layer_json(spec, layer, ops) for layer in spec.frameworks if layer.env_name in chosen],
        "applications": [_layer_json(spec, layer, ops) for layer in spec.applications if layer.env_name in chosen],
    }


def _tree_label(spec: StackSpec, layer: LayerSpec, valid: dict[str, bool]) -> str:
    """``[*]name[ -> install_target]`` as venvstacks formats a layer (``*``: lock out of date)."""
    if layer.env_name not in valid:
        valid[layer.env_name] = lock_status(spec, layer)
    ok = valid[layer.env_name]
    deploy = install_target(spec, layer, ok)
    return ("" if ok else "*") + layer.env_name + (f" -> {deploy}" if deploy != layer.env_name else "")


def print_tree(spec: StackSpec, names: list[str], ops: dict[str, list[str]] | None = None) -> None:
    """The layer tree, as venvstacks prints it: each kind of layer, each layer with the
    layers it sees below it; ``*`` marks a layer whose lock is out of date, ``-> name@N``
    the deployed name of a versioned layer (``@???`` until it has a valid lock)."""
    tree = Tree(escape(spec_name(spec)))
    chosen = set(names)
    valid: dict[str, bool] = {}
    for title, group in (("Runtimes", spec.runtimes), ("Frameworks", spec.frameworks),
                         ("Applications", spec.applications)):
        branch = tree.add(title)
        for layer in (layer for layer in group if layer.env_name in chosen):
            label = escape(_tree_label(spec, layer, valid))
            if ops is not None and ops.get(layer.env_name):
                label += f" [dim]({escape(', '.join(ops[layer.env_name]))})[/]"
            node = branch.add(label)
            for low in spec.lower_layers(layer):
                node.add(escape(_tree_label(spec, low, valid)))
    out.print(tree)


def show_plan(spec: StackSpec, plan: Plan, *, show: bool, show_only: bool, json_output: bool) -> bool:
    """venvstacks' ``--show``/``--show-only``/``--json`` rules; True means stop here.

    ``--json`` alone implies ``--show-only`` (the selection as JSON); ``--show --json``
    runs the command and prints its results as JSON.
    """
    names = [step.layer_name for step in plan.steps]
    if show_only or (json_output and not show):
        if json_output:
            emit_json("selection", {**stack_json(spec, names, plan.operations),
                                    "plan": plan.to_dict()})
        else:
            print_tree(spec, names, plan.operations)
        return True
    if show and not json_output:
        print_tree(spec, names, plan.operations)
    return False


# --- outcomes -------------------------------------------------------------------------


def _table(*columns: str, right: tuple[str, ...] = ()) -> Table:
    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, justify="right" if column in right else "left", no_wrap=True)
    return table


def print_locks(spec: StackSpec, rows: list[dict[str, Any]]) -> None:
    """Print the lock results of ``lock`` as a table."""
    table = _table("layer", "status", "locked at", "lock file")
    for row in rows:
        table.add_row(escape(row["layer_name"]), row["status"], str(row["locked_at"] or ""),
                      escape(rel(row["lock_file"], spec.spec_dir)))
    out.print(table)


#: What a publish has decided only once it is done: not part of a publishing request.
_RESULT_KEYS = ("archive_size", "archive_hashes", "venvstacks_docker")


def publishing_request(spec: StackSpec, published: dict[str, Any]) -> dict[str, Any]:
    """A dry run's publication as venvstacks' publishing request: ``{"layers": {"runtimes":
    [...], "frameworks": [...], "applications": [...]}}``, each entry the layer's metadata
    as it would be published, less what only the archive gives (size, hashes)."""
    groups: dict[str, list[dict[str, Any]]] = {"runtimes": [], "frameworks": [], "applications": []}
    for layer in published["layers"]:
        kind = spec.layer(layer["layer_name"]).kind
        groups[f"{kind}s"].append({k: v for k, v in layer["metadata"].items() if k not in _RESULT_KEYS})
    return {"layers": groups}


def print_publication(spec: StackSpec, published: dict[str, Any], command: str = "publish") -> None:
    """The publish report: an aligned table naming the output folder; for a dry run, the
    publishing request as JSON, as venvstacks prints it."""
    folder = Path(published["output_dir"])
    if published["dry_run"]:
        out.print(f"Dry run: would publish to {escape(str(folder))}; the publishing request:")
        out.print(dumps(publishing_request(spec, published)), end="", markup=False)
        if command == "build":
            out.print("Nothing was published: add --publish to write the archives.")
        return
    out.print(f"Published to {escape(str(folder))} (manifest {escape(rel(published['manifest'], folder))})")
    full = STATE.verbosity >= 1
    table = _table("archive", "bytes", "sha256", "status", right=("bytes",))
    for layer in published["layers"]:
        meta = layer["metadata"]
        sha = (meta.get("archive_hashes") or {}).get("sha256", "")
        table.add_row(escape(meta["archive_name"]), f"{meta.get('archive_size', 0):,d}",
                      sha if full else f"{sha[:16]}…", layer["status"])
    out.print(table)


def print_export(exported: dict[str, Any]) -> None:
    """Print where ``local-export`` put each layer, as a table."""
    folder = Path(exported["output_dir"])
    out.print(f"Exported to {escape(str(folder))}")
    table = _table("layer", "folder", "status")
    for layer in exported["layers"]:
        table.add_row(escape(layer["layer_name"]), escape(rel(layer["folder"], folder)), layer["status"])
    out.print(table)


def publication_json(spec: StackSpec, published: dict[str, Any]) -> dict[str, Any]:
    """The published layers for ``--json``: each one's metadata, status and archive path;
    for a dry run, also venvstacks' publishing request (``request``)."""
    body = {**{k: v for k, v in published.items() if k != "layers"},
            "layers": [{**layer["metadata"], "status": layer["status"], "archive": layer["archive"],
                        "note": layer["note"]} for layer in published["layers"]]}
    if published["dry_run"]:
        body["request"] = publishing_request(spec, published)
    return body


def print_outcome(spec: StackSpec, plan: Plan, outcome: Outcome, *, json_output: bool) -> None:
    """What a run did: its results, as tables or as one JSON document."""
    if json_output:
        body: dict[str, Any] = {"locks": outcome.locks, "builds": outcome.builds}
        if outcome.published is not None:
            body["publication"] = publication_json(spec, outcome.published)
        if outcome.exported is not None:
            body["export"] = outcome.exported
        emit_json(plan.command, body)
        return
    if outcome.locks:
        print_locks(spec, outcome.locks)
    if outcome.published is not None:
        print_publication(spec, outcome.published, plan.command)
    if outcome.exported is not None:
        print_export(outcome.exported)
