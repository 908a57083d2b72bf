"""Phantom datasets on disk (nnU-Net v2 style) and the generator's timing."""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import InputError
from ..io.atomic import atomic_path, ensure_writable_dir
from ..io.jsonfile import write_json
from .spec import PhantomSpec
from .tissues import LABEL_IDS, TARGET_ORGAN
from .volume import generate_phantom


def case_name(index: int) -> str:
    return f"phantom_{index:03d}"


def write_phantom_dataset(
    folder: str | Path, n_cases: int, seed: int = 0, spec: PhantomSpec = PhantomSpec(), progress=None
) -> Path:
    """Write ``n_cases`` phantoms as an nnU-Net v2 style dataset in ``folder``; returns ``folder``.

    ``imagesTr/phantom_XXX_0000.nii.gz`` (int16 HU), ``labelsTr/phantom_XXX.nii.gz`` (uint8,
    FLARE22 ids) and ``dataset.json`` (written last). Case ``i`` is ``generate_phantom((seed, i))``.
    Every file is written under a temporary name and renamed, so nothing half-written is left.
    Label ids are the FLARE22 ones of the project's vocabulary, hence not consecutive (nnU-Net itself
    would want them renumbered). ``progress(i, n)`` is called after each case if given.
    """
    import SimpleITK as sitk

    if n_cases < 1:
        raise InputError("n_cases must be at least 1")
    folder = ensure_writable_dir(folder)
    images_dir = ensure_writable_dir(folder / "imagesTr")
    labels_dir = ensure_writable_dir(folder / "labelsTr")
    cases = {}
    label_names: dict[int, str] = {}
    for i in range(n_cases):
        ph = generate_phantom((int(seed), i), spec)
        label_names = ph.label_names
        image, labels = ph.to_sitk(integer_hu=True)
        name = case_name(i)
        with atomic_path(images_dir / f"{name}_0000.nii.gz") as tmp:
            sitk.WriteImage(image, str(tmp), True)
        with atomic_path(labels_dir / f"{name}.nii.gz") as tmp:
            sitk.WriteImage(labels, str(tmp), True)
        nz, ny, nx = ph.labels.shape
        cases[name] = {
            "modality": "CT",
            "label_type": "synthetic",
            "annotated": sorted(ph.label_names),
            "present": ph.present,
            "size_xyz": [nx, ny, nz],
            "spacing_xyz_mm": list(ph.spacing[::-1]),
            "direction": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            "seed": [int(seed), i],
            "target": ph.target,
            "n_distractors": len(ph.distractors),
            # the look-alikes' slices: hard negatives the "slices" batching draws more often
            "oversample_slices": sorted({z for d in ph.distractors for z in range(d.z0, d.z1 + 1)}),
            "source": "TGatedSegmentLib.phantom.generate_phantom",
        }
        if progress is not None:
            progress(i + 1, n_cases)
    dataset = {
        "name": "tgated-phantom",
        "description": (
            "Synthetic abdominal CT phantoms (TGatedSegmentLib.phantom): FLARE22 label ids; the "
            f"{TARGET_ORGAN} has 1-2 slice look-alike distractors that are never labelled."
        ),
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, **{n: i for i, n in sorted(label_names.items())}},
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
        "phantom": {
            "seed": int(seed),
            "spec": spec.to_dict(),
            "target": TARGET_ORGAN,
            "target_label": LABEL_IDS[TARGET_ORGAN],
        },
        "cases": cases,
    }
    write_json(folder / "dataset.json", dataset)
    return folder


def time_generation(n: int = 5, spec: PhantomSpec = PhantomSpec()) -> float:
    """Mean seconds per :func:`generate_phantom` call over ``n`` seeds (for benchmarks and tests)."""
    start = time.perf_counter()
    for i in range(n):
        generate_phantom(i, spec)
    return (time.perf_counter() - start) / n
