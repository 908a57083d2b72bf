"""TotalSegmentator's datasets: ``sXXXX/ct.nii.gz`` (or ``mri.nii.gz``) + ``sXXXX/segmentations/<class>.nii.gz``.

Every class is a separate binary mask; the converter stacks them into one label volume with
TotalSegmentator's own multilabel ids (the ``total`` task's order: v2 has 117 CT classes, v1 104,
the MR dataset 50), so a converted case matches what TotalSegmentator itself writes. ``meta.csv``
(semicolon separated, ``image_id`` and ``split`` columns) gives each case's train/val/test split.
A class whose mask file is missing from a case is recorded as not annotated there; an empty mask
means "not in this scan", which is a real negative.
"""

from __future__ import annotations

import csv
import logging
import re
from functools import partial
from pathlib import Path

import numpy as np

from ...errors import InputError
from .writer import Source, SourceCase, image_header, label_table, read_header, read_image, same_grid, sitk

log = logging.getLogger(__name__)

NAME = "totalsegmentator"
TITLE = "TotalSegmentator"
REFERENCE = (
    "https://github.com/wasserth/TotalSegmentator (CT dataset v2: https://zenodo.org/records/10047292; "
    "the MR dataset is linked from the same README)"
)
LICENCE = "CC BY 4.0 (CT dataset); see the MR dataset's Zenodo record for its licence"
MODALITIES = ("auto", "ct", "mr")
SPLITS = ("all", "train", "val", "test")
HINT = (
    "Point --input at the extracted TotalSegmentator dataset: the folder that holds s0000/, s0001/, ... "
    "(each with ct.nii.gz and segmentations/) and meta.csv."
)

_VERTEBRAE = [
    f"vertebrae_{v}"
    for v in ["L5", "L4", "L3", "L2", "L1"] + [f"T{i}" for i in range(12, 0, -1)] + [f"C{i}" for i in range(7, 0, -1)]
]
_RIBS = [f"rib_{side}_{i}" for side in ("left", "right") for i in range(1, 13)]
_ABDOMEN = ["spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach"]
_ADRENALS = ["adrenal_gland_right", "adrenal_gland_left"]
_LOBES = [
    "lung_upper_lobe_left",
    "lung_lower_lobe_left",
    "lung_upper_lobe_right",
    "lung_middle_lobe_right",
    "lung_lower_lobe_right",
]
_LIMBS = [
    "humerus_left",
    "humerus_right",
    "scapula_left",
    "scapula_right",
    "clavicula_left",
    "clavicula_right",
    "femur_left",
    "femur_right",
    "hip_left",
    "hip_right",
]
_MUSCLES = [
    "gluteus_maximus_left",
    "gluteus_maximus_right",
    "gluteus_medius_left",
    "gluteus_medius_right",
    "gluteus_minimus_left",
    "gluteus_minimus_right",
    "autochthon_left",
    "autochthon_right",
    "iliopsoas_left",
    "iliopsoas_right",
]
_ILIAC = ["iliac_artery_left", "iliac_artery_right", "iliac_vena_left", "iliac_vena_right"]

