"""Find and check a labelled dataset before training starts, so that bad data fails in seconds.

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

Label names become prompts through the organ vocabulary (``kidney_left``, ``RK``, ``ivc`` resolve
to the abdomen13 organs); unknown names are prompted verbatim. Only headers are read by
:func:`load_dataset`; :func:`validate_label_values` is the one pass that reads label voxels.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import InputError
from ..vocabulary import Organ, generated_color, laterality_of, lookup, normalize

log = logging.getLogger(__name__)

IMAGE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
LAYOUTS = ("Accepted layouts: nnU-Net v2 / Decathlon (dataset.json, imagesTr/CASE_0000.nii.gz, "
           "labelsTr/CASE.nii.gz), or a folder with labels.json {name: id} and CASE_image.nii.gz + "
           "CASE_label.nii.gz pairs (or images/ + labels/ subfolders with matching names).")
# Header tolerances: NIfTI stores geometry as float32, and resampling tools round differently.
SPACING_RTOL, ORIGIN_ATOL_MM, DIRECTION_ATOL = 1e-4, 1e-3, 1e-4
_MAX_NAMED = 8


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


# --------------------------------------------------------------------------- label table


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
        if decathlon:
            label_id, name = int(key), str(value)
        else:
            name = str(key)
            if isinstance(value, (list, tuple)):
                raise InputError(
                    f"label '{name}' in {source} is an nnU-Net region (a list of ids: {list(value)})",
                    "TGatedSegment needs one id per organ: give each organ its own id in the labels and label files.")
            label_id = _int_text(value)
            if label_id is None:
                raise InputError(f"label '{name}' in {source} has id {value!r}, not an integer", hint)
        if label_id < 0:
            raise InputError(f"label '{name}' in {source} has a negative id ({label_id})", hint)
        if label_id == 0 or normalize(name) == "background":
            continue
        if label_id in names:
            raise InputError(f"labels '{names[label_id]}' and '{name}' in {source} share id {label_id}",
                             "Give every organ its own id.")
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
                f"both mean '{organ.prompt}'", "Merge them into one label id or rename one of them.")
        seen[key] = label_id
    if unknown:
        log.warning("label names not in the organ vocabulary, used verbatim as prompts: %s", _named(unknown))
    return organs


# --------------------------------------------------------------------------- discovery


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})",
                         "Fix the file; a JSON validator shows the exact spot.") from None
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
            raise InputError(f"case '{stem}' has two files in {folder}: {found[stem].name} and {path.name}",
                             "Keep one file per case.")
        found[stem] = path
    return found


def _cases_have(ids: list[str], root: Path, what: str) -> str:
    quoted = _named(f"'{i}'" for i in ids)
    return f"case {quoted} in {root} has {what}" if len(ids) == 1 else f"cases {quoted} in {root} have {what}"


def _pair_errors(root: Path, unlabelled: list[str], imageless: list[str], label_hint: str, image_hint: str) -> None:
    """Hints spell file names with CASE, filled in when exactly one case is at fault."""
    for ids, what, hint in ((unlabelled, "an image but no label", label_hint),
                            (imageless, "a label but no image", image_hint)):
        if ids:
            raise InputError(_cases_have(ids, root, what), hint.replace("CASE", ids[0]) if len(ids) == 1 else hint)


def _other_endings(*folders: Path) -> list[str]:
    found = {e for folder in folders for p in folder.iterdir() if not p.name.startswith(".")
             for e in IMAGE_ENDINGS if p.name.lower().endswith(e)}
    return sorted(found)


def _load_nnunet(root: Path) -> Dataset:
    label_file = root / "dataset.json"
    meta = _read_json(label_file)
    if not isinstance(meta, dict):
        raise InputError(f"{label_file} is not a JSON object", LAYOUTS)
    ending = meta.get("file_ending", ".nii.gz")
    if not isinstance(ending, str) or not ending.startswith("."):
        raise InputError(f"{label_file} has file_ending {ending!r}", 'Use an ending such as ".nii.gz", ".nrrd" or ".mha".')
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    for folder in (images_dir, labels_dir):
        if not folder.is_dir():
            raise InputError(f"{root} has dataset.json but no {folder.name}/ folder",
                             f"Put images in imagesTr/CASE_0000{ending} and labels in labelsTr/CASE{ending}.")
    label_names = parse_label_map(meta.get("labels"), label_file)
    images, labels = _files(images_dir, [ending]), _files(labels_dir, [ending])

    cases_meta = meta.get("cases") if isinstance(meta.get("cases"), dict) else {}
    channels = meta.get("channel_names") or meta.get("modality") or {}
    default_modality = channels.get("0") if isinstance(channels, dict) else None

    cases, claimed, imageless = [], set(), []
    for case_id, label in labels.items():
        stem = next((s for s in (f"{case_id}_0000", case_id) if s in images), None)
        if stem is None:
            imageless.append(case_id)
            continue
        claimed.add(stem)
        info = cases_meta.get(case_id) if isinstance(cases_meta.get(case_id), dict) else {}
        annotated = _annotated(info.get("annotated"), case_id, label_names, label_file)
        modality = info.get("modality", default_modality)
        hard = info.get("oversample_slices") or ()
        if not isinstance(hard, (list, tuple)) or not all(isinstance(k, int) and k >= 0 for k in hard):
            raise InputError(f"case '{case_id}': 'oversample_slices' in {label_file} is not a list of slice indices",
                             'Write it as e.g. "oversample_slices": [12, 13, 40].')
        cases.append(Case(case_id, images[stem], label, annotated, str(modality) if modality else None,
                          tuple(int(k) for k in hard)))

    extra_channels, unlabelled = [], []
    for stem in images:
        if stem in claimed:
            continue
        match = re.fullmatch(r"(.+)_(\d{4})", stem)
        if match and match.group(1) in labels:
            extra_channels.append(stem + ending)
        else:
            unlabelled.append(match.group(1) if match and match.group(2) == "0000" else stem)
    _pair_errors(root, unlabelled, imageless,
                 f"Add labelsTr/CASE{ending}, or move the image out of imagesTr/.",
                 f"Add imagesTr/CASE_0000{ending}, or move the label out of labelsTr/.")
    if not cases:
        others = [e for e in _other_endings(images_dir, labels_dir) if e != ending]
        if others:
            raise InputError(f"no {ending} files in {images_dir.name}/ and {labels_dir.name}/ of {root} "
                             f"(found {', '.join(others)})",
                             f'Set "file_ending" in dataset.json to the files\' ending, e.g. "{others[0]}".')
    if extra_channels:
        log.warning("only channel 0 is used; ignoring %d extra-channel image(s): %s",
                    len(extra_channels), _named(extra_channels))
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
        raise InputError(f"case '{case_id}': 'annotated' in {source} is not a list of label ids ({value!r})",
                         'Write it as e.g. "annotated": [1, 2, 3].')
    unknown = sorted({i for i in ids if i and i not in label_names})
    if unknown:
        raise InputError(f"case '{case_id}': 'annotated' in {source} lists ids not in its labels: "
                         f"{', '.join(map(str, unknown))}", "Fix the case's 'annotated' list or add the ids to 'labels'.")
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
                raise InputError(f"{root} has {other}/ but no {folder.name}/ folder",
                                 "Put images in images/ and labels in labels/ with the same file names.")
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
    _pair_errors(root, [c for c in images if c not in labels], [c for c in labels if c not in images],
                 label_hint, image_hint)
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


# --------------------------------------------------------------------------- checks


def _header(path: Path, case_id: str, what: str) -> dict:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1].replace("sitk::ERROR:", "").strip() or "unreadable"
        raise InputError(f"case '{case_id}': cannot read the {what} {path} ({reason[:160]})",
                         "Check that the file is a complete image ITK can read (NIfTI, NRRD, MHA).") from None
    dimension = reader.GetDimension()
    if dimension != 3 or reader.GetNumberOfComponents() != 1:
        raise InputError(
            f"case '{case_id}': the {what} is {dimension}D with {reader.GetNumberOfComponents()} component(s) "
            f"(size {reader.GetSize()}), not a scalar 3D volume",
            "Give one 3D volume per file; split multi-channel images into CASE_0000, CASE_0001 (channel 0 is used).")
    return {"size": reader.GetSize(), "spacing": reader.GetSpacing(), "origin": reader.GetOrigin(),
            "direction": reader.GetDirection()}


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def check_case_geometry(dataset: Dataset) -> None:
    """Image and label must share one voxel grid; compares headers only (no voxels are read)."""
    fix = ("Resample the label onto the image grid (nearest neighbour), or copy the image's geometry onto "
           "the label if only its header is wrong.")
    for case in dataset.cases:
        image = _header(case.image, case.case_id, "image")
        label = _header(case.label, case.case_id, "label")
        if image["size"] != label["size"]:
            raise InputError(f"case '{case.case_id}': image size {image['size']} differs from label size {label['size']}",
                             "Resample the label onto the image grid (nearest neighbour) so that both have one size.")
        checks = (
            ("spacing", np.allclose(image["spacing"], label["spacing"], rtol=SPACING_RTOL, atol=0)),
            ("origin", np.allclose(image["origin"], label["origin"], rtol=0, atol=ORIGIN_ATOL_MM)),
            ("direction", np.allclose(image["direction"], label["direction"], rtol=0, atol=DIRECTION_ATOL)),
        )
        for name, same in checks:
            if not same:
                raise InputError(f"case '{case.case_id}': image {name} {_fmt(image[name])} differs from "
                                 f"label {name} {_fmt(label[name])}", fix)


def _values(path: Path, case_id: str) -> list[float]:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError:
        raise InputError(f"case '{case_id}': cannot read the label {path}",
                         "Check that the file is a complete image ITK can read.") from None
    array = sitk.GetArrayViewFromImage(image)  # a view: ``image`` must stay alive while it is used
    if np.issubdtype(array.dtype, np.integer) and array.size and array.min() >= 0:
        return [float(v) for v in np.flatnonzero(np.bincount(array.ravel()))]
    return [float(v) for v in np.unique(array)]


def validate_label_values(dataset: Dataset) -> dict[str, tuple[int, ...]]:
    """Read every label once; return each case's organ ids, or fail naming every bad case and id."""
    allowed = set(dataset.label_names) | {0}
    present: dict[str, tuple[int, ...]] = {}
    bad: list[str] = []
    for case in dataset.cases:
        values = _values(case.label, case.case_id)
        wrong = [v for v in values if not v.is_integer() or int(v) not in allowed]
        if wrong:
            bad.append(f"'{case.case_id}' ({', '.join(f'{v:g}' for v in wrong)})")
        ids = tuple(int(v) for v in values if v.is_integer() and int(v) in dataset.label_names)
        present[case.case_id] = ids
        if case.annotated is not None and set(ids) - set(case.annotated):
            log.warning("case '%s' labels ids %s that its 'annotated' list leaves out", case.case_id,
                        sorted(set(ids) - set(case.annotated)))
    if bad:
        source = dataset.label_file.name
        raise InputError(f"label files hold values not declared in {source}: case {'; case '.join(bad)}",
                         f"Add those ids to the labels in {source}, or set those voxels to 0 (background).")
    return present


def split_dataset(dataset: Dataset, n_val: int, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Hold out ``n_val`` cases, chosen by ``seed`` from the sorted case ids (same split on every machine)."""
    n = len(dataset.cases)
    if isinstance(n_val, bool) or not isinstance(n_val, (int, np.integer)) or not 0 <= n_val < n:
        raise InputError(f"cannot hold out {n_val!r} validation case(s) from a dataset of {n}",
                         f"Use between 0 and {max(n - 1, 0)} validation cases so that at least one is left to train on.")
    ordered = sorted(dataset.cases, key=lambda case: case.case_id)
    order = np.random.default_rng(int(seed)).permutation(n)
    val_ids = {ordered[i].case_id for i in order[: int(n_val)]}
    train = [case for case in ordered if case.case_id not in val_ids]
    val = [case for case in ordered if case.case_id in val_ids]
    return replace(dataset, cases=train), replace(dataset, cases=val)
