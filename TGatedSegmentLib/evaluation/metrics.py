"""Per-organ volumetric metrics on binary 3D masks: Dice, normalised surface Dice and HD95.

Masks are numpy arrays with axes (k, j, i) (SimpleITK's array order) and ``spacing`` is
(sk, sj, si) in mm, i.e. the *reverse* of ``Image.GetSpacing()``. Surface metrics are physical:
anisotropic voxels (e.g. 1.25 x 1.25 x 7.7 mm MR) are measured in mm, never in voxels.

Surfaces are the boundary voxels of a mask: the mask minus its 6-connected erosion (voxels on the
volume edge count as boundary). Distances between surfaces are exact Euclidean distances between
voxel centres, from SimpleITK's ``SignedMaurerDistanceMap`` with the spacing set on the image
(Danielsson's map is off by up to a voxel with anisotropic spacing, so it is not used).

* ``nsd`` (normalised surface Dice, Nikolov et al. 2021) is the fraction of the boundary voxels of
  both masks that lie within ``tolerance_mm`` (inclusive) of the other mask's boundary. Each
  boundary voxel counts once (no surfel-area weighting as in DeepMind's implementation).
* ``hd95`` is the 95th percentile (numpy's linear interpolation) of the pooled distances of both
  boundaries to each other, in mm.

Empty-mask rule, applied by every function here:

* both masks empty -> every metric is NaN, status ``both_empty``: the organ is not there and was
  not predicted, so there is nothing to score. :func:`summarize` leaves NaN out of the means and
  counts these rows separately.
* reference empty, prediction not (status ``false_positive``) or prediction empty, reference not
  (status ``missed``) -> Dice 0, NSD 0 and HD95 = the diagonal of the volume in mm
  (``sqrt(sum((n * s)**2))``, longer than any distance inside it), so that means still penalise
  a wrong organ instead of silently dropping it.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np

from ..errors import InputError

STATUSES = ("ok", "both_empty", "false_positive", "missed")
METRICS = ("dice", "nsd", "hd95")
_SLACK_MM = 1e-4  # the distance maps are float32: 2.0 mm must count as "within 2 mm"


def _check_pair(pred, ref) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.ndim != 3 or ref.ndim != 3:
        raise InputError(
            f"masks must be 3D, got prediction {pred.ndim}D and reference {ref.ndim}D",
            "Pass one organ's binary volume with axes (k, j, i).",
        )
    if pred.shape != ref.shape:
        raise InputError(
            f"prediction shape {pred.shape} differs from reference shape {ref.shape}",
            "Resample the prediction onto the reference label's grid before scoring.",
        )
    return pred.astype(bool, copy=False), ref.astype(bool, copy=False)


def _check_spacing(spacing: Sequence[float]) -> np.ndarray:
    s = np.asarray(spacing, dtype=float)
    if s.shape != (3,) or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise InputError(
            f"spacing must be three positive numbers (sk, sj, si) in mm, got {spacing!r}",
            "Pass the reference image's GetSpacing() reversed.",
        )
    return s


def _check_tolerance(tolerance_mm: float) -> float:
    if not tolerance_mm >= 0:  # also rejects NaN
        raise InputError(f"surface Dice tolerance must be >= 0 mm, got {tolerance_mm}", "Pass e.g. tolerance_mm=2.0.")
    return float(tolerance_mm)


def diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """The worst-case distance used for a missed or false-positive organ."""
    s = _check_spacing(spacing)
    return float(math.sqrt(sum((n * d) ** 2 for n, d in zip(shape, s))))


def _status(pred: np.ndarray, ref: np.ndarray) -> str:
    has_pred, has_ref = bool(pred.any()), bool(ref.any())
    if has_pred and has_ref:
        return "ok"
    if not has_pred and not has_ref:
        return "both_empty"
    return "false_positive" if has_pred else "missed"


def _surface(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels: the mask minus its 6-connected erosion (outside the array is background)."""
    p = np.pad(mask, 1, constant_values=False)
    eroded = p[1:-1, 1:-1, 1:-1].copy()
    for axis in range(3):
        for shift in (-1, 1):
            eroded &= np.roll(p, shift, axis=axis)[1:-1, 1:-1, 1:-1]
    return mask & ~eroded


