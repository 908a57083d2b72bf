"""Checks on a dataset's files: image and label on one grid (headers only), label values declared.

SimpleITK is imported only inside the checks, so that the dataset layer loads without it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:  # .dataset imports this module
    from .dataset import Dataset

log = logging.getLogger(__name__)

# Header tolerances: NIfTI stores geometry as float32, and resampling tools round differently.
SPACING_RTOL, ORIGIN_ATOL_MM, DIRECTION_ATOL = 1e-4, 1e-3, 1e-4


def _header(path: Path, case_id: str, what: str) -> dict:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1].replace("sitk::ERROR:", "").strip() or "unreadable"
        raise InputError(
            f"case '{case_id}': cannot read the {what} {path} ({reason[:160]})",
            "Check that the file is a complete image ITK can read (NIfTI, NRRD, MHA).",
        ) from None
    dimension = reader.GetDimension()
    if dimension != 3 or reader.GetNumberOfComponents() != 1:
        raise InputError(
            f"case '{case_id}': the {what} is {dimension}D with {reader.GetNumberOfComponents()} component(s) "
            f"(size {reader.GetSize()}), not a scalar 3D volume",
            "Give one 3D volume per file; split multi-channel images into CASE_0000, CASE_0001 (channel 0 is used).",
        )
    return {
        "size": reader.GetSize(),
        "spacing": reader.GetSpacing(),
        "origin": reader.GetOrigin(),
        "direction": reader.GetDirection(),
    }


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def check_case_geometry(dataset: Dataset) -> None:
    """Image and label must share one voxel grid; compares headers only (no voxels are read)."""
    fix = (
        "Resample the label onto the image grid (nearest neighbour), or copy the image's geometry onto "
        "the label if only its header is wrong."
    )
    for case in dataset.cases:
        image = _header(case.image, case.case_id, "image")
        label = _header(case.label, case.case_id, "label")
        if image["size"] != label["size"]:
            raise InputError(
                f"case '{case.case_id}': image size {image['size']} differs from label size {label['size']}",
                "Resample the label onto the image grid (nearest neighbour) so that both have one size.",
            )
        checks = (
            ("spacing", np.allclose(image["spacing"], label["spacing"], rtol=SPACING_RTOL, atol=0)),
            ("origin", np.allclose(image["origin"], label["origin"], rtol=0, atol=ORIGIN_ATOL_MM)),
            ("direction", np.allclose(image["direction"], label["direction"], rtol=0, atol=DIRECTION_ATOL)),
        )
        for name, same in checks:
            if not same:
                raise InputError(
                    f"case '{case.case_id}': image {name} {_fmt(image[name])} differs from "
                    f"label {name} {_fmt(label[name])}",
                    fix,
                )


def _values(path: Path, case_id: str) -> list[float]:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError:
        raise InputError(
            f"case '{case_id}': cannot read the label {path}", "Check that the file is a complete image ITK can read."
        ) from None
    array = sitk.GetArrayViewFromImage(image)  # a view: ``image`` must stay alive while it is used
    if np.issubdtype(array.dtype, np.integer) and array.size and array.min() >= 0:
        return [float(v) for v in np.flatnonzero(np.bincount(array.ravel()))]
    return [float(v) for v in np.unique(array)]


def validate_label_values(dataset: Dataset) -> dict[str, tuple[int, ...]]:
    """Read every label once; return each case's organ ids, or fail naming every bad case and id."""
    allowed = set(dataset.label_names) | {0}
    present: dict[str, tuple[int, ...]] = {}
    bad: list[str] = []
    for case in dataset.cases:
        values = _values(case.label, case.case_id)
        wrong = [v for v in values if not v.is_integer() or int(v) not in allowed]
        if wrong:
            bad.append(f"'{case.case_id}' ({', '.join(f'{v:g}' for v in wrong)})")
        ids = tuple(int(v) for v in values if v.is_integer() and int(v) in dataset.label_names)
        present[case.case_id] = ids
        if case.annotated is not None and set(ids) - set(case.annotated):
            log.warning(
                "case '%s' labels ids %s that its 'annotated' list leaves out",
                case.case_id,
                sorted(set(ids) - set(case.annotated)),
            )
    if bad:
        source = dataset.label_file.name
        raise InputError(
            f"label files hold values not declared in {source}: case {'; case '.join(bad)}",
            f"Add those ids to the labels in {source}, or set those voxels to 0 (background).",
        )
    return present
