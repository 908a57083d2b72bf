"""Canonical frame: x toward patient Left, y toward Posterior, z toward Superior, for any direction."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import SimpleITK as sitk

from TGatedSegmentLib.preprocessing.orientation import (
    Reorientation,
    orientation_code,
    reorientation_for,
)

SIZE = (7, 9, 11)  # (i, j, k): every axis a different length, so a wrong transpose changes the shape
SPACING = (1.0, 1.5, 2.5)
ORIGIN = (12.0, -30.5, 101.0)


def signed_permutations() -> list[np.ndarray]:
    """All 48 axis-aligned directions (6 permutations x 8 sign patterns), as 3x3 matrices."""
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            m = np.zeros((3, 3))
            for c in range(3):
                m[perm[c], c] = signs[c]
            out.append(m)
    return out


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    ax, ay, az = (math.radians(a) for a in (ax, ay, az))
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


AXIS_ALIGNED = signed_permutations()
OBLIQUE = [
    rotation(*angles) @ base
    for angles, base in zip(
        [(10, 0, 0), (0, 20, 0), (0, 0, 30), (15, -10, 25), (-30, 12, -8), (22, 28, -17)],
        [AXIS_ALIGNED[0], AXIS_ALIGNED[13], AXIS_ALIGNED[22], AXIS_ALIGNED[31], AXIS_ALIGNED[40], AXIS_ALIGNED[47]],
    )
]


def make_image(direction: np.ndarray) -> sitk.Image:
    image = sitk.Image(SIZE, sitk.sitkUInt8)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(tuple(float(v) for v in direction.ravel()))
    return image


def physical_coordinates(image: sitk.Image) -> np.ndarray:
    """LPS coordinates of every voxel, shape (3, k, j, i)."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in image.GetSize()[::-1]), indexing="ij")
    ijk = np.stack([i, j, k]).reshape(3, -1).astype(float)
    d = np.asarray(image.GetDirection()).reshape(3, 3)
    lps = d @ (np.asarray(image.GetSpacing())[:, None] * ijk) + np.asarray(image.GetOrigin())[:, None]
    return lps.reshape((3,) + i.shape)


def mark_blobs(image: sitk.Image) -> np.ndarray:
    """Values 1 at the centre, 2 to its Left, 3 Posterior, 4 Superior, 5 Right (3 mm away)."""
    array = np.zeros(SIZE[::-1], np.uint8)
    centre = np.asarray(image.TransformIndexToPhysicalPoint([n // 2 for n in SIZE]))
    offsets = {1: (0, 0, 0), 2: (3, 0, 0), 3: (0, 3, 0), 4: (0, 0, 3), 5: (-3, 0, 0)}
    for value, offset in offsets.items():
        i, j, k = image.TransformPhysicalPointToIndex(tuple(centre + np.asarray(offset, float)))
        assert 0 <= i < SIZE[0] and 0 <= j < SIZE[1] and 0 <= k < SIZE[2]
        array[k, j, i] = value
    return array


def position(canonical: np.ndarray, value: int) -> np.ndarray:
    hits = np.argwhere(canonical == value)
    assert len(hits) == 1
    return hits[0]  # (z, y, x)


DIRECTIONS = [pytest.param(d, id=f"aligned{n}-{orientation_code(d.ravel())}") for n, d in enumerate(AXIS_ALIGNED)]
DIRECTIONS += [pytest.param(d, id=f"oblique{n}-{orientation_code(d.ravel())}") for n, d in enumerate(OBLIQUE)]


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_blobs_land_on_the_patient_side(direction):
    image = make_image(direction)
    array = mark_blobs(image)
    # Round-trip through SimpleITK so the array is exactly what the readers hand over.
    marked = sitk.GetImageFromArray(array)
    marked.CopyInformation(image)
    array = sitk.GetArrayFromImage(marked)

    reo = reorientation_for(image.GetDirection())
    canonical = reo.to_canonical(array)
    centre, left, posterior, superior, right = (position(canonical, v) for v in (1, 2, 3, 4, 5))
    assert left[2] > centre[2] > right[2]  # x toward Left
    assert posterior[1] > centre[1]  # y toward Posterior
    assert superior[0] > centre[0]  # z toward Superior
    assert np.array_equal(reo.from_canonical(canonical), array)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_physical_coordinates_increase_along_canonical_axes(direction):
    image = make_image(direction)
    reo = reorientation_for(image.GetDirection())
    lps = reo.to_canonical(physical_coordinates(image))  # (3, z, y, x): leading axis kept
    x, y, z = lps
    assert np.all(np.diff(x, axis=2) > 0)
    assert np.all(np.diff(y, axis=1) > 0)
    assert np.all(np.diff(z, axis=0) > 0)
    assert reo.canonical_shape((3,) + SIZE[::-1]) == lps.shape
    spacing = reo.canonical_spacing(SPACING)
    if np.allclose(np.abs(direction), np.round(np.abs(direction))):
        # Axis-aligned: a step along canonical x is exactly sx millimetres toward Left, etc.
        assert np.allclose(np.diff(x, axis=2), spacing[2])
        assert np.allclose(np.diff(y, axis=1), spacing[1])
        assert np.allclose(np.diff(z, axis=0), spacing[0])


@pytest.mark.parametrize("direction", DIRECTIONS[::5])
def test_round_trip_is_exact_with_leading_dims(direction):
    reo = reorientation_for(tuple(direction.ravel()))
    rng = np.random.default_rng(0)
    stack = rng.random((2,) + SIZE[::-1]).astype(np.float32)
    canonical = reo.to_canonical(stack)
    assert canonical.flags.c_contiguous
    assert canonical.shape == reo.canonical_shape(stack.shape)
    back = reo.from_canonical(canonical)
    assert back.shape == stack.shape and back.dtype == stack.dtype
    assert np.array_equal(back, stack)
    masks = stack > 0.5
    assert np.array_equal(reo.from_canonical(reo.to_canonical(masks)), masks)


def test_identity_is_identity():
    reo = reorientation_for((1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert reo == Reorientation() and reo.is_identity
    a = np.arange(24).reshape(2, 3, 4)
    assert np.array_equal(reo.to_canonical(a), a)
    assert reo.canonical_spacing((0.7, 0.8, 3.0)) == (3.0, 0.8, 0.7)


@pytest.mark.parametrize(
    "direction, code",
    [
        ((1, 0, 0, 0, 1, 0, 0, 0, 1), "LPS"),
        ((-1, 0, 0, 0, -1, 0, 0, 0, 1), "RAS"),
        ((1, 0, 0, 0, 0, 1, 0, -1, 0), "LIP"),  # i -> +x, j -> -z, k -> +y
        ((0, 0, -1, 1, 0, 0, 0, -1, 0), "PIR"),  # sagittal: i -> +y, j -> -z, k -> -x
        (tuple(rotation(20, -15, 10).ravel()), "LPS"),
    ],
)
def test_orientation_code(direction, code):
    assert orientation_code(direction) == code


def test_orientation_code_of_a_real_sitk_image():
    image = make_image(np.diag([-1.0, -1.0, 1.0]))
    assert orientation_code(image.GetDirection()) == "RAS"


def test_rejects_non_3d_arrays_and_directions():
    reo = Reorientation()
    with pytest.raises(ValueError):
        reo.to_canonical(np.zeros((3, 3)))
    with pytest.raises(ValueError):
        reorientation_for((1, 0, 0, 1))
