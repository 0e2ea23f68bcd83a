"""Running programs of another architecture: qemu user-mode emulation through binfmt_misc.

A ``linux_aarch64`` builder container on an x86_64 machine (and the smoke test of a
cross-built runtime) runs aarch64 programs.  The kernel hands them to
``qemu-aarch64-static`` when a binfmt_misc rule for aarch64 ELF files is registered.
Containers need the rule's ``F`` flag (the kernel opens the interpreter when the rule
is registered, so it need not exist inside the container's file system).

:func:`status` reads ``/proc/sys/fs/binfmt_misc``; :func:`enable` (root) mounts it if
needed and registers the rule that Debian's ``qemu-user-static`` package ships in
``/usr/lib/binfmt.d``; :func:`require_emulation` turns a missing piece into one message
with its fix.  Nothing here installs packages.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from venvstacks_docker.errors import EmulationError

BINFMT_MISC: Final = Path("/proc/sys/fs/binfmt_misc")
#: Where distributions put binfmt rules (systemd-binfmt's format: one registration line).
RULE_DIRS: Final = (Path("/etc/binfmt.d"), Path("/usr/lib/binfmt.d"), Path("/run/binfmt.d"))
#: The CPU of each Linux platform, as ``uname -m`` and qemu name it.
MACHINE: Final = {"linux_x86_64": "x86_64", "linux_aarch64": "aarch64"}
_MACHINE_ALIASES: Final = {"amd64": "x86_64", "arm64": "aarch64"}


def _this_machine() -> str:
    machine = platform.machine().lower()
    return _MACHINE_ALIASES.get(machine, machine)


@dataclass(frozen=True)
class Emulation:
    """What this machine can do about running ``target``'s programs."""

    target: str
    #: ``target`` is this machine's own architecture: nothing to emulate.
    native: bool
    #: binfmt_misc is mounted at :data:`BINFMT_MISC`.
    mounted: bool
    #: the ``qemu-<cpu>`` rule is registered, and enabled.
    registered: bool
    enabled: bool
    #: its flags include ``F`` (works inside containers).
    fix_binary: bool
    interpreter: str | None
    #: the rule file this machine has for it (``qemu-user-static`` installed), if any.
    rule_file: str | None

    @property
    def usable(self) -> bool:
        """Programs of ``target`` run here, in containers too."""
        return self.native or (self.registered and self.enabled and self.fix_binary)

    def problem(self) -> tuple[str, str] | None:
        """What is missing, and how to fix it (``None``: nothing is)."""
        cpu = MACHINE[self.target]
        if self.usable:
            return None
        if not self.mounted and not _can_mount():
            return (f"this kernel offers no binfmt_misc, so {self.target} programs cannot run on this "
                    f"{_this_machine()} machine", f"use a {cpu} machine (or a {cpu} docker engine: "
                    f"--engine {self.target}=ENGINE)")
        if self.rule_file is None and not self.registered:
            return (f"running {self.target} programs here needs qemu user-mode emulation, which is not "
                    "installed", "install it (`apt-get install qemu-user-static`), then run "
                    f"`venvstacks-docker emulation enable --target {self.target}` as root")
        if self.registered and self.enabled and not self.fix_binary:
            return (f"the qemu-{cpu} binfmt rule lacks the F flag, so containers cannot use it",
                    f"re-register it with F (`venvstacks-docker emulation enable --target {self.target}` "
                    "as root replaces it with the packaged rule)")
        missing = "enabled" if self.registered else "registered"
        return (f"qemu user-mode emulation for {cpu} is installed but not {missing} with binfmt_misc",
                f"run `venvstacks-docker emulation enable --target {self.target}` as root")

    def as_json(self) -> dict[str, object]:
        """The state, whether it is usable, and the problem and its fix (``--json``)."""
        problem = self.problem()
        return {**asdict(self), "usable": self.usable, "machine": _this_machine(),
                "problem": problem[0] if problem else None, "fix": problem[1] if problem else None}


