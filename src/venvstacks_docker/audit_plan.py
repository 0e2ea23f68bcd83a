"""What an audit will do: the runs, each a publish of the stack under some variations.

An audit publishes the selected layers once as the *reference* and again under
variations of everything that must not matter (paths, umask, time zone, locale, clock,
file order, CPUs, the spec file's layout, the container, the builder's base), then
compares every archive and metadata file with the reference.  Like reprotest, it varies
everything at once by default, in as few runs as the variations allow (one native run
for what varies on the host, one container run for what varies in a container, one
more for another builder base); a run that differs is followed by one run per
variation of it, to name the variation that made the difference.  ``--separately``
plans one run per variation from the start.

:func:`plan_audit` is pure: it looks at the machine (is ``faketime`` installed, are we
root, is there a container engine) but writes nothing, so ``--show-only`` and
``--json`` can show the plan.  :mod:`venvstacks_docker.audit` runs it.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from venvstacks_docker.errors import SpecError

Where = Literal["host", "container"]


@dataclass(frozen=True, kw_only=True)
class Variation:
    """One thing an audit varies between the reference and a run."""

    name: str
    where: Where
    what: str
    """How it is varied, for people."""


VARIATIONS: dict[str, Variation] = {v.name: v for v in (
    Variation(name="build-path", where="host",
              what="the stack, build and output folders under a long path with spaces and non-ASCII letters"),
    Variation(name="output-path", where="host", what="another output folder name"),
    Variation(name="umask", where="host", what="umask 077 instead of the caller's"),
    Variation(name="timezone", where="host", what="TZ=Pacific/Chatham (UTC+12:45) instead of the caller's"),
    Variation(name="locale", where="host", what="LC_ALL=C and LANG=C (ASCII) instead of the caller's"),
    Variation(name="home", where="host", what="HOME in an empty folder of the run"),
    Variation(name="clock", where="host", what="a wall clock 20 years ahead (libfaketime)"),
    Variation(name="file-order", where="host",
              what="inputs copied in shuffled order onto a tmpfs (/dev/shm), whose directory listings "
              "follow creation order instead of the disk's hash order"),
    Variation(name="cpus", where="host", what="one CPU (sched affinity) instead of all"),
    Variation(name="spec-layout", where="host",
              what="the stack file's tables and keys written in another order"),
    Variation(name="container", where="container", what="a builder container instead of this host"),
    Variation(name="hostname", where="container", what="host and domain name audit-host.audit.invalid"),
    Variation(name="user", where="container", what="another uid:gid (4242:4242) and user in the container"),
    Variation(name="container-cpus", where="container", what="one CPU (cpuset 0) in the container"),
    Variation(name="base-image", where="container",
              what="a builder image on a Debian trixie base instead of bookworm"),
)}
OTHER_SUITE = "trixie"


@dataclass(frozen=True, kw_only=True)
class Run:
    """One publish of the stack: the reference, or a run under some variations."""

    name: str
    variations: tuple[str, ...]
    where: Where
    follow_up: bool = False
    """Planned only to attribute a difference of its combined run (runs when that differs)."""


@dataclass(frozen=True, kw_only=True)
class AuditPlan:
    """The runs of an audit and what it leaves out, with why."""

    spec_path: str
    include: tuple[str, ...]
    runs: tuple[Run, ...]
    skipped: dict[str, str] = field(default_factory=dict)
    """Variation -> why it cannot run here."""

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON data, with every variation described."""
        data = asdict(self)
        data["variations"] = {name: {"where": v.where, "what": v.what} for name, v in VARIATIONS.items()}
        return data


def choose(vary: tuple[str, ...], dont_vary: tuple[str, ...]) -> list[str]:
    """The variations selected by ``--vary`` (default: all) minus ``--dont-vary``.

    :raises SpecError: for a name that is not a variation.
    """
    for name in (*vary, *dont_vary):
        if name != "all" and name not in VARIATIONS:
            raise SpecError(f"unknown variation {name!r}", hint="variations: " + ", ".join(VARIATIONS))
    chosen = list(VARIATIONS) if not vary or "all" in vary else [n for n in VARIATIONS if n in vary]
    return [n for n in chosen if n not in dont_vary]


def _why_not(name: str, *, engine: bool, chosen: list[str]) -> str | None:
    variation = VARIATIONS[name]
    if variation.where == "container":
        if not sys.platform.startswith("linux"):
            return "builder containers are for Linux hosts"
        if not engine:
            return "no container engine answers (set DOCKER_HOST, or start Docker)"
        if name != "container" and "container" not in chosen:
            return "it varies the container run, which --dont-vary container leaves out"
    if name == "clock" and shutil.which("faketime") is None:
        return "libfaketime is not installed (Debian: apt-get install faketime)"
    if name == "user" and os.geteuid() != 0:
        return "handing the build folders to another uid needs root (a non-root caller's container runs as the caller)"
    if name == "base-image" and os.geteuid() != 0:
        return f"bootstrapping the {OTHER_SUITE} base needs root (or run `venvstacks-docker image bootstrap-base "\
               f"--suite {OTHER_SUITE}` as root once)"
    if name == "file-order" and not os.path.isdir("/dev/shm"):  # noqa: PTH112 - a plain existence probe
        return "there is no tmpfs at /dev/shm"
    return None


def plan_audit(spec_path: str, include: tuple[str, ...], chosen: list[str], *, engine: bool,
               separately: bool = False) -> AuditPlan:
    """The runs that vary ``chosen``, and the variations that cannot run here (with why)."""
    skipped = {n: why for n in chosen if (why := _why_not(n, engine=engine, chosen=chosen))}
    runnable = [n for n in chosen if n not in skipped]
    host = tuple(n for n in runnable if VARIATIONS[n].where == "host")
    container = tuple(n for n in runnable if VARIATIONS[n].where == "container" and n != "base-image")
    runs = [Run(name="reference", variations=(), where="host")]
    if separately:
        runs += [Run(name=n, variations=(n,), where=VARIATIONS[n].where) for n in (*host, *container)]
    else:
        for name, group, where in (("host", host, "host"), ("container", container, "container")):
            if not group:
                continue
            runs.append(Run(name=name, variations=group, where=where))  # type: ignore[arg-type]
            if len(group) > 1:
                runs += [Run(name=f"{name}:{n}", variations=(n,), where=where, follow_up=True)  # type: ignore[arg-type]
                         for n in group]
    if "base-image" in runnable:
        runs.append(Run(name="base-image", variations=("container", "base-image"), where="container"))
    return AuditPlan(spec_path=spec_path, include=include, runs=tuple(runs), skipped=skipped)


__all__ = ["OTHER_SUITE", "VARIATIONS", "AuditPlan", "Run", "Variation", "choose", "plan_audit"]
