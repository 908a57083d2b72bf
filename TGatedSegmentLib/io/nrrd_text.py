"""Non-ASCII text (segment names, prompts) in a ``.seg.nrrd`` header, as UTF-8 the way Slicer writes it.

pynrrd (which slicerio uses) writes every header line with ``encode('ascii')``, so a segment named
"肝臓" or "rein gauché" makes it raise, and reads lines with ``decode('ascii', 'ignore')``, so such
a name comes back silently shortened. Slicer itself (ITK's NRRD writer) stores the ``key:=value``
lines as raw UTF-8 bytes. So the writer hands slicerio ASCII placeholders and then writes the UTF-8
text into the header (:func:`ascii_placeholders`, :func:`put_utf8_text`), and the reader takes the
segment names from the raw header bytes (:func:`segment_names`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

_PLACEHOLDER = "tgated-utf8-text-{}-"
_HEADER_LIMIT = 1 << 20  # a .seg.nrrd header is a few kB; stop looking for its end after this much


def ascii_placeholders(segments: list[dict]) -> tuple[list[dict], dict[str, str]]:
    """``segments`` (slicerio's dicts) with each non-ASCII name or tag value replaced by a unique ASCII
    placeholder, and the placeholder -> text table for :func:`put_utf8_text`."""
    table: dict[str, str] = {}

    def safe(text):
        if not isinstance(text, str) or text.isascii():
            return text
        key = _PLACEHOLDER.format(len(table))
        table[key] = text
        return key

    out = []
    for segment in segments:
        segment = dict(segment, name=safe(segment.get("name")))
        if "tags" in segment:
            segment["tags"] = {key: safe(value) for key, value in segment["tags"].items()}
        out.append(segment)
    return out, table


def _split_header(data: bytes) -> int:
    """Length of the header including the blank line that ends it (attached data follows)."""
    end = data.find(b"\n\n")
    if end < 0:
        raise ValueError("no end of the NRRD header found")
    return end + 2


def put_utf8_text(path: str | Path, table: dict[str, str]) -> None:
    """Replace the placeholders in the header of ``path`` by their UTF-8 text (the data is copied as is)."""
    if not table:
        return
    path = Path(path)
    with open(path, "rb") as source:
        head = source.read(_HEADER_LIMIT)
        length = _split_header(head)
        header = head[:length]
        for key, text in table.items():
            header = header.replace(key.encode("ascii"), text.encode("utf-8"))
        patched = path.with_name(path.name + ".utf8")
        try:
            with open(patched, "wb") as target:
                target.write(header)
                target.write(head[length:])
                shutil.copyfileobj(source, target, 1 << 20)
            os.replace(patched, path)
        finally:
            patched.unlink(missing_ok=True)


def segment_names(path: str | Path, count: int) -> list[str | None]:
    """``Segment<n>_Name`` for n < ``count`` from the raw header, decoded as UTF-8 (None where absent)."""
    with open(path, "rb") as handle:
        head = handle.read(_HEADER_LIMIT)
    fields = {}
    for line in head[: _split_header(head)].decode("utf-8", "replace").splitlines():
        key, separator, value = line.partition(":=")
        if separator:
            fields[key.strip()] = value
    return [fields.get(f"Segment{n}_Name") for n in range(count)]
