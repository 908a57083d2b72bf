"""AMOS22: 15 abdominal organs in CT and MR (``imagesTr``/``labelsTr``, ``imagesVa``/``labelsVa``).

Case ids are ``amos_XXXX``; ids of 500 and above are MR scans (the AMOS convention), the rest CT.
The label ids are fixed by the challenge; the dataset.json that ships with AMOS spells two of them
unusually ("arota", "postcava"), so the names here map to the vocabulary explicitly. Label 15 is
the prostate in men and the uterus in women: one id, one prompt ("prostate or uterus").
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ...vocabulary import normalize
from .pairs import find_root, pair_files, paired_case
from .writer import Source, label_table

log = logging.getLogger(__name__)

NAME = "amos22"
TITLE = "AMOS22"
REFERENCE = "https://amos22.grand-challenge.org/ (data: https://zenodo.org/records/7262581)"
LICENCE = "CC BY 4.0"
MODALITIES = ("all", "ct", "mr")
SPLITS = ("all", "train", "val")
MR_FROM = 500

LABELS = [
    (1, "spleen", "spleen"),
    (2, "right kidney", "right_kidney"),
    (3, "left kidney", "left_kidney"),
    (4, "gall bladder", "gallbladder"),
    (5, "esophagus", "esophagus"),
    (6, "liver", "liver"),
    (7, "stomach", "stomach"),
    (8, "aorta", "aorta"),
    (9, "postcava", "inferior_vena_cava"),
    (10, "pancreas", "pancreas"),
    (11, "right adrenal gland", "right_adrenal_gland"),
    (12, "left adrenal gland", "left_adrenal_gland"),
    (13, "duodenum", "duodenum"),
    (14, "bladder", "urinary_bladder"),
    (15, "prostate/uterus", "prostate_or_uterus"),
]
SPELLINGS = {8: {"arota"}}  # names seen in AMOS's own dataset.json besides the ones above
HINT = "Point --input at the extracted AMOS folder (amos22/, holding imagesTr/ and labelsTr/)."


def _check_declared(root: Path) -> None:
    """Warn when AMOS's own dataset.json names an id differently: the fixed table may not fit."""
    path = root / "dataset.json"
    if not path.is_file():
        return
    try:
        declared = json.loads(path.read_text(encoding="utf-8")).get("labels", {})
    except (OSError, ValueError, AttributeError):
        return
    for value, name, _ in LABELS:
        theirs = declared.get(str(value))
        if isinstance(theirs, str) and normalize(theirs) not in {normalize(name)} | SPELLINGS.get(value, set()):
            log.warning("AMOS dataset.json names label %d '%s', expected '%s'", value, theirs, name)


def find(root: Path, modality: str = "all", split: str = "all") -> Source:
    root = find_root(root, TITLE, ("", "amos22", "AMOS22"), ("imagesTr", "labelsTr"), HINT)
    _check_declared(root)
    labels = label_table(LABELS)
    cases, skipped = [], []
    for part, tag in (("Tr", "train"), ("Va", "val")):
        if split not in ("all", tag) or not (root / f"images{part}").is_dir():
            continue
        pattern = r"(amos_\d+)\.nii\.gz"
        for key, image, label in pair_files(
            root / f"images{part}", root / f"labels{part}", pattern, pattern, "amos_0001.nii.gz"
        ):
            is_mr = int(key.removeprefix("amos_")) >= MR_FROM
            if modality != "all" and (modality == "mr") != is_mr:
                skipped.append(key)
                continue
            cases.append(
                paired_case(key, "MR" if is_mr else "CT", image, label, labels, tag, f"images{part}/{image.name}")
            )
    channel = {"ct": "CT", "mr": "MR"}.get(modality) or (
        "CT or MR" if len({c.modality for c in cases}) > 1 else (cases[0].modality if cases else "CT")
    )
    notes = {
        "label 15": "prostate (men) or uterus (women): one AMOS id, no single SNOMED CT code",
        "modality": "AMOS case ids >= 500 are MR, the rest CT; each case's modality is in 'cases'",
    }
    source = Source(NAME, TITLE, labels, channel, cases, REFERENCE, LICENCE, notes)
    if skipped:
        source.skipped.append(f"{len(skipped)} case(s) of the other modality (--modality {modality})")
    return source
