"""Cropping before inference, and the result pasted back on the volume's full grid.

A region of interest (a markups ROI: a box with its own orientation, possibly under a transform of
its own) becomes the smallest block of whole voxels of the volume that the box touches: its 8
corners are mapped into the volume's IJK, the bounds rounded outwards and clipped to the volume
(:func:`cropBoxFromCorners`). The backend segments that block only, so fewer slices cost less time
and memory. The block's IJK-to-RAS is the volume's, shifted by the block's first voxel, so the
result goes back by array placement alone (:meth:`CropBox.paste`): no resampling, no half-voxel
shift, whatever the volume's orientation.

Keep in mind that the model resizes each (cropped) slice to its input size: a crop much tighter
than the body changes the scale it sees. A ROI is for leaving out other body parts (head, legs) or
air, not for zooming onto one organ. The default crop of a preset, "the body", is the block that
holds every voxel denser than air (:func:`bodyCropBox`); on an MR (no air in HU) it is no crop.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from .i18n import tr as _

BODY_THRESHOLD_HU = -500.0  # air is about -1000 HU, fat -100: denser than this is the body (or the table)
BODY_MARGIN_VOXELS = 2
_EPSILON = 1e-6  # a box face exactly on a voxel boundary does not take in the next voxel


@dataclass(frozen=True)
class CropBox:
    """A block of the volume: voxels ``start`` to ``stop`` (exclusive), (i, j, k) order, of a volume
    whose array has ``fullShape`` (k, j, i)."""

    start: tuple[int, int, int]
    stop: tuple[int, int, int]
    fullShape: tuple[int, int, int]

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        """Index of the block in a (k, j, i) array."""
        return tuple(slice(a, b) for a, b in zip(self.start[::-1], self.stop[::-1]))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.start[::-1], self.stop[::-1]))

    @property
    def isFull(self) -> bool:
        return self.start == (0, 0, 0) and self.stop == tuple(self.fullShape[::-1])

    def ijkToRAS(self, fullIJKToRAS) -> np.ndarray:
        """The block's IJK-to-RAS: the volume's, with the origin moved to the block's first voxel."""
        matrix = np.array(fullIJKToRAS, dtype=float)
        matrix[:3, 3] = (matrix @ np.array([*self.start, 1.0]))[:3]
        return matrix

    def crop(self, arrayKJI: np.ndarray) -> np.ndarray:
        return arrayKJI[self.slices]

    def paste(self, blockKJI: np.ndarray, fill=0) -> np.ndarray:
        """The block's values at their place in a full-size array (``fill`` elsewhere)."""
        if tuple(blockKJI.shape) != self.shape:
            raise ValueError(
                _("A block of shape {block} does not fit the crop {crop}.").format(
                    block=tuple(blockKJI.shape), crop=self.shape
                )
            )
        full = np.full(self.fullShape, fill, dtype=blockKJI.dtype)
        full[self.slices] = blockKJI
        return full

    def describe(self) -> str:
        """The block in the volume's voxel indices, for the panel's log."""
        (i0, j0, k0), (i1, j1, k1) = self.start, self.stop
        return _("voxels i {i0}-{i1}, j {j0}-{j1}, k {k0}-{k1} of {size}").format(
            i0=i0, i1=i1 - 1, j0=j0, j1=j1 - 1, k0=k0, k1=k1 - 1, size=" x ".join(map(str, self.fullShape[::-1]))
        )


def roiCorners(objectToNode, size, nodeToVolume=None) -> np.ndarray:
    """The 8 corners (8 x 3) of a box ROI in the volume's RAS: the ROI's object-to-node matrix (centre
    and axes) and side lengths, then ``nodeToVolume`` (from the ROI's parent transform to the
    volume's; identity when both are the same)."""
    half = np.asarray(size, dtype=float) / 2.0
    corners = np.array(
        [[sx * half[0], sy * half[1], sz * half[2], 1.0] for sx, sy, sz in itertools.product((-1, 1), repeat=3)]
    )
    matrix = np.asarray(objectToNode, dtype=float)
    if nodeToVolume is not None:
        matrix = np.asarray(nodeToVolume, dtype=float) @ matrix
    return (matrix @ corners.T).T[:, :3]


def cropBoxFromCorners(cornersRAS, ijkToRAS, shapeKJI) -> CropBox:
    """The block of whole voxels that a box (its corners in the volume's RAS) touches, clipped to the
    volume. ValueError when the box misses the volume."""
    corners = np.asarray(cornersRAS, dtype=float)
    ijk = (np.linalg.inv(np.asarray(ijkToRAS, dtype=float)) @ np.c_[corners, np.ones(len(corners))].T)[:3]
    size = np.array(shapeKJI[::-1])
    start = np.floor(ijk.min(axis=1) + 0.5 + _EPSILON).astype(int)  # voxel n spans [n - 0.5, n + 0.5]
    last = np.ceil(ijk.max(axis=1) - 0.5 - _EPSILON).astype(int)
    if np.any(last < 0) or np.any(start > size - 1) or np.any(last < start):
        raise ValueError(
            _(
                "The region of interest does not overlap the volume: move it onto the volume (or clear "
                "it to segment the whole volume)."
            )
        )
    start = np.clip(start, 0, size - 1)
    stop = np.clip(last, 0, size - 1) + 1
    return CropBox(tuple(int(v) for v in start), tuple(int(v) for v in stop), tuple(int(v) for v in shapeKJI))


def bodyCropBox(
    arrayKJI: np.ndarray, threshold: float = BODY_THRESHOLD_HU, margin: int = BODY_MARGIN_VOXELS
) -> CropBox | None:
    """The block holding every voxel denser than air (``threshold`` HU), ``margin`` voxels wider; None
    when that is the whole volume (an MR, or a CT without air around the body) or when nothing is."""
    shape = tuple(int(n) for n in arrayKJI.shape)
    dense = arrayKJI > threshold
    bounds = []
    for axis in (2, 1, 0):  # i, j, k
        others = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(dense.any(axis=others))
        if present.size == 0:
            return None
        bounds.append((max(int(present[0]) - margin, 0), min(int(present[-1]) + margin + 1, shape[axis])))
    box = CropBox(tuple(b[0] for b in bounds), tuple(b[1] for b in bounds), shape)
    return None if box.isFull else box
