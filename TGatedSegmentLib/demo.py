"""``tgated demo``: the whole job on a fresh, offline machine, in under five CPU minutes.

>>> from TGatedSegmentLib.demo import run_demo
>>> result = run_demo("demo_output")          # quick=True: the test suite's seconds-long version
>>> result.dice                                  # per-organ Dice on a held-out phantom

What it does:

1. generates a small training set of synthetic abdominal CT phantoms (:mod:`TGatedSegmentLib.phantom`,
   written as an nnU-Net dataset, one case held out for validation);
2. trains a small T-Gated CLIPSeg from random weights with the ``cpu`` training recipe
   (``builtin:cpu``, the offline "compact" tokenizer, multi-prompt slice batches, the refinement
   head, the residual adapter), or fine-tunes ``base`` (a checkpoint / CLIPSeg folder or hub id);
3. segments a phantom that was in neither set and scores it against its labels;
4. writes ``OUTPUT/`` (see :data:`OUTPUT_FILES`) and returns the per-organ metrics.

The output folder is built under a temporary name next to ``OUTPUT`` and renamed into place at the
very end (an existing one is replaced only with ``overwrite``), so Ctrl-C, a kill or an error at
any moment leave either the previous folder or nothing, never half of one.
"""

from __future__ import annotations

import json
import math
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, OutputError
from .phantom import PhantomSpec, generate_phantom, write_phantom_dataset
from .progress import CancelToken, Progress

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


