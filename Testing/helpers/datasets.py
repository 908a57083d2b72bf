"""Tiny synthetic labelled CT datasets for the training and evaluation tests (seconds to make)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

LABELS = {"background": 0, "liver": 1, "spleen": 2, "left_kidney": 3}
LPS_RAS = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)  # how NIfTI files usually store CT


def phantom(depth: int = 12, size: int = 48, seed: int = 0, shift: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(image HU, labels), canonical (z, y, x) = (S, P, L): a body with a bright 'liver' on the
    patient's right (low x), a darker 'spleen' on the left, a small 'left kidney' behind it; each
    organ spans only some slices, so there are negatives next to positives."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:depth, :size, :size].astype(np.float32)
    c = size / 2
    body = ((y - c) / (0.42 * size)) ** 2 + ((x - c) / (0.46 * size)) ** 2 < 1
    image = np.where(body, 40.0, -1000.0).astype(np.float32)
    labels = np.zeros(image.shape, np.uint8)
    zc = (depth - 1) / 2
    liver = ((y - c + 2) / (0.22 * size)) ** 2 + ((x - 0.32 * size - shift) / (0.2 * size)) ** 2 + (
        (z - zc + 1) / (0.4 * depth)
    ) ** 2 < 1
    spleen = ((y - c + 4) / (0.12 * size)) ** 2 + ((x - 0.7 * size - shift) / (0.1 * size)) ** 2 + (
        (z - zc - 2) / (0.3 * depth)
    ) ** 2 < 1
    kidney = ((y - 0.72 * size) / (0.07 * size)) ** 2 + ((x - 0.66 * size - shift) / (0.07 * size)) ** 2 + (
        (z - zc) / (0.2 * depth)
    ) ** 2 < 1
    for mask, value, label in ((liver, 160.0, 1), (spleen, -60.0, 2), (kidney, 250.0, 3)):
        image[mask & body] = value
        labels[mask & body] = label
    image += rng.normal(0.0, 10.0, image.shape).astype(np.float32)
    return image, labels


def write(array: np.ndarray, path: Path, spacing=(2.0, 2.0, 3.0), direction=LPS_RAS, canonical: bool = True) -> Path:
    """Write a canonical (z, y, x) array as a file stored with ``direction`` (same physical content)."""
    if canonical and direction == LPS_RAS:
        array = array[:, ::-1, ::-1]  # x toward R, y toward A in the file's index order
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def make_dataset(
    root: Path, cases: int = 1, depth: int = 12, size: int = 48, labels: dict | None = None, meta: dict | None = None
) -> Path:
    """An nnU-Net v2 dataset of phantoms (case i shifted by i voxels)."""
    for n in range(cases):
        image, lab = phantom(depth, size, seed=n, shift=n)
        write(image.astype(np.int16), root / "imagesTr" / f"case{n}_0000.nii.gz")
        write(lab, root / "labelsTr" / f"case{n}.nii.gz")
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "name": "phantom",
                "channel_names": {"0": "CT"},
                "labels": labels or LABELS,
                "numTraining": cases,
                "file_ending": ".nii.gz",
                **(meta or {}),
            }
        )
    )
    return root
