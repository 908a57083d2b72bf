"""Writing segmentations and probability maps onto the input's exact voxel grid.

Three segmentation formats, chosen by the output's extension:

* ``.seg.nrrd``: a Slicer segmentation (via slicerio) with one named, coloured segment per prompt
  and its SNOMED terminology, so Slicer shows "left kidney" in the right colour with no mapping
  step. Overlapping masks ("liver" and "liver lesion") stay overlapping: they go to separate layers,
  as Slicer itself stores them.
* ``.nii.gz`` / ``.nii`` / ``.nrrd`` / ``.mha``: one multi-label volume (value i+1 = organ i) for
  nnU-Net-style tools, plus a ``<stem>.json`` sidecar naming the labels, since the volume alone
  cannot.
* ``.dcm``: a DICOM Segmentation (BINARY, one segment per prompt with its SNOMED codes and colour)
  that references the source series; only for volumes read from a DICOM series folder
  (:mod:`.dicom_seg`, needs the optional highdicom).

Every file goes through :func:`atomic_path`: a cancelled or failed run never leaves a half-written
output, and an existing output is only replaced with ``overwrite=True``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import InputError, OutputError
from ..vocabulary import Organ
from .atomic import atomic_path
from .dicom_seg import DICOM_SEG_SUFFIX  # highdicom itself loads only when a .dcm is written
from .labelmap import labelmap_from_masks, write_labelmap
from .outputs import (
    SEG_SUFFIX,
    VOLUME_SUFFIXES,
    _check_stack,
    _color,
    _refuse_existing,
    _suffix,
    _writing,
    sidecar_path,
)
from .probabilities import PROBABILITIES_INDEX, safe_file_name, write_probabilities
from .slicer_segmentation import PROMPT_TAG, SEG_NRRD_GZIP_LEVEL, write_seg_nrrd
from .volume import Geometry, read_image

_FORMATS_HINT = "Use .seg.nrrd (Slicer segmentation), .nii.gz (labelmap + JSON sidecar) or .dcm (DICOM-SEG)."


# --------------------------------------------------------------------------------------------------
# Segmentations


def write_segmentation(
    path: str | Path,
    masks: np.ndarray,
    organs: Sequence[Organ],
    geometry: Geometry,
    labelmap: np.ndarray | None = None,
    overwrite: bool = False,
    source: str | Path | None = None,
) -> list[Path]:
    """Write one segment per organ; returns the files written (with the sidecar, if any).

    ``masks`` is bool (K, k, j, i) on the input grid. ``labelmap`` (k, j, i), if given, is used
    as is for the labelmap formats (callers with probabilities resolve overlaps by argmax);
    without it the first organ in order wins where masks overlap. ``.seg.nrrd`` and ``.dcm``
    keep overlaps. ``source`` is the DICOM series folder the volume was read from; only ``.dcm``
    needs it (a DICOM-SEG references its source images).
    """
    path = Path(path)
    masks = np.asarray(masks).astype(bool, copy=False)
    _check_stack(masks, len(organs), geometry, "masks")
    suffix = _suffix(path)
    if suffix == SEG_SUFFIX:
        return write_seg_nrrd(path, masks, organs, geometry, overwrite)
    if suffix == DICOM_SEG_SUFFIX:
        return _write_dicom_seg(path, masks, organs, geometry, source, overwrite)
    if not suffix:
        raise OutputError(f"cannot tell the output format of '{path.name}'", _FORMATS_HINT)
    return write_labelmap(path, masks, organs, geometry, labelmap, overwrite)


def _write_dicom_seg(
    path: Path,
    masks: np.ndarray,
    organs: Sequence[Organ],
    geometry: Geometry,
    source: str | Path | None,
    overwrite: bool,
) -> list[Path]:
    from .dicom_seg import build_dicom_seg

    _refuse_existing([path], overwrite)
    colors = [_color(organ, index) for index, organ in enumerate(organs)]
    dataset = build_dicom_seg(masks, organs, colors, geometry, source)
    with atomic_path(path) as tmp, _writing(path):
        dataset.save_as(str(tmp))
    return [path]


def read_segmentation(path: str | Path) -> tuple[np.ndarray, list[str], Geometry]:
    """Masks (K, k, j, i) bool, segment names and grid from a ``.seg.nrrd`` or a labelmap (+ sidecar).

    A labelmap without a sidecar yields one segment per label value present, named ``label_<v>``.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"'{path}' does not exist", "Check the path of the segmentation file.")
    if _suffix(path) == SEG_SUFFIX:
        return _read_seg_nrrd(path)
    image = read_image(path)
    geometry = Geometry.from_image(image)
    labels = sitk.GetArrayFromImage(image)
    sidecar = sidecar_path(path)
    if sidecar.is_file():
        try:
            entries = [(int(s["label"]), str(s["name"])) for s in json.loads(sidecar.read_text("utf-8"))["segments"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(
                f"cannot read the label names in '{sidecar}' ({exc})",
                "Fix or delete the sidecar JSON (labels are then named by value).",
            ) from None
    else:
        entries = [(int(v), f"label_{int(v)}") for v in np.unique(labels) if v != 0]
    masks = np.stack([labels == value for value, _ in entries]) if entries else np.zeros((0,) + labels.shape, bool)
    return masks, [name for _, name in entries], geometry


def _read_seg_nrrd(path: Path) -> tuple[np.ndarray, list[str], Geometry]:
    from .seg_nrrd import read_segmentation_layers

    read = read_segmentation_layers(path)
    masks = [read.mask(n) for n in range(len(read.segments))]
    stack = np.stack(masks) if masks else np.zeros((0,) + read.geometry.array_shape, bool)
    return stack, [name for name, _, _ in read.segments], read.geometry


__all__ = [
    "DICOM_SEG_SUFFIX",
    "PROBABILITIES_INDEX",
    "PROMPT_TAG",
    "SEG_NRRD_GZIP_LEVEL",
    "SEG_SUFFIX",
    "VOLUME_SUFFIXES",
    "labelmap_from_masks",
    "read_segmentation",
    "safe_file_name",
    "sidecar_path",
    "write_probabilities",
    "write_segmentation",
]