def _distance_to(surface: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Exact distance (mm) from every voxel centre to the nearest voxel of ``surface``."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(surface.astype(np.uint8))
    image.SetSpacing([float(v) for v in spacing[::-1]])  # SimpleITK wants (si, sj, sk)
    # Every voxel of a boundary shell touches background, so the shell is its own contour and
    # |signed distance| is the distance to the nearest shell voxel (0 on the shell).
    dist = sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    return np.abs(sitk.GetArrayViewFromImage(dist)).astype(np.float64)


def _surface_distances(pred: np.ndarray, ref: np.ndarray, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances pred-boundary -> ref-boundary and ref-boundary -> pred-boundary (both non-empty).

    Work on the bounding box of both masks (plus one background voxel): every boundary voxel is
    inside it, so the distances are the same as on the full volume and much cheaper.
    """
    both = pred | ref
    occupied = [np.flatnonzero(both.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    box = tuple(slice(int(idx[0]), int(idx[-1]) + 1) for idx in occupied)
    p = np.pad(pred[box], 1, constant_values=False)
    r = np.pad(ref[box], 1, constant_values=False)
    sp, sr = _surface(p), _surface(r)
    return _distance_to(sr, spacing)[sp], _distance_to(sp, spacing)[sr]


def _empty_value(status: str, metric: str, shape, spacing) -> float:
    if status == "both_empty":
        return float("nan")
    return diagonal_mm(shape, spacing) if metric == "hd95" else 0.0


def dice(pred, ref) -> float:
    """Volume overlap 2|P∩R| / (|P|+|R|); NaN when both masks are empty."""
    pred, ref = _check_pair(pred, ref)
    total = int(pred.sum()) + int(ref.sum())
    if total == 0:
        return float("nan")
    return 2.0 * int(np.logical_and(pred, ref).sum()) / total


def surface_dice(pred, ref, spacing: Sequence[float], tolerance_mm: float = 2.0) -> float:
    """Normalised surface Dice at ``tolerance_mm``: share of both boundaries within it of the other."""
    pred, ref = _check_pair(pred, ref)
    s = _check_spacing(spacing)
    tolerance_mm = _check_tolerance(tolerance_mm)
    status = _status(pred, ref)
    if status != "ok":
        return _empty_value(status, "nsd", pred.shape, s)
    d_pr, d_rp = _surface_distances(pred, ref, s)
    limit = tolerance_mm + _SLACK_MM
    return float((np.count_nonzero(d_pr <= limit) + np.count_nonzero(d_rp <= limit)) / (d_pr.size + d_rp.size))


def hd95(pred, ref, spacing: Sequence[float]) -> float:
    """95th percentile of the pooled symmetric boundary distances, in mm."""
    pred, ref = _check_pair(pred, ref)
    s = _check_spacing(spacing)
    status = _status(pred, ref)
    if status != "ok":
        return _empty_value(status, "hd95", pred.shape, s)
    d_pr, d_rp = _surface_distances(pred, ref, s)
    return float(np.percentile(np.concatenate([d_pr, d_rp]), 95))


def organ_metrics(pred, ref, spacing: Sequence[float], tolerance_mm: float = 2.0) -> dict:
    """All metrics of one organ in one case, computing the boundary distances once."""
    pred, ref = _check_pair(pred, ref)
    s = _check_spacing(spacing)
    tolerance_mm = _check_tolerance(tolerance_mm)
    status = _status(pred, ref)
    n_pred, n_ref = int(pred.sum()), int(ref.sum())
    ml_per_voxel = float(np.prod(s)) / 1000.0
    row = {
        "status": status,
        "pred_voxels": n_pred,
        "ref_voxels": n_ref,
        "pred_volume_ml": n_pred * ml_per_voxel,
        "ref_volume_ml": n_ref * ml_per_voxel,
    }
    if status != "ok":
        row.update({m: _empty_value(status, m, pred.shape, s) for m in METRICS})
        return row
    d_pr, d_rp = _surface_distances(pred, ref, s)
    pooled = np.concatenate([d_pr, d_rp])
    row["dice"] = 2.0 * int(np.logical_and(pred, ref).sum()) / (n_pred + n_ref)
    row["nsd"] = float(np.count_nonzero(pooled <= tolerance_mm + _SLACK_MM) / pooled.size)
    row["hd95"] = float(np.percentile(pooled, 95))
    return row


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(sum(finite) / len(finite)) if finite else float("nan")


def _aggregate(rows: list[Mapping]) -> dict:
    out: dict = {"n": len(rows)}
    for status in STATUSES:
        out[f"n_{status}"] = sum(1 for r in rows if r.get("status") == status)
    for metric in METRICS:
        values = [float(r[metric]) for r in rows if metric in r]
        out[metric] = _nanmean(values)
        out[f"{metric}_std"] = _nanstd(values)  # over the cases: how much one case's score says
    return out


def _nanstd(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return float("nan")
    mean = sum(finite) / len(finite)
    return float(math.sqrt(sum((v - mean) ** 2 for v in finite) / len(finite)))


def summarize(rows: Iterable[Mapping]) -> dict:
    """Per-organ means (NaN rows left out) and their overall macro mean.

    ``rows`` are :func:`organ_metrics` dicts with an ``organ`` key (and usually ``case``).
    ``overall`` averages the per-organ means, so every organ weighs the same however many cases
    annotate it; its counts are totals over all rows.
    """
    rows = list(rows)
    by_organ: dict[str, list[Mapping]] = {}
    for row in rows:
        by_organ.setdefault(str(row["organ"]), []).append(row)
    per_organ = {organ: _aggregate(organ_rows) for organ, organ_rows in by_organ.items()}
    overall = _aggregate(rows)
    for metric in METRICS:
        overall[metric] = _nanmean([stats[metric] for stats in per_organ.values()])
    return {"per_organ": per_organ, "overall": overall}
