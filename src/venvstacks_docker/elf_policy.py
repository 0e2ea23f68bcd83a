"""The ELF policy check: whether a Linux layer's compiled code loads on the hosts it targets.

A layer is locked for a ``linux_target`` (``glibc@2.28`` by default, as in venvstacks):
its wheels may need nothing newer than the ``manylinux_2_28`` policy allows.  Wheels from
an index respect that because their tags say so, but nothing checks the runtime, a wheel
with a wrong tag or a library a layer forgot.  For every ELF file (executable or shared
object) in every Linux layer of a publication this module reads, with pyelftools:

* the **symbol versions** it needs from libraries the layers do not ship (``.gnu.version_r``):
  ``GLIBC_x.y`` must be no newer than the target glibc, and the other families the
  policy knows (``GLIBCXX``, ``CXXABI``, ``GCC``, ``ZLIB``, ``LIBATOMIC``) no newer than
  the manylinux policy of that glibc allows;
* the **libraries** it needs (``DT_NEEDED``): each must be provided by the layer itself,
  a lower layer (its runtime and frameworks, from the layer's metadata, which covers
  their ``share/venv/dynlib`` links), a file its ``$ORIGIN``-relative RUNPATH/RPATH
  reaches in the publication, the dynamic loader, or the policy's system libraries.

The policy data (``resources/manylinux-policy.json``) summarises auditwheel's.  Nothing
here runs a program or unpacks to disk: archives are read as streams.  Publications do
not record ``linux_target``, so the target comes from ``--linux-target``, the stack file
(``--spec``), or venvstacks' default (see ``docs/reference/elf-policy.md``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import posixpath
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from venvstacks_docker.elf_scan import ElfNeeds, LayerScan, NeededVersion, scan_archive
from venvstacks_docker.errors import SpecError
from venvstacks_docker.platforms import usable_cpus
from venvstacks_docker.spec import DEFAULT_LINUX_TARGET, StackSpec

POLICY_FILE: Final = Path(__file__).resolve().parent / "resources" / "manylinux-policy.json"
_SHOWN_PER_LAYER = 12  # violations listed per layer in the text report (--json lists all)

Version = tuple[int, ...]
Kind = Literal["symbol-version", "library"]


def _numeric(text: str) -> bool:
    return bool(text) and all(part.isdigit() for part in text.split("."))


def _key(text: str) -> Version:
    return tuple(int(part) for part in text.split("."))


def _dotted(version: Version) -> str:
    return ".".join(map(str, version))


# ---------------------------------------------------------------------------------
# The policy
# ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Policy:
    """A manylinux policy for one architecture: system libraries and symbol versions."""

    name: str
    glibc: Version
    libraries: frozenset[str]
    loaders: frozenset[str]
    newest: Mapping[str, Version | None]
    """Version family -> the newest numeric version a file may need (``None``: none)."""
    also: Mapping[str, frozenset[str]]
    """Version family -> non-numeric version names a file may need (``TM_1``)."""

    def too_new(self, version_name: str, target: Version) -> bool:
        """Whether ``version_name`` (``GLIBC_2.34``) may be missing on a ``target`` host.

        ``GLIBC`` is compared with the target itself (any ``X.Y``, not only the policy's);
        a family the policy does not know is not judged.
        """
        family, _, version = version_name.partition("_")
        if family == "GLIBC":
            return _key(version) > target if _numeric(version) else version not in self.also.get(family, ())
        if family not in self.newest:
            return False
        if not _numeric(version):
            return version not in self.also.get(family, ())
        newest = self.newest[family]
        return newest is None or _key(version) > newest


@functools.cache
def _policy_data() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(POLICY_FILE.read_text(encoding="utf-8"))
    return data


def policy_for(target: Version, arch: str) -> Policy:
    """The newest manylinux policy whose glibc is not newer than ``target`` (else the oldest).

    An architecture the policy has no symbol versions for (``aarch64`` before
    ``manylinux_2_17``) is judged on ``GLIBC`` versions and libraries only.
    """
    data = _policy_data()
    policies = sorted(data["policies"], key=lambda p: _key(p["glibc"]))
    chosen = policies[0]
    for candidate in policies:
        if _key(candidate["glibc"]) <= target:
            chosen = candidate
    families = chosen["symbol_versions"].get(arch, {})
    return Policy(
        name=chosen["name"], glibc=_key(chosen["glibc"]), libraries=frozenset(chosen["libraries"]),
        loaders=frozenset(data["dynamic_loaders"].get(arch, ())),
        newest={f: (_key(v["newest"]) if v["newest"] else None) for f, v in families.items()},
        also={f: frozenset(v["also"]) for f, v in families.items()},
    )


def parse_linux_target(text: str) -> str:
    """``glibc@X.Y`` (or ``X.Y``) as ``X.Y``.

    :raises SpecError: for anything else (exit 2).
    """
    variant, at, version = text.strip().rpartition("@")
    if (at and variant != "glibc") or not _numeric(version) or len(version.split(".")) != 2:
        raise SpecError(f"{text!r} is not a Linux target", hint="write it as glibc@X.Y, e.g. glibc@2.28")
    return version


@dataclass(frozen=True, kw_only=True)
class Targets:
    """Where each layer's ``linux_target`` comes from: an option, a stack file, or the default."""

    forced: str | None = None
    by_layer: Mapping[str, str] = field(default_factory=dict)
    spec_name: str | None = None

    @classmethod
    def from_spec(cls, spec: StackSpec, forced: str | None = None) -> Targets:
        """Each layer's ``linux_target`` as the stack file sets it."""
        return cls(forced=forced, by_layer={layer.env_name: layer.linux_target for layer in spec.all_layers()},
                   spec_name=spec.path.name)

    def for_layer(self, layer_name: str) -> tuple[str, str]:
        """``(X.Y, where it came from)`` for one layer."""
        if self.forced:
            return self.forced, "from --linux-target"
        if layer_name in self.by_layer:
            return self.by_layer[layer_name], f"from {self.spec_name}"
        return DEFAULT_LINUX_TARGET, "venvstacks' default: publications do not record linux_target"


# ---------------------------------------------------------------------------------
# Judging layers
# ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Violation:
    """One thing an ELF file needs that a host of the layer's target may not have."""

    file: str
    kind: Kind
    needed: str
    """``GLIBC_2.34`` (the newest offending version of its family) or ``libfoo.so.1``."""
    library: str | None = None
    symbol: str | None = None
    fix: str

    def as_dict(self) -> dict[str, Any]:
        """The JSON form of this violation."""
        return {"file": self.file, "kind": self.kind, "needed": self.needed, "library": self.library,
                "symbol": self.symbol, "fix": self.fix}

    def describe(self) -> str:
        """One line: the file and what it needs."""
        if self.kind == "library":
            return f"{self.file}: needs {self.needed}, which no layer below it and no system library provides"
        via = f" ({self.library}" + (f", e.g. for {self.symbol})" if self.symbol else ")")
        return f"{self.file}: needs {self.needed}{via}"


@dataclass(frozen=True, kw_only=True)
class LayerElfResult:
    """The ELF policy verdict for one Linux layer."""

    layer_name: str
    install_target: str
    target: str
    target_from: str
    policy: str
    elf_files: int = 0
    needs_glibc: str | None = None
    needs_glibc_file: str | None = None
    violations: tuple[Violation, ...] = ()
    skipped: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON form of this layer's verdict."""
        return {"layer_name": self.layer_name, "install_target": self.install_target,
                "linux_target": f"glibc@{self.target}", "linux_target_from": self.target_from,
                "policy": self.policy, "elf_files": self.elf_files, "needs_glibc": self.needs_glibc,
                "needs_glibc_file": self.needs_glibc_file, "skipped": self.skipped,
                "violations": [v.as_dict() for v in self.violations]}


@dataclass(frozen=True, kw_only=True)
class LayerInput:
    """A layer of the publication, as its metadata describes it."""

    layer_name: str
    install_target: str
    target_platform: str
    archive: Path
    lower: tuple[str, ...]  # install targets of the runtime and the frameworks below it
    is_runtime: bool
    readable: bool = True  # False: the archive failed verification, so it is not read

    @classmethod
    def from_metadata(cls, out: Path, entry: Mapping[str, Any], *, readable: bool = True) -> LayerInput:
        """A layer from its published metadata entry."""
        target = str(entry["install_target"])
        runtime = str(entry.get("runtime_layer") or target)
        lower = tuple(x for x in (runtime, *map(str, entry.get("required_layers") or ())) if x != target)
        return cls(layer_name=str(entry["layer_name"]), install_target=target,
                   target_platform=str(entry.get("target_platform") or ""), archive=out / str(entry["archive_name"]),
                   lower=lower, is_runtime=bool(entry.get("bound_to_implementation")), readable=readable)


def _fix(kind: Kind, layer: LayerInput, target: str, needed: str, policy: Policy, library: str | None) -> str:
    if kind == "library":
        return (f"ship {needed} in this layer or a lower one (add the package that provides it), or make sure "
                f"every host has it: it is not one of the {policy.name} system libraries")
    family, _, version = needed.partition("_")
    if family == "GLIBC" and _numeric(version):
        newer = f'linux_target = "glibc@{".".join(version.split(".")[:2])}"'
        if layer.is_runtime:
            return (f"the runtime was built against glibc {version}: build it for glibc {target} or older, "
                    f"or set {newer} in the stack file and relock (hosts then need glibc {version})")
        return (f"a file in this layer was built for glibc {version}: relock with {newer} or newer in the "
                f"stack file (hosts then need glibc {version}), or pin a release with a {policy.name} wheel")
    return (f"{needed} from {library} is newer than {policy.name} allows: set a newer linux_target in the "
            f"stack file and relock, or use a build of this package for {policy.name}")


def _family_rank(name: str) -> tuple[int, Version]:
    version = name.partition("_")[2]
    return (0, _key(version)) if _numeric(version) else (1, ())


def _version_violations(elf: ElfNeeds, layer: LayerInput, target: str, policy: Policy,
                        provided: Callable[[str, ElfNeeds], bool]) -> list[Violation]:
    worst: dict[str, NeededVersion] = {}
    target_key = _key(target)
    for need in elf.versions:
        if provided(need.library, elf) or not policy.too_new(need.version, target_key):
            continue
        family = need.version.partition("_")[0]
        if family not in worst or _family_rank(need.version) > _family_rank(worst[family].version):
            worst[family] = need
    return [Violation(file=elf.path, kind="symbol-version", needed=n.version, library=n.library, symbol=n.symbol,
                      fix=_fix("symbol-version", layer, target, n.version, policy, n.library))
            for _family, n in sorted(worst.items())]


def _via_search_path(elf: ElfNeeds, library: str, all_paths: set[str]) -> bool:
    origin = posixpath.dirname(elf.path)
    for entry in elf.search:
        if "$ORIGIN" not in entry and "${ORIGIN}" not in entry:
            continue  # an absolute path on the build host is no promise about the target host
        folder = entry.replace("${ORIGIN}", origin).replace("$ORIGIN", origin)
        if posixpath.normpath(posixpath.join(folder, library)) in all_paths:
            return True
    return False


def _highest_glibc(elves: Iterable[ElfNeeds], provided: Callable[[str, ElfNeeds], bool]
                   ) -> tuple[str | None, str | None]:
    best: tuple[Version, str] | None = None
    for elf in elves:
        for need in elf.versions:
            family, _, version = need.version.partition("_")
            if family == "GLIBC" and _numeric(version) and not provided(need.library, elf) and (
                    best is None or _key(version) > best[0]):
                best = (_key(version), elf.path)
    return (_dotted(best[0]), best[1]) if best else (None, None)


def judge_layer(layer: LayerInput, scans: Mapping[str, LayerScan], all_paths: set[str],
                targets: Targets) -> LayerElfResult:
    """The verdict for ``layer``, given the scans of every layer (by install target)."""
    target, target_from = targets.for_layer(layer.layer_name)
    policy = policy_for(_key(target), layer.target_platform.partition("_")[2])
    base = LayerElfResult(layer_name=layer.layer_name, install_target=layer.install_target, target=target,
                          target_from=target_from, policy=policy.name)
    scan = scans.get(layer.install_target)
    if scan is None or scan.error:
        return dataclasses.replace(base, skipped=scan.error if scan else "its archive failed verification")
    names = set(scan.names)
    missing_lower = [name for name in layer.lower if name not in scans or scans[name].error]
    for name in layer.lower:
        if name in scans:
            names |= scans[name].names

    def provided(library: str, elf: ElfNeeds) -> bool:
        return library in names or _via_search_path(elf, library, all_paths)

    violations: list[Violation] = []
    for elf in sorted(scan.elves, key=lambda e: e.path):
        violations += _version_violations(elf, layer, target, policy, provided)
        if missing_lower:
            continue  # what a missing lower layer would provide is unknown: no library verdicts
        for library in elf.needed:
            if not provided(library, elf) and library not in policy.libraries and library not in policy.loaders:
                violations.append(Violation(file=elf.path, kind="library", needed=library,
                                            fix=_fix("library", layer, target, library, policy, None)))
    needs, needs_file = _highest_glibc(scan.elves, provided)
    skipped = (f"libraries not checked: lower layer(s) {', '.join(missing_lower)} not readable in this publication"
               if missing_lower else None)
    return dataclasses.replace(base, elf_files=len(scan.elves), needs_glibc=needs, needs_glibc_file=needs_file,
                               violations=tuple(violations), skipped=skipped)


# ---------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ElfOptions:
    """How ``verify`` runs the check: where targets come from, and whether violations fail."""

    targets: Targets = field(default_factory=Targets)
    strict: bool = False


@dataclass(frozen=True, kw_only=True)
class ElfPolicyReport:
    """The ELF policy verdict for every Linux layer of a publication."""

    layers: tuple[LayerElfResult, ...]
    strict: bool = False

    @property
    def violations(self) -> int:
        """How many violations the layers have in all."""
        return sum(len(layer.violations) for layer in self.layers)

    @property
    def fails(self) -> bool:
        """Whether the check fails ``verify``: only with ``strict``, and only on violations."""
        return self.strict and self.violations > 0

    def as_dict(self) -> dict[str, Any]:
        """The ``elf_policy`` object of ``verify --json``."""
        return {"strict": self.strict, "violations": self.violations, "policy_source": _policy_data()["source"],
                "layers": [layer.as_dict() for layer in self.layers]}

    def render_lines(self) -> list[str]:
        """The report's lines: per layer a verdict, its violations and the fix."""
        lines: list[str] = []
        for layer in self.layers:
            head = f"elf-policy    {layer.install_target}: glibc@{layer.target} ({layer.policy}; {layer.target_from})"
            if layer.skipped and not layer.elf_files:
                lines.append(f"{head}: not checked: {layer.skipped}")
                continue
            needs = f", needs glibc {layer.needs_glibc} ({layer.needs_glibc_file})" if layer.needs_glibc else ""
            count = len(layer.violations)
            lines.append(f"{head}: {layer.elf_files} ELF file(s){needs}, "
                         + (f"{count} violation(s)" if count else "ok"))
            if layer.skipped:
                lines.append(f"  note: {layer.skipped}")
            lines += [f"  {v.describe()}" for v in layer.violations[:_SHOWN_PER_LAYER]]
            if count > _SHOWN_PER_LAYER:
                lines.append(f"  ... and {count - _SHOWN_PER_LAYER} more (--json lists every one)")
            lines += [f"  fix: {fix}" for fix in _fixes(layer.violations)]
        return lines


def _fixes(violations: Iterable[Violation]) -> list[str]:
    """One fix per missing library, and per version family the fix of its newest version."""
    worst: dict[str, Violation] = {}
    for v in violations:
        group = v.needed if v.kind == "library" else v.needed.partition("_")[0]
        if group not in worst or _family_rank(v.needed) > _family_rank(worst[group].needed):
            worst[group] = v
    return list(dict.fromkeys(v.fix for v in worst.values()))


def _scan_all(layers: list[LayerInput], targets: Targets) -> dict[tuple[str, str], LayerScan]:
    def scan(layer: LayerInput) -> tuple[tuple[str, str], LayerScan]:
        target = _key(targets.for_layer(layer.layer_name)[0])
        policy = policy_for(target, layer.target_platform.partition("_")[2])
        judge = functools.partial(policy.too_new, target=target)
        return (layer.target_platform, layer.install_target), scan_archive(layer.archive, judge)

    readable = [layer for layer in layers if layer.readable]
    with ThreadPoolExecutor(max_workers=max(1, min(usable_cpus(), len(readable)))) as pool:
        return dict(pool.map(scan, readable))


def check_layers(layers: list[LayerInput], options: ElfOptions) -> ElfPolicyReport:
    """Scan every readable Linux layer (concurrently), then judge each one against the
    layers of its own platform."""
    linux = [layer for layer in layers if layer.target_platform.startswith("linux")]
    scans = _scan_all(linux, options.targets)
    results = []
    for platform in sorted({layer.target_platform for layer in linux}):
        mine = {target: scan for (plat, target), scan in scans.items() if plat == platform}
        all_paths: set[str] = set().union(*(scan.paths for scan in mine.values()))
        results += [judge_layer(layer, mine, all_paths, options.targets)
                    for layer in linux if layer.target_platform == platform]
    return ElfPolicyReport(layers=tuple(results), strict=options.strict)


__all__ = ["ElfOptions", "ElfPolicyReport", "LayerElfResult", "LayerInput", "Policy", "Targets", "Violation",
           "check_layers", "judge_layer", "parse_linux_target", "policy_for"]
