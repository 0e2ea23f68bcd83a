"""Commands on published output: ``verify`` and ``deploy``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from venvstacks_docker import ui
from venvstacks_docker.cli._common import JsonOpt, load, out
from venvstacks_docker.errors import Interrupted, SpecError, VerifyError

if TYPE_CHECKING:
    from venvstacks_docker.elf_policy import ElfOptions


def register(app: typer.Typer) -> None:
    """Add the commands that work on publish outputs (``verify``, ``deploy``) to ``app``."""
    app.command()(verify)
    app.command()(deploy)


ELF_POLICY = "ELF policy (Linux layers)"


def verify(
    output_dir: Annotated[Path, typer.Argument(help="A publish output folder (holding __venvstacks__/).",
                                               show_default=False)],
    json_output: JsonOpt = False,
    elf_policy: Annotated[bool, typer.Option(
        "--elf-policy/--no-elf-policy", rich_help_panel=ELF_POLICY,
        help="Check every ELF file of the Linux layers against the layer's linux_target: the glibc symbol "
        "versions it needs and the libraries it links.")] = True,
    strict_elf: Annotated[bool, typer.Option(
        "--strict-elf", rich_help_panel=ELF_POLICY,
        help="ELF policy violations fail verify (exit 7); without it they are reported as warnings.")] = False,
    linux_target: Annotated[str | None, typer.Option(
        "--linux-target", metavar="glibc@X.Y", rich_help_panel=ELF_POLICY,
        help="The glibc every Linux layer targets (default: each layer's, from --spec; else venvstacks' "
        "default glibc@2.28, since publications do not record it).")] = None,
    spec_path: Annotated[Path | None, typer.Option(
        "--spec", metavar="SPEC_PATH", rich_help_panel=ELF_POLICY,
        help="The stack file (or its folder) the publication was made from: each layer's linux_target is "
        "read from it.")] = None,
) -> None:
    """Check every published archive's size and sha256 against the metadata, and its ELF files."""
    from venvstacks_docker import verify as _verify
    from venvstacks_docker.txn import settled

    elf = _elf_options(elf_policy, strict_elf, linux_target, spec_path)
    with settled(output_dir, command="verify", say=ui.current().note):
        report = _verify.verify_output_dir(output_dir, elf=elf)
    if json_output:
        sys.stdout.write(report.to_json())
    else:
        out.print(report.render_text(), end="", markup=False)
    if report.elf_policy is not None and report.elf_policy.violations and not strict_elf:
        ui.current().note(f"{report.elf_policy.violations} ELF policy violation(s) (warnings): these layers may "
                          "not load on every host their linux_target promises; --strict-elf makes them fail")
    if not report.ok:
        raise typer.Exit(VerifyError.return_code)


def _elf_options(enabled: bool, strict: bool, linux_target: str | None,
                 spec_path: Path | None) -> ElfOptions | None:
    """The ELF policy settings of ``verify``, checked before anything is read."""
    from venvstacks_docker.elf_policy import ElfOptions, Targets, parse_linux_target

    if not enabled:
        if strict or linux_target or spec_path:
            raise SpecError("--strict-elf, --linux-target and --spec set up the ELF policy check, "
                            "which --no-elf-policy turns off", hint="drop one or the other")
        return None
    forced = parse_linux_target(linux_target) if linux_target else None
    targets = Targets.from_spec(load(spec_path), forced) if spec_path else Targets(forced=forced)
    return ElfOptions(targets=targets, strict=strict)


def deploy(
    output_dir: Annotated[Path, typer.Argument(help="A publish output folder.", show_default=False)],
    target: Annotated[Path, typer.Argument(help="Folder to unpack the layers into (created if needed).",
                                           show_default=False)],
    manifest: Annotated[Path | None, typer.Option(
        metavar="FILE", help="Which manifest to deploy when __venvstacks__/ has several (one per platform).")] = None,
    python: Annotated[str | None, typer.Option(
        metavar="PYTHON",
        help="Interpreter to run postinstall.py with (default: each layer's deployed runtime).")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Unpack published archives side by side and run each layer's postinstall.py."""
    from venvstacks_docker import deploy as _deploy
    from venvstacks_docker.txn import settled

    reporter = ui.current()
    try:
        with reporter.phase("deploying"), settled(output_dir, command="deploy", say=reporter.note):
            result = _deploy.deploy(output_dir, target, manifest=manifest, python=python)
    except KeyboardInterrupt:
        raise Interrupted(f"deploy was interrupted: the layers it had unpacked into {target} were "
                          "removed again") from None
    if json_output:
        from venvstacks_docker.metadata import dumps

        sys.stdout.write(dumps(result.as_dict()))
    else:
        out.print(result.render_text(), end="", markup=False)
