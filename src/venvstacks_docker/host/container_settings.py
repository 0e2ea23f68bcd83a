"""How a builder container is set up: its pinned environment, scratch space, user,
and the overrides an audit uses to vary the container (host name, CPUs)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Final

from venvstacks_docker.errors import ContainerError
from venvstacks_docker.host.ownership import sandbox_user

#: Size of the scratch tmpfs at ``/tmp`` (``HOME`` is ``/tmp/home``); memory-backed.
TMP_SIZE_ENV: Final = "VENVSTACKS_DOCKER_TMP_SIZE"
DEFAULT_TMP_SIZE: Final = "1g"
#: ``host.domain`` for builder containers (``audit`` varies it; default: the engine's).
HOSTNAME_ENV: Final = "VENVSTACKS_DOCKER_CONTAINER_HOSTNAME"
#: A cpuset such as ``0`` or ``0-1`` for builder containers (``audit`` varies it).
CPUS_ENV: Final = "VENVSTACKS_DOCKER_CONTAINER_CPUS"


def container_environment(
    environment: Mapping[str, str] | None = None, *, source_date_epoch: int | str | None = None
) -> dict[str, str]:
    """The pinned environment every builder container gets, plus ``environment``.

    ``SOURCE_DATE_EPOCH`` comes from ``source_date_epoch``, else from the host's
    environment; it is left unset when neither has one.
    """
    env = {
        "TZ": "UTC",
        "LC_ALL": "C.UTF-8",
        "LANG": "C.UTF-8",
        "HOME": "/tmp/home",
        "PYTHONHASHSEED": "0",
    }
    sde = source_date_epoch if source_date_epoch is not None else os.environ.get("SOURCE_DATE_EPOCH")
    if sde is not None and str(sde) != "":
        env["SOURCE_DATE_EPOCH"] = str(int(sde))
    env.update(environment or {})
    return env


def tmpfs_mounts(*, podman: bool = False) -> dict[str, str]:
    """The tmpfs mounts of a builder container (target -> mount options).

    ``/tmp`` is the only writable place besides the bind mounts: sticky and
    world-writable like a real ``/tmp``, executable (build tools may run scripts from
    it), no device files or setuid.  Its size is ``VENVSTACKS_DOCKER_TMP_SIZE`` (default
    1g; memory is used only as files fill it).

    podman copies the image's ``/tmp`` into a tmpfs unless told not to (``notmpcopyup``,
    an option Docker refuses): the copy of ``/tmp/home`` would keep the image's owner
    and modes, and HOME would not be writable.  Docker starts every tmpfs empty.

    :raises ContainerError: for a size that is not a number with an optional k/m/g.
    """
    size = os.environ.get(TMP_SIZE_ENV, "").strip() or DEFAULT_TMP_SIZE
    if not re.fullmatch(r"[1-9][0-9]*[kmgKMG]?", size):
        raise ContainerError(
            f"{TMP_SIZE_ENV}={size!r} is not a size", hint=f"use e.g. {TMP_SIZE_ENV}=4g"
        )
    options = f"rw,exec,nosuid,nodev,size={size},mode=1777"
    return {"/tmp": options + ",notmpcopyup" if podman else options}


def container_user(user: str | None) -> tuple[str, bool]:
    """``uid:gid`` to run as, and whether it is the sandbox user standing in for root."""
    if user is None:
        uid, gid = sandbox_user()
        return f"{uid}:{gid}", uid != os.geteuid()
    first = user.split(":", 1)[0].strip()
    if first in {"root", ""} or (first.isdigit() and int(first) == 0):
        raise ContainerError(
            f"refusing to run a builder container as {user!r}: builder containers never run as root",
            hint="leave the user unset (the caller's uid, or the sandbox user for root)",
        )
    return user, False




def naming() -> dict[str, Any]:
    """``hostname``/``domainname`` for the container, from :data:`HOSTNAME_ENV` if set."""
    value = os.environ.get(HOSTNAME_ENV, "").strip()
    if not value:
        return {}
    host, _, domain = value.partition(".")
    return {"hostname": host, **({"domainname": domain} if domain else {})}


def placement() -> dict[str, Any]:
    """``cpuset_cpus`` for the container's host config, from :data:`CPUS_ENV` if set."""
    value = os.environ.get(CPUS_ENV, "").strip()
    if not value:
        return {}
    if not re.fullmatch(r"[0-9]+([-,][0-9]+)*", value):
        raise ContainerError(f"{CPUS_ENV}={value!r} is not a cpuset", hint=f"use e.g. {CPUS_ENV}=0 or 0-1")
    return {"cpuset_cpus": value}


__all__ = ["CPUS_ENV", "DEFAULT_TMP_SIZE", "HOSTNAME_ENV", "TMP_SIZE_ENV", "container_environment",
           "container_user", "naming", "placement", "tmpfs_mounts"]
