"""Axis reordering between a volume as stored and one fixed anatomical frame.

"Left kidney" must mean the patient's left whatever the file's direction matrix, and the model sees
slices along one known axis. Everything downstream of I/O therefore works in the CANONICAL frame: a
numpy array with axes (z, y, x) where x increases toward the patient's Left, y toward Posterior and
z toward Superior. That is exactly the array SimpleITK's ``GetArrayFromImage`` returns for an image
whose direction is the identity (SimpleITK's physical space is LPS).

Going there and back is a pure transpose + flip: no interpolation, so masks predicted in the
canonical frame map back onto the input's voxels exactly. Oblique volumes map to the nearest
axis-aligned frame; the residual tilt (typically < 30 degrees) is harmless for a slice-wise model.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

import numpy as np

# Patient directions of LPS physical axes 0 (x), 1 (y), 2 (z): (toward +, toward -).
_LETTERS = (("L", "R"), ("P", "A"), ("S", "I"))


@dataclass(frozen=True)
class Reorientation:
    """Transpose + flips from a SimpleITK array (axes k, j, i) to the canonical (z, y, x) array.

    ``axes[b]`` is the source array axis that becomes canonical axis ``b``; ``flips[b]`` says
    whether canonical axis ``b`` is reversed after the transpose. Methods act on the last three
    axes, so (K, k, j, i) stacks of masks or probabilities work unchanged.
    """

    axes: tuple[int, int, int] = (0, 1, 2)
    flips: tuple[bool, bool, bool] = (False, False, False)

    @property
    def is_identity(self) -> bool:
        return self.axes == (0, 1, 2) and not any(self.flips)

    def _spatial(self, ndim: int) -> int:
        if ndim < 3:
            raise ValueError(f"expected an array with at least 3 dimensions, got {ndim}")
        return ndim - 3

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        """``array`` in the canonical frame, C-contiguous (torch refuses negative strides).

        A copy whenever axes move; for the identity it may be ``array`` itself.
        """
        array = np.asarray(array)
        lead = self._spatial(array.ndim)
        out = np.transpose(array, tuple(range(lead)) + tuple(lead + a for a in self.axes))
        flip = tuple(lead + b for b in range(3) if self.flips[b])
        if flip:
            out = np.flip(out, axis=flip)
        return np.ascontiguousarray(out)

    def from_canonical(self, array: np.ndarray) -> np.ndarray:
        """Exact inverse of :meth:`to_canonical`: back to the input's (k, j, i) voxel grid."""
        array = np.asarray(array)
        lead = self._spatial(array.ndim)
        flip = tuple(lead + b for b in range(3) if self.flips[b])
        out = np.flip(array, axis=flip) if flip else array
        inverse = np.argsort(self.axes)
        out = np.transpose(out, tuple(range(lead)) + tuple(lead + int(b) for b in inverse))
        return np.ascontiguousarray(out)

    def canonical_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """Shape :meth:`to_canonical` gives for an array of ``shape`` (leading dims kept)."""
        shape = tuple(int(s) for s in shape)
        lead = self._spatial(len(shape))
        return shape[:lead] + tuple(shape[lead + a] for a in self.axes)

    def canonical_spacing(self, spacing_ijk: Sequence[float]) -> tuple[float, float, float]:
        """Voxel size (sz, sy, sx) of the canonical array, from SimpleITK's (i, j, k) spacing."""
        if len(spacing_ijk) != 3:
            raise ValueError(f"expected 3 spacings (i, j, k), got {len(spacing_ijk)}")
        # Source array axis a holds index axis 2 - a.
        return tuple(float(spacing_ijk[2 - a]) for a in self.axes)  # type: ignore[return-value]


def _direction_matrix(direction: Sequence[float]) -> np.ndarray:
    matrix = np.asarray(direction, dtype=float)
    if matrix.size != 9 or not np.all(np.isfinite(matrix)):
        raise ValueError(f"expected a 3D direction (9 finite numbers), got {tuple(direction)}")
    return matrix.reshape(3, 3)


def _nearest_axes(direction: Sequence[float]) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """For index axes (i, j, k): the LPS axis each runs along and its sign (+1/-1).

    Picks the permutation that maximises the summed |cosines|, so an oblique volume lands on the
    closest axis-aligned frame and two index axes can never claim the same patient axis.
    """
    matrix = _direction_matrix(direction)  # column c = LPS direction of index axis c
    best = max(itertools.permutations(range(3)), key=lambda p: sum(abs(matrix[p[c], c]) for c in range(3)))
    signs = tuple(1 if matrix[best[c], c] >= 0 else -1 for c in range(3))
    return best, signs  # type: ignore[return-value]


def reorientation_for(direction: Sequence[float]) -> Reorientation:
    """The :class:`Reorientation` for a SimpleITK direction (9 floats, row-major)."""
    physical, signs = _nearest_axes(direction)
    axes, flips = [0, 0, 0], [False, False, False]
    for c in range(3):  # index axis c is source array axis 2 - c; LPS axis p is canonical axis 2 - p
        b = 2 - physical[c]
        axes[b] = 2 - c
        flips[b] = signs[c] < 0
    return Reorientation(tuple(axes), tuple(flips))  # type: ignore[arg-type]


def orientation_code(direction: Sequence[float]) -> str:
    """Three letters, the patient direction index axes i, j, k increase toward ("LPS", "RAS", "LIP")."""
    physical, signs = _nearest_axes(direction)
    return "".join(_LETTERS[physical[c]][0 if signs[c] > 0 else 1] for c in range(3))
