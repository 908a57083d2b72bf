"""The nnU-Net v2 layout every converter writes, and the pieces they share.

A converter describes its dataset as a :class:`Source`: a label table (:class:`LabelSpec`: the
dataset's own id and name, and the vocabulary organ it means) and a list of :class:`SourceCase`
whose ``read()`` returns the image and a label volume already holding the output ids. The
:class:`NnUNetWriter` checks each pair (3D scalar image, label on the image's grid, only declared
ids) and writes exactly what ``data/dataset.py`` (the trainer's reader) reads: ``imagesTr/CASE_0000.nii.gz``,
``labelsTr/CASE.nii.gz`` and ``dataset.json`` (``labels`` name -> id, ``channel_names``,
``file_ending``, ``numTraining`` and a ``cases`` entry with each case's modality and, where a case
is labelled for only some organs, its ``annotated`` ids).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ...errors import InputError
from ...vocabulary import Organ, lookup

ENDING = ".nii.gz"
# Converters accept label headers that differ from the image's by rounding (NIfTI stores float32,
# tools round differently) and write the image's geometry onto the label, so that the trainer's
# stricter header check passes; anything larger is a real mismatch and an error.
SPACING_RTOL, ORIGIN_ATOL_MM, DIRECTION_ATOL = 1e-3, 0.05, 1e-3

ImageSource = Any  # a Path (copied when .nii.gz, else read) or a SimpleITK image


@dataclass(frozen=True)
class LabelSpec:
    """One output label: its id, the name the dataset uses, and the vocabulary organ it means."""

    value: int
    source_name: str
    organ: Organ

    @property
    def name(self) -> str:
        return self.organ.name

    def to_json(self) -> dict:
        """The row of dataset.json's ``label_table``: what a user needs to prompt and code it."""
        o = self.organ
        return {
            "value": self.value,
            "name": o.name,
            "prompt": o.prompt,
            "source_name": self.source_name,
            "laterality": o.lateral,
            "snomed_category": list(o.snomed_category) if o.snomed_category else None,
            "snomed_type": list(o.snomed_type) if o.snomed_type else None,
            "snomed_region": list(o.snomed_region) if o.snomed_region else None,
            "terminology": o.terminology(),
        }


def label_table(rows: list[tuple[int, str, str]]) -> list[LabelSpec]:
    """``(id, dataset's name, vocabulary name)`` rows -> specs; a name the vocabulary lacks is a bug."""
    specs = []
    for value, source_name, vocabulary_name in rows:
        organ = lookup(vocabulary_name)
        if organ is None:
            raise RuntimeError(f"label '{vocabulary_name}' is not in the organ vocabulary")
        specs.append(LabelSpec(int(value), source_name, organ))
    return specs


@dataclass
class SourceCase:
    """One case of a source dataset; ``read()`` -> (image file or image, label image with output ids)."""

    case_id: str
    modality: str
    read: Callable[[], tuple[ImageSource, Any]]
    split: str | None = None
    source: str = ""
    annotated: tuple[int, ...] | None = None


@dataclass
class Source:
    """What a converter found: everything the writer needs, nothing read from voxels yet."""

    dataset: str  # the `tgated prepare` name, e.g. "amos22"
    title: str
    labels: list[LabelSpec]
    channel: str  # channel_names["0"]: "CT", "MR", or "CT or MR"
    cases: list[SourceCase]
    reference: str = ""
    licence: str = ""
    notes: dict = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # what was found but not converted, and why


# --------------------------------------------------------------------------- reading helpers


def sitk():
    """SimpleITK, imported when a conversion runs (the data layer imports without it)."""
    import SimpleITK

    return SimpleITK


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[-1] if text else "unreadable").replace("sitk::ERROR:", "").strip()[:160]


def read_header(path: Path, what: str, case_id: str) -> dict:
    """Size and geometry of an image file (no voxels read), or an InputError saying which file is bad."""
    reader = sitk().ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(
            f"case '{case_id}': cannot read the {what} {path} ({_reason(exc)})",
            "Check that the file is complete (re-download or re-extract it).",
        ) from None
    if reader.GetDimension() != 3 or reader.GetNumberOfComponents() != 1:
        raise InputError(
            f"case '{case_id}': the {what} {path} is {reader.GetDimension()}D with "
            f"{reader.GetNumberOfComponents()} component(s), not a scalar 3D volume",
            "Give the dataset's original files; each must be one 3D volume.",
        )
    return {
        "size": tuple(reader.GetSize()),
        "spacing": reader.GetSpacing(),
        "origin": reader.GetOrigin(),
        "direction": reader.GetDirection(),
    }


def image_header(image) -> dict:
    return {
        "size": tuple(image.GetSize()),
        "spacing": image.GetSpacing(),
        "origin": image.GetOrigin(),
        "direction": image.GetDirection(),
    }


def read_image(path: Path, what: str, case_id: str):
    try:
        return sitk().ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(
            f"case '{case_id}': cannot read the {what} {path} ({_reason(exc)})",
            "Check that the file is complete (re-download or re-extract it).",
        ) from None


