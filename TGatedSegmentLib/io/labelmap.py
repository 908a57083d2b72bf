"""The labelmap format family (``.nii.gz`` / ``.nii`` / ``.nrrd`` / ``.mha``): one multi-label volume
(value i+1 = organ i) and its JSON sidecar naming the labels."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..vocabulary import Organ
from .atomic import atomic_path
from .outputs import _color, _refuse_existing, _write_image, _write_json, _writing, sidecar_path
from .volume import Geometry, image_from_array


def labelmap_from_masks(masks: np.ndarray) -> np.ndarray:
    """(k, j, i) labels, value i+1 for organ i; where masks overlap the first organ wins."""
    masks = np.asarray(masks, dtype=bool)
    labels = np.zeros(masks.shape[1:], dtype=_label_dtype(masks.shape[0]))
    for index in range(masks.shape[0] - 1, -1, -1):  # earlier organs overwrite later ones
        labels[masks[index]] = index + 1
    return labels


def _label_dtype(count: int) -> type[np.unsignedinteger]:
    if count > np.iinfo(np.uint16).max:
        raise ValueError(f"{count} organs do not fit a uint16 labelmap")
    return np.uint8 if count <= np.iinfo(np.uint8).max else np.uint16


def _checked_labelmap(labelmap: np.ndarray, count: int, geometry: Geometry) -> np.ndarray:
    labelmap = np.asarray(labelmap)
    if labelmap.shape != geometry.array_shape:
        raise ValueError(f"labelmap shape {labelmap.shape} does not match the geometry's {geometry.array_shape}")
    if labelmap.size and (labelmap.min() < 0 or labelmap.max() > count):
        raise ValueError(f"labelmap values must be 0..{count}, got {labelmap.min()}..{labelmap.max()}")
    return labelmap.astype(_label_dtype(count), copy=False)


def _labelmap_sidecar(organs: Sequence[Organ]) -> dict:
    return {
        "labels": {organ.name: index + 1 for index, organ in enumerate(organs)},
        "segments": [
            {
                "label": index + 1,
                "name": organ.name,
                "prompt": organ.prompt,
                "color": list(_color(organ, index)),
                "terminology": organ.terminology(),
            }
            for index, organ in enumerate(organs)
        ],
    }


def write_labelmap(
    path: Path,
    masks: np.ndarray,
    organs: Sequence[Organ],
    geometry: Geometry,
    labelmap: np.ndarray | None,
    overwrite: bool,
) -> list[Path]:
    """``masks`` (or ``labelmap``) as a labelmap volume and its sidecar (see :func:`writers.write_segmentation`)."""
    sidecar = sidecar_path(path)
    _refuse_existing([path, sidecar], overwrite)
    labels = labelmap_from_masks(masks) if labelmap is None else _checked_labelmap(labelmap, len(organs), geometry)
    image = image_from_array(labels, geometry)
    with atomic_path(path) as tmp_image, atomic_path(sidecar) as tmp_json, _writing(path):
        _write_image(image, tmp_image)
        _write_json(tmp_json, _labelmap_sidecar(organs))
    return [path, sidecar]
