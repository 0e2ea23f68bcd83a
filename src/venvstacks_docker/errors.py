"""Every error the tool reports to a user, each with its own exit code.

Library code raises these; only ``cli.main`` turns them into a message and an exit
status.  Each message says what went wrong and, where there is one, what to do.
"""

from __future__ import annotations


class VenvstacksDockerError(Exception):
    """Base class: a problem reported to the user without a traceback."""

    return_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class SpecError(VenvstacksDockerError):
    """The stack file (or a command line option) is invalid."""

    return_code = 2


class LockError(VenvstacksDockerError):
    """Dependency resolution failed, or a lock is missing or out of date."""

    return_code = 3


class BuildError(VenvstacksDockerError):
    """A layer environment could not be created or installed."""

    return_code = 4


class PublishError(VenvstacksDockerError):
    """Archives or metadata could not be written."""

    return_code = 5


class ContainerError(VenvstacksDockerError):
    """The container engine is missing, failed, or a container step failed."""

    return_code = 6


class VerifyError(VenvstacksDockerError):
    """An archive or its metadata failed verification: a size or sha256 mismatch,
    inconsistent metadata, or a corrupt or unsafe archive."""

    return_code = 7


class RuntimeArchiveError(VenvstacksDockerError):
    """A Python runtime archive is missing, unreachable or has the wrong hash."""

    return_code = 8


class CommandError(VenvstacksDockerError):
    """An external command failed or could not be started."""

    return_code = 9


class FilesystemError(VenvstacksDockerError):
    """A file or folder could not be read or written (disk full, permissions, read-only)."""

    return_code = 10


class DeployError(VenvstacksDockerError):
    """``deploy`` cannot use its target: a layer folder is already there, or a layer's
    runtime is neither deployed nor being deployed."""

    return_code = 11


class AuditDifference(VenvstacksDockerError):
    """``audit``: a run under some variation gave other bytes than the reference."""

    return_code = 13


class DifferenceFound(VenvstacksDockerError):
    """``diff`` found differences between its inputs (after printing its report)."""

    return_code = 12


class BundleError(VenvstacksDockerError):
    """A bundle is damaged, incomplete, edited, or made for another lock, platform or tool."""

    return_code = 14


class EmulationError(VenvstacksDockerError):
    """Programs of another architecture cannot run here: qemu user-mode emulation is not
    installed, not registered with binfmt_misc, or the kernel does not allow it."""

    return_code = 15


class Interrupted(VenvstacksDockerError):
    """The user interrupted the run (Ctrl-C or SIGTERM)."""

    return_code = 130


EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "unexpected internal error (please report it; rerun with --debug for a traceback)",
    2: "invalid stack file or command line",
    3: "locking failed, or a lock is missing or out of date",
    4: "building a layer environment failed",
    5: "publishing or exporting failed",
    6: "container engine problem or failed container step",
    7: "an archive or its metadata failed verification (mismatch, corrupt or unsafe archive)",
    8: "runtime archive missing, unreachable or with the wrong hash",
    9: "an external command failed",
    10: "a file or folder could not be read or written (disk full, permissions, read-only)",
    11: "deploy: the target already holds a layer, or a layer's runtime is missing",
    12: "diff found differences between its inputs",
    13: "audit: a run under some variation differs from the reference",
    14: "bundle: damaged, incomplete or edited, or made for another lock, platform or tool version",
    15: "emulation: programs of another architecture cannot run here (qemu user-mode, binfmt_misc)",
    130: "interrupted",
}