def same_grid(a: dict, b: dict) -> str | None:
    """None when two headers describe one voxel grid (up to rounding), else what differs."""
    if a["size"] != b["size"]:
        return f"size {a['size']} vs {b['size']}"
    if not np.allclose(a["spacing"], b["spacing"], rtol=SPACING_RTOL, atol=0):
        return f"spacing {tuple(round(v, 6) for v in a['spacing'])} vs {tuple(round(v, 6) for v in b['spacing'])}"
    if not np.allclose(a["origin"], b["origin"], rtol=0, atol=ORIGIN_ATOL_MM):
        return f"origin {tuple(round(v, 4) for v in a['origin'])} vs {tuple(round(v, 4) for v in b['origin'])}"
    if not np.allclose(a["direction"], b["direction"], rtol=0, atol=DIRECTION_ATOL):
        return "direction"
    return None


def read_label_values(path: Path, case_id: str, allowed: set[int]):
    """A label file as an integer image; values outside ``allowed`` (and 0) are an InputError."""
    image = read_image(path, "label", case_id)
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"case '{case_id}': the label {path} is not a scalar 3D volume", "Give the dataset's original label files."
        )
    array = sitk().GetArrayFromImage(image)
    values = np.unique(array)
    bad = [v for v in values if v != 0 and (float(v) != int(v) or int(v) not in allowed)]
    if bad:
        raise InputError(
            f"case '{case_id}': the label {path} holds values {', '.join(f'{v:g}' for v in bad[:8])} "
            f"that the dataset does not define (ids {min(allowed)}..{max(allowed)})",
            "Check that this is the dataset's original label file and that --input points at the right dataset.",
        )
    out = sitk().GetImageFromArray(array.astype(np.uint8 if max(allowed) < 256 else np.uint16))
    out.CopyInformation(image)
    return out


# --------------------------------------------------------------------------- writer


class NnUNetWriter:
    """Writes cases into ``root`` (a fresh folder: the caller swaps it into place at the end)."""

    def __init__(self, root: Path, source: Source):
        self.root = Path(root)
        self.source = source
        self.allowed = {spec.value for spec in source.labels}
        self.cases: dict[str, dict] = {}
        (self.root / "imagesTr").mkdir(parents=True, exist_ok=True)
        (self.root / "labelsTr").mkdir(parents=True, exist_ok=True)

    def write_case(self, case: SourceCase) -> None:
        if case.case_id in self.cases:
            raise InputError(f"two source cases are both named '{case.case_id}'", "Keep one copy of each case.")
        image, label = case.read()
        header = read_header(image, "image", case.case_id) if isinstance(image, Path) else image_header(image)
        label = self._on_image_grid(label, header, case.case_id)
        self._check_values(label, case.case_id)
        image_out = self.root / "imagesTr" / f"{case.case_id}_0000{ENDING}"
        if isinstance(image, Path) and image.name.lower().endswith(ENDING):
            shutil.copyfile(image, image_out)  # already NIfTI: a byte copy is lossless and fast
        else:
            image = read_image(image, "image", case.case_id) if isinstance(image, Path) else image
            sitk().WriteImage(image, str(image_out), True)
        sitk().WriteImage(label, str(self.root / "labelsTr" / f"{case.case_id}{ENDING}"), True)
        entry: dict[str, Any] = {"modality": case.modality}
        if case.split:
            entry["split"] = case.split
        if case.source:
            entry["source"] = case.source
        if case.annotated is not None and set(case.annotated) != self.allowed:
            entry["annotated"] = sorted(case.annotated)
        self.cases[case.case_id] = entry

    def _on_image_grid(self, label, header: dict, case_id: str):
        problem = same_grid(header, image_header(label))
        if problem:
            raise InputError(
                f"case '{case_id}': the label's grid differs from the image's ({problem})",
                "Use the dataset's original image and label files; they share one grid.",
            )
        label.SetSpacing(header["spacing"])
        label.SetOrigin(header["origin"])
        label.SetDirection(header["direction"])
        return label

    def _check_values(self, label, case_id: str) -> None:
        values = {int(v) for v in np.unique(sitk().GetArrayViewFromImage(label))} - {0}
        unknown = sorted(values - self.allowed)
        if unknown:  # converters map values themselves: this is a converter bug, not bad input
            raise RuntimeError(f"case '{case_id}': label ids {unknown} are not in the label table")

    def finish(self, command: str, version: str) -> Path:
        s = self.source
        meta = {
            "name": s.title,
            "description": f"{s.title} converted by `{command}` (TGatedSegment {version}). Label names are the "
            "organ vocabulary's canonical names; label_table gives each one's prompt, the "
            "dataset's own name and SNOMED CT codes.",
            "reference": s.reference,
            "licence": s.licence,
            "channel_names": {"0": s.channel},
            "labels": {"background": 0, **{spec.name: spec.value for spec in s.labels}},
            "numTraining": len(self.cases),
            "file_ending": ENDING,
            "label_table": [spec.to_json() for spec in s.labels],
            "cases": self.cases,
        }
        if s.notes:
            meta["notes"] = s.notes
        path = self.root / "dataset.json"
        path.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        return path
