"""Connected blobs of a mask and their axial extents (SimpleITK)."""

from __future__ import annotations

import numpy as np


def blob_extents(mask: np.ndarray, fully_connected: bool = True) -> list[tuple[int, int]]:
    """``(z0, z1)`` (inclusive) of every 3D connected component of ``mask``, sorted.

    Uses SimpleITK's connected components (26-connectivity by default): e.g. to check that every
    distractor spans at most 2 slices, or to count false-positive blobs of a prediction.
    """
    import SimpleITK as sitk

    mask = np.asarray(mask)
    if not mask.any():
        return []
    cc = sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)), fully_connected)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(cc)
    extents = []
    for lab in stats.GetLabels():
        x, y, z, sx, sy, sz = stats.GetBoundingBox(lab)
        extents.append((int(z), int(z + sz - 1)))
    return sorted(extents)
