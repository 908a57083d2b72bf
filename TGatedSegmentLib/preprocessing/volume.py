"""One code path from a user's volume to the model's canonical, normalised array.

Inference, training, validation and evaluation all call :func:`prepare_volume`, so a checkpoint
always sees volumes oriented and scaled the way it was trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.volume import Geometry, array_from_image, check_volume_values, image_modality, read_image
from ..modality import check_modality
from .config import PreprocessConfig
from .intensity import detect_modality, normalize_intensity
from .orientation import Reorientation, orientation_code, reorientation_for


@dataclass
class PreparedVolume:
    """A volume in the canonical LPS frame (z, y, x), intensities in [0, 1]."""

    unit: np.ndarray  # (z, y, x) float32
    geometry: Geometry  # the input's own grid, where results go back to
    reorientation: Reorientation
    modality: str

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.unit.shape)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Canonical (z, y, x) voxel spacing in mm."""
        return tuple(self.reorientation.canonical_spacing(self.geometry.spacing))

    @property
    def orientation(self) -> str:
        return orientation_code(self.geometry.direction)

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        """Any array on the input grid (labels, masks with leading dims) into the canonical frame."""
        return self.reorientation.to_canonical(array)

    def from_canonical(self, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self.reorientation.from_canonical(array))


def load_array(volume, geometry: Geometry | None = None) -> tuple[np.ndarray, Geometry, str | None]:
    """A path, SimpleITK image or (k, j, i) array + geometry -> (array, geometry, modality hint)."""
    if isinstance(volume, (str, Path)):
        volume = read_image(volume)
    if isinstance(volume, np.ndarray):
        if geometry is None:
            raise InputError("an array needs its geometry", "Pass geometry=Geometry(...) with the array.")
        array, hint = volume, None
    else:  # a SimpleITK image
        geometry, array, hint = Geometry.from_image(volume), array_from_image(volume), image_modality(volume)
    if array.ndim != 3:
        raise InputError(
            f"expected a 3D volume, got an array with {array.ndim} dimensions {array.shape}",
            "Pass one 3D scalar volume (k, j, i).",
        )
    if tuple(array.shape) != tuple(geometry.array_shape):
        raise InputError(
            f"the array shape {array.shape} does not match its geometry {geometry.array_shape}",
            "Pass the geometry of this very array.",
        )
    return array, geometry, hint


def prepare_volume(
    volume, preprocessing: PreprocessConfig, modality: str = "auto", geometry: Geometry | None = None
) -> PreparedVolume:
    array, geometry, hint = load_array(volume, geometry)
    check_volume_values(array)
    modality = check_modality(modality)
    modality = detect_modality(array, hint) if modality == "auto" else modality
    reorientation = reorientation_for(geometry.direction)
    unit = normalize_intensity(reorientation.to_canonical(array), modality, preprocessing)
    return PreparedVolume(np.ascontiguousarray(unit), geometry, reorientation, modality)