#: Class names in multilabel-id order (id = position + 1), per TotalSegmentator release.
CLASS_MAPS: dict[str, list[str]] = {
    "v2": _ABDOMEN
    + ["pancreas"]
    + _ADRENALS
    + _LOBES
    + [
        "esophagus",
        "trachea",
        "thyroid_gland",
        "small_bowel",
        "duodenum",
        "colon",
        "urinary_bladder",
        "prostate",
        "kidney_cyst_left",
        "kidney_cyst_right",
        "sacrum",
        "vertebrae_S1",
    ]
    + _VERTEBRAE
    + [
        "heart",
        "aorta",
        "pulmonary_vein",
        "brachiocephalic_trunk",
        "subclavian_artery_right",
        "subclavian_artery_left",
        "common_carotid_artery_right",
        "common_carotid_artery_left",
        "brachiocephalic_vein_left",
        "brachiocephalic_vein_right",
        "atrial_appendage_left",
        "superior_vena_cava",
        "inferior_vena_cava",
        "portal_vein_and_splenic_vein",
    ]
    + _ILIAC
    + _LIMBS
    + ["spinal_cord"]
    + _MUSCLES
    + ["brain", "skull"]
    + _RIBS
    + ["sternum", "costal_cartilages"],
    "v1": _ABDOMEN
    + ["aorta", "inferior_vena_cava", "portal_vein_and_splenic_vein", "pancreas"]
    + _ADRENALS
    + _LOBES
    + _VERTEBRAE
    + [
        "esophagus",
        "trachea",
        "heart_myocardium",
        "heart_atrium_left",
        "heart_ventricle_left",
        "heart_atrium_right",
        "heart_ventricle_right",
        "pulmonary_artery",
        "brain",
    ]
    + _ILIAC
    + ["small_bowel", "duodenum", "colon"]
    + _RIBS
    + _LIMBS
    + ["sacrum", "face"]
    + _MUSCLES
    + ["urinary_bladder"],
    "mr": _ABDOMEN
    + ["pancreas"]
    + _ADRENALS
    + [
        "lung_left",
        "lung_right",
        "esophagus",
        "small_bowel",
        "duodenum",
        "colon",
        "urinary_bladder",
        "prostate",
        "sacrum",
        "vertebrae",
        "intervertebral_discs",
        "spinal_cord",
        "heart",
        "aorta",
        "inferior_vena_cava",
        "portal_vein_and_splenic_vein",
    ]
    + _ILIAC
    + _LIMBS
    + _MUSCLES
    + ["brain"],
}
IMAGE_FILES = {"ct": "ct.nii.gz", "mr": "mri.nii.gz"}
_CASE = re.compile(r"s\d+")


def _case_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        raise InputError(
            f"the TotalSegmentator folder {root} does not exist"
            if not root.exists()
            else f"{root} is a file, not a TotalSegmentator folder",
            HINT,
        )
    dirs = [p for p in sorted(root.iterdir()) if p.is_dir() and _CASE.fullmatch(p.name)]
    if not dirs:
        nested = [
            p for p in root.iterdir() if p.is_dir() and any(_CASE.fullmatch(q.name) for q in p.iterdir() if q.is_dir())
        ]
        if len(nested) == 1:
            return _case_dirs(nested[0])
        raise InputError(f"{root} holds no TotalSegmentator cases (sXXXX/ folders)", HINT)
    return dirs


def _modality_of(dirs: list[Path], wanted: str) -> str:
    """ "ct" or "mr": from the image file name the cases use (ct.nii.gz / mri.nii.gz)."""
    kinds = {kind for kind, name in IMAGE_FILES.items() for d in dirs[:20] if (d / name).is_file()}
    if wanted != "auto":
        if wanted not in kinds and kinds:
            found = " and ".join(IMAGE_FILES[k] for k in sorted(kinds))
            raise InputError(
                f"--modality {wanted}: these cases hold {found}, not {IMAGE_FILES[wanted]}",
                "Pass --modality auto, or the modality of this dataset.",
            )
        return wanted
    if len(kinds) != 1:
        held = "some cases hold ct.nii.gz, others mri.nii.gz" if kinds else "no case holds ct.nii.gz or mri.nii.gz"
        raise InputError(
            f"cannot tell whether {dirs[0].parent} is the CT or the MR dataset ({held})",
            HINT if not kinds else "Pass --modality ct or --modality mr.",
        )
    return kinds.pop()


def _split_table(root: Path) -> dict[str, str]:
    """``image_id -> split`` from meta.csv (semicolon separated in the release; commas accepted)."""
    path = root / "meta.csv"
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8-sig")
    delimiter = ";" if text.splitlines()[0].count(";") >= text.splitlines()[0].count(",") else ","
    rows = list(csv.DictReader(text.splitlines(), delimiter=delimiter))
    if rows and not {"image_id", "split"} <= set(rows[0]):
        raise InputError(
            f"{path} has no image_id and split columns (it has: {', '.join(rows[0])})",
            "Use the meta.csv of the TotalSegmentator release, or remove it to convert without splits.",
        )
    return {row["image_id"].strip(): row["split"].strip() for row in rows}


