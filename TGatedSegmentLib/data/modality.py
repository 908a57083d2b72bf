"""The modality a dataset declares for a case, as the hint the preprocessing understands.

dataset.json names modalities in free text (``"CT"``, ``"MR (T2-SPIR)"``, ``"CT or MR"``); the
intensity normalisation needs ``"ct"``, ``"mr"`` or ``"auto"`` (decide from the voxels). Training's
cache and evaluation both read cases through this one rule.
"""

from __future__ import annotations

import re


def modality_hint(text: str | None) -> str:
    """dataset.json's modality text -> "ct", "mr" or "auto" ("CT or MR" and unknown texts -> auto)."""
    words = set(re.findall(r"[a-z]+", (text or "").lower()))
    ct, mr = "ct" in words, bool(words & {"mr", "mri"})
    return "ct" if ct and not mr else "mr" if mr and not ct else "auto"
