"""Label tables: ``{name: id}`` / ``{"id": name}`` maps and the prompts their names become.

Label names become prompts through the organ vocabulary (``kidney_left``, ``RK``, ``ivc`` resolve
to the abdomen13 organs); unknown names are prompted verbatim, with a warning.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Iterable

from ..errors import InputError
from ..vocabulary import Organ, generated_color, laterality_of, lookup, normalize

log = logging.getLogger(__name__)

_MAX_NAMED = 8


def _int_text(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    return None


def _named(items: Iterable[str]) -> str:
    items = list(items)
    shown = ", ".join(items[:_MAX_NAMED])
    return shown + (f" and {len(items) - _MAX_NAMED} more" if len(items) > _MAX_NAMED else "")


def parse_label_map(raw: Any, source: Path) -> dict[int, str]:
    """``{name: id}`` (nnU-Net v2) or ``{"id": name}`` (Decathlon) -> ``{id: name}`` without background."""
    hint = f'Write the labels in {source.name} as {{"background": 0, "liver": 1, ...}}.'
    if not isinstance(raw, dict) or not raw:
        raise InputError(f"{source} has no 'labels' map", hint)
    decathlon = all(_int_text(k) is not None for k in raw) and all(isinstance(v, str) for v in raw.values())
    names: dict[int, str] = {}
    for key, value in raw.items():
        label_id: int | None
        if decathlon:
            label_id, name = int(key), str(value)
        else:
            name = str(key)
            if isinstance(value, (list, tuple)):
                raise InputError(
                    f"label '{name}' in {source} is an nnU-Net region (a list of ids: {list(value)})",
                    "TGatedSegment needs one id per organ: give each organ its own id in the labels and label files.",
                )
            label_id = _int_text(value)
            if label_id is None:
                raise InputError(f"label '{name}' in {source} has id {value!r}, not an integer", hint)
        if label_id < 0:
            raise InputError(f"label '{name}' in {source} has a negative id ({label_id})", hint)
        if label_id == 0 or normalize(name) == "background":
            continue
        if label_id in names:
            raise InputError(
                f"labels '{names[label_id]}' and '{name}' in {source} share id {label_id}",
                "Give every organ its own id.",
            )
        names[label_id] = name.strip()
    if not names:
        raise InputError(f"{source} declares no organ labels (only background)", hint)
    return dict(sorted(names.items()))


def organs_for(label_names: dict[int, str]) -> dict[int, Organ]:
    """Vocabulary organs for label names; unknown names become verbatim prompts (with a warning)."""
    organs: dict[int, Organ] = {}
    unknown: list[str] = []
    for index, (label_id, name) in enumerate(label_names.items()):
        organ = lookup(name)
        if organ is None:
            prompt = re.sub(r"\s+", " ", name.replace("_", " ")).strip()
            organ = Organ(name=name, prompt=prompt, lateral=laterality_of(name), color=generated_color(index))
            unknown.append(name)
        organs[label_id] = organ
    seen: dict[str, int] = {}
    for label_id, organ in organs.items():
        key = normalize(organ.prompt)
        if key in seen:  # two ids trained on one prompt would contradict each other
            first = seen[key]
            raise InputError(
                f"labels '{label_names[first]}' ({first}) and '{label_names[label_id]}' ({label_id}) "
                f"both mean '{organ.prompt}'",
                "Merge them into one label id or rename one of them.",
            )
        seen[key] = label_id
    if unknown:
        log.warning("label names not in the organ vocabulary, used verbatim as prompts: %s", _named(unknown))
    return organs
