"""Writing segmentations and probability maps onto the input's exact voxel grid.

Three segmentation formats, chosen by the output's extension:

* ``.seg.nrrd``: a Slicer segmentation (via slicerio) with one named, coloured segment per prompt
  and its SNOMED terminology, so Slicer shows "left kidney" in the right colour with no mapping
  step. Overlapping masks ("liver" and "liver lesion") stay overlapping: they go to separate layers,
  as Slicer itself stores them.
* ``.nii.gz`` / ``.nii`` / ``.nrrd`` / ``.mha``: one multi-label volume (value i+1 = organ i) for
  nnU-Net-style tools, plus a ``<stem>.json`` sidecar naming the labels, since the volume alone
  cannot.
* ``.dcm``: a DICOM Segmentation (BINARY, one segment per prompt with its SNOMED codes and colour)
  that references the source series; only for volumes read from a DICOM series folder
  (:mod:`.dicom_seg`, needs the optional highdicom).

Every file goes through :func:`atomic_path`: a cancelled or failed run never leaves a half-written
output, and an existing output is only replaced with ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import InputError, OutputError
from ..vocabulary import Organ, generated_color
from .atomic import atomic_path, refuse_existing, split_suffixes
from .dicom_seg import DICOM_SEG_SUFFIX  # highdicom itself loads only when a .dcm is written
from .nrrd_text import ascii_placeholders, put_utf8_text
from .volume import Geometry, image_from_array, read_image

SEG_SUFFIX = ".seg.nrrd"
SEG_NRRD_GZIP_LEVEL = 6
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
PROBABILITIES_INDEX = "probabilities.json"
PROMPT_TAG = "TGatedSegment.Prompt"
_TERMINOLOGY_TAG = "TerminologyEntry"
_FORMATS_HINT = "Use .seg.nrrd (Slicer segmentation), .nii.gz (labelmap + JSON sidecar) or .dcm (DICOM-SEG)."
_REFERENCE_GEOMETRY_DESCRIPTION = (
    "Image geometry description string determining the geometry of the labelmap that is created in course "
    "of conversion. Can be copied from a volume, using the button."
)


# --------------------------------------------------------------------------------------------------
# Paths


def _suffix(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(SEG_SUFFIX):
        return SEG_SUFFIX
    if name.endswith(DICOM_SEG_SUFFIX):
        return DICOM_SEG_SUFFIX
    return next((s for s in VOLUME_SUFFIXES if name.endswith(s)), "")


def sidecar_path(path: str | Path) -> Path:
    """``out.nii.gz`` -> ``out.json``: where a labelmap's or probability volume's names are kept."""
    path = Path(path)
    stem, _ = split_suffixes(path)
    return path.with_name(stem + ".json")


def _refuse_existing(paths: Sequence[Path], overwrite: bool) -> None:
    for path in paths:
        if path.is_dir():
            raise OutputError(f"'{path}' is a folder", "Choose a file name for --output, not a folder.")
        refuse_existing(path, overwrite)


@contextlib.contextmanager
def _writing(path: Path):
    """Turn writer failures (disk full, permissions) into one actionable line."""
    try:
        yield
    except (RuntimeError, OSError) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise OutputError(
            f"cannot write '{path}' ({reason[:200]})",
            "Check free disk space and write permission for the output folder.",
        ) from None


def _write_image(image: sitk.Image, tmp: Path) -> None:
    sitk.WriteImage(image, str(tmp), useCompression=True)


def _write_json(tmp: Path, payload: dict) -> None:
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def _check_stack(stack: np.ndarray, count: int, geometry: Geometry, what: str) -> None:
    if stack.ndim != 4 or stack.shape[1:] != geometry.array_shape:
        raise ValueError(f"{what} must have shape (K, k, j, i) = (K,) + {geometry.array_shape}, got {stack.shape}")
    if stack.shape[0] != count or count == 0:
        raise ValueError(f"{what} holds {stack.shape[0]} volumes for {count} names")


# --------------------------------------------------------------------------------------------------
# Segmentations


def write_segmentation(
    path: str | Path,
    masks: np.ndarray,
    organs: Sequence[Organ],
    geometry: Geometry,
    labelmap: np.ndarray | None = None,
    overwrite: bool = False,
    source: str | Path | None = None,
) -> list[Path]:
    """Write one segment per organ; returns the files written (with the sidecar, if any).

    ``masks`` is bool (K, k, j, i) on the input grid. ``labelmap`` (k, j, i), if given, is used
    as is for the labelmap formats (callers with probabilities resolve overlaps by argmax);
    without it the first organ in order wins where masks overlap. ``.seg.nrrd`` and ``.dcm``
    keep overlaps. ``source`` is the DICOM series folder the volume was read from; only ``.dcm``
    needs it (a DICOM-SEG references its source images).
    """
    path = Path(path)
    masks = np.asarray(masks).astype(bool, copy=False)
    _check_stack(masks, len(organs), geometry, "masks")
    suffix = _suffix(path)
    if suffix == SEG_SUFFIX:
        _refuse_existing([path], overwrite)
        segmentation = _slicer_segmentation(masks, organs, geometry)
        segmentation["segments"], utf8 = ascii_placeholders(segmentation["segments"])
        import slicerio

        with atomic_path(path) as tmp, _writing(path):
            # gzip level 6, not slicerio's 9: 5-10 % larger files, 7x faster on
            # speckled masks (an untrained model's 13 prompts spent seconds here; issue 12)
            slicerio.write_segmentation(str(tmp), segmentation, compression_level=SEG_NRRD_GZIP_LEVEL)
            put_utf8_text(tmp, utf8)  # names such as "肝臓" as UTF-8, as Slicer writes them
        return [path]
    if suffix == DICOM_SEG_SUFFIX:
        return _write_dicom_seg(path, masks, organs, geometry, source, overwrite)
    if not suffix:
        raise OutputError(f"cannot tell the output format of '{path.name}'", _FORMATS_HINT)

    sidecar = sidecar_path(path)
    _refuse_existing([path, sidecar], overwrite)
    labels = labelmap_from_masks(masks) if labelmap is None else _checked_labelmap(labelmap, len(organs), geometry)
    image = image_from_array(labels, geometry)
    with atomic_path(path) as tmp_image, atomic_path(sidecar) as tmp_json, _writing(path):
        _write_image(image, tmp_image)
        _write_json(tmp_json, _labelmap_sidecar(organs))
    return [path, sidecar]


def _write_dicom_seg(
    path: Path,
    masks: np.ndarray,
    organs: Sequence[Organ],
    geometry: Geometry,
    source: str | Path | None,
    overwrite: bool,
) -> list[Path]:
    from .dicom_seg import build_dicom_seg

    _refuse_existing([path], overwrite)
    colors = [_color(organ, index) for index, organ in enumerate(organs)]
    dataset = build_dicom_seg(masks, organs, colors, geometry, source)
    with atomic_path(path) as tmp, _writing(path):
        dataset.save_as(str(tmp))
    return [path]


def labelmap_from_masks(masks: np.ndarray) -> np.ndarray:
    """(k, j, i) labels, value i+1 for organ i; where masks overlap the first organ wins."""
    masks = np.asarray(masks, dtype=bool)
    labels = np.zeros(masks.shape[1:], dtype=_label_dtype(masks.shape[0]))
    for index in range(masks.shape[0] - 1, -1, -1):  # earlier organs overwrite later ones
        labels[masks[index]] = index + 1
    return labels


def _label_dtype(count: int) -> type[np.unsignedinteger]:
    if count > np.iinfo(np.uint16).max:
        raise ValueError(f"{count} organs do not fit a uint16 labelmap")
    return np.uint8 if count <= np.iinfo(np.uint8).max else np.uint16


def _checked_labelmap(labelmap: np.ndarray, count: int, geometry: Geometry) -> np.ndarray:
    labelmap = np.asarray(labelmap)
    if labelmap.shape != geometry.array_shape:
        raise ValueError(f"labelmap shape {labelmap.shape} does not match the geometry's {geometry.array_shape}")
    if labelmap.size and (labelmap.min() < 0 or labelmap.max() > count):
        raise ValueError(f"labelmap values must be 0..{count}, got {labelmap.min()}..{labelmap.max()}")
    return labelmap.astype(_label_dtype(count), copy=False)


def _color(organ: Organ, index: int) -> tuple[int, int, int]:
    return tuple(organ.color) if organ.color is not None else generated_color(index)  # type: ignore[return-value]


def _labelmap_sidecar(organs: Sequence[Organ]) -> dict:
    return {
        "labels": {organ.name: index + 1 for index, organ in enumerate(organs)},
        "segments": [
            {
                "label": index + 1,
                "name": organ.name,
                "prompt": organ.prompt,
                "color": list(_color(organ, index)),
                "terminology": organ.terminology(),
            }
            for index, organ in enumerate(organs)
        ],
    }


def _pack_layers(masks: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Greedy layering as Slicer does it: a segment joins the first layer it overlaps nothing in.

    Returns uint8 layers (L, k, j, i) and each segment's (layer, label value); a layer holds at
    most 255 segments so the file stays uint8.
    """
    layers: list[np.ndarray] = []
    counts: list[int] = []
    placement = []
    for mask in masks:
        for layer_index, layer in enumerate(layers):
            if counts[layer_index] < 255 and not layer[mask].any():
                break
        else:
            layers.append(np.zeros(masks.shape[1:], np.uint8))
            counts.append(0)
            layer_index = len(layers) - 1
        counts[layer_index] += 1
        layers[layer_index][mask] = counts[layer_index]
        placement.append((layer_index, counts[layer_index]))
    return np.stack(layers), placement


