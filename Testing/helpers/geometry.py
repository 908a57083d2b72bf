"""Test grids in every orientation, and where a voxel lies in physical space."""

from __future__ import annotations

import math

import numpy as np

from TGatedSegmentLib.io.volume import Geometry


def rotation(degrees: float) -> tuple[float, ...]:
    a = math.radians(degrees)
    r = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    tilt = np.array([[1, 0, 0], [0, math.cos(a / 2), -math.sin(a / 2)], [0, math.sin(a / 2), math.cos(a / 2)]])
    return tuple((r @ tilt).ravel())


GEOMETRIES = {
    "identity": Geometry((9, 8, 7), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)),
    "flipped-anisotropic": Geometry((9, 8, 7), (0.7, 0.9, 3.0), (-120.5, 88.25, -301.0), (-1, 0, 0, 0, -1, 0, 0, 0, 1)),
    "sagittal": Geometry((6, 10, 8), (2.0, 0.6, 0.8), (15.0, -7.5, 42.0), (0, 0, -1, 1, 0, 0, 0, -1, 0)),
    "oblique": Geometry((9, 8, 7), (0.8, 1.1, 2.5), (33.3, -12.0, 250.0), rotation(23.0)),
}


def physical_point(geometry: Geometry, index_kji) -> np.ndarray:
    k, j, i = index_kji
    return (geometry.ijk_to_lps() @ np.array([i, j, k, 1.0]))[:3]
