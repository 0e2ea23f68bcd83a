"""Writing a benchmark's results into its own marked section of docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path


def update_block(doc: Path, name: str, block: list[str]) -> None:
    """Replace the text between ``<!-- NAME: start -->`` and ``<!-- NAME: end -->`` in
    ``doc`` with ``block`` (appending the section when the markers are not there yet)."""
    start, end = f"<!-- {name}: start -->", f"<!-- {name}: end -->"
    text = doc.read_text(encoding="utf-8")
    section = "\n".join([start, *block, end])
    if start in text and end in text:
        text = text[:text.index(start)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    doc.write_text(text, encoding="utf-8")
    print(f"results written to {doc}")