def _reference_geometry(geometry: Geometry) -> str:
    """Slicer's "Reference image geometry" string: IJKToRAS row-major, then the extent."""
    values = [f"{v:.17g}" for v in (geometry.ijk_to_ras() + 0.0).ravel()]
    extent = [str(v) for n in geometry.size for v in (0, n - 1)]
    return ";".join(values + extent) + ";"


def _slicer_segmentation(masks: np.ndarray, organs: Sequence[Organ], geometry: Geometry) -> dict:
    layers, placement = _pack_layers(masks)
    voxels = layers.transpose(0, 3, 2, 1)  # slicerio wants (layer, i, j, k)
    if voxels.shape[0] == 1:
        voxels = voxels[0]
    extent = [v for n in geometry.size for v in (0, n - 1)]  # full extent: Slicer crops a layer to its first segment's
    segments = []
    for index, (organ, (layer, label)) in enumerate(zip(organs, placement)):
        tags = {PROMPT_TAG: organ.prompt.replace("|", "/")}
        terminology = organ.terminology()
        if terminology is not None:
            tags = {_TERMINOLOGY_TAG: terminology, **tags}
        segments.append(
            {
                "id": f"segment_{index + 1}",
                "name": organ.name,
                "nameAutoGenerated": False,
                "color": [c / 255.0 for c in _color(organ, index)],
                "colorAutoGenerated": False,
                "labelValue": label,
                "layer": layer,
                "extent": extent,
                "tags": tags,
            }
        )
    return {
        "voxels": voxels,
        "ijkToLPS": geometry.ijk_to_lps(),
        "encoding": "gzip",
        "containedRepresentationNames": ["Binary labelmap"],
        "masterRepresentation": "Binary labelmap",
        "referenceImageExtentOffset": [0, 0, 0],
        "conversionParameters": [
            {
                "name": "Reference image geometry",
                "value": _reference_geometry(geometry),
                "description": _REFERENCE_GEOMETRY_DESCRIPTION,
            }
        ],
        "segments": segments,
    }


