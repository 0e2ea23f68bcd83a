"""Which builder containers belong to a dead host process, and removing them.

A host process that is SIGKILLed (or loses power, or is OOM-killed) cannot remove its
builder container.  The container itself stops soon after (it watches its stdin, see
:mod:`venvstacks_docker.host.container`), but it stays in the engine until someone
removes it.  Every run therefore starts with :func:`remove_orphans`, which removes the
builder containers whose owner is *provably* dead, and nothing else.

"Provably" is the point: the engine may be shared by other users, other machines
(``DOCKER_HOST=tcp://...``) and other pid namespaces (CI jobs in containers).  A pid
alone proves nothing (pids are reused, and mean nothing in another pid namespace), so
the owner label records enough to decide without doubt::

    <hostname>:<pid>:<process start time>:<boot id>:<pid namespace>

The start time is field 22 of ``/proc/<pid>/stat`` (clock ticks since boot); the boot
id is ``/proc/sys/kernel/random/boot_id``; the pid namespace is the inode of
``/proc/self/ns/pid``.  A container is judged only when hostname, boot id and pid
namespace all equal ours (then its pid is a pid we can look up); its owner is dead when
that pid is gone or now belongs to a process that started at another time.  Anything
else (another host, another boot, another namespace, a label we cannot parse, a
container kept on purpose with ``VENVSTACKS_DOCKER_KEEP_CONTAINER``) is left alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Final, NamedTuple

from venvstacks_docker.errors import ContainerError

if TYPE_CHECKING:
    import docker

#: Every container the tool creates carries this label (value: :data:`ROLE_BUILDER`).
LABEL_ROLE: Final = "venvstacks-docker.role"
ROLE_BUILDER: Final = "builder"
#: And this one, naming the host process that created it (see :class:`Owner`).
LABEL_OWNER: Final = "venvstacks-docker.owner"
#: Set to ``"1"`` on containers kept for debugging: never removed as orphans.
LABEL_KEEP: Final = "venvstacks-docker.keep"

#: Written in a label field whose value this machine cannot know (no ``/proc``).
_UNKNOWN: Final = "-"


def truthy(value: str | None) -> bool:
    """Whether an environment variable or label value means "yes"."""
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _read(path: str) -> str | None:
    try:
        with Path(path).open(encoding="ascii", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return None


def process_start_time(pid: int) -> str | None:
    """Field 22 of ``/proc/<pid>/stat`` (start time in clock ticks since boot).

    ``None`` when there is no such process (or no ``/proc``).  The command name (field
    2) may contain spaces and parentheses, so fields are counted after its last ``)``.
    """
    text = _read(f"/proc/{pid}/stat")
    if not text or ")" not in text:
        return None
    fields = text[text.rindex(")") + 1 :].split()
    # fields[0] is field 3 (state), so field 22 is fields[19]
    return fields[19] if len(fields) > 19 else None


def _pid_namespace() -> str:
    try:
        link = str(Path("/proc/self/ns/pid").readlink())  # "pid:[4026531836]"
    except OSError:
        return _UNKNOWN
    digits = "".join(ch for ch in link if ch.isdigit())
    return digits or _UNKNOWN


class Owner(NamedTuple):
    """The host process that created a builder container, as its label records it."""

    hostname: str
    pid: int
    start_time: str
    boot_id: str
    pid_namespace: str

    @classmethod
    def current(cls) -> Owner:
        """This process."""
        pid = os.getpid()
        return cls(
            hostname=os.uname().nodename,
            pid=pid,
            start_time=process_start_time(pid) or _UNKNOWN,
            boot_id=_read("/proc/sys/kernel/random/boot_id") or _UNKNOWN,
            pid_namespace=_pid_namespace(),
        )

    @classmethod
    def parse(cls, label: str | None) -> Owner | None:
        """The owner a label names, or ``None`` for a label we did not write."""
        parts = (label or "").split(":")
        if len(parts) != 5 or not parts[1].isdigit() or not all(parts):
            return None
        return cls(parts[0], int(parts[1]), parts[2], parts[3], parts[4])

    def label(self) -> str:
        """The value of :data:`LABEL_OWNER` for this owner."""
        return ":".join((self.hostname, str(self.pid), self.start_time, self.boot_id, self.pid_namespace))

    def is_provably_dead(self, here: Owner | None = None) -> bool:
        """True only when we can be sure this process no longer exists.

        :param here: the process deciding (default: this one).  Its hostname, boot id
            and pid namespace must equal the owner's, else we cannot tell.
        """
        here = here or Owner.current()
        known = (here.boot_id, here.pid_namespace, self.start_time)
        if _UNKNOWN in known:
            return False
        if (self.hostname, self.boot_id, self.pid_namespace) != (
            here.hostname,
            here.boot_id,
            here.pid_namespace,
        ):
            return False
        return process_start_time(self.pid) != self.start_time


def _container_name(info: dict) -> str:  # type: ignore[type-arg]
    names = info.get("Names") or []
    return str(names[0]).lstrip("/") if names else str(info.get("Id", ""))[:12]


def remove_orphans(client: docker.DockerClient) -> list[str]:
    """Remove the builder containers whose host process is provably dead; return their names.

    One ``list`` call filtered by :data:`LABEL_ROLE` (no per-container inspect), then one
    forced removal (with anonymous volumes) per orphan, so it is cheap enough to run at
    the start of every container run.  A container that vanishes meanwhile (another run
    removed it) or cannot be removed right now is skipped: this is housekeeping and never
    fails a run for that.

    :raises ContainerError: when the engine cannot list containers.
    """
    import docker

    here = Owner.current()
    try:
        listed = client.api.containers(all=True, filters={"label": [f"{LABEL_ROLE}={ROLE_BUILDER}"]})
    except (docker.errors.DockerException, OSError) as exc:
        raise ContainerError(f"cannot list builder containers to remove orphans: {exc}") from None
    removed: list[str] = []
    for info in listed:
        labels = info.get("Labels") or {}
        if truthy(labels.get(LABEL_KEEP)):
            continue
        owner = Owner.parse(labels.get(LABEL_OWNER))
        if owner is None or not owner.is_provably_dead(here):
            continue
        try:
            client.api.remove_container(info["Id"], v=True, force=True)
        except docker.errors.APIError:  # NotFound, or "removal already in progress"
            continue
        removed.append(_container_name(info))
    return removed


__all__ = [
    "LABEL_KEEP",
    "LABEL_OWNER",
    "LABEL_ROLE",
    "ROLE_BUILDER",
    "Owner",
    "process_start_time",
    "remove_orphans",
    "truthy",
]
