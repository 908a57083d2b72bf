"""Region of interest: the volume is cropped to the voxels a markups ROI touches before inference, and
the result is pasted back on the full grid, in the right place whatever the volume's orientation,
the ROI's rotation and the parent transforms of both; a preset's default crop (the body).

The crop arithmetic is the glue's (no Slicer); the placement is checked end to end through the
logic, the stand-in scene and a backend that segments by a known rule in physical space.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

TESTING = Path(__file__).resolve().parent
REPO = TESTING.parent
for folder in (TESTING / "slicer_stub", REPO / "TGatedSegment"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import slicer  # noqa: E402  (the stand-in)
from helpers.slicer import (  # noqa: E402,F401
    AXIAL,
    OBLIQUE,
    SAGITTAL,
    fake_logic,
    logic,
    make_volume,
    rotation,
    scene_snapshot,
    segment_array,
    slicer_tmp,
)

import TGatedSegmentGlue as glue  # noqa: E402


def voxel_centres_ras(ijk_to_ras, shape_kji):
    k, j, i = np.indices(shape_kji)
    return np.tensordot(np.asarray(ijk_to_ras)[:3], np.stack([i, j, k, np.ones_like(i)]).astype(float), axes=1)


def inside_box(points_ras, object_to_volume, size):
    """Which points (3, ...) lie in the box of ``size`` whose object frame maps to the volume's RAS by ``object_to_volume``."""
    local = np.tensordot(
        np.linalg.inv(object_to_volume)[:3], np.concatenate([points_ras, np.ones((1,) + points_ras.shape[1:])]), axes=1
    )
    return np.all(np.abs(local) <= np.reshape(size, (3,) + (1,) * (points_ras.ndim - 1)) / 2 + 1e-9, axis=0)


# --------------------------------------------------------------------------------------------------
# The crop arithmetic


def test_an_axis_aligned_box_gives_the_voxels_it_touches():
    matrix = np.diag([2.0, 2.0, 5.0, 1.0])  # voxel n spans [2n - 1, 2n + 1] mm along R
    corners = np.array(list(itertools.product((3.0, 9.0), (-1.0, 1.0), (0.0, 12.0))))
    box = glue.cropBoxFromCorners(corners, matrix, (10, 8, 8))
    # R 3..9 mm touches voxels 2..4 (voxel 1 ends at 3 mm: a face on a boundary takes no neighbour)
    assert box.start == (2, 0, 0) and box.stop == (5, 1, 3)
    assert box.shape == (3, 1, 3) and not box.isFull
    assert "i 2-4, j 0-0, k 0-2" in box.describe()
    clipped = glue.cropBoxFromCorners(corners + [0, 0, -6], matrix, (10, 8, 8))  # S -6..6 mm: partly below
    assert clipped.start[2] == 0 and clipped.stop[2] == 2
    with pytest.raises(ValueError, match="does not overlap the volume"):
        glue.cropBoxFromCorners(corners + [500, 0, 0], matrix, (10, 8, 8))


@pytest.mark.parametrize("kind", ["axial", "sagittal", "oblique"])
def test_a_rotated_box_on_any_volume_keeps_every_voxel_inside_it(kind):
    ijk_to_ras = {"axial": AXIAL, "sagittal": SAGITTAL, "oblique": OBLIQUE}[kind]
    shape = (14, 18, 22)
    object_to_volume = np.eye(4)
    object_to_volume[:3, :3] = rotation(2, 25) @ rotation(0, 10)
    object_to_volume[:3, 3] = (ijk_to_ras @ [11, 9, 7, 1])[:3] + [2.0, -1.5, 0.5]
    size = (14.0, 9.0, 6.0)
    box = glue.cropBoxFromCorners(glue.roiCorners(object_to_volume, size), ijk_to_ras, shape)
    inside = inside_box(voxel_centres_ras(ijk_to_ras, shape), object_to_volume, size)
    assert inside.any()
    in_crop = np.zeros(shape, bool)
    in_crop[box.slices] = True
    assert not (inside & ~in_crop).any(), "a voxel inside the ROI was cropped away"
    assert in_crop.sum() < inside.size  # and it is a crop


def test_roi_corners_go_through_the_transform_between_roi_and_volume():
    object_to_node = np.eye(4)
    object_to_node[:3, 3] = [1.0, 2.0, 3.0]
    node_to_volume = np.eye(4)
    node_to_volume[:3, :3] = rotation(2, 90)
    corners = glue.roiCorners(object_to_node, (2.0, 4.0, 6.0), node_to_volume)
    expected = (node_to_volume @ np.c_[np.array(list(itertools.product((0, 2), (0, 4), (0, 6)))), np.ones(8)].T).T
    np.testing.assert_allclose(np.sort(corners, axis=0), np.sort(expected[:, :3], axis=0), atol=1e-12)


