"""The demo's run (:func:`run_demo`): phantoms, training, the held-out phantom, one atomic output folder."""

from __future__ import annotations

import json
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..phantom import generate_phantom, write_phantom_dataset
from ..progress import CancelToken, Progress
from .checks import check_base, check_output
from .held_out import _num, _segment_and_write
from .recipe import DEMO_RECIPE, QUICK_RECIPE, PhantomRecipe


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
        lines = [f"{'organ':<22} {'Dice':>6}   {'pred ml':>8} {'ref ml':>8}  threshold"]
        for organ, row in self.metrics["organs"].items():
            lines.append(
                f"{organ:<22} {_num(row['dice']):>6}   {row['pred_ml']:>8.1f} {row['ref_ml']:>8.1f}"
                f"  {row.get('threshold', 0.5):>9.2f}"
            )
        lines.append(f"{'mean':<22} {_num(self.metrics['mean_dice']):>6}")
        target = self.metrics["target"]
        t = self.metrics["organs"][target]
        lines.append(
            f"{target} look-alikes (distractors) hit: {t['distractors_hit']} of {t['distractors']} "
            f"({t['distractor_fp_ml']:.2f} ml predicted inside them)"
        )
        return "\n".join(lines)


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

    from ..io.atomic import atomic_dir

    with atomic_dir(output) as folder:
        work = folder / ".work"
        metrics = _run(folder, work, recipe, base, device, seed, minutes, progress, cancel, started)
        shutil.rmtree(work, ignore_errors=True)
        cancel.check()
    return DemoResult(output, metrics, time.perf_counter() - started)


def _run(
    folder: Path, work: Path, recipe: PhantomRecipe, base, device, seed, minutes, progress, cancel, started
) -> dict:
    from ..training import train

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
    training = json.loads((folder / "checkpoint" / "config.json").read_text(encoding="utf-8"))["training"]
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
    from ..io.jsonfile import write_json

    write_json(folder / "metrics.json", metrics)
    return metrics
