"""BTCV (Synapse multi-atlas labelling, abdomen): 13 organs in CT (``img/imgXXXX.nii.gz`` + ``label/labelXXXX.nii.gz``).

Label ids are BTCV's: 1 spleen, 2 right kidney, 3 left kidney, 4 gallbladder, 5 esophagus, 6 liver,
7 stomach, 8 aorta, 9 inferior vena cava, 10 portal vein and splenic vein, 11 pancreas, 12 right
adrenal gland, 13 left adrenal gland. Cases become ``btcv_XXXX``.
"""

from __future__ import annotations

from pathlib import Path

from .pairs import find_root, pair_files, paired_case
from .writer import Source, label_table

NAME = "btcv"
TITLE = "BTCV"
REFERENCE = "https://www.synapse.org/#!Synapse:syn3193805/wiki/217789"
LICENCE = "Synapse registration and the challenge's conditions of use (no open licence)"
MODALITIES = ("ct",)
SPLITS = ("all",)
LABELS = [
    (1, "spleen", "spleen"),
    (2, "right kidney", "right_kidney"),
    (3, "left kidney", "left_kidney"),
    (4, "gallbladder", "gallbladder"),
    (5, "esophagus", "esophagus"),
    (6, "liver", "liver"),
    (7, "stomach", "stomach"),
    (8, "aorta", "aorta"),
    (9, "inferior vena cava", "inferior_vena_cava"),
    (10, "portal vein and splenic vein", "portal_vein_and_splenic_vein"),
    (11, "pancreas", "pancreas"),
    (12, "right adrenal gland", "right_adrenal_gland"),
    (13, "left adrenal gland", "left_adrenal_gland"),
]
HINT = "Point --input at the extracted training folder (RawData/Training/, holding img/ and label/)."


def find(root: Path, modality: str = "ct", split: str = "all") -> Source:
    root = find_root(
        root, TITLE, ("", "Training", "RawData/Training", "Abdomen/RawData/Training"), ("img", "label"), HINT
    )
    labels = label_table(LABELS)
    pairs = pair_files(root / "img", root / "label", r"img(\d+)\.nii\.gz", r"label(\d+)\.nii\.gz", "label0001.nii.gz")
    cases = [
        paired_case(f"btcv_{key}", "CT", image, label, labels, None, f"img/{image.name}") for key, image, label in pairs
    ]
    return Source(NAME, TITLE, labels, "CT", cases, REFERENCE, LICENCE)
