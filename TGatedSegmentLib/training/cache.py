"""Preprocessed training volumes on disk, read through memory maps so no sample re-reads a NIfTI.

Each case goes once through :func:`prepare_volume` (the inference code path: canonical LPS frame,
CT window / MR percentiles) and its label through ``PreparedVolume.to_canonical``. What is stored
is the canonical (z, y, x) volume *before* the slice codec, so the model's input size, slice
layout and mean/std (applied per sample by :class:`SliceCodec`, as in inference) never invalidate
it. An entry is keyed on the image and label files (path, size, modification time), the intensity
settings and the modality, and written atomically: a kill leaves either a complete entry or none.

Storage: the [0, 1] image as uint16 (x 65535; the error, 8e-6, is 1/500 of the 8-bit grey level
the model sees; half of float32's size), labels as uint8 (uint16 for ids >= 256), and a
per-slice table of the label values present, which is all the sampler needs.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.dataset import Case
from ..errors import Cancelled, InputError
from ..io.atomic import atomic_dir, recover_dir
from ..io.volume import Geometry, array_from_image, read_image
from ..modality import modality_hint
from ..preprocessing.config import PreprocessConfig
from ..preprocessing.orientation import reorientation_for
from ..preprocessing.volume import PreparedVolume, prepare_volume

CACHE_VERSION = 1
IMAGE_SCALE = 65535.0
_META = "meta.json"


def _stamp(path: Path) -> list:
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def cache_key(case: Case, preprocessing: PreprocessConfig, modality: str) -> str:
    payload = {
        "version": CACHE_VERSION,
        "image": _stamp(case.image),
        "label": _stamp(case.label),
        "modality": modality,
        "ct_window": list(preprocessing.ct_window),
        "mr_percentiles": list(preprocessing.mr_percentiles),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class CachedVolume:
    """One preprocessed case. Arrays open lazily (per DataLoader worker) as read-only memory maps."""

    case_id: str
    folder: Path
    geometry: Geometry
    modality: str
    shape: tuple[int, int, int]  # canonical (z, y, x)
    _arrays: dict = field(default_factory=dict, repr=False, compare=False)

    def __getstate__(self) -> dict:  # memory maps are reopened in the worker, not pickled
        state = dict(self.__dict__)
        state["_arrays"] = {}
        return state

    def _array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = np.load(self.folder / f"{name}.npy", mmap_mode="r")
        return self._arrays[name]

    @property
    def depth(self) -> int:
        return self.shape[0]

    @property
    def labels(self) -> np.ndarray:
        """(z, y, x) canonical label ids (memory map)."""
        return self._array("labels")

    @property
    def presence(self) -> np.ndarray:
        """(z, max_id + 1) bool: which label values occur in each canonical slice."""
        return self._array("presence")

    @property
    def spacing(self) -> tuple[float, ...]:
        """Canonical (z, y, x) spacing in mm."""
        return tuple(reorientation_for(self.geometry.direction).canonical_spacing(self.geometry.spacing))

    def present_ids(self) -> tuple[int, ...]:
        return tuple(int(i) for i in np.flatnonzero(self.presence.any(axis=0)) if i)

    def unit_slices(self, index) -> np.ndarray:
        """(n, y, x) float32 canonical slices in [0, 1]."""
        return np.asarray(self._array("image")[index], dtype=np.float32) / np.float32(IMAGE_SCALE)

    def prepared(self) -> PreparedVolume:
        """The whole volume as inference's :class:`PreparedVolume` (for validation)."""
        return PreparedVolume(
            self.unit_slices(slice(None)), self.geometry, reorientation_for(self.geometry.direction), self.modality
        )

    def canonical_slices(self, k_indices) -> list[int]:
        """Canonical z of file slices ``k`` (the image's third array axis), where k runs along z;
        [] for a volume stored with another slice axis (sagittal, coronal)."""
        reorientation = reorientation_for(self.geometry.direction)
        if reorientation.axes[0] != 0:
            return []
        depth = self.depth
        return [depth - 1 - int(k) if reorientation.flips[0] else int(k) for k in k_indices if 0 <= int(k) < depth]

    def native_labels(self) -> np.ndarray:
        """Labels back on the file's own (k, j, i) grid."""
        return np.ascontiguousarray(reorientation_for(self.geometry.direction).from_canonical(np.asarray(self.labels)))


