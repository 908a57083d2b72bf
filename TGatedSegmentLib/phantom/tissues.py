"""The phantom's tissues and organs: base HU, texture amplitude and FLARE22 label ids."""

from __future__ import annotations

from ..vocabulary import lookup

TARGET_ORGAN = "gallbladder"

#: Base HU of the labelled organs (before per-volume / per-organ offsets) and their texture
#: amplitude (HU, low-frequency variation inside the organ).
ORGAN_TABLE: dict[str, dict[str, float]] = {
    "liver": {"hu": 60.0, "texture": 6.0},
    "spleen": {"hu": 48.0, "texture": 4.0},
    "right_kidney": {"hu": 30.0, "texture": 4.0},
    "left_kidney": {"hu": 30.0, "texture": 4.0},
    "aorta": {"hu": 45.0, "texture": 2.0},
    "inferior_vena_cava": {"hu": 40.0, "texture": 2.0},
    "right_adrenal_gland": {"hu": 25.0, "texture": 2.0},
    "left_adrenal_gland": {"hu": 25.0, "texture": 2.0},
    "gallbladder": {"hu": 10.0, "texture": 2.0},
}

#: Base HU of the unlabelled tissues.
TISSUE_HU: dict[str, float] = {
    "air": -1000.0,
    "lung": -850.0,
    "subcutaneous_fat": -100.0,
    "visceral_fat": -90.0,
    "renal_sinus_fat": -60.0,
    "muscle": 50.0,
    "bowel": 45.0,
    "bowel_gas": -700.0,
    "cancellous_bone": 400.0,
    "cortical_bone": 700.0,
    "rib": 550.0,
    "disc": 90.0,
    "spinal_canal": 15.0,
}


#: FLARE22 label ids (those of :data:`TGatedSegmentLib.vocabulary.ABDOMEN13`), by organ name.
def _label_id(name: str) -> int:
    organ = lookup(name)
    if organ is None:
        raise KeyError(f"the phantom organ '{name}' is not in the organ vocabulary")
    return organ.label


LABEL_IDS: dict[str, int] = {name: _label_id(name) for name in ORGAN_TABLE}
