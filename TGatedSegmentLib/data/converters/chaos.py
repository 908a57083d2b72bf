"""CHAOS (MR): abdominal T1-DUAL and T2-SPIR DICOM series with PNG masks, one PNG per slice.

Layout (``CHAOS_Train_Sets/Train_Sets/MR/<patient>/``): ``T2SPIR/DICOM_anon/*.dcm`` with
``T2SPIR/Ground/*.png``, and ``T1DUAL/DICOM_anon/InPhase|OutPhase/*.dcm`` with one
``T1DUAL/Ground/*.png`` set that serves both phases. Masks encode organs as grey levels: liver 63
(55-70), right kidney 126 (110-135), left kidney 189 (175-200), spleen 252 (240-255); other values
are background.

Slice order and orientation, the one thing that can silently go wrong here:

* the PNGs of a series, sorted by file name, are the masks of its DICOM files sorted by
  InstanceNumber (the CHAOS convention; when every PNG has the same stem as a DICOM file, the
  names pair them instead);
* a PNG's rows and columns are the DICOM slice's rows and columns as stored (no flips): PNG pixel
  (r, c) labels DICOM pixel (r, c);
* the volume is stacked in patient space (slices sorted along the slice normal by
  ImagePositionPatient), and each mask goes with its own DICOM file, so the label volume has exactly
  the image's grid whichever way the instance numbers run.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import numpy as np

from ...errors import InputError
from .writer import Source, SourceCase, label_table, sitk

NAME = "chaos"
TITLE = "CHAOS (MR)"
REFERENCE = "https://chaos.grand-challenge.org/ (data: https://zenodo.org/records/3431873)"
LICENCE = "CC BY-NC-SA 4.0"
MODALITIES = ("t2", "t1-in", "t1-out")
SPLITS = ("all",)
# (output id, CHAOS name, vocabulary name, grey-level range)
ORGANS = [
    (1, "liver", "liver", (55, 70)),
    (2, "right kidney", "right_kidney", (110, 135)),
    (3, "left kidney", "left_kidney", (175, 200)),
    (4, "spleen", "spleen", (240, 255)),
]
SEQUENCES = {  # --modality -> (image folder, mask folder, case-id part, modality text)
    "t2": ("T2SPIR/DICOM_anon", "T2SPIR/Ground", "t2", "MR (T2-SPIR)"),
    "t1-in": ("T1DUAL/DICOM_anon/InPhase", "T1DUAL/Ground", "t1in", "MR (T1-DUAL in-phase)"),
    "t1-out": ("T1DUAL/DICOM_anon/OutPhase", "T1DUAL/Ground", "t1out", "MR (T1-DUAL out-of-phase)"),
}
HINT = "Point --input at the extracted CHAOS training set (CHAOS_Train_Sets/Train_Sets/, holding MR/<patient>/)."


def _mr_folder(root: Path) -> Path:
    if not root.is_dir():
        raise InputError(
            f"the CHAOS folder {root} does not exist" if not root.exists() else f"{root} is a file, not a CHAOS folder",
            HINT,
        )
    for candidate in ("MR", "Train_Sets/MR", "CHAOS_Train_Sets/Train_Sets/MR", ""):
        folder = root / candidate if candidate else root
        if folder.is_dir() and any(
            p.is_dir() and p.name.isdigit() and (p / "T2SPIR").is_dir() for p in folder.iterdir()
        ):
            return folder
    raise InputError(f"{root} does not look like CHAOS: no MR/<patient>/T2SPIR/ folders in it", HINT)


def find(root: Path, modality: str = "t2", split: str = "all") -> Source:
    mr = _mr_folder(root)
    image_dir, mask_dir, tag, text = SEQUENCES[modality]
    labels = label_table([(value, name, vocabulary) for value, name, vocabulary, _ in ORGANS])
    cases = []
    for patient in sorted((p for p in mr.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)):
        dicom, ground = patient / image_dir, patient / mask_dir
        for folder in (dicom, ground):
            if not folder.is_dir():
                raise InputError(
                    f"CHAOS patient {patient.name} has no {folder.relative_to(patient)}/ folder",
                    "Re-extract the archive; every MR patient has T1DUAL/ and T2SPIR/ with Ground/.",
                )
        case_id = f"chaos_{tag}_{int(patient.name):02d}"
        cases.append(
            SourceCase(case_id, text, partial(_read, dicom, ground, case_id), None, f"MR/{patient.name}/{image_dir}")
        )
    notes = {
        "masks": "PNG grey levels liver 55-70, right kidney 110-135, left kidney 175-200, spleen 240-255; "
        "PNGs sorted by name pair with DICOM files sorted by InstanceNumber; PNG rows/columns are "
        "the DICOM rows/columns"
    }
    return Source(NAME, TITLE, labels, "MR", cases, REFERENCE, LICENCE, notes)


# --------------------------------------------------------------------------- DICOM + PNG


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _slice_info(path: Path, case_id: str) -> dict:
    reader = sitk().ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise InputError(
            f"case '{case_id}': cannot read the DICOM file {path}", "Re-extract the archive; the file is damaged."
        ) from None

    def tag(key: str) -> str:
        return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""

    try:
        position = [float(v) for v in tag("0020|0032").split("\\")]
        orientation = [float(v) for v in tag("0020|0037").split("\\")]
    except ValueError:
        position, orientation = [], []
    instance = int(tag("0020|0013")) if re.fullmatch(r"-?\d+", tag("0020|0013")) else None
    if len(position) != 3 or len(orientation) != 6:
        raise InputError(
            f"case '{case_id}': {path.name} has no usable ImagePositionPatient/ImageOrientationPatient",
            "Use the original CHAOS DICOM files.",
        )
    normal = np.cross(orientation[:3], orientation[3:])
    return {
        "path": path,
        "instance": instance,
        "depth": float(np.dot(position, normal)),
        "size": tuple(reader.GetSize()[:2]),
    }


def _pair_masks(slices: list[dict], pngs: list[Path], case_id: str) -> dict[Path, Path]:
    """DICOM file -> its PNG: by identical stems when all match, else by InstanceNumber rank."""
    if len(pngs) != len(slices):
        raise InputError(
            f"case '{case_id}': {len(slices)} DICOM slices but {len(pngs)} PNG masks",
            "Every DICOM slice needs one mask in Ground/; re-extract the archive.",
        )
    by_stem = {p.stem: p for p in pngs}
    if all(s["path"].stem in by_stem for s in slices):
        return {s["path"]: by_stem[s["path"].stem] for s in slices}
    if any(s["instance"] is None for s in slices):
        raise InputError(
            f"case '{case_id}': DICOM files without InstanceNumber, and PNG names that do not match",
            "Use the original CHAOS DICOM files; the masks are ordered by instance number.",
        )
    ordered = sorted(slices, key=lambda s: (s["instance"], _natural(s["path"].name)))
    return {s["path"]: png for s, png in zip(ordered, sorted(pngs, key=lambda p: _natural(p.name)))}


def _mask_values(png: Path, case_id: str, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(png) as im:
            grey = np.asarray(im if im.mode in ("L", "I", "I;16") else im.convert("L"))
    except OSError:
        raise InputError(f"case '{case_id}': cannot read the mask {png}", "Re-extract the archive.") from None
    if grey.shape != (size[1], size[0]):
        raise InputError(
            f"case '{case_id}': mask {png.name} is {grey.shape[1]}x{grey.shape[0]} pixels, its DICOM "
            f"slice {size[0]}x{size[1]}",
            "Use the Ground/ folder that belongs to this series.",
        )
    out = np.zeros(grey.shape, dtype=np.uint8)
    for value, _, _, (low, high) in ORGANS:
        out[(grey >= low) & (grey <= high)] = value
    return out


def _read(dicom_dir: Path, ground_dir: Path, case_id: str):
    files = sorted(p for p in dicom_dir.iterdir() if p.is_file() and p.suffix.lower() == ".dcm")
    pngs = sorted(p for p in ground_dir.iterdir() if p.is_file() and p.suffix.lower() == ".png")
    if not files:
        raise InputError(f"case '{case_id}': no .dcm files in {dicom_dir}", "Re-extract the archive.")
    slices = [_slice_info(p, case_id) for p in files]
    masks = _pair_masks(slices, pngs, case_id)
    slices.sort(key=lambda s: s["depth"])  # patient space, along the slice normal
    reader = sitk().ImageSeriesReader()
    reader.SetFileNames([str(s["path"]) for s in slices])
    try:
        image = reader.Execute()
    except RuntimeError:
        raise InputError(
            f"case '{case_id}': cannot read the DICOM series in {dicom_dir}",
            "Re-extract the archive; a file is damaged.",
        ) from None
    label = np.stack([_mask_values(masks[s["path"]], case_id, s["size"]) for s in slices])
    if label.shape != sitk().GetArrayViewFromImage(image).shape:
        raise InputError(f"case '{case_id}': the masks ({label.shape}) do not fit the volume", HINT)
    label_image = sitk().GetImageFromArray(label)
    label_image.CopyInformation(image)
    return image, label_image
