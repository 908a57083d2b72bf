"""Modality texts, one rule: whatever says what a volume is becomes ``"ct"``, ``"mr"`` or ``"auto"``.

The texts come from a DICOM Modality tag (``"CT"``, ``"MR"``), a dataset.json (``"CT"``,
``"MR (T2-SPIR)"``, ``"CT or MR"``), the command line or the Python API (``"auto"``, ``"ct"``,
``"mr"``, any case). Intensity normalisation needs one of :data:`MODALITIES` ("auto": decide from
the voxels). It imports nothing heavy: the reader (``io``), the datasets (``data``) and the
preprocessing all use it.
"""

from __future__ import annotations

import re

from .errors import InputError

MODALITIES = ("auto", "ct", "mr")


def modality_hint(text: str | None) -> str:
    """Free modality text -> "ct", "mr" or "auto" ("CT or MR", unknown texts and None -> auto)."""
    words = set(re.findall(r"[a-z]+", (text or "").lower()))
    ct, mr = "ct" in words, bool(words & {"mr", "mri"})
    return "ct" if ct and not mr else "mr" if mr and not ct else "auto"


def check_modality(modality: str | None) -> str:
    """A requested modality (None means auto) as one of :data:`MODALITIES`, or an InputError."""
    modality = (modality or "auto").strip().lower()
    if modality not in MODALITIES:
        raise InputError(f"unknown modality '{modality}'", "Use auto, ct or mr.")
    return modality
