"""The demo's held-out phantom: segmented, scored against its labels, written with a figure."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

#: What ``OUTPUT/`` holds after a run.
OUTPUT_FILES = {
    "ct.nii.gz": "the held-out phantom CT (int16 HU): the input that was segmented",
    "segmentation.seg.nrrd": "the prediction as a 3D Slicer segmentation (one named segment per organ)",
    "segmentation.nii.gz": "the prediction as a labelmap (value i = i-th organ of segmentation.json)",
    "segmentation.json": "the labelmap's label table (names, prompts, colours, terminology)",
    "reference.seg.nrrd": "the phantom's true labels, same segments and colours (for side-by-side viewing)",
    "figure.png": "axial slices: predicted contours over the CT, next to the reference",
    "metrics.json": "per-organ Dice, NSD, HD95 and false-positive measures, and how the model was trained",
    "checkpoint": "the trained model (tgated segment --checkpoint OUTPUT/checkpoint ...)",
}


def _num(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _segment_and_write(folder: Path, phantom, device, progress, cancel) -> dict:
    import SimpleITK as sitk

    from ..evaluation.figures import render_comparison
    from ..evaluation.metrics import organ_metrics
    from ..evaluation.phantom import phantom_organ_measures
    from ..inference.api import Segmenter
    from ..io.volume import Geometry
    from ..io.writers import write_segmentation
    from ..vocabulary import Organ, resolve_prompts

    ct, _ = phantom.to_sitk(integer_hu=True)
    sitk.WriteImage(ct, str(folder / "ct.nii.gz"), True)

    ids = sorted(phantom.label_names)
    organs = resolve_prompts([phantom.label_names[i] for i in ids])
    segmenter = Segmenter(folder / "checkpoint", device=device)
    progress.info(message=f"segmenting the held-out phantom: {len(organs)} prompts on {segmenter.device}")
    result = segmenter.segment(ct, prompts=organs, progress=progress, cancel=cancel)
    cancel.check()
    result.write(folder / "segmentation.seg.nrrd")
    result.write(folder / "segmentation.nii.gz")
    geometry = Geometry.from_image(ct)
    reference = np.stack([phantom.labels == i for i in ids])
    write_segmentation(folder / "reference.seg.nrrd", reference, organs, geometry)

    organ_rows = {}
    for n, (label, organ) in enumerate(zip(ids, organs)):
        distractors = phantom.distractor_mask if phantom.label_names[label] == phantom.target else None
        row = phantom_organ_measures(result.masks[n], phantom.labels, label, phantom.spacing, distractors)
        full = organ_metrics(result.masks[n], reference[n], phantom.spacing)
        row.update(
            {
                "nsd": full["nsd"],
                "hd95": full["hd95"],
                "status": full["status"],
                "prompt": organ.prompt,
                "label": n + 1,
                "threshold": result.thresholds[n],  # calibrated on the validation phantom (recipe cpu)
            }
        )
        organ_rows[organ.name] = row
    dice = [r["dice"] for r in organ_rows.values() if not math.isnan(r["dice"])]

    # figure: the canonical frame is the array's own (identity direction); distractors outlined too
    from ..preprocessing.volume import prepare_volume

    unit = prepare_volume(ct, segmenter.config.preprocessing).unit
    predicted = result.labelmap.astype(np.int32)
    truth = np.zeros_like(predicted)
    for n in range(len(ids)):
        truth[reference[n]] = n + 1
    lookalike = len(ids) + 1
    truth[phantom.distractor_mask] = lookalike
    legend = {n + 1: o for n, o in enumerate(organs)}
    legend[lookalike] = Organ(f"{phantom.target} look-alike (not an organ)", "", color=(255, 0, 255))
    target_dice = organ_rows[phantom.target]["dice"]
    render_comparison(
        unit,
        predicted,
        truth,
        legend,
        folder / "figure.png",
        slices=figure_slices(phantom),
        spacing=phantom.spacing,
        title=f"mean Dice {_num(float(np.mean(dice)) if dice else math.nan)}, {phantom.target} {_num(target_dice)}",
    )
    return {
        "case": "held-out phantom",
        "target": phantom.target,
        "organs": organ_rows,
        "mean_dice": float(np.mean(dice)) if dice else math.nan,
        "_device": str(segmenter.device),
        "files": OUTPUT_FILES,
    }


def figure_slices(phantom, count: int = 4) -> list[int]:
    """Slices worth looking at: the target's largest section, a look-alike outside the target's
    slices, and two more spread over the labelled range (kidneys, liver and spleen)."""
    target = phantom.labels == phantom.target_label
    area = target.reshape(target.shape[0], -1).sum(axis=1)
    chosen: list[int] = []
    if area.any():
        chosen.append(int(area.argmax()))
    outside = [d for d in phantom.distractors if not area[d.z0 : d.z1 + 1].any()]
    if outside:
        chosen.append(outside[0].z0)
    present = np.flatnonzero(phantom.labels.reshape(phantom.labels.shape[0], -1).any(axis=1))
    if present.size:
        for z in np.linspace(present[0], present[-1], count + 2)[1:-1]:
            if len(chosen) >= count:
                break
            z = int(round(z))
            if all(abs(z - c) > 2 for c in chosen):
                chosen.append(z)
    return sorted(chosen) or [phantom.labels.shape[0] // 2]
