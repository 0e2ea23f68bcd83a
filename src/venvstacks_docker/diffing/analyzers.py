"""Explaining one member that differs, in Python terms.

:func:`header_findings` compares the header fields of a pair (cheap: every pair gets
it).  :func:`analyze_pair` looks inside the content and is only ever called for pairs
whose bytes differ; :data:`CALLS` counts those calls, which is how the tests show that
equal members are never opened further.
"""

from __future__ import annotations

import csv
import datetime
import difflib
import io
import json
import stat
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import IO, Any, Final

from venvstacks_docker.diffing import paths, pyc
from venvstacks_docker.diffing.members import Member
from venvstacks_docker.diffing.model import Finding

#: How many member pairs reached :func:`analyze_pair` (key ``"pairs"``), and each analyzer.
CALLS: Counter[str] = Counter()

#: Member content: the bytes, or a file holding them (members too big to keep in memory).
Blob = bytes | Path

ELF_MAGIC: Final = b"\x7fELF"
INSTALLER_FILES: Final = frozenset({"INSTALLER", "REQUESTED", "direct_url.json", "uv_cache.json", "uv_build.json"})
_MAX_DIFF_LINES: Final = 400
_TEXT_LIMIT: Final = 8 << 20


def _when(mtime: float) -> str:
    return datetime.datetime.fromtimestamp(mtime, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _mode(m: Member) -> str:
    return stat.filemode(m.mode | {"dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}.get(m.kind, stat.S_IFREG))


def header_findings(a: Member, b: Member) -> list[Finding]:
    """Differences in the header fields of two members with the same name."""
    found = []
    if a.kind != b.kind:
        found.append(Finding("member-type", f"a {a.kind} in A, a {b.kind} in B", {"a": a.kind, "b": b.kind}))
    if a.zip_time is not None and b.zip_time is not None:
        if a.zip_time != b.zip_time:
            found.append(Finding(
                "zip-timestamp",
                f"the zip entry's DOS timestamp is {_when(a.mtime)} in A and {_when(b.mtime)} in B (zip stores local "
                "time in 2-second steps; the tool writes the SOURCE_DATE_EPOCH time, clamped to 1980-2107)",
                {"a": list(a.zip_time), "b": list(b.zip_time)}))
    elif a.mtime != b.mtime:
        found.append(Finding(
            "mtime",
            f"modification time {_when(a.mtime)} ({_num(a.mtime)}) in A, {_when(b.mtime)} ({_num(b.mtime)}) in B. "
            "The tool gives every member one mtime (SOURCE_DATE_EPOCH, else the lock's locked_at): a file's own "
            "mtime was kept, or the epoch differed", {"a": a.mtime, "b": b.mtime}))
    if a.mode != b.mode and a.kind == b.kind:
        found.append(Finding(
            "mode", f"permissions {_mode(a)} ({a.mode:o}) in A, {_mode(b)} ({b.mode:o}) in B. The tool stores "
            "0755 or 0644 (only the owner's execute bit counts): the umask or a chmod leaked in",
            {"a": oct(a.mode), "b": oct(b.mode)}))
    owner_a, owner_b = (a.uid, a.gid, a.uname, a.gname), (b.uid, b.gid, b.uname, b.gname)
    if owner_a != owner_b:
        found.append(Finding(
            "owner", f"owner {a.uname or a.uid}:{a.gname or a.gid} (uid {a.uid}, gid {a.gid}) in A, "
            f"{b.uname or b.uid}:{b.gname or b.gid} (uid {b.uid}, gid {b.gid}) in B. The tool stores root:root "
            "(0/0): the builder's own user leaked in", {"a": list(owner_a), "b": list(owner_b)}))
    if a.linkname != b.linkname and a.kind == b.kind:
        found.append(Finding("symlink-target", f"points to {a.linkname!r} in A and {b.linkname!r} in B",
                             {"a": a.linkname, "b": b.linkname}))
    if a.extra != b.extra:
        keys = sorted(k for k in set(a.extra) | set(b.extra) if a.extra.get(k) != b.extra.get(k))
        kind = "zip-header" if a.zip_time is not None else "tar-header"
        found.append(Finding(kind, f"other header fields differ: {', '.join(keys)}",
                             {k: {"a": a.extra.get(k), "b": b.extra.get(k)} for k in keys}))
    if a.compress != b.compress:
        found.append(Finding("compression", f"the zip entry is {a.compress} in A and {b.compress} in B",
                             {"a": a.compress, "b": b.compress}))
    return found


def _load(blob: Blob, limit: int | None = None) -> bytes:
    if isinstance(blob, bytes):
        return blob
    with blob.open("rb") as f:
        return f.read(-1 if limit is None else limit)


def _size(blob: Blob) -> int:
    return len(blob) if isinstance(blob, bytes) else blob.stat().st_size


def _open(blob: Blob) -> IO[bytes]:
    return io.BytesIO(blob) if isinstance(blob, bytes) else blob.open("rb")


def as_text(data: bytes) -> str | None:
    """The text of ``data`` when it is UTF-8 without NUL bytes, else ``None``."""
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def analyze_pair(name: str, a: Blob, b: Blob, *, context: int = 3) -> list[Finding]:
    """Findings for two members with the same name whose content differs."""
    CALLS["pairs"] += 1
    base = PurePosixPath(name).name
    small = _size(a) <= _TEXT_LIMIT and _size(b) <= _TEXT_LIMIT
    head_a, head_b = _load(a, 4096), _load(b, 4096)
    found: list[Finding] = []
    if head_a.startswith(ELF_MAGIC) and head_b.startswith(ELF_MAGIC):
        from venvstacks_docker.diffing import elf  # pyelftools: imported only when an ELF file differs

        CALLS["elf"] += 1
        with _open(a) as fa, _open(b) as fb:
            found = elf.analyze(fa, fb, name)
        if found:
            return found
    if not small:
        return [_binary(name, a, b, small=False)]
    da, db = _load(a), _load(b)
    if base.endswith((".pyc", ".pyo")):
        CALLS["pyc"] += 1
        found = pyc.analyze(da, db, name)
        if found:
            return found
    ta, tb = as_text(da), as_text(db)
    if ta is None or tb is None:
        return [*_binary_paths(name, da, db), _binary(name, da, db, small=True)]
    if base == "RECORD" and name.rsplit("/", 2)[-2].endswith(".dist-info"):
        CALLS["record"] += 1
        found += record_rows(ta, tb)
    elif base in INSTALLER_FILES:
        found.append(_installer(base, ta, tb, name))
    elif base == "pyvenv.cfg":
        found.append(_pyvenv(ta, tb))
    elif base == "sitecustomize.py":
        found.append(Finding("sitecustomize", "sitecustomize.py runs at every interpreter start; the tool strips the "
                             "build-time one and postinstall.py writes it on the target", {}))
    return found + text_findings(name, ta, tb, context=context)


def text_findings(name: str, ta: str, tb: str, *, context: int = 3) -> list[Finding]:
    """Shebang, absolute paths and the unified diff of two texts."""
    CALLS["text"] += 1
    found = []
    line_a, line_b = ta.split("\n", 1)[0], tb.split("\n", 1)[0]
    if (line_a.startswith("#!") or line_b.startswith("#!")) and line_a != line_b:
        interp = [p for p in (line_b[2:].split() + line_a[2:].split())[:1] if p.startswith("/")]
        where = f"; {interp[0]} is {paths.origin(interp[0], name)}" if interp and not paths.is_system(interp[0]) \
            else ""
        found.append(Finding(
            "shebang", f"the #! line differs: {line_a!r} in A, {line_b!r} in B{where}. Installers write the absolute "
            "path of the build environment's interpreter into scripts, which breaks relocation",
            {"a": line_a, "b": line_b}))
    pa, pb = paths.text_paths(ta), paths.text_paths(tb)
    if found:
        pa -= paths.text_paths(line_a)
        pb -= paths.text_paths(line_b)
    if pa != pb:
        sentence, details = paths.explain_paths(pa - pb, pb - pa, name)
        found.append(Finding("absolute-path", "an embedded absolute path differs: " + sentence, details))
    found.append(_unified(name, ta, tb, context))
    return found


def _unified(name: str, ta: str, tb: str, context: int) -> Finding:
    lines = list(difflib.unified_diff(ta.splitlines(), tb.splitlines(), f"a/{name}", f"b/{name}",
                                      n=context, lineterm=""))
    added = sum(1 for line in lines[2:] if line.startswith("+"))
    removed = sum(1 for line in lines[2:] if line.startswith("-"))
    truncated = len(lines) > _MAX_DIFF_LINES
    text = "\n".join(lines[:_MAX_DIFF_LINES]) + ("\n[... diff truncated]" if truncated else "")
    if not lines:
        return Finding("content-text", "only the line endings or the final newline differ", {"diff": ""})
    return Finding("content-text", f"the text differs: {removed} line(s) only in A, {added} only in B",
                   {"diff": text, "lines_a": removed, "lines_b": added, "truncated": truncated})


def _first_difference(a: Blob, b: Blob) -> int | None:
    with _open(a) as fa, _open(b) as fb:
        offset = 0
        while True:
            ca, cb = fa.read(1 << 20), fb.read(1 << 20)
            if ca != cb:
                n = min(len(ca), len(cb))
                i = next((j for j in range(n) if ca[j] != cb[j]), n)
                return offset + i
            if not ca:
                return None
            offset += len(ca)


def _binary(name: str, a: Blob, b: Blob, *, small: bool) -> Finding:
    sa, sb = _size(a), _size(b)
    first = _first_difference(a, b)
    details: dict[str, Any] = {"size_a": sa, "size_b": sb, "first_difference": first}
    if small and first is not None:
        da, db = _load(a), _load(b)
        details["bytes_a"] = da[first:first + 16].hex(" ")
        details["bytes_b"] = db[first:first + 16].hex(" ")
    return Finding("content-binary", f"binary content differs ({sa} bytes in A, {sb} in B), first at offset {first}",
                   details)


def _binary_paths(name: str, da: bytes, db: bytes) -> list[Finding]:
    pa, pb = paths.binary_paths(da), paths.binary_paths(db)
    if pa == pb:
        return []
    sentence, details = paths.explain_paths(pa - pb, pb - pa, name)
    return [Finding("absolute-path", "an embedded absolute path differs: " + sentence, details)]


def record_rows(ta: str, tb: str) -> list[Finding]:
    """Rows of a wheel ``RECORD`` (path, hash, size) that differ, by path."""
    def rows(text: str) -> dict[str, tuple[str, ...]]:
        return {row[0]: tuple(row[1:]) for row in csv.reader(io.StringIO(text)) if row}

    ra, rb = rows(ta), rows(tb)
    only_a = sorted(set(ra) - set(rb))
    only_b = sorted(set(rb) - set(ra))
    changed = sorted(p for p in set(ra) & set(rb) if ra[p] != rb[p])
    if not (only_a or only_b or changed):
        return []
    parts = []
    if only_a:
        parts.append(f"{len(only_a)} row(s) only in A ({', '.join(only_a[:3])})")
    if only_b:
        parts.append(f"{len(only_b)} row(s) only in B ({', '.join(only_b[:3])})")
    if changed:
        parts.append(f"{len(changed)} file(s) with another hash or size ({', '.join(changed[:3])})")
    return [Finding("record-rows", "the installed-files list (RECORD) differs: " + "; ".join(parts)
                    + ". RECORD lists every file an installer wrote, with its hash: another installer or "
                    "another installed file shows here",
                    {"only_in_a": only_a, "only_in_b": only_b,
                     "changed": [{"path": p, "a": list(ra[p]), "b": list(rb[p])} for p in changed]})]


def _installer(base: str, ta: str, tb: str, name: str) -> Finding:
    what = {"INSTALLER": "the installer's name", "REQUESTED": "whether the package was requested",
            "direct_url.json": "where the package was installed from (PEP 610)"}.get(base, "uv's cache details")
    detail: dict[str, Any] = {"file": base, "a": ta.strip()[:200], "b": tb.strip()[:200]}
    sentence = f"{base} ({what}) is {ta.strip()[:80]!r} in A and {tb.strip()[:80]!r} in B"
    if base == "direct_url.json":
        try:
            ua, ub = json.loads(ta).get("url"), json.loads(tb).get("url")
        except (ValueError, AttributeError):
            ua = ub = None
        detail.update(url_a=ua, url_b=ub)
        if ua != ub:
            sentence = f"direct_url.json (where the package was installed from) says {ua} in A and {ub} in B"
    return Finding("installer-metadata", sentence + ". The tool removes installer metadata at build time "
                   "(uv runs with UV_NO_INSTALLER_METADATA=1)", detail)


def _pyvenv(ta: str, tb: str) -> Finding:
    def keys(text: str) -> dict[str, str]:
        return {k.strip(): v.strip() for k, _, v in (line.partition("=") for line in text.splitlines()) if _}

    ka, kb = keys(ta), keys(tb)
    changed = sorted(k for k in set(ka) | set(kb) if ka.get(k) != kb.get(k))
    return Finding("pyvenv-cfg", f"pyvenv.cfg keys differ: {', '.join(changed) or 'none'}; it names the base "
                   "interpreter's absolute location, so the tool writes it on the target (postinstall.py)",
                   {k: {"a": ka.get(k), "b": kb.get(k)} for k in changed})


def single_findings(name: str, side: str) -> tuple[str, list[Finding]]:
    """Why a member present on one side only matters: a note for its ``only-in`` finding, and
    the findings of the kinds it belongs to (installer metadata, pyvenv.cfg, sitecustomize.py)."""
    base = PurePosixPath(name).name
    who = side.upper()
    if base.endswith((".pyc", ".pyo")) or "/__pycache__" in name:
        return (f"bytecode in the archive: publish strips __pycache__ and .pyc files (postinstall.py compiles "
                f"them on the target), so {who} kept some"), []
    if base in INSTALLER_FILES and ".dist-info/" in name:
        return "installer metadata", [Finding(
            "installer-metadata", f"{base} (installer metadata) is only in {who}: the tool removes it at build time "
            "(uv runs with UV_NO_INSTALLER_METADATA=1)", {"file": base, "side": side})]
    if base == "pyvenv.cfg":
        return "a virtual environment's config", [Finding(
            "pyvenv-cfg", f"pyvenv.cfg is only in {who}: it holds absolute build paths, so the tool writes it on "
            "the target instead", {"side": side})]
    if base == "sitecustomize.py":
        return "a site hook", [Finding(
            "sitecustomize", f"sitecustomize.py is only in {who}: the build-time one holds absolute build paths; "
            "postinstall.py writes it on the target", {"side": side})]
    return "", []
