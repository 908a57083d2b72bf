"""What the synthetic phantom lets us measure that a real CT cannot: false positives on look-alikes.

:mod:`TGatedSegmentLib.phantom` knows where its distractors are (``Phantom.distractor_mask``: 1-2
slice blobs that look exactly like a slice of the target organ) and, like any labelled volume,
which slices do not contain an organ. These are the two places where a slice-wise model is
expected to hallucinate and a model that reads 5 slices should not:

* ``distractor_fp_ml``: predicted voxels of the target organ inside distractors, in ml;
  ``distractors_hit``: how many distractor blobs (3D connected components) get at least one
  predicted voxel, out of ``distractors``.
* ``absent_slice_fp_ml``: predicted voxels of an organ in slices where that organ has no
  reference voxel, in ml (for any organ, not only the target).

Arrays are numpy ``(z, y, x)`` with ``spacing`` ``(sz, sy, sx)`` in mm, as the phantom has them.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def voxel_ml(spacing: Sequence[float]) -> float:
    return float(np.prod([float(s) for s in spacing])) / 1000.0


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """3D 26-connected components of ``mask``: (label array, count)."""
    import SimpleITK as sitk

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return np.zeros(mask.shape, np.uint32), 0
    image = sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)), True)
    labels = sitk.GetArrayFromImage(image).astype(np.uint32, copy=False)
    return labels, int(labels.max())


def absent_slice_false_positives(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float]) -> dict:
    """Predicted voxels in the slices (axis 0) where ``reference`` is empty.

    ``absent_slices``: how many such slices; ``absent_slices_hit``: in how many of them something
    was predicted; ``absent_slice_fp_ml``: the predicted volume there.
    """
    prediction, reference = np.asarray(prediction, bool), np.asarray(reference, bool)
    absent = ~reference.reshape(reference.shape[0], -1).any(axis=1)
    per_slice = prediction.reshape(prediction.shape[0], -1).sum(axis=1)
    return {
        "absent_slices": int(absent.sum()),
        "absent_slices_hit": int(((per_slice > 0) & absent).sum()),
        "absent_slice_fp_ml": float(per_slice[absent].sum()) * voxel_ml(spacing),
    }


def distractor_false_positives(prediction: np.ndarray, distractor_mask: np.ndarray, spacing: Sequence[float]) -> dict:
    """Predicted target voxels inside the distractor blobs, and how many blobs are hit."""
    prediction, distractor_mask = np.asarray(prediction, bool), np.asarray(distractor_mask, bool)
    labels, count = components(distractor_mask)
    inside = prediction & distractor_mask
    hit = np.unique(labels[inside])
    return {
        "distractors": count,
        "distractors_hit": int((hit > 0).sum()),
        "distractor_fp_ml": float(inside.sum()) * voxel_ml(spacing),
    }


def phantom_organ_measures(
    prediction: np.ndarray,
    labels: np.ndarray,
    label_id: int,
    spacing: Sequence[float],
    distractor_mask: np.ndarray | None = None,
) -> dict:
    """Dice, predicted/reference volume and the false-positive measures of one organ on a phantom.

    ``distractor_mask`` is given for the target organ only (distractors look like *it*).
    Dice follows :mod:`evaluation.metrics` (both empty: NaN).
    """
    from .metrics import dice

    reference = np.asarray(labels) == label_id
    prediction = np.asarray(prediction, bool)
    row = {
        "dice": dice(prediction, reference),
        "pred_ml": float(prediction.sum()) * voxel_ml(spacing),
        "ref_ml": float(reference.sum()) * voxel_ml(spacing),
        **absent_slice_false_positives(prediction, reference, spacing),
    }
    if distractor_mask is not None:
        row.update(distractor_false_positives(prediction, distractor_mask, spacing))
    return row


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for one value) of the finite values; NaN if none."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return math.nan, math.nan
    mean = sum(finite) / len(finite)
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0
    return mean, std
