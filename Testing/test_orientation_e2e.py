"""Orientation end to end: whatever the direction matrix, the model sees the same image and the
result lands on the same physical voxels ("left kidney" means the patient's left)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from TGatedSegmentLib.inference.api import Segmenter
from TGatedSegmentLib.io.volume import Geometry
from TGatedSegmentLib.model.configuration import PreprocessConfig
from TGatedSegmentLib.preprocessing.volume import prepare_volume


def canonical_image() -> sitk.Image:
    """6 x 44 x 44 CT in LPS order with a bright blob on the patient's left, anterior, superior."""
    array = np.full((6, 44, 44), 40.0, dtype=np.float32)
    array[:, :3] = -1000.0
    array[3:5, 8:14, 30:38] = 250.0  # z high = superior, y low = anterior, x high = patient's left
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 0.9, 2.5))
    image.SetOrigin((-12.0, 30.0, -40.0))
    return image


def stored_variants() -> list[sitk.Image]:
    """The same physical volume stored with every axis order and flip (ITK keeps physical space)."""
    base = canonical_image()
    variants = []
    for order in itertools.permutations(range(3)):
        permuted = sitk.PermuteAxes(base, list(order))
        for flips in itertools.product([False, True], repeat=3):
            variants.append(sitk.Flip(permuted, list(flips)))
    return variants


def physical_points(mask: np.ndarray, geometry: Geometry) -> set[tuple]:
    k, j, i = np.nonzero(mask)
    ijk = np.stack([i, j, k, np.ones_like(i)]).astype(float)
    lps = (geometry.ijk_to_lps() @ ijk)[:3].T
    return {tuple(p) for p in np.round(lps, 3)}


def test_stored_variants_are_the_same_physical_volume():
    variants = stored_variants()
    assert len(variants) == 48
    ref = canonical_image()
    blob_ref = physical_points(sitk.GetArrayFromImage(ref) > 200, Geometry.from_image(ref))
    for image in variants:
        assert physical_points(sitk.GetArrayFromImage(image) > 200, Geometry.from_image(image)) == blob_ref


def test_model_input_is_identical_whatever_the_storage_order():
    cfg = PreprocessConfig()
    reference = prepare_volume(canonical_image(), cfg).unit
    assert reference[4, 10, 34] > 0.9 and reference[4, 10, 5] < 0.5  # the blob is on the patient's left (high x)
    for image in stored_variants():
        assert np.array_equal(prepare_volume(image, cfg).unit, reference)


def values_in_physical_order(values: np.ndarray, geometry: Geometry) -> np.ndarray:
    """A (k, j, i) array's values sorted by the physical (L, P, S) position of their voxels."""
    k, j, i = np.indices(values.shape).reshape(3, -1)
    lps = np.round((geometry.ijk_to_lps() @ np.stack([i, j, k, np.ones_like(i)]).astype(float))[:3], 3)
    order = np.lexsort(lps)
    return values.reshape(-1)[order]


def test_results_land_on_the_same_physical_voxels(tiny_checkpoint):
    """A real (random-weight) model: identical input -> identical canonical output -> the same
    probability at every physical point, whatever the storage order."""
    seg = Segmenter(tiny_checkpoint, device="cpu")
    reference = None
    for image in stored_variants()[::5]:  # 10 of the 48 orders keep this test fast
        result = seg.segment(image, prompts="liver, left kidney", modality="ct", return_probabilities=True)
        assert result.masks.shape[1:] == Geometry.from_image(image).array_shape
        ordered = np.stack([values_in_physical_order(p, result.geometry) for p in result.probabilities])
        assert ordered.std() > 1e-3, "the random model's output varies over the volume"
        if reference is None:
            reference = ordered
        np.testing.assert_allclose(ordered, reference, atol=1e-5)


def _threshold_engine(seg: Segmenter) -> None:
    """Replace the network by 'bright = organ' so the expected output is known voxel for voxel,
    while every geometric step (reorientation, slice layout, resize, back) stays the real one."""
    codec = seg.codec

    def run(read_slices, depth, text, progress=None, cancel=None, stage="segment"):
        for z in range(depth):
            image = codec.encode(read_slices(np.array([z])))[:, :1]  # (1, 1, S, S) normalised
            grey = image * codec.std[:, :1] + codec.mean[:, :1]
            yield np.array([z]), ((grey - 0.7) * 40.0).expand(1, text.shape[0], -1, -1)

    seg.engine.run = run


@pytest.mark.parametrize("layout", [("P", "L"), ("L", "P")])
def test_known_blob_lands_on_its_voxels_for_all_orders_and_oblique(tiny_checkpoint, tmp_path, layout):
    seg = Segmenter(tiny_checkpoint, device="cpu")
    seg.codec.__init__(PreprocessConfig(slice_layout=layout), seg.device, dtype=torch.float32)
    _threshold_engine(seg)
    oblique = []
    for angle, axis in ((20, 2), (-25, 0), (15, 1)):
        image = canonical_image()
        rotation = sitk.VersorTransform((float(axis == 0), float(axis == 1), float(axis == 2)), np.deg2rad(angle))
        image.SetDirection(rotation.GetMatrix())
        oblique.append(image)
    for image in stored_variants() + oblique:
        blob = sitk.GetArrayFromImage(image) > 200
        path = tmp_path / "v.nrrd"
        sitk.WriteImage(image, str(path))
        result = seg.segment(path, prompts="left kidney", modality="ct")
        assert np.array_equal(result.masks[0], blob)
        assert result.geometry.matches(Geometry.from_image(image))
