"""Intensity normalisation to [0, 1]: a fixed HU window for CT, per-volume percentiles for MR.

The same functions serve inference and training (one code path), so a checkpoint always sees the
intensities it was trained on (the window and percentiles are part of its ``PreprocessConfig``).
"""

from __future__ import annotations

import logging

import numpy as np

from ..compat import moved_names
from ..errors import InputError
from .config import PreprocessConfig

log = logging.getLogger(__name__)


def detect_modality(array: np.ndarray, hint: str | None = None) -> str:
    """CT or MR: the DICOM Modality tag when known, else whether the volume holds HU-like air/fat.

    CT in HU has large negative values (air -1000, fat -100); MR intensities are non-negative.
    A CT stored without its rescale (0..4095) would be taken for MR: pass ``--modality ct`` then.
    """
    if hint in ("ct", "mr"):
        return hint
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        return "ct"
    low = float(np.percentile(finite[:: max(1, finite.size // 200_000)], 1.0))
    return "ct" if low < -200.0 else "mr"


def normalize_intensity(array: np.ndarray, modality: str, config: PreprocessConfig) -> np.ndarray:
    """float32 in [0, 1], NaN/inf replaced by the lowest value (they are usually padding)."""
    array = np.asarray(array, dtype=np.float32)
    finite = np.isfinite(array)
    if not finite.all():
        if not finite.any():
            raise InputError(
                "the volume has no finite values (all NaN or infinite)", "Check the file: it holds no image data."
            )
        log.warning("%d non-finite voxels replaced by the volume's minimum", int((~finite).sum()))
        array = np.where(finite, array, array[finite].min())
    if modality == "ct":
        lo, hi = config.ct_window
    else:
        sample = array.ravel()[:: max(1, array.size // 2_000_000)]
        lo, hi = (float(v) for v in np.percentile(sample, config.mr_percentiles))
        if hi <= lo:
            lo, hi = float(array.min()), float(array.max())
    if hi <= lo:
        raise InputError(
            f"the volume is constant (every voxel is {lo:g}); there is nothing to segment",
            "Check that the right image was loaded.",
        )
    out = (np.clip(array, lo, hi) - lo) / (hi - lo)
    return out.astype(np.float32, copy=False)


# The modality rule moved to TGatedSegmentLib.modality (the reader and the datasets use it too).
__getattr__ = moved_names(
    __name__, {"MODALITIES": "TGatedSegmentLib.modality", "check_modality": "TGatedSegmentLib.modality"}
)
