"""What the segmentation and probability writers share: output suffixes and sidecars, refusing an
existing output, one actionable line for a failed write, the stack checks and organ colours."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import OutputError
from ..vocabulary import Organ, generated_color
from .atomic import refuse_existing, split_suffixes
from .dicom_seg import DICOM_SEG_SUFFIX  # highdicom itself loads only when a .dcm is written
from .volume import Geometry

SEG_SUFFIX = ".seg.nrrd"
SEG_NRRD_GZIP_LEVEL = 6
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(SEG_SUFFIX):
        return SEG_SUFFIX
    if name.endswith(DICOM_SEG_SUFFIX):
        return DICOM_SEG_SUFFIX
    return next((s for s in VOLUME_SUFFIXES if name.endswith(s)), "")


def sidecar_path(path: str | Path) -> Path:
    """``out.nii.gz`` -> ``out.json``: where a labelmap's or probability volume's names are kept."""
    path = Path(path)
    stem, _ = split_suffixes(path)
    return path.with_name(stem + ".json")


def _refuse_existing(paths: Sequence[Path], overwrite: bool) -> None:
    for path in paths:
        if path.is_dir():
            raise OutputError(f"'{path}' is a folder", "Choose a file name for --output, not a folder.")
        refuse_existing(path, overwrite)


@contextlib.contextmanager
def _writing(path: Path):
    """Turn writer failures (disk full, permissions) into one actionable line."""
    try:
        yield
    except (RuntimeError, OSError) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise OutputError(
            f"cannot write '{path}' ({reason[:200]})",
            "Check free disk space and write permission for the output folder.",
        ) from None


def _write_image(image: sitk.Image, tmp: Path) -> None:
    sitk.WriteImage(image, str(tmp), useCompression=True)


def _write_json(tmp: Path, payload: dict) -> None:
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def _check_stack(stack: np.ndarray, count: int, geometry: Geometry, what: str) -> None:
    if stack.ndim != 4 or stack.shape[1:] != geometry.array_shape:
        raise ValueError(f"{what} must have shape (K, k, j, i) = (K,) + {geometry.array_shape}, got {stack.shape}")
    if stack.shape[0] != count or count == 0:
        raise ValueError(f"{what} holds {stack.shape[0]} volumes for {count} names")


def _color(organ: Organ, index: int) -> tuple[int, int, int]:
    return tuple(organ.color) if organ.color is not None else generated_color(index)  # type: ignore[return-value]
