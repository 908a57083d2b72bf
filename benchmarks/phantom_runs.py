"""What the three phantom ablations share: train (or reuse) one model per seed and arm, score it on held-out phantoms.

Not a benchmark itself. ``ablation_temporal.py`` trains the slice-wise baseline and the T-Gated model
for each seed; ``ablation_prompt.py`` and ``ablation_gate.py`` reuse the T-Gated runs from the same
``--work`` folder (training whatever is missing), so the full set costs one round of training.

A run is reused only when its recorded recipe, seed and arm equal the ones asked for; anything else
is trained anew. Every seed trains on its own phantom series (``write_phantom_dataset(seed=seed)``)
and every model is scored on the same held-out series (:data:`TEST_SERIES`), so the spread over
seeds is the spread of training, not of the test cases.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

from TGatedSegmentLib.demo import DEMO_RECIPE, PhantomRecipe
from TGatedSegmentLib.io.atomic import atomic_write_text
from TGatedSegmentLib.io.jsonfile import write_json
from TGatedSegmentLib.phantom import PhantomSpec, generate_phantom, write_phantom_dataset

REPO = Path(__file__).resolve().parents[1]

EQUAL_STEPS_CAP = 36000.0  # s: a time cap no equal-steps arm reaches, so the steps alone end it
TEST_SERIES = 9999  # phantom series of the held-out test cases: no training seed uses it
#: recipe values that act after training (the checkpoint's thresholds): not part of a run's stamp, so a
#: run trained before one existed is reused and given it (:func:`calibrated`) instead of trained anew
AFTER_TRAINING = ("thresholds",)
#: name -> TrainConfig settings of the arm: the slice-wise baseline, the residual T-Gated adapter (the
#: default: with the ``cpu`` recipe its refinement head reads the adapter's 5-slice window), the
#: authors' wiring, and the equal-capacity control (the residual adapter and the window refinement
#: head fed 5 copies of the centre slice: the same parameters and compute, no context).
ARMS = {
    "baseline": {"temporal": False},
    "tgated": {"temporal": True, "adapter": "residual"},
    "reference": {"temporal": True, "adapter": "reference", "refine": 0},
    "control": {"temporal": True, "adapter": "control"},
    # the slice-wise baseline given the T-Gated residual run's wall time instead of its steps
    "baseline_time": {"temporal": False, "equal_time_as": "tgated"},
    # opt-in (--arms): the residual adapter with a refinement head that reads the centre slice only
    # (the recipe before the window head), and with a context head (docs/training.md), its per-token
    # logits added to the decoder's ("logits"), or read by --context-loss only ("loss"), or both
    "tgated_centre": {"temporal": True, "adapter": "residual", "refine_window": 1},
    "tgated_head": {"temporal": True, "adapter": "residual", "context_head": "logits", "context_loss": 0.0},
    "tgated_ctx": {"temporal": True, "adapter": "residual", "context_head": "loss", "context_loss": 1.0},
    "tgated_head_loss": {"temporal": True, "adapter": "residual", "context_head": "logits", "context_loss": 1.0},
    # the residual adapter's input named explicitly (--adapter-input): the slices' own tokens (the
    # recipe's default, pinned so that these runs stay comparable if the default changes) or slice
    # differences, with the window head, and differences with a head on the centre slice only (where
    # the adapter is the only path for context)
    "tgated_slices": {"temporal": True, "adapter": "residual", "adapter_input": "slices"},
    "tgated_diff": {"temporal": True, "adapter": "residual", "adapter_input": "differences"},
    "tgated_centre_diff": {"temporal": True, "adapter": "residual", "refine_window": 1, "adapter_input": "differences"},
}
#: The arms run when --arms is not given: the issue's four and the equal-time baseline.
DEFAULT_ARMS = ("baseline", "tgated", "reference", "control", "baseline_time")

#: The ablations' full mode: the demo's recipe (the README's ``tgated demo``), 3 seeds, 4 test phantoms.
FULL = {"recipe": DEMO_RECIPE, "seeds": [0, 1, 2], "test_cases": 4}
#: Quick mode (the test suite): tiny phantoms, a few steps; checks the harness, not the science.
QUICK = {
    "recipe": PhantomRecipe(
        n_train=2,
        n_val=1,
        spec=PhantomSpec(shape=(24, 48, 48), spacing=(5.0, 6.0, 6.0), target_slices=(5, 8), n_distractors=4),
        steps=8,
        epochs=1,
        max_seconds=None,
        settings={"image_size": 48, "batch_size": 4, "chunk_slices": 4, "warmup_steps": 2},
    ),
    "seeds": [0, 1],
    "test_cases": 1,
}


def add_arguments(parser: argparse.ArgumentParser, default_output: str) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="seconds: tiny phantoms, few steps (the test suite's mode)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", help="training seeds (default 0 1 2; quick: 0 1)")
    parser.add_argument("--steps", type=int, help="training steps per model (default: the demo recipe's)")
    parser.add_argument("--image-size", type=int, help="model input size in px (default: the recipe's, 128)")
    parser.add_argument("--test-cases", type=int, help="held-out phantoms per model (default 4; quick: 1)")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("ablation_work"),
        help="trained runs and phantoms, reused by the other ablations (default: ./ablation_work)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=REPO / "benchmarks" / "results" / default_output,
        help="where the markdown table, JSON and PNG go (stem)",
    )
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--arms", nargs="+", choices=list(ARMS), help=f"arms to train and score (default: {', '.join(DEFAULT_ARMS)})"
    )


def parse(doc: str, default_output: str, argv=None):
    """(args, settings, held-out phantoms) of an ablation script's command line."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, default_output)
    args = parser.parse_args(argv)
    s = settings(args)
    return args, s, test_phantoms(s["recipe"], s["test_cases"])