def read_segmentation(path: str | Path) -> tuple[np.ndarray, list[str], Geometry]:
    """Masks (K, k, j, i) bool, segment names and grid from a ``.seg.nrrd`` or a labelmap (+ sidecar).

    A labelmap without a sidecar yields one segment per label value present, named ``label_<v>``.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"'{path}' does not exist", "Check the path of the segmentation file.")
    if _suffix(path) == SEG_SUFFIX:
        return _read_seg_nrrd(path)
    image = read_image(path)
    geometry = Geometry.from_image(image)
    labels = sitk.GetArrayFromImage(image)
    sidecar = sidecar_path(path)
    if sidecar.is_file():
        try:
            entries = [(int(s["label"]), str(s["name"])) for s in json.loads(sidecar.read_text("utf-8"))["segments"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(
                f"cannot read the label names in '{sidecar}' ({exc})",
                "Fix or delete the sidecar JSON (labels are then named by value).",
            ) from None
    else:
        entries = [(int(v), f"label_{int(v)}") for v in np.unique(labels) if v != 0]
    masks = np.stack([labels == value for value, _ in entries]) if entries else np.zeros((0,) + labels.shape, bool)
    return masks, [name for _, name in entries], geometry


def _read_seg_nrrd(path: Path) -> tuple[np.ndarray, list[str], Geometry]:
    from .seg_nrrd import read_segmentation_layers

    read = read_segmentation_layers(path)
    masks = [read.mask(n) for n in range(len(read.segments))]
    stack = np.stack(masks) if masks else np.zeros((0,) + read.geometry.array_shape, bool)
    return stack, [name for name, _, _ in read.segments], read.geometry


# --------------------------------------------------------------------------------------------------
# Probabilities


def safe_file_name(name: str) -> str:
    """Lower case, runs of anything but [a-z0-9] as one '_' ("Left kidney!" -> "left_kidney")."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "prompt"


