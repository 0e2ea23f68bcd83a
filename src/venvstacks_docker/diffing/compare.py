"""Comparing two archives member by member, reading each once.

Both archives are read side by side (each decompressed on its own thread).  While
the two members in hand have the same name, their bytes are compared directly and
forgotten when equal; members whose names do not line up (another order, a member on
one side only) wait, hashed, until their partner shows up.  Only pairs whose bytes
differ are handed to the analyzers (:mod:`.analyzers`), after the pass.  Members too
big to keep in memory are fetched again into temporary files, only when they differ.

Two archives with the same sha256 are identical without being opened.  For ``.xz``
files of several streams (the tool writes one per 32 MiB of tar), streams whose
compressed bytes are equal are not even decompressed (:mod:`.skip`).
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from venvstacks_docker import ui
from venvstacks_docker.diffing import analyzers, container, members, skip
from venvstacks_docker.diffing.analyzers import Blob
from venvstacks_docker.diffing.members import Member
from venvstacks_docker.diffing.model import ArchiveReport, Finding, MemberDiff
from venvstacks_docker.metadata import sha256_file

KEEP_LIMIT = 64 << 20
"""Members up to this size are kept in memory when they differ; bigger ones are fetched again."""
PENDING_BUDGET = 256 << 20
"""Bytes of unpaired members kept in memory while waiting for their partner."""
_CHUNK = 1 << 20


@dataclass
class _Entry:
    member: Member
    sha256: str | None = None
    data: bytes | None = None


def _read_entry(member: Member, content: IO[bytes] | None, budget: list[int]) -> _Entry:
    if content is None:
        return _Entry(member)
    if member.size <= KEEP_LIMIT and budget[0] >= member.size:
        data = content.read()
        budget[0] -= len(data)
        return _Entry(member, hashlib.sha256(data).hexdigest(), data)
    digest = hashlib.sha256()
    while chunk := content.read(_CHUNK):
        digest.update(chunk)
    return _Entry(member, digest.hexdigest())


def _compare_contents(ma: Member, fa: IO[bytes] | None, mb: Member,
                      fb: IO[bytes] | None) -> tuple[bool, bytes | None, bytes | None]:
    """Whether two contents are equal; the bytes when they differ and are small enough to keep."""
    if fa is None or fb is None:
        return (fa is None and fb is None), None, None
    if ma.size <= KEEP_LIMIT and mb.size <= KEEP_LIMIT:
        da, db = fa.read(), fb.read()
        return (True, None, None) if da == db else (False, da, db)
    equal = ma.size == mb.size
    while True:
        ca, cb = fa.read(_CHUNK), fb.read(_CHUNK)
        equal = equal and ca == cb
        if not ca and not cb:
            return equal, None, None


class _Comparison:
    """The state of one archive comparison while the members stream by."""

    def __init__(self, report: ArchiveReport, context: int) -> None:
        self.report = report
        self.context = context
        self.pending: dict[str, dict[str, _Entry]] = {"a": {}, "b": {}}
        self.order: dict[str, list[str]] = {"a": [], "b": []}
        self.budget = [PENDING_BUDGET]
        self.differing: list[tuple[Member, Member, bytes | None, bytes | None, bool, list[Finding]]] = []

    def lockstep(self, side_a: Iterable[tuple[Member, IO[bytes] | None]],
                 side_b: Iterable[tuple[Member, IO[bytes] | None]]) -> None:
        """Walk both member sequences together."""
        it_a, it_b = iter(side_a), iter(side_b)
        while True:
            a = next(it_a, None)
            b = next(it_b, None)
            if a is None and b is None:
                return
            if a is not None and b is not None and a[0].name == b[0].name:
                self._pair_in_step(a, b)
                continue
            for side, item in (("a", a), ("b", b)):
                if item is not None:
                    self._unpaired(side, item)

    def _pair_in_step(self, a: tuple[Member, IO[bytes] | None], b: tuple[Member, IO[bytes] | None]) -> None:
        (ma, fa), (mb, fb) = a, b
        self.order["a"].append(ma.name)
        self.order["b"].append(mb.name)
        equal, da, db = _compare_contents(ma, fa, mb, fb)
        self._record(ma, mb, da, db, equal)

    def _unpaired(self, side: str, item: tuple[Member, IO[bytes] | None]) -> None:
        member, content = item
        self.order[side].append(member.name)
        entry = _read_entry(member, content, self.budget)
        other = "b" if side == "a" else "a"
        partner = self.pending[other].pop(member.name, None)
        if partner is None:
            self.pending[side][member.name] = entry
            return
        ea, eb = (entry, partner) if side == "a" else (partner, entry)
        for e in (ea, eb):
            self.budget[0] += len(e.data or b"")
        equal = ea.sha256 == eb.sha256
        self._record(ea.member, eb.member, ea.data, eb.data, equal)

    def _record(self, ma: Member, mb: Member, da: bytes | None, db: bytes | None, equal: bool) -> None:
        headers = analyzers.header_findings(ma, mb)
        if equal and ma.compress == mb.compress and ma.compress_size != mb.compress_size:
            headers.append(Finding(
                "compression", f"the same content is compressed to {ma.compress_size} bytes in A and "
                f"{mb.compress_size} in B: another deflate level or zlib version",
                {"a": ma.compress_size, "b": mb.compress_size}))
        if equal and not headers:
            self.report.members_equal += 1
            return
        self.differing.append((ma, mb, da, db, equal, headers))

    def finish(self, path_a: Path, path_b: Path, fmt_a: str, fmt_b: str) -> None:
        """Analyze the differing pairs (fetching big ones) and add the members found on one side only."""
        need = {ma.name for ma, _, da, db, equal, _ in self.differing if not equal and (da is None or db is None)}
        with tempfile.TemporaryDirectory(prefix="venvstacks-docker-diff-") as tmp:
            fetched_a = members.fetch(path_a, need, Path(tmp) / "a", fmt_a) if need else {}
            fetched_b = members.fetch(path_b, need, Path(tmp) / "b", fmt_b) if need else {}
            for ma, mb, da, db, equal, headers in self.differing:
                diff = MemberDiff(ma.name, "different", headers, size_a=ma.size, size_b=mb.size)
                if not equal:
                    blob_a: Blob = da if da is not None else fetched_a.get(ma.name, b"")
                    blob_b: Blob = db if db is not None else fetched_b.get(mb.name, b"")
                    self.report.analyzed += 1
                    diff.findings += analyzers.analyze_pair(ma.name, blob_a, blob_b, context=self.context)
                self.report.members.append(diff)
        for side in ("a", "b"):
            for name, entry in self.pending[side].items():
                note, extra = analyzers.single_findings(name, side)
                where = f"only in {side.upper()}" + (f": {note}" if note else "")
                finding = Finding(f"only-in-{side}", f"{entry.member.kind} {where}",
                                  {"kind": entry.member.kind, "size": entry.member.size, "sha256": entry.sha256})
                self.report.members.append(MemberDiff(
                    name, "only-in-a" if side == "a" else "only-in-b", [finding, *extra],
                    size_a=entry.member.size if side == "a" else None,
                    size_b=entry.member.size if side == "b" else None))
        self.report.members.sort(key=lambda m: m.name)

    def order_finding(self) -> Finding | None:
        """``member-order`` when the members both archives have are stored in another order."""
        common = set(self.order["a"]) & set(self.order["b"])
        seq_a = [n for n in self.order["a"] if n in common]
        pos_b = {n: i for i, n in enumerate(n for n in self.order["b"] if n in common)}
        keep = _longest_increasing([pos_b[n] for n in seq_a])
        moved = [n for i, n in enumerate(seq_a) if i not in keep]
        if not moved:
            return None
        first = moved[0]
        return Finding(
            "member-order",
            f"{len(moved)} of {len(seq_a)} members are stored in another order (e.g. {first!r} is member "
            f"{seq_a.index(first) + 1} in A and {pos_b[first] + 1} in B). The tool sorts members by name, each folder "
            "before its contents; another order comes from an unsorted directory walk (os.scandir and os.listdir "
            "return the file system's order)", {"moved": len(moved), "common": len(seq_a), "examples": moved[:10]})


def _longest_increasing(seq: list[int]) -> set[int]:
    """Indexes of one longest strictly increasing subsequence of ``seq`` (patience sorting)."""
    import bisect

    tails: list[int] = []
    tail_idx: list[int] = []
    prev = [-1] * len(seq)
    for i, value in enumerate(seq):
        k = bisect.bisect_left(tails, value)
        if k == len(tails):
            tails.append(value)
            tail_idx.append(i)
        else:
            tails[k] = value
            tail_idx[k] = i
        prev[i] = tail_idx[k - 1] if k else -1
    keep = set()
    i = tail_idx[-1] if tail_idx else -1
    while i >= 0:
        keep.add(i)
        i = prev[i]
    return keep


def _hash_both(a: Path, b: Path) -> tuple[str, str]:
    results: dict[str, str] = {}

    def work(key: str, path: Path) -> None:
        results[key] = sha256_file(path)

    thread = threading.Thread(target=work, args=("b", b))
    thread.start()
    work("a", a)
    thread.join()
    return results["a"], results.get("b") or sha256_file(b)


def _progress(label: str, total: int) -> tuple[Callable[[int], None], Callable[[int], None], Callable[[], None]]:
    reporter = ui.current()
    key = f"diff:{label}"
    update = reporter.progress(key, f"comparing {label}", total)
    done = {"a": 0, "b": 0}
    lock = threading.Lock()

    def side(name: str) -> Callable[[int], None]:
        def report(pos: int) -> None:
            with lock:
                done[name] = pos
                update(done["a"] + done["b"])
        return report

    return side("a"), side("b"), lambda: reporter.finish_progress(key)


def compare_archives(a: Path, b: Path, *, label: str | None = None, layer_name: str | None = None,
                     context: int = 3, recorded: tuple[str | None, str | None] = (None, None)) -> ArchiveReport:
    """Compare two layer archives (``.tar.xz``, ``.tar.gz``, ``.tar`` or ``.zip``).

    ``recorded`` is the ``compression`` the metadata gives for each, when known.
    """
    a, b = Path(a), Path(b)
    report = ArchiveReport(label=label or a.name, a=str(a), b=str(b), layer_name=layer_name)
    report.size_a, report.size_b = a.stat().st_size, b.stat().st_size
    report.sha256_a, report.sha256_b = _hash_both(a, b)
    report.format_a, report.format_b = members.detect_format(a), members.detect_format(b)
    if report.sha256_a == report.sha256_b:
        return report
    report.status = "different"
    report.opened = True
    comparison = _Comparison(report, context)
    progress_a, progress_b, done = _progress(report.label, report.size_a + report.size_b)
    try:
        tar_equal = _read_both(comparison, a, b, (progress_a, progress_b))
    finally:
        done()
    comparison.finish(a, b, report.format_a, report.format_b)
    _archive_findings(report, comparison, tar_equal, recorded)
    return report


def _read_both(comparison: _Comparison, a: Path, b: Path,
               progress: tuple[Callable[[int], None], Callable[[int], None]]) -> bool | None:
    """Read both archives into ``comparison``; whether their tar streams are equal (``None``: not known)."""
    report = comparison.report
    if report.format_a == report.format_b == "tar.xz":
        plan = skip.plan(a, b)
        if plan is not None:
            windows = plan.windows()
            if windows is not None:
                report.streams_skipped = plan.skipped
                for wa, wb in windows:
                    comparison.lockstep(_counted(report, "a", wa), _counted(report, "b", wb))
                return plan.tar_equal
    with members.Members(a, report.format_a, progress[0]) as ma, members.Members(b, report.format_b,
                                                                                   progress[1]) as mb:
        comparison.lockstep(ma, mb)
        report.members_a, report.members_b = ma.count, mb.count
        report.tar_sha256_a, report.tar_sha256_b = ma.tar_sha256, mb.tar_sha256
    if report.tar_sha256_a is None or report.tar_sha256_b is None:
        return None
    return report.tar_sha256_a == report.tar_sha256_b


def _counted(report: ArchiveReport, side: str,
             items: Iterable[tuple[Member, IO[bytes] | None]]) -> Iterator[tuple[Member, IO[bytes] | None]]:
    for item in items:
        if side == "a":
            report.members_a += 1
        else:
            report.members_b += 1
        yield item


def _archive_findings(report: ArchiveReport, comparison: _Comparison, tar_equal: bool | None,
                      recorded: tuple[str | None, str | None]) -> None:
    fa, fb = report.format_a or "", report.format_b or ""
    if fa != fb:
        report.findings.append(Finding("archive-format", f"A is a {fa} archive, B a {fb} archive",
                                       {"a": fa, "b": fb}))
    elif fa in ("tar.xz", "tar.gz"):
        finding = container.compression_finding(Path(report.a or ""), Path(report.b or ""), fa,
                                                tar_equal=tar_equal, recorded=recorded)
        if finding is not None:
            report.findings.append(finding)
    order = comparison.order_finding()
    if order is not None:
        report.findings.append(order)
    if tar_equal is False and not report.members and order is None:
        report.findings.append(Finding(
            "tar-stream", "the tar streams differ, yet every member has the same name, header fields and content: "
            "the header encoding differs (tar format: PAX, GNU or ustar; padding; record size), which is "
            "decided by the tarfile module of the Python that wrote it", {}))