def _can_mount() -> bool:
    try:
        return "binfmt_misc" in Path("/proc/filesystems").read_text(encoding="utf-8")
    except OSError:
        return False


def _rule_file(cpu: str) -> Path | None:
    for folder in RULE_DIRS:
        candidate = folder / f"qemu-{cpu}.conf"
        if candidate.is_file():
            return candidate
    return None


def _entry(cpu: str) -> dict[str, str]:
    """The fields of the registered rule ``qemu-<cpu>`` (empty when there is none)."""
    try:
        text = (BINFMT_MISC / f"qemu-{cpu}").read_text(encoding="utf-8")
    except OSError:
        return {}
    fields = {"state": text.splitlines()[0].strip() if text else ""}
    for line in text.splitlines()[1:]:
        key, _, value = line.partition(" ")
        fields[key.rstrip(":")] = value.strip()
    return fields


def status(target: str) -> Emulation:
    """Whether programs of ``target`` (``linux_aarch64``, ``linux_x86_64``) can run here."""
    if target not in MACHINE:
        from venvstacks_docker.errors import SpecError

        raise SpecError(f"{target!r} is not a platform emulation can serve",
                        hint="use " + " or ".join(MACHINE))
    cpu = MACHINE[target]
    rule = _rule_file(cpu)
    if cpu == _this_machine():
        return Emulation(target, True, True, True, True, True, None, None)
    mounted = (BINFMT_MISC / "register").exists()
    entry = _entry(cpu) if mounted else {}
    return Emulation(
        target=target, native=False, mounted=mounted, registered=bool(entry),
        enabled=entry.get("state") == "enabled", fix_binary="F" in entry.get("flags", ""),
        interpreter=entry.get("interpreter"), rule_file=str(rule) if rule else None,
    )


def require_emulation(target: str) -> None:
    """Raise :class:`EmulationError` naming the fix unless ``target``'s programs run here."""
    found = status(target)
    if not found.usable:
        raise _failure(found)


def enable(target: str) -> Emulation:
    """Register ``target``'s qemu rule with binfmt_misc (root), mounting it first if needed.

    :raises EmulationError: not root, no binfmt_misc in this kernel, qemu-user-static
        not installed, or the kernel refused the rule.
    """
    found = status(target)
    if found.usable:
        return found
    if os.geteuid() != 0:
        raise EmulationError("registering qemu with binfmt_misc needs root",
                             hint=f"run `sudo venvstacks-docker emulation enable --target {target}`")
    cpu = MACHINE[target]
    try:
        if not found.mounted:
            if not _can_mount():
                raise _failure(found)
            _mount()
            found = status(target)
            if found.usable:
                return found
        if found.rule_file is None:
            raise _failure(found)
        if found.registered:  # disabled, or without F: replace it with the packaged rule
            (BINFMT_MISC / f"qemu-{cpu}").write_text("-1", encoding="utf-8")
        rule = next(line for line in Path(found.rule_file).read_text(encoding="utf-8").splitlines()
                    if line.startswith(":"))
        (BINFMT_MISC / "register").write_text(rule, encoding="utf-8")
    except (OSError, StopIteration) as exc:
        if status(target).usable:  # another `enable` (or binfmt-support) registered it meanwhile
            return status(target)
        raise EmulationError(f"the kernel refused the qemu-{cpu} binfmt rule: {exc}",
                             hint="in a container, binfmt_misc belongs to the host: enable it there") from None
    after = status(target)
    if not after.usable:
        raise _failure(after)
    return after


def _failure(found: Emulation) -> EmulationError:
    message, hint = found.problem() or (f"emulation of {found.target} is not usable", "")
    return EmulationError(message, hint=hint or None)


def _mount() -> None:
    from venvstacks_docker._run import run

    run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_MISC)], what="mounting binfmt_misc",
        error=EmulationError)


__all__ = ["BINFMT_MISC", "MACHINE", "Emulation", "enable", "require_emulation", "status"]
