"""The voxel grid (:class:`Geometry`) that travels with a volume, so masks land back on its exact voxels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import SimpleITK as sitk

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # its own inverse


@dataclass(frozen=True)
class Geometry:
    """A 3D voxel grid as SimpleITK describes it: index order (i, j, k), physical space LPS.

    ``direction`` is row-major; its column c is the LPS direction of index axis c.
    """

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        # Normalise to plain tuples of Python numbers so that equality, hashing and JSON just work.
        for name, length, kind in (
            ("size", 3, int),
            ("spacing", 3, float),
            ("origin", 3, float),
            ("direction", 9, float),
        ):
            value = tuple(kind(v) for v in getattr(self, name))
            if len(value) != length:
                raise ValueError(f"Geometry.{name} needs {length} values, got {len(value)}")
            object.__setattr__(self, name, value)

    @classmethod
    def from_image(cls, image: sitk.Image) -> "Geometry":
        if image.GetDimension() != 3:
            raise ValueError(f"expected a 3D image, got {image.GetDimension()}D")
        return cls(image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        """Stamp this grid's spacing/origin/direction on ``image`` (same size) and return it."""
        if tuple(image.GetSize()) != self.size:
            raise ValueError(f"image size {image.GetSize()} does not match the geometry size {self.size}")
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    @property
    def array_shape(self) -> tuple[int, int, int]:
        """Shape of the numpy array SimpleITK gives for this grid: (k, j, i)."""
        return self.size[::-1]

    def ijk_to_lps(self) -> np.ndarray:
        matrix = np.eye(4)
        matrix[:3, :3] = np.asarray(self.direction).reshape(3, 3) * np.asarray(self.spacing)[None, :]
        matrix[:3, 3] = self.origin
        return matrix

    def ijk_to_ras(self) -> np.ndarray:
        """Slicer's IJKToRAS matrix for this grid."""
        return _LPS_TO_RAS @ self.ijk_to_lps()

    @classmethod
    def from_ijk_to_lps(cls, matrix: np.ndarray | Sequence, size: Sequence[int]) -> "Geometry":
        matrix = np.asarray(matrix, dtype=float).reshape(4, 4)
        columns = matrix[:3, :3]
        spacing = np.linalg.norm(columns, axis=0)
        if not np.all(np.isfinite(matrix)) or np.any(spacing <= 0):
            raise ValueError(f"invalid voxel-to-physical matrix (zero or non-finite voxel size):\n{matrix}")
        direction = columns / spacing[None, :]
        i, j, k = (int(n) for n in size)
        return cls((i, j, k), tuple(spacing), tuple(matrix[:3, 3]), tuple(direction.ravel()))

    @classmethod
    def from_ijk_to_ras(cls, matrix: np.ndarray | Sequence, size: Sequence[int]) -> "Geometry":
        """From Slicer's ``GetIJKToRASMatrix`` (4x4) and the volume's (i, j, k) dimensions."""
        return cls.from_ijk_to_lps(_LPS_TO_RAS @ np.asarray(matrix, dtype=float).reshape(4, 4), size)

    def matches(self, other: "Geometry", tol: float = 1e-4) -> bool:
        """Same grid up to float noise (NIfTI stores geometry in float32): relative/absolute ``tol``."""
        if self.size != other.size:
            return False
        return all(
            np.allclose(getattr(self, name), getattr(other, name), rtol=tol, atol=tol)
            for name in ("spacing", "origin", "direction")
        )

    def to_dict(self) -> dict:
        return {
            "size": list(self.size),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": list(self.direction),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Geometry":
        try:
            return cls(d["size"], d["spacing"], d["origin"], d.get("direction", cls.direction))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a geometry record ({exc}): {d!r}") from None