def test_a_crop_pastes_back_in_place_and_its_geometry_is_the_volumes():
    array = np.arange(5 * 6 * 7).reshape(5, 6, 7)
    box = glue.CropBox((1, 2, 3), (4, 6, 5), array.shape)
    block = box.crop(array)
    assert block.shape == box.shape == (2, 4, 3)
    pasted = box.paste(block)
    np.testing.assert_array_equal(pasted[box.slices], block)
    assert pasted.sum() == block.sum() and pasted.shape == array.shape
    np.testing.assert_allclose(box.ijkToRAS(OBLIQUE) @ [0, 0, 0, 1], OBLIQUE @ [1, 2, 3, 1])
    np.testing.assert_allclose(box.ijkToRAS(OBLIQUE)[:3, :3], OBLIQUE[:3, :3])
    with pytest.raises(ValueError):
        box.paste(array)


def test_the_body_crop_drops_the_air_around_a_ct_and_nothing_of_an_mr():
    ct = np.full((12, 30, 40), -1000, np.int16)
    ct[2:10, 5:25, 8:33] = 40  # the body
    box = glue.bodyCropBox(ct)
    assert box.start == (6, 3, 0) and box.stop == (35, 27, 12)  # 2 voxels of margin, clipped to the volume
    assert glue.bodyCropBox(np.full((4, 5, 6), 300, np.int16)) is None  # an MR: no air in HU
    assert glue.bodyCropBox(np.full((4, 5, 6), -1000, np.int16)) is None  # nothing but air


# --------------------------------------------------------------------------------------------------
# Through the logic: what the backend gets, and where the result lands


@pytest.fixture
def recorded_input(tmp_path, monkeypatch):
    path = tmp_path / "input.json"
    monkeypatch.setenv("FAKE_BACKEND_INPUT", str(path))
    return lambda: json.loads(path.read_text(encoding="utf-8"))


def add_roi(centre, size, object_rotation=np.eye(3), transform_to_world=None, name="ROI"):
    roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", name)
    matrix = np.eye(4)
    matrix[:3, :3], matrix[:3, 3] = object_rotation, centre
    roi.SetAndObserveObjectToNodeMatrix(slicer.util.vtkMatrixFromArray(matrix))
    roi.SetSize(*size)
    if transform_to_world is not None:
        transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", f"{name} transform")
        transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(transform_to_world))
        roi.SetAndObserveTransformNodeID(transform.GetID())
    return roi, matrix


def test_roi_crop_is_segmented_and_pasted_back_on_the_full_grid(fake_logic, recorded_input):
    """An ROI cutting through the bright box: the backend gets only the block, and "bright" comes back
    exactly where the bright voxels of that block are, on the full grid (a one-voxel shift would show)."""
    volume, voxels = make_volume(OBLIQUE)
    centre = (OBLIQUE @ [11, 9, 6, 1])[:3]
    roi, _ = add_roi(centre, (5.0, 4.0, 3.0), rotation(0, 15))
    node = fake_logic.segment(volume, "bright", roiNode=roi)
    handed = recorded_input()
    box = glue.cropBoxFromCorners(
        glue.roiCorners(slicer.util.arrayFromVTKMatrix(roi.GetObjectToNodeMatrix()), roi.GetSize()),
        OBLIQUE,
        voxels.shape,
    )
    assert tuple(handed["shape"]) == box.shape and box.shape != voxels.shape
    np.testing.assert_allclose(handed["ijk_to_ras"], box.ijkToRAS(OBLIQUE), atol=1e-6)
    expected = np.zeros(voxels.shape, bool)
    expected[box.slices] = voxels[box.slices] > 500
    assert expected.any() and (voxels > 500).sum() > expected.sum()  # the ROI cuts the bright box
    np.testing.assert_array_equal(segment_array(node, "bright", volume), expected)