def _classes(dirs: list[Path], modality: str) -> tuple[str, list[str], dict[Path, set[str]]]:
    """The release whose class list covers every mask file found, its list, and each case's classes."""
    per_case: dict[Path, set[str]] = {}
    for d in dirs:
        seg = d / "segmentations"
        if not seg.is_dir():
            raise InputError(f"case {d.name} has no segmentations/ folder", HINT)
        per_case[d] = {p.name[: -len(".nii.gz")] for p in seg.iterdir() if p.name.endswith(".nii.gz")}
    found = set().union(*per_case.values())
    if not found:
        raise InputError(f"no masks (segmentations/<class>.nii.gz) in any case of {dirs[0].parent}", HINT)
    releases = ["mr"] if modality == "mr" else ["v2", "v1"]
    for release in releases:
        if found <= set(CLASS_MAPS[release]):
            return release, CLASS_MAPS[release], per_case
    best = CLASS_MAPS[releases[0]]
    unknown = sorted(found - set(best))
    raise InputError(
        f"mask names that no TotalSegmentator release defines: {', '.join(unknown[:8])}"
        + (f" and {len(unknown) - 8} more" if len(unknown) > 8 else ""),
        "Keep the segmentations/ folders as released (one <class>.nii.gz per class).",
    )


def find(root: Path, modality: str = "auto", split: str = "all") -> Source:
    dirs = _case_dirs(root)
    modality = _modality_of(dirs, modality)
    splits = _split_table(dirs[0].parent)
    if split != "all" and not splits:
        raise InputError(
            f"--split {split} needs meta.csv next to the case folders in {dirs[0].parent}",
            "Add the release's meta.csv, or pass --split all.",
        )
    release, names, per_case = _classes(dirs, modality)
    present = [name for name in names if any(name in classes for classes in per_case.values())]
    labels = label_table([(names.index(name) + 1, name, name) for name in present])
    ids = {spec.source_name: spec.value for spec in labels}
    image_name = IMAGE_FILES[modality]
    cases, skipped = [], 0
    for d in dirs:
        if split != "all" and splits.get(d.name) != split:
            skipped += 1
            continue
        if not (d / image_name).is_file():
            raise InputError(f"case {d.name} has no {image_name}", HINT)
        classes = sorted(per_case[d], key=names.index)
        read = partial(_read, d, image_name, [(c, ids[c]) for c in classes])
        cases.append(
            SourceCase(
                d.name,
                "CT" if modality == "ct" else "MR",
                read,
                splits.get(d.name),
                f"{d.name}/{image_name}",
                tuple(ids[c] for c in classes),
            )
        )
    notes = {
        "release": {
            "v2": "TotalSegmentator v2 (117 classes)",
            "v1": "TotalSegmentator v1 (104 classes)",
            "mr": "TotalSegmentator MRI (50 classes)",
        }[release],
        "ids": "TotalSegmentator's own multilabel ids; classes with no mask in any case are left out",
    }
    source = Source(NAME, TITLE, labels, "CT" if modality == "ct" else "MR", cases, REFERENCE, LICENCE, notes)
    if skipped:
        source.skipped.append(f"{skipped} case(s) outside --split {split}")
    return source


def _read(case_dir: Path, image_name: str, classes: list[tuple[str, int]]):
    """The image path and one label volume holding every class mask (a later id wins an overlap)."""
    image_path = case_dir / image_name
    header = read_header(image_path, "image", case_dir.name)
    labels = np.zeros(header["size"][::-1], dtype=np.uint8)
    overlap = 0
    for name, value in classes:
        mask_path = case_dir / "segmentations" / f"{name}.nii.gz"
        mask = read_image(mask_path, "mask", case_dir.name)
        problem = same_grid(header, image_header(mask))
        if problem:
            raise InputError(
                f"case '{case_dir.name}': the mask {name}.nii.gz is not on the image's grid ({problem})",
                "Use the release's files unchanged.",
            )
        inside = sitk().GetArrayViewFromImage(mask) > 0
        overlap += int(np.count_nonzero(labels[inside]))
        labels[inside] = value
    if overlap:
        log.warning("case %s: %d voxel(s) lie in two masks; the later class id keeps them", case_dir.name, overlap)
    label = sitk().GetImageFromArray(labels)
    label.SetSpacing(header["spacing"])
    label.SetOrigin(header["origin"])
    label.SetDirection(header["direction"])
    return image_path, label
