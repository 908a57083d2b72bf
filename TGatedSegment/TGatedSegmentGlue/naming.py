"""Segment names: the keep/replace rule that decides, before the scene changes, where each new
segment goes, so that a user's segment is never overwritten unless they asked for it.

One comparison rule, :func:`nameKey`, everywhere: Unicode-aware (case folding and canonical
composition), so "LEBER" and "leber", or "é" typed as one character or two, are the same name.
Slicer's own ``vtkSegmentation::GetSegmentIdBySegmentName`` lowers ASCII letters only, so the logic
finds segment IDs with :func:`segmentIdByName` instead, with this same rule.
"""

from __future__ import annotations

import unicodedata
from typing import Iterable, Sequence

from .i18n import tr as _


def nameKey(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold()


def defaultSegmentationName(volumeName: str) -> str:
    return _("{volume} segmentation").format(volume=volumeName)


def uniqueName(name: str, taken) -> str:
    """``name`` if free, else ``name (2)``, ``name (3)``, ...; ``taken`` holds :func:`nameKey` keys."""
    if nameKey(name) not in taken:
        return name
    n = 2
    while nameKey(f"{name} ({n})") in taken:
        n += 1
    return f"{name} ({n})"


def planSegmentNames(names: Sequence[str], existingNames: Sequence[str], replace: bool) -> list[tuple[str, bool]]:
    """Where each new segment goes: ``(segment name, replaces the existing segment of that name)``.

    Existing segments are never removed or overwritten, except that with ``replace`` a segment with
    the same name (:func:`nameKey`) gets the new result. Without ``replace`` the existing segment is
    kept and the new one is added as ``name (2)``.
    """
    existing = {nameKey(n) for n in existingNames}
    taken = set(existing)
    replaced: set[str] = set()
    plan = []
    for name in names:
        key = nameKey(name)
        if replace and key in existing and key not in replaced:
            replaced.add(key)
            plan.append((name, True))
            continue
        new = uniqueName(name, taken)
        taken.add(nameKey(new))
        plan.append((new, False))
    return plan


def segmentIdByName(segments: Iterable[tuple[str, str]], name: str) -> str:
    """The ID of the first ``(id, name)`` whose name is ``name`` by :func:`nameKey`, else ""."""
    key = nameKey(name)
    return next((segmentId for segmentId, segmentName in segments if nameKey(segmentName) == key), "")
