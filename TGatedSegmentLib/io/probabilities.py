"""Probability maps: one multi-component volume with a sidecar, or a folder of one volume per prompt."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import OutputError
from .atomic import atomic_path
from .dicom_seg import DICOM_SEG_SUFFIX
from .outputs import (
    SEG_SUFFIX,
    _check_stack,
    _refuse_existing,
    _suffix,
    _write_image,
    _write_json,
    _writing,
    sidecar_path,
)
from .volume import Geometry, image_from_array

PROBABILITIES_INDEX = "probabilities.json"


def safe_file_name(name: str) -> str:
    """Lower case, runs of anything but [a-z0-9] as one '_' ("Left kidney!" -> "left_kidney")."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "prompt"


def _unique_file_names(names: Sequence[str]) -> list[str]:
    used: set[str] = set()
    out = []
    for name in names:
        base = candidate = safe_file_name(name)
        n = 2
        while candidate in used:
            candidate, n = f"{base}_{n}", n + 1
        used.add(candidate)
        out.append(candidate)
    return out


def write_probabilities(
    path: str | Path,
    probabilities: np.ndarray,
    names: Sequence[str],
    geometry: Geometry,
    overwrite: bool = False,
) -> list[Path]:
    """Write float32 (K, k, j, i) probabilities; returns the files written.

    A volume name (.nii.gz/.nii/.nrrd/.mha) gives one K-component image plus a sidecar listing the
    components in order; anything else is a folder with one volume per prompt and
    ``probabilities.json`` (name -> file).
    """
    path = Path(path)
    names = [str(n) for n in names]
    probabilities = np.asarray(probabilities, dtype=np.float32)
    _check_stack(probabilities, len(names), geometry, "probabilities")
    if len(set(names)) != len(names):
        raise ValueError(f"probability names must be unique, got {names}")
    suffix = _suffix(path)
    if suffix in (SEG_SUFFIX, DICOM_SEG_SUFFIX):
        raise OutputError(
            f"'{path.name}': probabilities cannot be a segmentation file ({suffix})",
            "Use a .nii.gz name for one multi-component file, or a folder name for one file per prompt.",
        )
    if suffix:
        return _write_probability_volume(path, probabilities, names, geometry, overwrite)
    return _write_probability_folder(path, probabilities, names, geometry, overwrite)


def _write_probability_volume(
    path: Path, probabilities: np.ndarray, names: list[str], geometry: Geometry, overwrite: bool
) -> list[Path]:
    sidecar = sidecar_path(path)
    _refuse_existing([path, sidecar], overwrite)
    image = geometry.apply_to(sitk.GetImageFromArray(np.moveaxis(probabilities, 0, -1), isVector=True))
    with atomic_path(path) as tmp_image, atomic_path(sidecar) as tmp_json, _writing(path):
        _write_image(image, tmp_image)
        _write_json(tmp_json, {"components": names})
    return [path, sidecar]


def _write_probability_folder(
    folder: Path, probabilities: np.ndarray, names: list[str], geometry: Geometry, overwrite: bool
) -> list[Path]:
    if folder.exists() and not folder.is_dir():
        raise OutputError(
            f"'{folder}' is a file, not a folder",
            "Give a folder name for one probability map per prompt, or a .nii.gz name for one file.",
        )
    files = [f"{stem}.nii.gz" for stem in _unique_file_names(names)]
    targets = [folder / f for f in files] + [folder / PROBABILITIES_INDEX]
    _refuse_existing(targets, overwrite)
    created = not folder.exists()
    try:
        with contextlib.ExitStack() as stack, _writing(folder):
            temporaries = [stack.enter_context(atomic_path(target)) for target in targets]
            for tmp, volume in zip(temporaries, probabilities):
                _write_image(image_from_array(volume, geometry), tmp)
            _write_json(temporaries[-1], dict(zip(names, files)))
    except BaseException:
        if created:  # leave no empty folder behind a failed first write
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return targets
