"""Synthetic abdominal CT phantoms (the project's embedded default data); see :mod:`.generator`."""

from .generator import (
    LABEL_IDS,
    ORGAN_TABLE,
    TARGET_ORGAN,
    TISSUE_HU,
    Distractor,
    Phantom,
    PhantomSpec,
    blob_extents,
    case_name,
    generate_phantom,
    time_generation,
    write_phantom_dataset,
)

__all__ = [
    "LABEL_IDS",
    "ORGAN_TABLE",
    "TARGET_ORGAN",
    "TISSUE_HU",
    "Distractor",
    "Phantom",
    "PhantomSpec",
    "blob_extents",
    "case_name",
    "generate_phantom",
    "time_generation",
    "write_phantom_dataset",
]