@dataclass(frozen=True)
class PhantomRecipe:
    """How the demo (and the phantom ablations) train a model on phantoms: a training recipe
    (:mod:`TGatedSegmentLib.training.recipes`, ``cpu`` by default) on a phantom series.

    ``steps`` fixes the amount of training, so two runs (two seeds, two arms of an ablation) get the
    same; ``max_seconds`` only caps a slow machine (the schedule then anneals over the time left).
    ``settings`` are :class:`TrainConfig` values that replace the recipe's.
    """

    n_train: int = 8  # training phantoms
    n_val: int = 1  # validation phantoms (best/ is chosen on them)
    spec: PhantomSpec = field(default_factory=PhantomSpec)
    recipe: str = "cpu"
    steps: int = 750
    epochs: int = 2  # validations (the last one at the end)
    max_seconds: float | None = 270.0
    settings: dict = field(default_factory=dict)

    def train_config(
        self,
        data,
        output,
        temporal: bool = True,
        seed: int = 0,
        device: str = "auto",
        base: str | None = None,
        max_seconds: float | None = None,
        **overrides,
    ):
        """The :class:`TrainConfig` of this recipe (``base``: fine-tune those weights, paper recipe)."""
        from dataclasses import replace

        from .training import TrainConfig

        settings: dict[str, Any] = dict(
            data=str(data),
            output=str(output),
            val=f"split:{self.n_val}",
            recipe=self.recipe,
            temporal=temporal,
            epochs=self.epochs,
            steps=self.steps,
            device=device,
            num_workers=0,
            seed=seed,
            save_every_minutes=None,
            max_seconds=max_seconds if max_seconds is not None else self.max_seconds,
        )
        settings.update(self.settings)
        if base is not None:  # pretrained weights: their tokenizer, input size and the paper's recipe
            settings.update(base=base, recipe="paper")
        settings.update(overrides)
        config = TrainConfig(**settings)
        if "samples_per_epoch" not in {**self.settings, **overrides}:
            # an epoch is a validation interval: steps / epochs steps of pairs or of chunks
            per_step = config.batch_size // config.chunk_slices if config.batching == "slices" else config.batch_size
            config = replace(config, samples_per_epoch=max(1, self.steps * max(1, per_step) // self.epochs))
        return config

    def to_dict(self) -> dict:
        d = asdict(self)
        d["spec"] = self.spec.to_dict()
        return d


#: ``tgated demo``: under 5 minutes on a 2-core CPU (see docs/results.md).
DEMO_RECIPE = PhantomRecipe()
#: ``tgated demo --quick``: seconds; shows the pipeline works, not that the model learns.
QUICK_RECIPE = PhantomRecipe(
    n_train=2,
    n_val=1,
    spec=PhantomSpec(shape=(32, 64, 64), spacing=(5.0, 5.0, 5.0), target_slices=(6, 9), n_distractors=4),
    steps=12,
    epochs=1,
    max_seconds=None,
    settings={"image_size": 64, "batch_size": 4, "chunk_slices": 4, "warmup_steps": 2},
)


@dataclass
class DemoResult:
    output: Path
    metrics: dict  # what metrics.json holds
    seconds: float

    @property
    def dice(self) -> dict[str, float]:
        return {organ: row["dice"] for organ, row in self.metrics["organs"].items()}

    def table(self) -> str:
        """Per-organ Dice (and the target's false positives) as aligned plain text."""
        lines = [f"{'organ':<22} {'Dice':>6}   {'pred ml':>8} {'ref ml':>8}"]
        for organ, row in self.metrics["organs"].items():
            lines.append(f"{organ:<22} {_num(row['dice']):>6}   {row['pred_ml']:>8.1f} {row['ref_ml']:>8.1f}")
        lines.append(f"{'mean':<22} {_num(self.metrics['mean_dice']):>6}")
        target = self.metrics["target"]
        t = self.metrics["organs"][target]
        lines.append(
            f"{target} look-alikes (distractors) hit: {t['distractors_hit']} of {t['distractors']} "
            f"({t['distractor_fp_ml']:.2f} ml predicted inside them)"
        )
        return "\n".join(lines)


def _num(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


# --------------------------------------------------------------------------------------------------
# checks (before anything is written)


def check_output(output: str | Path, overwrite: bool) -> Path:
    from .io.atomic import check_writable, refuse_existing

    output = Path(output).expanduser()
    if output.exists() and not output.is_dir():
        raise OutputError(f"'{output}' is a file", "Choose a folder name for --output.")
    refuse_existing(output, overwrite)
    check_writable(output)
    return output


def check_base(base: str | None) -> None:
    """A local folder must hold config.json; a hub id must be reachable (one clear line offline)."""
    if base is None:
        return
    from .model.source import SourceKind, classify_source, download

    source = classify_source(base)
    if source.is_folder:
        if not (source.path / "config.json").is_file():
            raise InputError(
                f"the base folder '{base}' has no config.json",
                "Pass a checkpoint folder (tgated train/init, or a demo's OUTPUT/checkpoint) or a "
                "CLIPSeg model folder.",
            )
        return
    if source.is_local:
        raise InputError(f"the base '{base}' is a file", "Pass a checkpoint or CLIPSeg model folder, or a hub id.")
    if source.kind is not SourceKind.HUB_ID:
        raise InputError(
            f"the base '{base}' does not exist", "Pass a local folder or a hub id such as CIDAS/clipseg-rd64-refined."
        )
    download(str(base), config_only=True)  # CheckpointError with the offline hint when it cannot


# --------------------------------------------------------------------------------------------------
# progress: one bar over the whole training, whatever the epochs


class _DemoProgress(Progress):
    """Forwards events, turning the trainer's per-epoch "train" bar into one bar over all steps."""

    def __init__(self, inner: Progress, total_steps: int):
        super().__init__()
        self.inner, self.total_steps = inner, total_steps

    def update(self, stage, done, total, **extra):
        if stage == "train" and "step" in extra:
            done, total = extra["step"], self.total_steps
            extra = {k: v for k, v in extra.items() if k in ("loss", "epoch")}
        self.inner.update(stage, done, total, **extra)

    def info(self, **fields):
        self.inner.info(**fields)

    def close(self):
        self.inner.close()


# --------------------------------------------------------------------------------------------------
# the run


def run_demo(
    output: str | Path = "demo_output",
    quick: bool = False,
    base: str | None = None,
    device: str = "auto",
    seed: int = 0,
    minutes: float | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
    recipe: PhantomRecipe | None = None,
) -> DemoResult:
    """Train on phantoms, segment a held-out one, write ``output``; see the module docstring.

    ``minutes`` caps the training time (the run then validates, keeps its best checkpoint and goes
    on); by default the recipe's step count decides. ``recipe`` overrides ``quick``.
    """
    started = time.perf_counter()
    progress = progress or Progress()
    cancel = cancel or CancelToken()
    recipe = recipe or (QUICK_RECIPE if quick else DEMO_RECIPE)
    if minutes is not None and not minutes > 0:
        raise InputError(f"--minutes must be > 0, got {minutes}", "Pass a positive training time, e.g. 3.")
    output = check_output(output, overwrite)
    check_base(base)

    from .io.atomic import atomic_dir

    with atomic_dir(output) as folder:
        work = folder / ".work"
        metrics = _run(folder, work, recipe, base, device, seed, minutes, progress, cancel, started)
        shutil.rmtree(work, ignore_errors=True)
        cancel.check()
    return DemoResult(output, metrics, time.perf_counter() - started)


def _run(
    folder: Path, work: Path, recipe: PhantomRecipe, base, device, seed, minutes, progress, cancel, started
) -> dict:
    from .training import train

    n_cases = recipe.n_train + recipe.n_val
    progress.info(
        message=f"generating {n_cases} phantom CT volumes {recipe.spec.shape[::-1]} (x, y, z) for training "
        f"and validation, seed {seed}"
    )
    data = write_phantom_dataset(
        work / "phantoms",
        n_cases,
        seed=seed,
        spec=recipe.spec,
        progress=lambda i, n: (cancel.check(), progress.update("phantoms", i, n)),
    )
    config = recipe.train_config(
        data,
        work / "run",
        temporal=True,
        seed=seed,
        device=device,
        base=base,
        max_seconds=60.0 * minutes if minutes else None,
    )
    progress.info(
        message=f"training {'T-Gated from ' + str(base) if base else 'a small T-Gated CLIPSeg from random weights'}"
        f" for {config.steps} steps (batch {config.batch_size}"
        f"{f', at most {minutes:g} min' if minutes else ''})"
    )
    train_started = time.perf_counter()
    run_dir = train(config, progress=_DemoProgress(progress, config.steps), cancel=cancel)
    train_seconds = time.perf_counter() - train_started
    cancel.check()
    shutil.copytree(run_dir / "best", folder / "checkpoint")

    # a phantom that is in neither set: index n_cases of the same series
    phantom = generate_phantom((int(seed), n_cases), recipe.spec)
    metrics = _segment_and_write(folder, phantom, device, progress, cancel)
    training = json.loads((folder / "checkpoint" / "config.json").read_text())["training"]
    metrics.update(
        {
            "phantom": {
                "seed": [int(seed), n_cases],
                "spec": recipe.spec.to_dict(),
                "training_cases": recipe.n_train,
                "validation_cases": recipe.n_val,
                "note": "the segmented phantom is case n_train + n_val of the series: in neither set",
            },
            "training": {
                "base": base or config.base,
                "recipe": config.recipe,
                "phantom_recipe": recipe.to_dict(),
                "steps": training["step"],
                "best": training["best"],
                "seconds": round(train_seconds, 1),
                "stopped_by_time_limit": training["step"] < config.steps,
                "settings": training["settings"],
            },
            "machine": {
                "device": metrics.pop("_device"),
                "platform": platform.platform(),
                "processor": platform.machine(),
            },
            "seconds_total": round(time.perf_counter() - started, 1),
        }
    )
    from .io.jsonfile import write_json

    write_json(folder / "metrics.json", metrics)
    return metrics


def _segment_and_write(folder: Path, phantom, device, progress, cancel) -> dict:
    import SimpleITK as sitk

    from .evaluation.figures import render_comparison
    from .evaluation.metrics import organ_metrics
    from .evaluation.phantom import phantom_organ_measures
    from .inference.api import Segmenter
    from .io.volume import Geometry
    from .io.writers import write_segmentation
    from .vocabulary import Organ, resolve_prompts

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
            {"nsd": full["nsd"], "hd95": full["hd95"], "status": full["status"], "prompt": organ.prompt, "label": n + 1}
        )
        organ_rows[organ.name] = row
    dice = [r["dice"] for r in organ_rows.values() if not math.isnan(r["dice"])]

    # figure: the canonical frame is the array's own (identity direction); distractors outlined too
    from .preprocessing.volume import prepare_volume

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
