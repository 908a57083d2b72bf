"""Metrics against values computed by hand on tiny masks with anisotropic (k, j, i) spacing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from TGatedSegmentLib.errors import InputError
from TGatedSegmentLib.evaluation.metrics import dice, hd95, organ_metrics, summarize, surface_dice


def cubes(offset_axis: int = 0):
    """Two 4x4x4 cubes in a 10^3 volume, the second shifted by one voxel along ``offset_axis``.

    By hand: overlap 3*4*4 = 48 -> Dice 2*48/128 = 0.75. Each cube's boundary is 64 - 2^3 = 56
    voxels. Along the shifted axis, each cube's outer face (16 voxels) is one step from the other
    boundary, the 4 inner voxels of its inner face are 1 voxel sideways from the other cube's walls,
    and the other 36 boundary voxels coincide. Pooled: 72 x 0, 8 x 1 voxel-step sideways, 32 x 1
    step along the shifted axis.
    """
    pred = np.zeros((10, 10, 10), bool)
    ref = np.zeros_like(pred)
    pred[2:6, 2:6, 2:6] = True
    box = [slice(2, 6)] * 3
    box[offset_axis] = slice(3, 7)
    ref[tuple(box)] = True
    return pred, ref


def test_offset_cubes_with_3mm_slices():
    pred, ref = cubes(offset_axis=0)
    spacing = (3.0, 1.0, 1.0)  # (sk, sj, si): the shift is across 3 mm slices
    assert dice(pred, ref) == pytest.approx(0.75)
    assert hd95(pred, ref, spacing) == pytest.approx(3.0)  # 32 of 112 distances are 3 mm: the top 5 %
    # 2 mm: the 72 coinciding + 8 sideways (1 mm) voxels pass, the 32 at 3 mm do not.
    assert surface_dice(pred, ref, spacing, tolerance_mm=2.0) == pytest.approx(80 / 112)
    assert surface_dice(pred, ref, spacing, tolerance_mm=3.0) == pytest.approx(1.0)  # inclusive
    assert surface_dice(pred, ref, spacing, tolerance_mm=0.5) == pytest.approx(72 / 112)


def test_spacing_order_is_k_j_i():
    pred, ref = cubes(offset_axis=0)
    # Same masks, spacing reversed: the shift is now 1 mm and the sideways steps are 1 mm (along j).
    assert hd95(pred, ref, (1.0, 1.0, 3.0)) == pytest.approx(1.0)
    assert surface_dice(pred, ref, (1.0, 1.0, 3.0), tolerance_mm=2.0) == pytest.approx(1.0)
    # Shift along i with 3 mm along i: the same numbers as the first test.
    pred, ref = cubes(offset_axis=2)
    assert hd95(pred, ref, (1.0, 1.0, 3.0)) == pytest.approx(3.0)
    assert hd95(pred, ref, (3.0, 1.0, 1.0)) == pytest.approx(1.0)
    assert surface_dice(pred, ref, (1.0, 1.0, 3.0), 2.0) == pytest.approx(80 / 112)


def test_single_voxels():
    pred = np.zeros((4, 5, 6), bool)
    ref = np.zeros_like(pred)
    pred[1, 2, 3] = True
    ref[2, 3, 3] = True  # one step along k (2 mm) and one along j (1.5 mm)
    spacing = (2.0, 1.5, 0.5)
    distance = math.hypot(2.0, 1.5)  # 2.5 mm
    m = organ_metrics(pred, ref, spacing)
    assert m["status"] == "ok"
    assert m["dice"] == 0.0
    assert m["hd95"] == pytest.approx(distance)
    assert m["nsd"] == 0.0  # 2.5 mm > 2 mm
    assert surface_dice(pred, ref, spacing, tolerance_mm=2.5) == pytest.approx(1.0)
    assert m["pred_voxels"] == m["ref_voxels"] == 1
    assert m["ref_volume_ml"] == pytest.approx(2.0 * 1.5 * 0.5 / 1000)
    same = organ_metrics(pred, pred, spacing)
    assert (same["dice"], same["nsd"], same["hd95"]) == (1.0, 1.0, 0.0)


def test_identical_masks_and_mask_on_volume_edge():
    mask = np.zeros((6, 7, 8), bool)
    mask[0:3, 2:7, 1:5] = True  # touches the first and last slices along k and j
    m = organ_metrics(mask, mask, (2.5, 0.8, 0.8))
    assert (m["dice"], m["nsd"], m["hd95"], m["status"]) == (1.0, 1.0, 0.0, "ok")
    assert m["pred_volume_ml"] == pytest.approx(60 * 2.5 * 0.8 * 0.8 / 1000)


def test_empty_rules():
    shape, spacing = (4, 5, 6), (3.0, 2.0, 1.0)
    diagonal = math.sqrt((4 * 3.0) ** 2 + (5 * 2.0) ** 2 + (6 * 1.0) ** 2)
    empty = np.zeros(shape, bool)
    organ = empty.copy()
    organ[1:3, 1:3, 1:3] = True

    both = organ_metrics(empty, empty, spacing)
    assert both["status"] == "both_empty"
    assert all(math.isnan(both[k]) for k in ("dice", "nsd", "hd95"))
    assert math.isnan(dice(empty, empty)) and math.isnan(hd95(empty, empty, spacing))
    assert math.isnan(surface_dice(empty, empty, spacing))

    for pred, ref, status in ((organ, empty, "false_positive"), (empty, organ, "missed")):
        m = organ_metrics(pred, ref, spacing)
        assert m["status"] == status
        assert (m["dice"], m["nsd"]) == (0.0, 0.0)
        assert m["hd95"] == pytest.approx(diagonal)
        assert dice(pred, ref) == 0.0 and surface_dice(pred, ref, spacing) == 0.0
        assert hd95(pred, ref, spacing) == pytest.approx(diagonal)


def _brute_force(pred, ref, spacing, tol):
    def boundary(mask):
        out = []
        for idx in np.argwhere(mask):
            for axis in range(3):
                for step in (-1, 1):
                    n = idx.copy()
                    n[axis] += step
                    if n[axis] < 0 or n[axis] >= mask.shape[axis] or not mask[tuple(n)]:
                        out.append(idx)
                        break
                else:
                    continue
                break
        return np.array(out) * np.asarray(spacing)

    bp, br = boundary(pred), boundary(ref)
    d = np.sqrt(((bp[:, None] - br[None]) ** 2).sum(-1))
    pooled = np.concatenate([d.min(1), d.min(0)])
    return np.mean(pooled <= tol), np.percentile(pooled, 95)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_blobs_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    shape, spacing = (7, 12, 10), (4.0, 0.9, 1.6)
    pred = rng.random(shape) < 0.25
    ref = rng.random(shape) < 0.25
    pred[:, :4] = False  # different bounding boxes, so cropping is exercised
    nsd, h = _brute_force(pred, ref, spacing, 2.0)
    m = organ_metrics(pred, ref, spacing, tolerance_mm=2.0)
    assert m["nsd"] == pytest.approx(nsd)
    assert m["hd95"] == pytest.approx(h, rel=1e-6)
    assert m["dice"] == pytest.approx(2 * (pred & ref).sum() / (pred.sum() + ref.sum()))


def test_bad_inputs_are_input_errors():
    a = np.zeros((3, 3, 3), bool)
    with pytest.raises(InputError, match="differs from reference shape"):
        dice(a, np.zeros((3, 3, 4), bool))
    with pytest.raises(InputError, match="must be 3D"):
        dice(np.zeros((3, 3)), np.zeros((3, 3)))
    with pytest.raises(InputError, match="spacing"):
        hd95(a, a, (1.0, 0.0, 1.0))
    with pytest.raises(InputError, match="spacing"):
        organ_metrics(a, a, (1.0, 1.0))
    with pytest.raises(InputError, match="tolerance"):
        organ_metrics(a, a, (1.0, 1.0, 1.0), tolerance_mm=-1.0)


def test_summarize_ignores_nan_and_counts_statuses():
    rows = [
        {"case": "a", "organ": "liver", "status": "ok", "dice": 0.9, "nsd": 0.8, "hd95": 4.0},
        {"case": "b", "organ": "liver", "status": "missed", "dice": 0.0, "nsd": 0.0, "hd95": 100.0},
        {
            "case": "a",
            "organ": "gallbladder",
            "status": "both_empty",
            "dice": float("nan"),
            "nsd": float("nan"),
            "hd95": float("nan"),
        },
        {"case": "b", "organ": "gallbladder", "status": "ok", "dice": 0.5, "nsd": 0.6, "hd95": 8.0},
        {
            "case": "c",
            "organ": "pancreas",
            "status": "both_empty",
            "dice": float("nan"),
            "nsd": float("nan"),
            "hd95": float("nan"),
        },
    ]
    s = summarize(rows)
    liver, gb = s["per_organ"]["liver"], s["per_organ"]["gallbladder"]
    assert liver["dice"] == pytest.approx(0.45) and liver["hd95"] == pytest.approx(52.0)
    assert liver["n"] == 2 and liver["n_missed"] == 1 and liver["n_ok"] == 1
    assert gb["dice"] == pytest.approx(0.5) and gb["n_both_empty"] == 1
    assert math.isnan(s["per_organ"]["pancreas"]["dice"])
    overall = s["overall"]
    assert overall["dice"] == pytest.approx((0.45 + 0.5) / 2)  # macro mean over organs with a score
    assert overall["nsd"] == pytest.approx((0.4 + 0.6) / 2)
    assert overall["n"] == 5 and overall["n_both_empty"] == 2 and overall["n_missed"] == 1
