"""Moved: the modality rule is :mod:`TGatedSegmentLib.modality` now (the volume reader uses it too).

``from TGatedSegmentLib.data.modality import modality_hint`` keeps working for one release, with a
DeprecationWarning.
"""

from __future__ import annotations

from ..compat import moved_names

__getattr__ = moved_names(__name__, {"modality_hint": "TGatedSegmentLib.modality"})