def _unique_file_names(names: Sequence[str]) -> list[str]:
    used: set[str] = set()
    out = []
    for name in names:
        base = candidate = safe_file_name(name)
        n = 2
        while candidate in used:
            candidate, n = f"{base}_{n}", n + 1
        used.add(candidate)
        out.append(candidate)
    return out


def write_probabilities(
    path: str | Path,
    probabilities: np.ndarray,
    names: Sequence[str],
    geometry: Geometry,
    overwrite: bool = False,
) -> list[Path]:
    """Write float32 (K, k, j, i) probabilities; returns the files written.

    A volume name (.nii.gz/.nii/.nrrd/.mha) gives one K-component image plus a sidecar listing the
    components in order; anything else is a folder with one volume per prompt and
    ``probabilities.json`` (name -> file).
    """
    path = Path(path)
    names = [str(n) for n in names]
    probabilities = np.asarray(probabilities, dtype=np.float32)
    _check_stack(probabilities, len(names), geometry, "probabilities")
    if len(set(names)) != len(names):
        raise ValueError(f"probability names must be unique, got {names}")
    suffix = _suffix(path)
    if suffix in (SEG_SUFFIX, DICOM_SEG_SUFFIX):
        raise OutputError(
            f"'{path.name}': probabilities cannot be a segmentation file ({suffix})",
            "Use a .nii.gz name for one multi-component file, or a folder name for one file per prompt.",
        )
    if suffix:
        return _write_probability_volume(path, probabilities, names, geometry, overwrite)
    return _write_probability_folder(path, probabilities, names, geometry, overwrite)


def _write_probability_volume(
    path: Path, probabilities: np.ndarray, names: list[str], geometry: Geometry, overwrite: bool
) -> list[Path]:
    sidecar = sidecar_path(path)
    _refuse_existing([path, sidecar], overwrite)
    image = geometry.apply_to(sitk.GetImageFromArray(np.moveaxis(probabilities, 0, -1), isVector=True))
    with atomic_path(path) as tmp_image, atomic_path(sidecar) as tmp_json, _writing(path):
        _write_image(image, tmp_image)
        _write_json(tmp_json, {"components": names})
    return [path, sidecar]


def _write_probability_folder(
    folder: Path, probabilities: np.ndarray, names: list[str], geometry: Geometry, overwrite: bool
) -> list[Path]:
    if folder.exists() and not folder.is_dir():
        raise OutputError(
            f"'{folder}' is a file, not a folder",
            "Give a folder name for one probability map per prompt, or a .nii.gz name for one file.",
        )
    files = [f"{stem}.nii.gz" for stem in _unique_file_names(names)]
    targets = [folder / f for f in files] + [folder / PROBABILITIES_INDEX]
    _refuse_existing(targets, overwrite)
    created = not folder.exists()
    try:
        with contextlib.ExitStack() as stack, _writing(folder):
            temporaries = [stack.enter_context(atomic_path(target)) for target in targets]
            for tmp, volume in zip(temporaries, probabilities):
                _write_image(image_from_array(volume, geometry), tmp)
            _write_json(temporaries[-1], dict(zip(names, files)))
    except BaseException:
        if created:  # leave no empty folder behind a failed first write
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return targets