def residual_arm(args) -> str:
    """The T-Gated arm a model analysis reads: the first of ``--arms``, ``tgated`` without it (the
    gate and context-path analyses need a residual adapter)."""
    arm = (args.arms or ["tgated"])[0]
    if not ARMS[arm].get("temporal") or ARMS[arm].get("adapter") != "residual":
        raise SystemExit(f"--arms {arm}: this analysis needs a residual T-Gated arm, e.g. tgated or tgated_centre")
    return arm


def describe(s: dict, phantoms) -> str:
    r = s["recipe"]
    c = r.train_config("data", "run")
    return (
        f"{r.steps} steps x {c.batch_size} slices ({c.recipe} recipe) at {c.image_size} px on {r.n_train} training phantoms "
        f"{tuple(r.spec.shape)} per seed, {len(phantoms)} held-out phantoms; {machine()}"
    )


def report(stem: Path, header: str, text: str, s: dict, phantoms, payload: dict, chart=None) -> None:
    """Print the table; write STEM.md, STEM.json (settings + ``payload``) and, with ``chart``, STEM.png."""
    print(header + "\n\n" + text)
    atomic_write_text(stem.with_suffix(".md"), f"{header}\n\n{text}\n")
    settings_ = {
        "recipe": s["recipe"].to_dict(),
        "seeds": s["seeds"],
        "test_cases": len(phantoms),
        "machine": machine(),
    }
    write_json(stem.with_suffix(".json"), {"settings": settings_, **payload})
    if chart is not None:
        chart(stem.with_suffix(".png"))
    log(f"wrote {stem.with_suffix('.md')}, .json" + (" and .png" if chart is not None else ""))


def settings(args) -> dict:
    base = QUICK if args.quick else FULL
    recipe = base["recipe"]
    if args.steps:
        recipe = replace(recipe, steps=args.steps)
    if args.image_size:
        recipe = replace(recipe, settings={**recipe.settings, "image_size": args.image_size})
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    work = args.work / ("quick" if args.quick else "full")
    return {
        "recipe": recipe,
        "seeds": args.seeds or base["seeds"],
        "test_cases": args.test_cases or base["test_cases"],
        "work": work,
    }


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_stamp(recipe: PhantomRecipe, seed: int, arm: str) -> str:
    """What a trained run of ``arm`` is reused for: the phantom recipe, the seed, the arm's settings
    and the training recipe's values (a changed default, such as the refinement window, retrains), and
    how a random model is initialised (runs from before the sin-cos position code are not reused)."""
    from TGatedSegmentLib.model.random_init import POSITION_AMPLITUDE
    from TGatedSegmentLib.training.recipes import RECIPES

    training_recipe = recipe.train_config("data", "run").recipe
    values = {k: v for k, v in RECIPES[training_recipe].items() if k not in AFTER_TRAINING}
    return json.dumps(
        {
            "recipe": recipe.to_dict(),
            "seed": seed,
            "arm": arm,
            "settings": ARMS[arm],
            "recipe_values": values,
            "initialisation": {"position_code_amplitude": POSITION_AMPLITUDE},
        },
        sort_keys=True,
    )


