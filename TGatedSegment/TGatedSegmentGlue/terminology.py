"""Colour and SNOMED CT terminology of each new segment.

The abdomen13 table first (its colour and code), then Slicer's General Anatomy terminology looked up
by label (so "urinary bladder" or "right lung" are coded too), else a generated colour, distinct per
segment, and no code: a prompt is never given a code it does not have.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from TGatedSegmentLib.vocabulary import TERMINOLOGY_CONTEXT, generated_color, lookup, normalize

__all__ = [
    "INVALID_TERMINOLOGY_COLOR",
    "TERMINOLOGY_CONTEXT",
    "SegmentAppearance",
    "TerminologyLookup",
    "segmentAppearance",
    "terminologyLabels",
]


@dataclass(frozen=True)
class SegmentAppearance:
    color: tuple[float, float, float]  # 0..1, as vtkSegment.SetColor wants
    terminology: str | None  # Slicer's 7-part TerminologyEntry tag, or None
    source: str  # "abdomen13", "slicer" or "generated"


INVALID_TERMINOLOGY_COLOR = (127, 127, 127)  # vtkSlicerTerminologyType's "no recommended colour"

# slicerLookup(label) -> (serialized terminology entry, recommended RGB 0..255 or None) or None
TerminologyLookup = Callable[[str], "tuple[str, tuple[int, int, int] | None] | None"]


def terminologyLabels(name: str) -> list[str]:
    """Spellings to look up in Slicer's terminology (its ``3dSlicerLabel`` match is exact)."""
    labels = []
    for label in (name.strip(), name.strip().lower(), normalize(name)):
        if label and label not in labels:
            labels.append(label)
    return labels


def segmentAppearance(name: str, index: int, slicerLookup: TerminologyLookup | None = None) -> SegmentAppearance:
    """Colour and terminology of the segment for prompt ``name``; ``index`` picks a distinct generated colour."""
    organ = lookup(name)
    if organ is not None and organ.color is not None:
        return SegmentAppearance(tuple(c / 255.0 for c in organ.color), organ.terminology(), "abdomen13")
    if slicerLookup is not None:
        for label in terminologyLabels(name):
            found = slicerLookup(label)
            if found:
                entry, rgb = found
                if rgb is None or tuple(rgb) == INVALID_TERMINOLOGY_COLOR:
                    rgb = generated_color(index)
                return SegmentAppearance(tuple(c / 255.0 for c in rgb), entry, "slicer")
    return SegmentAppearance(tuple(c / 255.0 for c in generated_color(index)), None, "generated")
