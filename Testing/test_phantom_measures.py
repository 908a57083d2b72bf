"""The phantom's own measures: false positives on look-alikes and in organ-absent slices, and the gate map."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from TGatedSegmentLib.evaluation.gate import gate_stats, gate_volume
from TGatedSegmentLib.evaluation.phantom import (
    absent_slice_false_positives,
    distractor_false_positives,
    mean_std,
    phantom_organ_measures,
)


def test_distractor_false_positives_count_blobs_and_volume():
    distractors = np.zeros((6, 10, 10), bool)
    distractors[1, 1:3, 1:3] = True  # blob A: 4 voxels
    distractors[4:6, 6:9, 6:9] = True  # blob B: 18 voxels
    prediction = np.zeros_like(distractors)
    prediction[4, 7, 7] = prediction[4, 7, 8] = True  # 2 voxels in B
    prediction[0, 0, 0] = True  # outside every blob: not counted here
    row = distractor_false_positives(prediction, distractors, spacing=(2.0, 1.0, 0.5))
    assert row == {"distractors": 2, "distractors_hit": 1, "distractor_fp_ml": pytest.approx(2 * 1.0 / 1000)}


def test_absent_slice_false_positives():
    reference = np.zeros((5, 4, 4), bool)
    reference[1:3, 1, 1] = True
    prediction = np.zeros_like(reference)
    prediction[0, :2, :2] = True  # 4 voxels in absent slice 0
    prediction[2, 2, 2] = True  # present slice: not a slice-level false positive
    prediction[4, 0, 0] = True  # 1 voxel in absent slice 4
    row = absent_slice_false_positives(prediction, reference, spacing=(10.0, 10.0, 10.0))
    assert row == {"absent_slices": 3, "absent_slices_hit": 2, "absent_slice_fp_ml": pytest.approx(5.0)}


def test_organ_measures_on_a_real_phantom():
    from TGatedSegmentLib.phantom import PhantomSpec, generate_phantom

    ph = generate_phantom(
        3, PhantomSpec(shape=(24, 48, 48), spacing=(5.0, 6.0, 6.0), target_slices=(5, 8), n_distractors=4)
    )
    target = ph.labels == ph.target_label
    perfect = phantom_organ_measures(target, ph.labels, ph.target_label, ph.spacing, ph.distractor_mask)
    assert perfect["dice"] == 1.0 and perfect["distractors_hit"] == 0 and perfect["absent_slice_fp_ml"] == 0
    fooled = phantom_organ_measures(
        target | ph.distractor_mask, ph.labels, ph.target_label, ph.spacing, ph.distractor_mask
    )
    assert fooled["distractors_hit"] == fooled["distractors"] >= 1
    assert fooled["distractor_fp_ml"] == pytest.approx(ph.distractor_mask.sum() * np.prod(ph.spacing) / 1000)
    assert fooled["dice"] < 1.0


def test_mean_std_ignores_nan():
    assert mean_std([1.0, float("nan"), 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    assert mean_std([0.5]) == (0.5, 0.0)
    assert all(math.isnan(v) for v in mean_std([float("nan")]))


def test_gate_volume_matches_the_model_gate_of_each_centre_slice(tiny_checkpoint):
    """The streamed gate map equals the gate of a fresh 5-slice forward per centre (edges replicated)."""
    import SimpleITK as sitk
    import torch.nn.functional as F

    from TGatedSegmentLib.inference.api import Segmenter
    from TGatedSegmentLib.inference.engine import window_indices
    from TGatedSegmentLib.preprocessing.volume import prepare_volume

    segmenter = Segmenter(tiny_checkpoint, device="cpu", batch_size=2, precision="fp32")  # the model's own numbers
    model = segmenter.model
    with torch.no_grad():  # an opened, token-dependent gate (a fresh one is sigmoid(-5) everywhere)
        torch.manual_seed(0)
        model.adapter.gate_proj.weight.normal_(0, 0.5)
    volume = np.random.default_rng(0).normal(40, 80, (7, 40, 36)).astype(np.float32)
    image = sitk.GetImageFromArray(volume)
    gate = gate_volume(segmenter, image, modality="ct")
    assert gate.shape == (7, 40, 36) and 0 < gate.min() and gate.max() < 1
    assert gate.std() > 1e-3
    prepared = prepare_volume(image, segmenter.config.preprocessing, "ct")
    size = segmenter.config.preprocessing.image_size
    for centre in range(7):
        pixels = segmenter.codec.encode(prepared.unit[window_indices(centre, 7, model.context_size)])
        with torch.no_grad():
            expected = model.fuse_with_gate(model.encode_images(pixels).unsqueeze(0)).gate  # (1, T, C)
        tokens = expected[0, 1:].mean(-1)
        grid = int(round(tokens.numel() ** 0.5))
        pixels_gate = F.interpolate(tokens.view(1, 1, grid, grid), size=(size, size), mode="nearest")[:, 0]
        want = segmenter.codec.decode(pixels_gate, (40, 36)).clamp(0, 1)[0].numpy()
        np.testing.assert_allclose(gate[centre], want, atol=1e-5)
    stats = gate_stats(gate, np.ones_like(gate, bool))
    assert stats["voxels"] == gate.size and stats["p10"] <= stats["p50"] <= stats["p90"]
    assert math.isnan(gate_stats(gate, np.zeros_like(gate, bool))["mean"])


def test_gate_of_the_baseline_is_a_clear_error(tiny_baseline_checkpoint):
    from TGatedSegmentLib.errors import InputError
    from TGatedSegmentLib.inference.api import Segmenter

    with pytest.raises(InputError, match="no gate"):
        gate_volume(Segmenter(tiny_baseline_checkpoint, device="cpu"), np.zeros((3, 8, 8), np.float32))
