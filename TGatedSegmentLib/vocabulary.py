"""Organ vocabulary: prompts, aliases, laterality, sampling weights, colours and SNOMED terminology.

The ``abdomen13`` preset holds the 13 FLARE22 organs (label ids in FLARE22 order) with the
sampling weights of the T-Gated paper's Table 1 and the SNOMED CT codes Slicer's "General Anatomy"
terminology uses. :data:`EXTENDED` adds every other class of the public datasets that
``tgated prepare`` converts (TotalSegmentator, AMOS22, FLARE22, BTCV, CHAOS), read from
``vocabulary.json`` so that the facts (codes, aliases) stay data, not code. Extended organs have a
canonical prompt, aliases and SNOMED codes but no ``color`` (their recommended display colour is
:func:`recommended_color`), so that Slicer keeps colouring them from its own terminology. Free-text
prompts that are in neither table still work: they get a generated colour and no terminology code.
"""

from __future__ import annotations

import colorsys
import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .errors import InputError

ANATOMICAL_STRUCTURE = ("SCT", "123037004", "Anatomical Structure")
TERMINOLOGY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
REGION_CONTEXT = "Anatomic codes - DICOM master list"
LATERALITY_CODES = {"right": ("SCT", "24028007", "Right"), "left": ("SCT", "7771000", "Left")}


