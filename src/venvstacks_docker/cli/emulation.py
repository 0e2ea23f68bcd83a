"""``venvstacks-docker emulation``: whether this machine can run another architecture's programs."""

from __future__ import annotations

from typing import Annotated

import typer

from venvstacks_docker.cli._common import emit_json, out

emulation_app = typer.Typer(
    help="qemu user-mode emulation (binfmt_misc): what linux_aarch64 builders on x86_64 (or the "
    "reverse) need.", no_args_is_help=True)

TargetOpt = Annotated[str, typer.Option(
    "--target", metavar="PLATFORM", help="The platform whose programs should run here.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="The result as JSON on stdout.")]


@emulation_app.command("status")
def status(target: TargetOpt = "linux_aarch64", json_output: JsonOpt = False) -> None:
    """Say whether PLATFORM's programs run here, in containers too; exit 15 when they do not."""
    from venvstacks_docker import emulation
    from venvstacks_docker.errors import EmulationError

    found = emulation.status(target)
    if json_output:
        emit_json("emulation", found.as_json())
    else:
        _render(found)
    if not found.usable:
        raise typer.Exit(EmulationError.return_code)


@emulation_app.command("enable")
def enable(target: TargetOpt = "linux_aarch64", json_output: JsonOpt = False) -> None:
    """Register qemu-user-static's rule for PLATFORM with binfmt_misc (as root; mounts it if needed).

    Installs nothing: qemu-user-static comes from the distribution (apt-get install qemu-user-static).
    The registration lasts until the next reboot (binfmt-support or systemd-binfmt renew it at boot).
    """
    from venvstacks_docker import emulation, ui

    with ui.current().phase(f"enabling emulation of {target}"):
        found = emulation.enable(target)
    if json_output:
        emit_json("emulation", found.as_json())
    else:
        _render(found)


def _render(found: object) -> None:
    from venvstacks_docker.emulation import Emulation

    assert isinstance(found, Emulation)
    if found.native:
        out.print(f"{found.target}: this machine's own architecture (nothing to emulate)", markup=False)
        return
    state = "usable" if found.usable else "NOT usable"
    out.print(f"{found.target}: {state} (binfmt_misc {'mounted' if found.mounted else 'not mounted'}, "
              f"rule {'registered' if found.registered else 'not registered'}"
              f"{', enabled' if found.enabled else ''}{', F flag' if found.fix_binary else ''})", markup=False)
    if found.interpreter:
        out.print(f"  interpreter: {found.interpreter}", markup=False)
    problem = found.problem()
    if problem:
        out.print(f"  problem: {problem[0]}\n  fix: {problem[1]}", markup=False)
