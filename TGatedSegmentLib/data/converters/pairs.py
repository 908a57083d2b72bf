"""Datasets stored as an image folder and a label folder (AMOS22, FLARE22, BTCV).

Each names its files differently; a regular expression per folder pulls out the case key, so that
an image and a label pair up by key, whatever the prefixes and suffixes.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

from ...errors import InputError
from .writer import LabelSpec, SourceCase, read_label_values


def find_root(root: Path, title: str, candidates: tuple[str, ...], needs: tuple[str, ...], hint: str) -> Path:
    """The first of ``root/candidate`` that holds every folder in ``needs``; else an InputError."""
    if not root.is_dir():
        raise InputError(
            f"the {title} folder {root} does not exist"
            if not root.exists()
            else f"{root} is a file, not a {title} folder",
            hint,
        )
    for candidate in candidates:
        folder = root / candidate if candidate else root
        if all((folder / need).is_dir() for need in needs):
            return folder
    raise InputError(
        f"{root} does not look like {title}: no {' and '.join(n + '/' for n in needs)} folders in it", hint
    )


def keyed_files(folder: Path, pattern: str) -> dict[str, Path]:
    """Files of ``folder`` whose name matches ``pattern`` (group 1 is the key), by key."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        match = re.fullmatch(pattern, path.name)
        if match and path.is_file() and not path.name.startswith("."):
            found[match.group(1)] = path
    return found


def pair_files(
    images_dir: Path, labels_dir: Path, image_pattern: str, label_pattern: str, example: str
) -> list[tuple[str, Path, Path]]:
    """``(key, image, label)`` for every case; an image without label (or the reverse) is an InputError."""
    images = keyed_files(images_dir, image_pattern)
    labels = keyed_files(labels_dir, label_pattern)
    if not labels:
        raise InputError(
            f"no label files in {labels_dir} (expected names like {example})",
            "Point --input at the extracted dataset folder, unchanged.",
        )
    for missing, have, where in (
        (sorted(set(labels) - set(images)), labels, images_dir),
        (sorted(set(images) - set(labels)), images, labels_dir),
    ):
        if missing:
            shown = ", ".join(have[k].name for k in missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise InputError(
                f"{len(missing)} file(s) have no counterpart in {where}: {shown}",
                "Re-extract the archive (a file is missing), or move the unpaired files away.",
            )
    return [(key, images[key], labels[key]) for key in sorted(labels)]


def paired_case(
    case_id: str, modality: str, image: Path, label: Path, labels: list[LabelSpec], split: str | None, source: str
) -> SourceCase:
    """A case whose image file is used as it is and whose label values must be in ``labels``."""
    allowed = {spec.value for spec in labels}
    return SourceCase(case_id, modality, partial(_read_pair, image, label, case_id, allowed), split, source)


def _read_pair(image: Path, label: Path, case_id: str, allowed: set[int]):
    return image, read_label_values(label, case_id, allowed)