def test_roi_and_volume_under_different_transforms(fake_logic, recorded_input):
    """The ROI is drawn in world space under a transform of its own; the volume is under another one.
    The crop is the ROI's box seen from the volume's own coordinates."""
    volume, voxels = make_volume(SAGITTAL)
    volume_to_world = np.eye(4)
    volume_to_world[:3, :3], volume_to_world[:3, 3] = rotation(2, 30), [20.0, -5.0, 3.0]
    registration = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    registration.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(volume_to_world))
    volume.SetAndObserveTransformNodeID(registration.GetID())
    roi_to_world = np.eye(4)
    roi_to_world[:3, :3], roi_to_world[:3, 3] = rotation(1, -20), [-4.0, 6.0, 1.0]
    # centre: the volume's voxel (11, 9, 6) in world coordinates, seen from the ROI's parent frame
    centre_world = volume_to_world @ SAGITTAL @ [11, 9, 6, 1]
    roi, object_to_node = add_roi(
        (np.linalg.inv(roi_to_world) @ centre_world)[:3], (10.0, 7.0, 12.0), rotation(2, 40), roi_to_world
    )
    node = fake_logic.segment(volume, "bright", roiNode=roi)

    object_to_volume = np.linalg.inv(volume_to_world) @ roi_to_world @ object_to_node
    inside = inside_box(voxel_centres_ras(SAGITTAL, voxels.shape), object_to_volume, (10.0, 7.0, 12.0))
    box = glue.cropBoxFromCorners(glue.roiCorners(object_to_volume, (10.0, 7.0, 12.0)), SAGITTAL, voxels.shape)
    in_crop = np.zeros(voxels.shape, bool)
    in_crop[box.slices] = True
    assert inside.any() and not (inside & ~in_crop).any()
    assert tuple(recorded_input()["shape"]) == box.shape
    np.testing.assert_array_equal(segment_array(node, "bright", volume), (voxels > 500) & in_crop)
    assert node.GetTransformNodeID() == registration.GetID()


def test_body_crop_of_a_preset_and_an_roi_that_misses(fake_logic, recorded_input, slicer_tmp):
    rng = np.random.default_rng(1)
    voxels = np.full((14, 30, 36), -1000, np.int16)
    voxels[3:11, 6:24, 5:30] = rng.normal(40, 20, (8, 18, 25)).astype(np.int16)  # the body in air
    voxels[5:8, 10:15, 12:20] = 900
    volume = slicer.util.addVolumeFromArray(voxels, AXIAL, "CT in air")
    node = fake_logic.segment(volume, "bright", cropToBody=True)
    assert tuple(recorded_input()["shape"]) == (12, 22, 29)  # the body and 2 voxels of margin
    np.testing.assert_array_equal(segment_array(node, "bright", volume), voxels > 500)

    far = (AXIAL @ [500, 500, 500, 1])[:3]
    roi, _ = add_roi(far, (5.0, 5.0, 5.0), name="elsewhere")
    before = scene_snapshot()
    with pytest.raises(ValueError, match="does not overlap the volume"):
        fake_logic.segment(volume, "bright", roiNode=roi, cropToBody=True)  # the ROI wins over the body crop
    assert scene_snapshot() == before and os.listdir(slicer_tmp) == []


def test_a_cropped_run_with_the_real_backend_and_its_uncertainty_map(logic, tiny_checkpoint, slicer_tmp):
    """The real backend on a block: segments and the uncertainty map come back on the volume's grid,
    with nothing outside the block (the map is 0, "certain", there)."""
    volume, voxels = make_volume(OBLIQUE, shape=(8, 18, 22), name="abdomen CT")
    roi, _ = add_roi((OBLIQUE @ [8, 9, 4, 1])[:3], (12.0, 11.0, 9.0))
    node = logic.segment(
        volume,
        "liver, spleen",
        checkpoint=str(tiny_checkpoint),
        device="cpu",
        roiNode=roi,
        uncertainty=3,
        threshold=0.05,
    )
    box = glue.cropBoxFromCorners(
        glue.roiCorners(slicer.util.arrayFromVTKMatrix(roi.GetObjectToNodeMatrix()), roi.GetSize()),
        OBLIQUE,
        voxels.shape,
    )
    outside = np.ones(voxels.shape, bool)
    outside[box.slices] = False
    assert outside.any() and not outside.all()
    for name in ("liver", "spleen"):
        mask = segment_array(node, name, volume)
        assert mask.shape == voxels.shape and not (mask.astype(bool) & outside).any()
    entropy = next(
        n
        for n in (slicer.mrmlScene.GetNthNode(i) for i in range(slicer.mrmlScene.GetNumberOfNodes()))
        if n.GetName() == "abdomen CT uncertainty"
    )
    array = slicer.util.arrayFromVolume(entropy)
    assert array.shape == voxels.shape and not array[outside].any() and array[~outside].any()
    assert os.listdir(slicer_tmp) == []