def _load_entry(folder: Path, case_id: str) -> CachedVolume | None:
    recover_dir(folder)
    meta_file = folder / _META
    if not meta_file.is_file():
        return None
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    geometry = Geometry(**meta["geometry"])
    return CachedVolume(case_id, folder, geometry, meta["modality"], tuple(meta["shape"]))


def _label_array(case: Case, geometry: Geometry) -> np.ndarray:
    label = array_from_image(read_image(case.label))
    if tuple(label.shape) != tuple(geometry.array_shape):
        raise InputError(
            f"case '{case.case_id}': label size {label.shape[::-1]} differs from image size {geometry.size}",
            "Resample the label onto the image grid (nearest neighbour).",
        )
    if not np.issubdtype(label.dtype, np.integer):
        rounded = np.rint(label)
        if not np.array_equal(rounded, label):
            raise InputError(
                f"case '{case.case_id}': the label holds non-integer values",
                "Labels must be integer ids as declared in dataset.json.",
            )
        label = rounded
    if label.size and (label.min() < 0 or label.max() > 65535):
        raise InputError(
            f"case '{case.case_id}': label values outside 0..65535",
            "Labels must be the non-negative ids declared in dataset.json.",
        )
    return label.astype(np.uint8 if label.max(initial=0) < 256 else np.uint16)


def _build_entry(case: Case, preprocessing: PreprocessConfig, modality: str, folder: Path) -> CachedVolume:
    prepared = prepare_volume(read_image(case.image), preprocessing, modality)
    labels = prepared.to_canonical(_label_array(case, prepared.geometry))
    image = np.round(prepared.unit * IMAGE_SCALE).astype(np.uint16)
    n_values = int(labels.max(initial=0)) + 1
    presence = np.stack([np.bincount(s.ravel(), minlength=n_values) > 0 for s in labels])  # (z, n_values)
    meta = {
        "version": CACHE_VERSION,
        "case_id": case.case_id,
        "image": str(case.image),
        "label": str(case.label),
        "modality": prepared.modality,
        "shape": list(image.shape),
        "geometry": {
            "size": list(prepared.geometry.size),
            "spacing": list(prepared.geometry.spacing),
            "origin": list(prepared.geometry.origin),
            "direction": list(prepared.geometry.direction),
        },
    }
    with atomic_dir(folder) as tmp:
        np.save(tmp / "image.npy", image)
        np.save(tmp / "labels.npy", labels)
        np.save(tmp / "presence.npy", presence)
        (tmp / _META).write_text(json.dumps(meta, indent=1), encoding="utf-8")  # written last: marks completeness
    return _load_entry(folder, case.case_id)


def entry_folder(cache_dir: Path, case: Case, preprocessing: PreprocessConfig, modality: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", case.case_id)
    return Path(cache_dir) / f"{safe}-{cache_key(case, preprocessing, modality)}"


def cached_volume(
    case: Case, preprocessing: PreprocessConfig, cache_dir: str | Path, modality: str | None = None
) -> CachedVolume:
    """The cache entry of ``case``, built on first use."""
    modality = modality or modality_hint(case.modality)
    folder = entry_folder(Path(cache_dir), case, preprocessing, modality)
    return _load_entry(folder, case.case_id) or _build_entry(case, preprocessing, modality, folder)


def cache_cases(
    cases: list[Case], preprocessing: PreprocessConfig, cache_dir: str | Path, progress=None, cancel=None
) -> list[CachedVolume]:
    """Every case's entry (built where missing), in order; reports ``cache`` progress."""
    out = []
    for n, case in enumerate(cases):
        if cancel is not None and cancel.cancelled:
            raise Cancelled("cancelled while preparing the volumes")
        out.append(cached_volume(case, preprocessing, cache_dir))
        if progress is not None:
            progress.update("cache", n + 1, len(cases))
    return out
