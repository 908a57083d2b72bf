"""The volume hand-over: a Slicer volume (its (k, j, i) voxel array and IJK-to-RAS matrix) written to
a file with its exact geometry for the backend, and the backend's results read back, refused unless
they lie on exactly that grid (a result on another grid would land in the wrong place).

The file stores LPS (ITK's convention) while Slicer works in RAS: the conversion is the backend's
own ``Geometry.from_ijk_to_ras``, so sagittal, coronal and oblique volumes keep their placement.
SimpleITK is imported inside the functions: Slicer loads this package with the module, before any
dependency check.
"""

from __future__ import annotations

from pathlib import Path

from .errors import BackendError
from .i18n import tr as _

# The uncertainty map shown in Slicer: predictive entropy of the most uncertain prompt (nats).
UNCERTAINTY_FILE = "entropy_combined.nii.gz"
UNCERTAINTY_MAX = 0.6931  # ln 2: a probability of 0.5
UNCERTAINTY_SHOWN_FROM = 0.05  # lower values are drawn transparent in the overlay
UNCERTAINTY_COLORS = "vtkMRMLColorTableNodeFileInferno.txt"


def readUncertainty(folder: str | Path, expectedGeometry):
    """The combined entropy map (k, j, i) from the backend's uncertainty folder, refused off the grid."""
    import SimpleITK as sitk

    from TGatedSegmentLib.io.volume import Geometry

    path = Path(folder) / UNCERTAINTY_FILE
    image = sitk.ReadImage(str(path))
    geometry = Geometry.from_image(image)
    if not geometry.matches(expectedGeometry):
        raise BackendError(
            _("The uncertainty map does not lie on the volume's voxel grid, so it was not imported"),
            _("Report this as a bug, with the details."),
            f"volume: {expectedGeometry.to_dict()}\nmap: {geometry.to_dict()}",
            "GeometryMismatch",
        )
    return sitk.GetArrayFromImage(image)


def exportVolume(arrayKJI, ijkToRAS, path: str | Path):
    """Write a Slicer volume (its (k, j, i) voxel array and 4x4 IJK-to-RAS matrix) to ``path`` with
    its exact geometry; returns the :class:`~TGatedSegmentLib.io.volume.Geometry` written.

    The file stores LPS (ITK convention) while Slicer works in RAS: the conversion is the backend's
    own ``Geometry.from_ijk_to_ras``, so sagittal, coronal and oblique volumes keep their placement.
    """
    import numpy as np
    import SimpleITK as sitk

    from TGatedSegmentLib.io.volume import Geometry, image_from_array

    array = np.asarray(arrayKJI)
    if array.ndim != 3:
        raise ValueError(_("Expected a 3D scalar volume, got an array of shape {shape}.").format(shape=array.shape))
    geometry = Geometry.from_ijk_to_ras(ijkToRAS, array.shape[::-1])
    sitk.WriteImage(image_from_array(array, geometry), str(path), useCompression=False)
    return geometry


def readResult(path: str | Path, expectedGeometry):
    """The backend's ``.seg.nrrd`` as shared layers (``SegmentLayers``: uint8 (L, k, j, i) and each
    segment's layer and label value), refused unless it is on exactly the exported grid (a result on
    another grid would land in the wrong place). Kept as layers, not one mask per segment: 13 organs
    then cost one byte per voxel on their way into the scene, not 13."""
    from TGatedSegmentLib.io.seg_nrrd import read_segmentation_layers

    result = read_segmentation_layers(path)
    if not result.geometry.matches(expectedGeometry):
        raise BackendError(
            _("The result does not lie on the volume's voxel grid, so it was not imported"),
            _("Report this as a bug, with the details."),
            f"volume: {expectedGeometry.to_dict()}\nresult: {result.geometry.to_dict()}",
            "GeometryMismatch",
        )
    return result