@dataclass(frozen=True)
class Organ:
    """One entry of the vocabulary. ``label`` is the FLARE22 id for preset organs, else 0.

    ``snomed_category`` (default Anatomical Structure) and ``snomed_region`` (the anatomic region,
    e.g. Kidney for a kidney cyst) are only set where the coding needs them; laterality then
    qualifies the region instead of the type.
    """

    name: str
    prompt: str
    label: int = 0
    lateral: str | None = None  # "left", "right" or None: lateral organs are never flipped
    sampling_weight: float = 1.0
    snomed_type: tuple[str, str] | None = None  # (code, meaning)
    color: tuple[int, int, int] | None = None  # 0..255
    aliases: tuple[str, ...] = field(default=(), compare=False)
    snomed_category: tuple[str, str] | None = None  # (code, meaning); None: Anatomical Structure
    snomed_region: tuple[str, str] | None = None  # (code, meaning) of the anatomic region, if any

    def terminology(self) -> str | None:
        """Slicer's 7-part ``TerminologyEntry`` tag, or None when the organ has no SNOMED code."""
        if self.snomed_type is None:
            return None
        code, meaning = self.snomed_type
        side = "^".join(LATERALITY_CODES[self.lateral]) if self.lateral else "^^"
        category = ("SCT", *self.snomed_category) if self.snomed_category else ANATOMICAL_STRUCTURE
        region = f"SCT^{self.snomed_region[0]}^{self.snomed_region[1]}" if self.snomed_region else "^^"
        return "~".join(
            [
                TERMINOLOGY_CONTEXT,
                "^".join(category),
                f"SCT^{code}^{meaning}",
                "^^" if self.snomed_region else side,
                REGION_CONTEXT,
                region,
                side if self.snomed_region else "^^",
            ]
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["aliases"] = list(self.aliases)
        for key in ("snomed_category", "snomed_region"):  # absent when unset: older readers see no change
            if d[key] is None:
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Organ":
        d = dict(d)
        for key in ("snomed_type", "color", "aliases", "snomed_category", "snomed_region"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        d.setdefault("aliases", ())
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def _organ(label, name, prompt, lateral, weight, code, meaning, rgb, aliases=()):
    return Organ(name, prompt, label, lateral or None, weight, (code, meaning), rgb, tuple(aliases))


def _sided(label, side, organ, weight, snomed_and_color, aliases):
    """One side of a paired organ: name ``right_kidney``, prompt ``right kidney``, laterality ``right``."""
    code, meaning, rgb = snomed_and_color
    return _organ(
        label, f"{side}_{organ.replace(' ', '_')}", f"{side} {organ}", side, weight, code, meaning, rgb, aliases
    )


# The paired organs' SNOMED type and colour: the same on both sides.
_KIDNEY = ("64033007", "Kidney", (212, 126, 151))
_ADRENAL_GLAND = ("23451007", "Adrenal gland", (199, 27, 27))

# Facts from the FLARE22 label table, the paper's Table 1 and Slicer's General Anatomy terminology.
ABDOMEN13: tuple[Organ, ...] = (
    _organ(1, "liver", "liver", None, 1.0, "10200004", "Liver", (221, 130, 101), ["hepar"]),
    _sided(2, "right", "kidney", 1.0, _KIDNEY, ["kidney_right", "kidney_r", "r_kidney", "rk", "kidney r"]),
    _organ(3, "spleen", "spleen", None, 1.0, "78961009", "Spleen", (157, 108, 162), ["lien"]),
    _organ(4, "pancreas", "pancreas", None, 3.0, "15776009", "Pancreas", (249, 180, 111), ["panc"]),
    _organ(5, "aorta", "aorta", None, 1.0, "15825003", "Aorta", (224, 97, 76), ["abdominal aorta"]),
    _organ(
        6,
        "inferior_vena_cava",
        "inferior vena cava",
        None,
        1.0,
        "64131007",
        "Inferior vena cava",
        (110, 165, 54),
        ["ivc", "vena cava inferior", "postcava"],
    ),
    _sided(
        7,
        "right",
        "adrenal gland",
        8.0,
        _ADRENAL_GLAND,
        ["adrenal_gland_right", "right adrenal", "r_adrenal", "rag", "adrenal right"],
    ),
    _sided(
        8,
        "left",
        "adrenal gland",
        8.0,
        _ADRENAL_GLAND,
        ["adrenal_gland_left", "left adrenal", "l_adrenal", "lag", "adrenal left"],
    ),
    _organ(
        9, "gallbladder", "gallbladder", None, 2.0, "28231008", "Gallbladder", (139, 150, 98), ["gall bladder", "gb"]
    ),
    _organ(10, "esophagus", "esophagus", None, 8.0, "32849002", "Esophagus", (211, 171, 143), ["oesophagus", "eso"]),
    _organ(11, "stomach", "stomach", None, 2.0, "69695003", "Stomach", (160, 139, 76), ["sto"]),
    _organ(12, "duodenum", "duodenum", None, 5.0, "38848004", "Duodenum", (255, 253, 229), ["duo"]),
    _sided(13, "left", "kidney", 1.0, _KIDNEY, ["kidney_left", "kidney_l", "l_kidney", "lk", "kidney l"]),
)

PRESETS: dict[str, tuple[Organ, ...]] = {"abdomen13": ABDOMEN13}

VOCABULARY_FILE = Path(__file__).with_name("vocabulary.json")


def _load_extended(path: Path = VOCABULARY_FILE) -> tuple[tuple[Organ, ...], dict[str, tuple[int, int, int]]]:
    """The organs of ``vocabulary.json`` and their recommended display colours (by name)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    organs, colors = [], {}
    for entry in data["organs"]:
        organs.append(Organ.from_dict({k: v for k, v in entry.items() if k != "color"}))
        if entry.get("color"):
            colors[entry["name"]] = tuple(entry["color"])
    return tuple(organs), colors


#: Every class of the converted public datasets beyond abdomen13 (``label`` 0, no ``color``).
EXTENDED, _RECOMMENDED_COLORS = _load_extended()
#: All known organs; abdomen13 first, so that its names and aliases win any clash.
VOCABULARY: tuple[Organ, ...] = ABDOMEN13 + EXTENDED


def normalize(text: str) -> str:
    """Case-, underscore- and whitespace-insensitive key for matching names and aliases."""
    return re.sub(r"\s+", " ", re.sub(r"[_\-]+", " ", text.strip().lower())).strip()


def _build_index(organs) -> dict[str, Organ]:
    index: dict[str, Organ] = {}
    for organ in organs:
        for key in (organ.name, organ.prompt, *organ.aliases):
            index.setdefault(normalize(key), organ)
    return index


_INDEX = _build_index(VOCABULARY)


def laterality_of(text: str) -> str | None:
    """'left'/'right' when the words say so ("left lung", "kidney_R"), else None."""
    words = set(normalize(text).split())
    if words & {"left", "l", "sinister", "sin"}:
        return "left"
    if words & {"right", "r", "dexter", "dex"}:
        return "right"
    return None


def lookup(name: str) -> Organ | None:
    """The vocabulary organ a label name or prompt refers to (aliases included), else None."""
    return _INDEX.get(normalize(name))


def recommended_color(name: str) -> tuple[int, int, int] | None:
    """The table colour of a known organ, else its recommended display colour (TotalSegmentator's), else None."""
    organ = lookup(name)
    if organ is None:
        return None
    return organ.color or _RECOMMENDED_COLORS.get(organ.name)


def generated_color(index: int) -> tuple[int, int, int]:
    """Distinct colours for prompts without a table colour (golden-ratio hue steps)."""
    hue = (0.13 + index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.65, 0.95)
    return (round(r * 255), round(g * 255), round(b * 255))


def organ_for_prompt(prompt: str, index: int = 0) -> Organ:
    """The entry for a typed prompt, named as typed.

    A known organ or alias ("RK", "kidney_right") keeps the table's colour, terminology and
    canonical model prompt ("right kidney"); unknown text is fed to the model verbatim and gets a
    generated colour.
    """
    text = re.sub(r"\s+", " ", prompt).strip()
    found = lookup(text)
    if found is not None:
        return replace(found, name=text)
    return Organ(name=text, prompt=text, lateral=laterality_of(text), color=generated_color(index))


def parse_prompts(text: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """Split free text on commas and new lines; drop blanks and duplicates, keep order."""
    if text is None:
        return []
    parts = re.split(r"[,\n;]", text) if isinstance(text, str) else list(text)
    seen, prompts = set(), []
    for part in parts:
        prompt = re.sub(r"\s+", " ", str(part)).strip()
        if prompt and normalize(prompt) not in seen:
            seen.add(normalize(prompt))
            prompts.append(prompt)
    return prompts


def resolve_prompts(prompts: str | list | None = None, preset: str | None = None) -> list[Organ]:
    """Prompts (free text, a list of strings or of Organs) and/or a preset name -> the organs to segment."""
    organs: list[Organ] = []
    if preset:
        key = preset.strip().lower()
        if key not in PRESETS:
            raise InputError(f"unknown preset '{preset}'", f"Use one of: {', '.join(sorted(PRESETS))}.")
        organs.extend(replace(o, name=o.prompt) for o in PRESETS[key])
    known = {normalize(o.prompt) for o in organs}
    if isinstance(prompts, (list, tuple)) and prompts and all(isinstance(p, Organ) for p in prompts):
        entries = list(prompts)  # already resolved (e.g. by the CLI before loading the model)
    else:
        entries = [organ_for_prompt(p, index=i + len(organs)) for i, p in enumerate(parse_prompts(prompts))]
    for organ in entries:
        if normalize(organ.prompt) not in known:  # "RK" and "right kidney" are one segment
            known.add(normalize(organ.prompt))
            organs.append(organ)
    if not organs:
        raise InputError(
            "no prompt given (the prompt list is empty)",
            'Pass organ names, e.g. --prompts "liver, left kidney", or --preset abdomen13.',
        )
    return organs
