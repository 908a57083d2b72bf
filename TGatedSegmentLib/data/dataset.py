"""Find the cases of a labelled dataset folder (training and evaluation read datasets alike).

Accepted layouts:

* nnU-Net v2 / Decathlon: ``dataset.json`` next to ``imagesTr/CASE_0000<ending>`` (or
  ``imagesTr/CASE<ending>`` as in the Decathlon archives) and ``labelsTr/CASE<ending>``; the ending
  is dataset.json's ``file_ending`` (default ``.nii.gz``). ``labels`` may be nnU-Net v2's
  ``{name: id}`` or Decathlon's ``{"id": name}``. An optional ``cases`` entry
  ``{CASE: {"annotated": [ids], "modality": ..., "oversample_slices": [k, ...]}}`` says which organs a
  case is labelled for at all, and which slices (indices along the image's third array axis, ITK's
  k) are hard and drawn more often by the ``slices`` batching (the phantom lists its look-alikes).
* a plain folder with ``labels.json`` (``{name: id}``) and either ``CASE_image<ext>`` /
  ``CASE_label<ext>`` pairs or ``images/`` + ``labels/`` subfolders with matching file names.

Label names become prompts through :mod:`.labels`. Only headers are read by :func:`load_dataset`
(:func:`.checks.check_case_geometry`); :func:`.checks.validate_label_values` is the one pass that
reads label voxels.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..errors import InputError
from ..vocabulary import Organ
from .checks import check_case_geometry
from .labels import _int_text, _named, organs_for, parse_label_map

log = logging.getLogger(__name__)

IMAGE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
LAYOUTS = (
    "Accepted layouts: nnU-Net v2 / Decathlon (dataset.json, imagesTr/CASE_0000.nii.gz, "
    "labelsTr/CASE.nii.gz), or a folder with labels.json {name: id} and CASE_image.nii.gz + "
    "CASE_label.nii.gz pairs (or images/ + labels/ subfolders with matching names)."
)


@dataclass
class Case:
    """One image/label pair. ``annotated`` (label ids) limits scoring to what the source labels."""

    case_id: str
    image: Path
    label: Path
    annotated: tuple[int, ...] | None = None
    modality: str | None = None
    hard_slices: tuple[int, ...] = ()  # k indices of slices to oversample ("oversample_slices")


@dataclass
class Dataset:
    """Cases plus the label table. ``organs`` is keyed by the dataset's label ids.

    A resolved vocabulary organ keeps its own ``label`` (the FLARE22 id) and prompt; always read
    label voxels by the dict key, never by ``Organ.label``.
    """

    root: Path
    cases: list[Case]
    label_names: dict[int, str]
    organs: dict[int, Organ]
    label_file: Path  # the JSON declaring the labels, named in error messages
    layout: str = "nnunet"  # "nnunet", "pairs" or "folders"

    @property
    def case_ids(self) -> list[str]:
        return [case.case_id for case in self.cases]

    def scored_ids(self, case: Case) -> tuple[int, ...]:
        """The label ids a case can be scored on: its ``annotated`` list, else every label."""
        return case.annotated if case.annotated is not None else tuple(self.label_names)


# --------------------------------------------------------------------------- discovery


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})",
            "Fix the file; a JSON validator shows the exact spot.",
        ) from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}", "Check the file's permissions.") from None


def _files(folder: Path, endings: Iterable[str]) -> dict[str, Path]:
    """Visible files by name minus ending (``._x`` macOS forks in Decathlon tarballs are skipped)."""
    endings = sorted(endings, key=len, reverse=True)
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        ending = next((e for e in endings if path.name.lower().endswith(e.lower())), None)
        if ending is None:
            continue
        stem = path.name[: -len(ending)]
        if stem in found:
            raise InputError(
                f"case '{stem}' has two files in {folder}: {found[stem].name} and {path.name}",
                "Keep one file per case.",
            )
        found[stem] = path
    return found


def _cases_have(ids: list[str], root: Path, what: str) -> str:
    quoted = _named(f"'{i}'" for i in ids)
    return f"case {quoted} in {root} has {what}" if len(ids) == 1 else f"cases {quoted} in {root} have {what}"


def _pair_errors(root: Path, unlabelled: list[str], imageless: list[str], label_hint: str, image_hint: str) -> None:
    """Hints spell file names with CASE, filled in when exactly one case is at fault."""
    for ids, what, hint in (
        (unlabelled, "an image but no label", label_hint),
        (imageless, "a label but no image", image_hint),
    ):
        if ids:
            raise InputError(_cases_have(ids, root, what), hint.replace("CASE", ids[0]) if len(ids) == 1 else hint)


def _other_endings(*folders: Path) -> list[str]:
    found = {
        e
        for folder in folders
        for p in folder.iterdir()
        if not p.name.startswith(".")
        for e in IMAGE_ENDINGS
        if p.name.lower().endswith(e)
    }
    return sorted(found)


def _load_nnunet(root: Path) -> Dataset:
    label_file = root / "dataset.json"
    meta = _read_json(label_file)
    if not isinstance(meta, dict):
        raise InputError(f"{label_file} is not a JSON object", LAYOUTS)
    ending = meta.get("file_ending", ".nii.gz")
    if not isinstance(ending, str) or not ending.startswith("."):
        raise InputError(
            f"{label_file} has file_ending {ending!r}", 'Use an ending such as ".nii.gz", ".nrrd" or ".mha".'
        )
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    for folder in (images_dir, labels_dir):
        if not folder.is_dir():
            raise InputError(
                f"{root} has dataset.json but no {folder.name}/ folder",
                f"Put images in imagesTr/CASE_0000{ending} and labels in labelsTr/CASE{ending}.",
            )
    label_names = parse_label_map(meta.get("labels"), label_file)
    images, labels = _files(images_dir, [ending]), _files(labels_dir, [ending])

    cases_meta = listed if isinstance(listed := meta.get("cases"), dict) else {}
    channels = meta.get("channel_names") or meta.get("modality") or {}
    default_modality = channels.get("0") if isinstance(channels, dict) else None

    cases, claimed, imageless = [], set(), []
    for case_id, label in labels.items():
        stem = next((s for s in (f"{case_id}_0000", case_id) if s in images), None)
        if stem is None:
            imageless.append(case_id)
            continue
        claimed.add(stem)
        info = entry if isinstance(entry := cases_meta.get(case_id), dict) else {}
        annotated = _annotated(info.get("annotated"), case_id, label_names, label_file)
        modality = info.get("modality", default_modality)
        hard = info.get("oversample_slices") or ()
        if not isinstance(hard, (list, tuple)) or not all(isinstance(k, int) and k >= 0 for k in hard):
            raise InputError(
                f"case '{case_id}': 'oversample_slices' in {label_file} is not a list of slice indices",
                'Write it as e.g. "oversample_slices": [12, 13, 40].',
            )
        cases.append(
            Case(
                case_id,
                images[stem],
                label,
                annotated,
                str(modality) if modality else None,
                tuple(int(k) for k in hard),
            )
        )

    extra_channels, unlabelled = [], []
    for stem in images:
        if stem in claimed:
            continue
        match = re.fullmatch(r"(.+)_(\d{4})", stem)
        if match and match.group(1) in labels:
            extra_channels.append(stem + ending)
        else:
            unlabelled.append(match.group(1) if match and match.group(2) == "0000" else stem)
    _pair_errors(
        root,
        unlabelled,
        imageless,
        f"Add labelsTr/CASE{ending}, or move the image out of imagesTr/.",
        f"Add imagesTr/CASE_0000{ending}, or move the label out of labelsTr/.",
    )
    if not cases:
        others = [e for e in _other_endings(images_dir, labels_dir) if e != ending]
        if others:
            raise InputError(
                f"no {ending} files in {images_dir.name}/ and {labels_dir.name}/ of {root} (found {', '.join(others)})",
                f'Set "file_ending" in dataset.json to the files\' ending, e.g. "{others[0]}".',
            )
    if extra_channels:
        log.warning(
            "only channel 0 is used; ignoring %d extra-channel image(s): %s",
            len(extra_channels),
            _named(extra_channels),
        )
    missing_meta = sorted(set(cases_meta) - set(labels))
    if missing_meta:
        log.warning("dataset.json 'cases' lists case(s) without files: %s", _named(missing_meta))
    declared = meta.get("numTraining")
    if isinstance(declared, int) and cases and declared != len(cases):
        log.warning("dataset.json says numTraining=%d but %s holds %d case(s)", declared, root, len(cases))
    return Dataset(root, cases, label_names, organs_for(label_names), label_file, "nnunet")


def _annotated(value: Any, case_id: str, label_names: dict[int, str], source: Path) -> tuple[int, ...] | None:
    if value is None:
        return None
    ids = [_int_text(v) for v in value] if isinstance(value, (list, tuple)) else [None]
    if any(i is None for i in ids):
        raise InputError(
            f"case '{case_id}': 'annotated' in {source} is not a list of label ids ({value!r})",
            'Write it as e.g. "annotated": [1, 2, 3].',
        )
    unknown = sorted({i for i in ids if i and i not in label_names})
    if unknown:
        raise InputError(
            f"case '{case_id}': 'annotated' in {source} lists ids not in its labels: {', '.join(map(str, unknown))}",
            "Fix the case's 'annotated' list or add the ids to 'labels'.",
        )
    return tuple(sorted({i for i in ids if i}))


def _load_plain(root: Path) -> Dataset:
    label_file = root / "labels.json"
    raw = _read_json(label_file)
    if isinstance(raw, dict) and isinstance(raw.get("labels"), dict):
        raw = raw["labels"]
    label_names = parse_label_map(raw, label_file)
    images_dir, labels_dir = root / "images", root / "labels"
    if images_dir.is_dir() or labels_dir.is_dir():
        for folder in (images_dir, labels_dir):
            if not folder.is_dir():
                other = "labels" if folder is images_dir else "images"
                raise InputError(
                    f"{root} has {other}/ but no {folder.name}/ folder",
                    "Put images in images/ and labels in labels/ with the same file names.",
                )
        layout = "folders"
        images, labels = _files(images_dir, IMAGE_ENDINGS), _files(labels_dir, IMAGE_ENDINGS)
        label_hint = "Add a label of the same file name to labels/, or move the image out of images/."
        image_hint = "Add an image of the same file name to images/, or move the label out of labels/."
    else:
        layout = "pairs"
        found = _files(root, IMAGE_ENDINGS)
        images = {s[: -len("_image")]: p for s, p in found.items() if s.endswith("_image")}
        labels = {s[: -len("_label")]: p for s, p in found.items() if s.endswith("_label")}
        label_hint = "Add CASE_label.nii.gz next to CASE_image.nii.gz, or move the image away."
        image_hint = "Add CASE_image.nii.gz next to CASE_label.nii.gz, or move the label away."
    _pair_errors(
        root, [c for c in images if c not in labels], [c for c in labels if c not in images], label_hint, image_hint
    )
    cases = [Case(case_id, images[case_id], labels[case_id]) for case_id in sorted(images)]
    return Dataset(root, cases, label_names, organs_for(label_names), label_file, layout)


def load_dataset(path: str | Path, check_geometry: bool = True) -> Dataset:
    """Discover a dataset's cases and labels; with ``check_geometry`` also compare image/label headers."""
    root = Path(path).expanduser()
    if root.is_file() and root.name in ("dataset.json", "labels.json"):
        root = root.parent
    if not root.exists():
        raise InputError(f"dataset folder {root} does not exist", "Check the path given as the training data.")
    if not root.is_dir():
        raise InputError(f"{root} is a file, not a dataset folder", LAYOUTS)
    if (root / "dataset.json").is_file():
        dataset = _load_nnunet(root)
    elif (root / "labels.json").is_file():
        dataset = _load_plain(root)
    else:
        raise InputError(f"{root} has no dataset.json (nor labels.json)", LAYOUTS)
    if not dataset.cases:
        raise InputError(f"dataset {root} has no cases (no image/label pairs found)", LAYOUTS)
    if check_geometry:
        check_case_geometry(dataset)
    return dataset
