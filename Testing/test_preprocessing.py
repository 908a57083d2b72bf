"""Intensity normalisation and the canonical-slice <-> model-image codec."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from TGatedSegmentLib.errors import InputError
from TGatedSegmentLib.model.configuration import REFERENCE_SLICE_LAYOUT, PreprocessConfig
from TGatedSegmentLib.preprocessing.intensity import detect_modality, normalize_intensity
from TGatedSegmentLib.preprocessing.slices import SliceCodec


def test_ct_window_maps_minus125_275_to_unit_range():
    cfg = PreprocessConfig()
    hu = np.array([[[-1000, -125, 75, 275, 3000]]], dtype=np.float32)
    assert normalize_intensity(hu, "ct", cfg).ravel().tolist() == pytest.approx([0, 0, 0.5, 1, 1])


def test_mr_uses_per_volume_percentiles():
    values = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    out = normalize_intensity(values, "mr", PreprocessConfig())
    lo, hi = np.percentile(values, [1, 99])
    assert out.min() == 0 and out.max() == 1
    assert out.ravel()[500] == pytest.approx((500 - lo) / (hi - lo))


def test_modality_detection():
    ct = np.full((4, 8, 8), -1000.0, dtype=np.float32)
    ct[:, 2:6, 2:6] = 40
    mr = np.abs(np.random.default_rng(0).normal(300, 80, (4, 8, 8))).astype(np.float32)
    assert detect_modality(ct) == "ct" and detect_modality(mr) == "mr"
    assert detect_modality(mr, hint="ct") == "ct"  # the DICOM tag wins


def test_non_finite_voxels_are_replaced_and_all_nan_rejected():
    vol = np.zeros((2, 4, 4), dtype=np.float32)
    vol[0, 0, 0] = np.nan
    assert np.isfinite(normalize_intensity(vol, "ct", PreprocessConfig())).all()
    with pytest.raises(InputError, match="no finite values"):
        normalize_intensity(np.full((2, 2, 2), np.nan, dtype=np.float32), "mr", PreprocessConfig())


def _spot_position(image: torch.Tensor) -> tuple[int, int]:
    channel = image[0, 0]
    idx = int(torch.argmax(channel))
    return divmod(idx, channel.shape[1])


@pytest.mark.parametrize(
    "layout,expect",
    [
        (("P", "L"), ("top", "right")),  # radiological: anterior up, patient's left on the image's right
        (REFERENCE_SLICE_LAYOUT, ("bottom", "left")),  # transposed: rows run toward the patient's left
        (("A", "R"), ("bottom", "left")),
    ],
)
def test_slice_layout_places_patient_directions(layout, expect):
    codec = SliceCodec(PreprocessConfig(slice_layout=layout, image_size=64))
    sl = np.zeros((1, 40, 40), dtype=np.float32)
    sl[0, 2:6, 34:38] = 1.0  # canonical: small y = anterior, large x = patient's left
    row, col = _spot_position(codec.encode(sl))
    assert ("top" if row < 32 else "bottom") == expect[0]
    assert ("left" if col < 32 else "right") == expect[1]


@pytest.mark.parametrize("layout", [("P", "L"), ("L", "P"), ("R", "A"), ("A", "L")])
def test_decode_inverts_encode_geometry(layout):
    cfg = PreprocessConfig(slice_layout=layout, image_size=48, quantize_8bit=False, mean=(0, 0, 0), std=(1, 1, 1))
    codec = SliceCodec(cfg)
    sl = np.zeros((2, 24, 36), dtype=np.float32)
    sl[:, 3:9, 20:30] = 1.0
    image = codec.encode(sl)  # (2, 3, 48, 48)
    back = codec.decode(image[:, 0], (24, 36)).numpy()
    assert back.shape == (2, 24, 36)
    assert np.abs(back - sl).mean() < 0.05
    assert (back[:, 3:9, 20:30] > 0.5).mean() > 0.9


def test_quantisation_and_normalisation():
    cfg = PreprocessConfig(image_size=8)
    codec = SliceCodec(cfg)
    sl = np.random.default_rng(0).random((1, 8, 8), dtype=np.float32)
    image = codec.encode(sl)
    mean, std = torch.tensor(cfg.mean).view(3, 1, 1), torch.tensor(cfg.std).view(3, 1, 1)
    grey = image[0] * std + mean  # back to [0, 1], identical in the 3 channels
    assert torch.allclose(grey[0], grey[1], atol=1e-6) and torch.allclose(grey[0], grey[2], atol=1e-6)
    assert torch.allclose(grey * 255, torch.round(grey * 255), atol=1e-4)  # 8-bit levels, as the processor saw
