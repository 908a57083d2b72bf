"""FLARE22: 13 abdominal organs in CT (``images/FLARE22_Tr_XXXX_0000.nii.gz`` + ``labels/FLARE22_Tr_XXXX.nii.gz``).

The label ids are FLARE22's, which are also the ``abdomen13`` preset's: 1 liver, 2 right kidney,
3 spleen, 4 pancreas, 5 aorta, 6 inferior vena cava, 7 right adrenal gland, 8 left adrenal gland,
9 gallbladder, 10 esophagus, 11 stomach, 12 duodenum, 13 left kidney. Only the 50 labelled training
cases are converted (the 2000 unlabelled ones have nothing to train a segmenter on).
"""

from __future__ import annotations

from pathlib import Path

from ...vocabulary import ABDOMEN13
from .pairs import find_root, pair_files, paired_case
from .writer import Source, label_table

NAME = "flare22"
TITLE = "FLARE22"
REFERENCE = "https://flare22.grand-challenge.org/"
LICENCE = "the FLARE22 challenge's data terms (see its Dataset page); images derive from public sets (MSD, KiTS, ...)"
MODALITIES = ("ct",)
SPLITS = ("all",)
LABELS = [(organ.label, organ.prompt, organ.name) for organ in ABDOMEN13]
HINT = "Point --input at the extracted labelled training folder (FLARE22Train/, holding images/ and labels/)."


def find(root: Path, modality: str = "ct", split: str = "all") -> Source:
    root = find_root(root, TITLE, ("", "FLARE22Train", "Training"), ("images", "labels"), HINT)
    labels = label_table(LABELS)
    pairs = pair_files(
        root / "images", root / "labels", r"(.+?)_0000\.nii\.gz", r"(.+?)\.nii\.gz", "FLARE22_Tr_0001.nii.gz"
    )
    cases = [paired_case(key, "CT", image, label, labels, None, f"images/{image.name}") for key, image, label in pairs]
    return Source(NAME, TITLE, labels, "CT", cases, REFERENCE, LICENCE)
