"""``bundle``: everything an offline host needs to publish a locked stack, in one file.

``bundle SPEC -o FILE`` (the same as ``bundle create``) on a connected host;
``bundle verify FILE`` and ``bundle unpack FILE... -o DIR`` anywhere; then
``publish --from-bundle FILE`` on the offline host.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from venvstacks_docker import bundle_plan as _plan
from venvstacks_docker import bundle_use as _use
from venvstacks_docker import ui
from venvstacks_docker.cli._common import (
    OUTPUT,
    SELECT,
    SHOW,
    WHERE,
    AllowMissingOpt,
    BaseImageOpt,
    IncludeOpt,
    SpecArg,
    emit_json,
    load,
    out,
)


class _CreateByDefault(TyperGroup):
    """``bundle SPEC ...`` means ``bundle create SPEC ...``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["create", *args]
        return super().parse_args(ctx, args)


bundle_app = typer.Typer(
    cls=_CreateByDefault,
    no_args_is_help=True,
    help="Bundle a locked stack for a host with no network (bundle SPEC -o FILE), verify or unpack a bundle.",
)

BundleArg = Annotated[Path, typer.Argument(help="A bundle file (or a folder one was unpacked into).",
                                           show_default=False)]
JsonFlag = Annotated[bool, typer.Option("--json", rich_help_panel=SHOW, help="The result as JSON on stdout.")]


@bundle_app.command("create")
def create(
    spec_path: SpecArg,
    output: Annotated[Path, typer.Option("--output", "-o", rich_help_panel=OUTPUT, show_default=False,
                                         help="The bundle file to write (replaced atomically).")],
    platform: Annotated[list[str] | None, typer.Option(
        "--platform", metavar="PLATFORM", rich_help_panel=SELECT,
        help="A target platform to bundle for (default: this machine's); repeatable.")] = None,
    include: IncludeOpt = None,
    allow_missing: AllowMissingOpt = False,
    since: Annotated[Path | None, typer.Option(
        "--since", metavar="OLD", rich_help_panel=OUTPUT,
        help="Write only what the bundle OLD lacks (unpack both together on the offline host).")] = None,
    image: Annotated[bool, typer.Option("--image/--no-image", rich_help_panel=WHERE,
                                        help="Include the builder image for each Linux platform.")] = True,
    tool: Annotated[bool, typer.Option("--tool/--no-tool", rich_help_panel=WHERE,
                                       help="Include the wheels of venvstacks-docker and its dependencies.")] = True,
    base_image: BaseImageOpt = None,
    show_only: Annotated[bool, typer.Option("--show-only", rich_help_panel=SHOW,
                                            help="Print what the bundle would hold and stop.")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Write a bundle of a locked stack: wheels, runtimes, builder image, the tool, the stack."""
    spec = load(spec_path)
    plan = _plan.plan_bundle(spec, output=output.expanduser().absolute(), include=tuple(include or ()),
                             allow_missing=allow_missing, platforms=tuple(platform or ()), image=image,
                             base_image=base_image, tool=tool,
                             since=since.expanduser().absolute() if since else None)
    if show_only:
        _show_plan(plan, json_output)
        return
    from venvstacks_docker.host.bundle_make import make_bundle

    made = make_bundle(plan, spec)
    body = {"bundle": str(made.path), "manifest_sha256": made.manifest_sha256, "size": made.size,
            "carried": made.carried, "listed": len(made.manifest["files"]), "platforms": list(plan.platforms),
            "layers": list(plan.layers), "since": made.manifest.get("since")}
    if json_output:
        emit_json("bundle-create", body)
        return
    listed = f", {made.carried} of {body['listed']} files (the rest are in {since})" if since else \
        f", {made.carried} files"
    out.print(f"wrote {made.path} ({made.size / 2**20:.1f} MiB{listed}); manifest sha256 {made.manifest_sha256}")


def _show_plan(plan: _plan.BundlePlan, json_output: bool) -> None:
    files = [{"name": w.name, "role": w.role, "sha256": w.sha256, "layers": list(w.layers),
              "platforms": list(w.platforms)} for w in plan.files]
    runtimes = [{"layer": r.layer, "platform": r.platform, "sha256": r.sha256} for r in plan.runtimes]
    body: dict[str, Any] = {"bundle": str(plan.output), "platforms": list(plan.platforms), "layers": list(plan.layers),
                            "files": files, "runtimes": runtimes, "builder_images": list(plan.image_targets),
                            "tool": plan.tool, "since": str(plan.since) if plan.since else None}
    if json_output:
        emit_json("bundle-plan", body)
        return
    out.print(f"bundle {plan.output} for {', '.join(plan.platforms)}: layers {', '.join(plan.layers)}")
    roles = {role: sum(1 for f in files if f["role"] == role) for role in ("stack", "wheel")}
    out.print(f"  {roles['stack']} stack files, {roles['wheel']} wheels, {len(runtimes)} runtime archive(s), "
              f"builder images for: {', '.join(plan.image_targets) or 'none'}, tool wheels: "
              f"{'yes' if plan.tool else 'no'}")


@bundle_app.command("verify")
def verify(bundle: BundleArg, json_output: JsonFlag = False) -> None:
    """Check every member of a bundle against its manifest (exit 14 on any difference)."""
    with ui.current().phase(f"verifying {bundle}"):
        checked = _use.verify(bundle.expanduser())
    entries = checked.entries
    carried = [e for e in entries if not e.in_base]
    body = {"bundle": str(bundle), "manifest_sha256": checked.manifest_sha256, "verified": len(carried),
            "listed": len(entries), "since": checked.manifest.get("since"),
            "tool_version": (checked.manifest.get("tool") or {}).get("version"),
            "platforms": checked.manifest.get("platforms", [])}
    if json_output:
        emit_json("bundle-verify", body)
        return
    base = f" (the other {len(entries) - len(carried)} are in the bundle it continues)" if checked.since else ""
    out.print(f"{bundle}: OK, {len(carried)} files match the manifest{base}; manifest sha256 "
              f"{checked.manifest_sha256}")


@bundle_app.command("unpack")
def unpack(
    bundles: Annotated[list[Path], typer.Argument(
        help="A bundle, then any bundles made --since it, in order.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", show_default=False,
                                         help="A new (or empty) folder to unpack into.")],
    json_output: JsonFlag = False,
) -> None:
    """Unpack bundles into a new folder, all or nothing, checked against the manifest."""
    with ui.current().phase(f"unpacking {len(bundles)} bundle(s) into {output}"):
        checked = _use.unpack([b.expanduser() for b in bundles], output.expanduser())
    stack_file = checked.path / str((checked.manifest.get("stack") or {}).get("stack_file", ""))
    body = {"folder": str(checked.path), "manifest_sha256": checked.manifest_sha256,
            "files": len(checked.entries), "stack_file": str(stack_file)}
    if json_output:
        emit_json("bundle-unpack", body)
        return
    out.print(f"unpacked {len(checked.entries)} files into {checked.path}")
    out.print(f"  publish: venvstacks-docker publish --from-bundle {checked.path}")


__all__ = ["bundle_app"]
