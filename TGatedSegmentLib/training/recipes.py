"""Training recipes: complete sets of training settings, chosen by measurement for a situation.

* ``paper``: the T-Gated paper's setting (Sec. 3.5) and the authors' optimiser, for fine-tuning a
  **pretrained** CLIPSeg (``CIDAS/clipseg-rd64-refined``) on a GPU: one (window, organ) pair per
  sample with the paper's class-weighted sampling, 1 negative per 3 positives, BCE + per-sample
  Dice, learning rates 1e-6 / 1e-5 / 5e-5, warm restarts every 5 epochs, 30 epochs.
* ``cpu``: training from **random weights** on a laptop CPU in minutes: the built-in
  ``builtin:cpu`` architecture (a narrow ViT with 8-px patches, 16 x 16 tokens at 128 px) with the
  refinement head (reading the temporal adapter's 5-slice window), multi-prompt slice batches (every
  organ decoded for every encoded slice), one learning rate for everything with a short warm-up
  and one cosine decay over the time budget, batch Dice plus a one-organ-per-pixel softmax over
  each slice's prompts, no left-right flips (the side is an organ's strongest cue), oversampling of
  the slices just outside each organ and of the slices a dataset marks as hard. The model starts
  from :mod:`TGatedSegmentLib.model.random_init` (a sin-cos position code, PyTorch's decoder init), as every model
  built from random weights does. docs/training.md, "Recipes", gives the measurements behind each choice.

A :class:`TrainConfig` field left at ``None`` takes its recipe's value; any explicit value wins.
Without ``recipe``, a random-weight base (``builtin:NAME`` or a CLIPSeg config file) gets ``cpu``
and everything else (a pretrained CLIPSeg or a checkpoint) gets ``paper``.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_BASE = "CIDAS/clipseg-rd64-refined"

PAPER: dict = {
    "base": DEFAULT_BASE,
    "tokenizer": None,
    "image_size": None,  # the base's own (352)
    "adapter": "residual",
    "adapter_input": "slices",
    "refine": None,
    "refine_window": 1,
    "refine_window_mix": "linear",
    "prompt_centring": "none",
    "epochs": 30,
    "steps": None,
    "max_seconds": None,
    "batching": "pairs",
    "batch_size": 8,
    "chunk_slices": 8,
    "samples_per_epoch": None,
    "lr_encoder": 1e-6,
    "lr_text": None,  # lr_encoder
    "lr_decoder": 1e-5,
    "lr_adapter": 5e-5,
    "weight_decay": 1e-4,
    "schedule": "restarts",
    "warmup_steps": 0,
    "restart_epochs": 5,
    "min_lr": 1e-7,
    "grad_clip": 0.5,
    "dice": "sample",
    "exclusive": 0.0,
    "hard_pixels": 0.0,
    "context_head": "none",
    "context_loss": 0.0,
    "gate_penalty": 1e-3,
    "negative_ratio": 1.0 / 3.0,
    "max_rotation": 5.0,
    "max_zoom": 0.0,
    "intensity": 0.0,
    "organ_intensity": 0.0,
    "random_contrast": 0.0,
    "flip_probability": 0.5,
    "boundary_weight": 0.0,
    "hint_weight": 0.0,
    "thresholds": "fixed",
}

CPU: dict = {
    **PAPER,
    "base": "builtin:cpu",
    "tokenizer": "compact",
    "image_size": 128,
    "refine": 8,
    # the refinement head reads the adapter's 5-slice window (a temporal run; 1 slice otherwise): 750
    # phantom steps, 3 seeds, against the centre slice only: look-alike target .698 -> .751, its
    # volume inside look-alikes 8.6 -> 4.1 ml (slice-wise 10.3), 12 % more time a step
    "refine_window": 5,
    # ... mixed through a hidden layer: 750 phantom steps, 3 seeds, against one linear mixing layer (both
    # before prompt centring): look-alike volume 4.1 -> 3.4 ml (slice-wise 10.3), target .751 -> .749
    "refine_window_mix": "hidden",
    "epochs": 1000,  # the time budget ends the run
    "max_seconds": 600.0,
    "batching": "slices",
    "batch_size": 8,  # centre slices per step: 1 chunk of 8 (more steps beat bigger batches: see the notes)
    "chunk_slices": 8,
    "samples_per_epoch": 200,  # chunks: a validation every 100 steps
    "lr_encoder": 2e-3,
    # the text encoder stays at its random initialisation: trained at 2e-3 the prompts' embeddings
    # collapse (cosine 0.99 between spleen, left kidney and gallbladder after 300 steps) and the
    # decoder cannot tell those organs apart; frozen they stay distinct (measured in the notes)
    "lr_text": 0.0,
    # ... and its embeddings are centred on the organ prompts: at random initialisation they share most
    # of their length (cosine 0.92 between the two kidneys), and on some seeds one kidney prompt learnt to
    # segment both. 750 phantom steps, 3 seeds: T-Gated kidneys .68/.76 -> .89/.92 (no seed collapses),
    # look-alike volume 3.4 -> 1.7 ml, 9-organ mean .646 -> .744; slice-wise mean .669 -> .689
    "prompt_centring": "vocabulary",
    # (adapter_input stays "slices": slice differences measured level with the window head, 750 phantom
    # steps, 3 seeds: look-alike target .823 -> .837, 9-organ mean .764 -> .767; docs/results.md, "Adapter input")
    "lr_decoder": 2e-3,
    "lr_adapter": 2e-3,
    "schedule": "cosine",
    "warmup_steps": 50,
    "min_lr": 1e-5,
    "grad_clip": 1.0,
    "dice": "batch",
    # organs do not overlap: one softmax per pixel over a slice's prompts (+ background) next to the
    # sigmoids; 300 phantom steps: kidneys .38/.39 -> .60/.66, spleen .54 -> .70, organ-absent-slice
    # false positives 96 -> 14 ml, mean .467 -> .550 (docs/training.md, "Recipes")
    "exclusive": 1.0,
    # the BCE of each item's hardest 1 % of pixels on top: 750 phantom steps, seed 0, T-Gated: mean
    # .649 -> .701, gallbladder .595 -> .650, look-alike FP 14.9 -> 11.9 ml, adrenals 0 -> .07/.47
    "hard_pixels": 1.0,
    "max_rotation": 5.0,
    "max_zoom": 0.1,
    "flip_probability": 0.0,
    "boundary_weight": 2.0,
    "hint_weight": 2.0,
    # each organ's threshold chosen on the validation volumes (evaluation/calibration.py): a model trained
    # briefly from random weights under-segments its small organs at 0.5. 750 phantom steps, 3 seeds,
    # scored on 4 held-out phantoms each: T-Gated look-alike target +0.014 (0 to +0.028), 7-organ mean
    # +0.006; the demo's 513-step model: target 0.689 -> 0.738, mean +0.013 (docs/results.md)
    "thresholds": "calibrated",
}

RECIPES: dict[str, dict] = {"paper": PAPER, "cpu": CPU}


def random_weights(base: str | None) -> bool:
    """A base that is an architecture (``builtin:NAME`` or a CLIPSeg config file), not weights."""
    if base is None:
        return False
    text = str(base)
    return text.startswith("builtin:") or Path(text).expanduser().is_file()


def recipe_for(recipe: str | None, base: str | None) -> str:
    """The recipe's name: the one asked for, else by the kind of base (see the module docstring)."""
    if recipe is not None:
        return recipe
    return "cpu" if random_weights(base) else "paper"