def trained(work: Path, recipe: PhantomRecipe, seed: int, arm: str) -> Path:
    """The ``best/`` checkpoint of ``arm`` trained with ``recipe`` and ``seed``; trains it when missing."""
    from TGatedSegmentLib.training import train

    root = work / f"seed{seed}"
    data = root / "data"
    if not (data / "dataset.json").is_file():
        write_phantom_dataset(data, recipe.n_train + recipe.n_val, seed=seed, spec=recipe.spec)
    run = root / arm
    # the arm's settings too: an arm whose settings change is trained anew, not reused
    stamp = run_stamp(recipe, seed, arm)
    stamp_file = run / "ablation-recipe.json"
    if (
        (run / "best" / "config.json").is_file()
        and stamp_file.is_file()
        and stamp_file.read_text(encoding="utf-8") == stamp
    ):
        log(f"  reusing {run}")
        return calibrated(run / "best", recipe.train_config(data, run, seed=seed))
    log(f"  training {arm}, seed {seed}: {recipe.steps} steps, {recipe.n_train} phantoms")
    started = time.perf_counter()
    settings = dict(ARMS[arm])
    reference = settings.pop("equal_time_as", None)
    if reference is not None:  # as many steps as fit in the reference arm's training time
        seconds = training_record(trained(work, recipe, seed, reference))["seconds"]
        settings.update(steps=recipe.steps * 20, max_seconds=seconds)
    # equal steps for every arm: neither the demo's 270 s cap nor the recipe's 10 minutes (a busy machine would
    # cut arms short unequally, and the schedule would anneal over the time instead of the steps)
    settings.setdefault("max_seconds", EQUAL_STEPS_CAP)
    config = replace(recipe, max_seconds=None).train_config(
        data, run, seed=seed, device="cpu", overwrite=True, **settings
    )
    train(config)
    stamp_file.write_text(stamp)
    log(f"  trained {arm}, seed {seed} in {time.perf_counter() - started:.0f} s")
    return run / "best"


def calibrated(best: Path, config) -> Path:
    """``best`` with the thresholds its recipe asks for: a run trained before ``thresholds`` existed
    is calibrated on its own validation phantom, as its trainer would have at its last validation."""
    from TGatedSegmentLib.data.dataset import load_dataset
    from TGatedSegmentLib.evaluation.calibration import calibrate_checkpoint
    from TGatedSegmentLib.evaluation.evaluate import dataset_cases
    from TGatedSegmentLib.training.dataset import split_dataset
    from TGatedSegmentLib.training.preflight import parse_val

    saved = json.loads((Path(best) / "config.json").read_text(encoding="utf-8"))
    if config.thresholds != "calibrated" or saved.get("organ_thresholds"):
        return Path(best)
    _, n_val = parse_val(config.val)  # the phantom recipes hold out split:N
    _, val = split_dataset(load_dataset(config.data), int(n_val or 1), config.seed)
    thresholds = calibrate_checkpoint(best, dataset_cases(val), best)  # in place: a benchmark's own run
    log(f"  calibrated {best}: {thresholds}")
    return Path(best)


def training_record(best: Path) -> dict:
    """Steps and seconds of the whole training run of ``best`` (its ``last/`` checkpoint's metadata)."""
    last = Path(best).parent / "last"
    training = json.loads(((last if last.is_dir() else Path(best)) / "config.json").read_text(encoding="utf-8"))[
        "training"
    ]
    return {"steps": training["step"], "seconds": float(training.get("seconds", math.nan))}


def test_phantoms(recipe: PhantomRecipe, count: int):
    return [generate_phantom((TEST_SERIES, i), recipe.spec) for i in range(count)]


def phantom_image(phantom):
    """The phantom as the int16 HU SimpleITK image a user would load."""
    return phantom.to_sitk(integer_hu=True)[0]


def average_dice(scores: dict[str, list[float]]) -> tuple[dict[str, float], float]:
    """Per-organ mean over test cases (NaN where every case was empty on both sides) and their mean."""
    import numpy as np

    per_organ = {
        organ: float(np.nanmean(v)) if not all(math.isnan(x) for x in v) else math.nan for organ, v in scores.items()
    }
    finite = [v for v in per_organ.values() if not math.isnan(v)]
    return per_organ, float(np.mean(finite)) if finite else math.nan


def organ_ids(phantom) -> list[int]:
    return sorted(phantom.label_names)


def mean_std_text(values, digits: int = 3) -> str:
    from TGatedSegmentLib.evaluation.phantom import mean_std

    mean, std = mean_std(values)
    return "n/a" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def machine() -> str:
    import torch

    return (
        f"{platform.machine()}, {os.cpu_count()} CPU core(s), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads)"
    )
