"""Training settings: one dataclass shared by ``tgated train`` and Python (Slicer's console).

Settings left at ``None`` come from the run's recipe (``recipes.py``: ``paper`` for a pretrained
base, ``cpu`` for random weights); see docs/training.md for where the paper recipe departs from
the authors' code. Each field declares its option (help text, flag, recipe, resume rule, values:
``options.py``), from which ``tgated train``'s flags, the checks in ``__post_init__``, the resume
rules and the Slicer module's training options follow. Importing this module does not import
torch, so the CLI can reject bad input in a fraction of a second (and the Slicer module reads it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..compat import deprecated_names
from ..errors import InputError
from ..model.configuration import ADAPTER_INPUTS, CONTEXT_HEADS, WINDOW_MIXES
from .choices import (
    ADAPTER_CHOICES,
    BATCHINGS,
    DEFAULT_LR_PEFT,
    FINETUNE_MODES,
    PEFT_PARTS,
    PEFT_VARIANTS,
    THRESHOLD_CHOICES,
)
from .config_checks import apply_recipe, check_finetune, check_token_cache, local_path
from .options import Range, Resume, by_recipe, check_value, defining_the_run, predating, setting, settings
from .recipes import RECIPES
from .resume_rules import structural_differences

_NUMBER = Range(float, 0)  # a finite number >= 0
_COUNT, _SIZE = Range(int, 0), Range(int, 1)  # integers >= 0, >= 1
_FRACTION = Range(float, 0, 1, high_open=True)  # in [0, 1)
CHANGE, OWN = Resume.MAY_CHANGE, Resume.RUN_OWN  # (the default: Resume.DEFINES_RUN)


@dataclass
class TrainConfig:
    """Everything :func:`TGatedSegmentLib.training.trainer.train` needs.

    ``val``: a dataset folder, ``"split:N"`` (hold out N cases of ``data``, chosen by ``seed``) or
    ``None`` (validate on the training volumes: only an overfitting check, the run says so).
    ``steps`` bounds the total number of optimiser steps and ``max_seconds`` the wall-clock time
    (the run then validates and saves as at the end of an epoch). ``samples_per_epoch`` overrides
    the paper's epoch (every positive (slice, organ) pair once in expectation plus 1 negative per 3).
    Each field declares itself as an option (see the module's docstring).
    """

    data: str | Path = setting(
        help="dataset folder (dataset.json + imagesTr/ + labelsTr/, or labels.json + image/label pairs)",
        type=str,
        metavar="DATASET",
        path=True,
    )
    output: str | Path = setting(
        help="run folder (best/, last/, resume/, cache/)", type=str, metavar="RUN_DIR", aliases=("-o",), resume=OWN
    )
    val: str | None = setting(
        None,
        "validation dataset folder, or split:N to hold out N cases of --data chosen by "
        "--seed (default: validate on the training volumes, an overfitting check)",
        str,
        metavar="DATASET|split:N",
        path=True,
    )
    base: str | None = by_recipe(
        "starting model: a checkpoint folder (e.g. from `tgated init`), a CLIPSeg config or built-in architecture "
        "(random weights) or a CLIPSeg folder / hub id (pretrained; default CIDAS/clipseg-rd64-refined, needs the "
        "network once)",
        str,
        metavar="CKPT_DIR|CONFIG.json|builtin:NAME|HUB_ID",
        path=True,
        recipe_note=False,
    )
    tokenizer: str | None = by_recipe(
        "CLIP tokenizer (default: the base's own)", str, metavar="DIR|HUB_ID|compact", path=True, recipe_note=False
    )
    recipe: str | None = setting(  # "paper" or "cpu" (None: by the base, see recipes.py)
        None,
        "a complete set of training settings: cpu (random weights on a CPU in minutes: builtin:cpu, "
        "multi-prompt slice batches, one cosine over the budget) or paper (the paper's, for a pretrained base). "
        "Default: cpu for a builtin:/config-file base, paper otherwise; any flag below overrides the recipe's value",
        str,
        choices=tuple(RECIPES),
    )
    temporal: bool = setting(True, "train the slice-wise CLIPSeg baseline (ablation)")  # --no-temporal
    adapter: str | None = by_recipe(
        "a new adapter's wiring: residual (zero-initialised addition to the last activation), reference (the "
        "authors') or control (the residual adapter fed 5 copies of the centre slice)",
        str,
        choices=ADAPTER_CHOICES,
    )
    adapter_input: str | None = by_recipe(  # model/adapter.py, TemporalAdapter.temporal
        "what a new residual adapter's temporal transformer reads: slices (the window's tokens, the paper) or "
        "differences (each neighbour's tokens minus the centre slice's)",
        str,
        choices=ADAPTER_INPUTS,
        predating="slices",
    )
    refine: int | None = by_recipe("channels of a new full-resolution refinement head (0: none)", int, range=_COUNT)
    refine_window: int | None = by_recipe(  # model/refine.py, RefineConfig.window
        "slices a new refinement head reads: 1 (the centre slice) or 3 or 5 (the centre and its nearest "
        "neighbours, from the temporal adapter's window)",
        int,
        choices=(1, 3, 5),
        predating=1,
    )
    prompt_centring: str | None = by_recipe(  # model/modeling.py, TGatedCLIPSeg.fit_prompt_centre
        "vocabulary: centre the prompts' embeddings on the run's organ prompts before the decoder reads them "
        "(for a text encoder left at its random initialisation), or none",
        str,
        choices=("none", "vocabulary"),
        predating="none",
    )
    refine_window_mix: str | None = by_recipe(  # model/refine.py, RefineConfig.window_mix
        "how a new refinement head mixes its window's slices per pixel: linear, or hidden (a hidden layer, "
        "so that it can count in how many slices a blob appears)",
        str,
        choices=WINDOW_MIXES,
        predating="linear",
    )
    freeze_encoders: bool = setting(  # the same as finetune="decoder" (kept for compatibility)
        False, "keep the CLIP vision and text encoders fixed: the same as --finetune decoder"
    )
    finetune: str = setting(
        "full",
        "what trains: full (everything, the paper's default), decoder (CLIPSeg decoder and adapters; CLIP "
        "frozen) or adapters (temporal adapter and PEFT adapters only; CLIP and decoder frozen). decoder and adapters "
        "save only the trained weights, on top of the base",
        str,
        choices=FINETUNE_MODES,
        what="fine-tuning mode",
    )
    peft: str | None = setting(  # add VLSM bottleneck adapters to a base without them
        None,
        "add VLSM bottleneck adapters to the CLIP encoders (zero-initialised): dense (after attention and MLP "
        "of each encoder layer) or shallow (on the encoder outputs and the prompt embedding)",
        str,
        choices=PEFT_VARIANTS,
        optional=True,
        what="PEFT variant",
        hint="Use --peft dense or --peft shallow.",
    )
    peft_dim: int | None = setting(
        None, "bottleneck width of the PEFT adapters (default 64 dense, 512 shallow)", int, range=_SIZE, optional=True
    )
    peft_parts: str | None = setting(
        None,
        "comma list of vision, text, conditional: where the PEFT adapters go (default all three)",
        str,
        metavar="LIST",
    )
    lr_peft: float | None = setting(
        None, "PEFT adapters (default 1e-3 dense, 3e-4 shallow, as VLSM-Adapter)", float, range=_NUMBER, optional=True
    )
    probabilistic: bool = setting(
        False,
        "probabilistic temporal attention (Gaussian keys/values) for uncertainty "
        "maps; a deterministic base initialises its means",
    )
    token_cache: bool = setting(  # train from the frozen vision encoder's cached output (token_cache.py)
        False,
        "with a frozen vision encoder (--finetune decoder|adapters) and no pixel augmentation: encode every "
        "training slice once, store the tokens beside the volume cache and train from them (several times faster "
        "on a CPU at the real model size)",
        resume=OWN,
    )
    epochs: int | None = by_recipe("epochs", int, range=_SIZE, resume=CHANGE)
    steps: int | None = by_recipe(
        "stop after this many optimiser steps in all", int, range=_SIZE, optional=True, resume=CHANGE
    )
    max_seconds: float | None = by_recipe(  # the flag is in minutes
        "stop after this much training time (then validate and save)",
        float,
        flag="--max-minutes",
        scale=60.0,
        recipe_note=False,
        range=Range(float, 0, low_open=True),
        optional=True,
        hint="Pass a positive time budget.",
        resume=CHANGE,
    )
    batching: str | None = by_recipe(
        "pairs: one (window, organ) per sample (the paper); slices: chunks of consecutive slices, every annotated "
        "organ decoded for every encoded slice",
        str,
        choices=BATCHINGS,
    )
    batch_size: int | None = by_recipe("pairs, or centre slices, per step and process", int, range=_SIZE)
    chunk_slices: int | None = by_recipe("consecutive centre slices per chunk (--batching slices)", int, range=_SIZE)
    samples_per_epoch: int | None = by_recipe("epoch length in pairs or chunks", int, range=_SIZE, optional=True)
    lr_encoder: float | None = by_recipe(
        "learning rate of the CLIP vision encoder (and of the text encoder without --lr-text)", float, range=_NUMBER
    )
    lr_text: float | None = by_recipe(  # None: lr_encoder
        "learning rate of the CLIP text encoder and projection", float, range=_NUMBER, optional=True
    )
    lr_decoder: float | None = by_recipe("learning rate of the CLIPSeg decoder", float, range=_NUMBER)
    lr_adapter: float | None = by_recipe(  # every adapter parameter (temporal position embedding included)
        "learning rate of the temporal adapter and the refinement head", float, range=_NUMBER
    )
    weight_decay: float | None = by_recipe("AdamW weight decay", float, range=_NUMBER)
    schedule: str | None = by_recipe(
        "restarts (the paper's warm restarts) or cosine (warm-up, then one cosine over the budget)",
        str,
        choices=("restarts", "cosine"),
    )
    warmup_steps: int | None = by_recipe("linear warm-up steps (--schedule cosine)", int, range=_COUNT)
    restart_epochs: int | None = by_recipe(  # CosineAnnealingWarmRestarts T_0
        "epochs per warm restart (--schedule restarts)", int, range=_SIZE
    )
    min_lr: float | None = by_recipe("lowest learning rate of the schedule", float, range=_NUMBER)
    grad_clip: float | None = by_recipe("gradient-norm clipping", float, range=_NUMBER)
    dice: str | None = by_recipe(
        "sample (per-sample Dice, the paper) or batch (per prompt over the batch)", str, choices=("sample", "batch")
    )
    exclusive: float | None = by_recipe(
        "weight of the one-organ-per-pixel softmax over each slice's prompts (--batching slices)", float, range=_NUMBER
    )
    context_head: str | None = by_recipe(  # model/modeling.py, TGatedCLIPSeg._context_logits
        "a new residual adapter's context head, a prompt-conditioned linear read-out of per-token logits from "
        "its output: none, loss (read by --context-loss only) or logits (also added to the decoder's logits)",
        str,
        choices=CONTEXT_HEADS,
        predating="none",
    )
    context_loss: float | None = by_recipe(  # losses.context_token_loss
        "weight of the per-token BCE of the context head's logits against each mask pooled to the token grid",
        float,
        range=_NUMBER,
        predating=0.0,
    )
    hard_pixels: float | None = by_recipe(  # losses.py
        "weight of the BCE of each item's hardest 1 % of pixels (hard example mining)",
        float,
        range=_NUMBER,
        predating=0.0,
    )
    gate_penalty: float | None = by_recipe("weight of the gate penalty", float, range=_NUMBER)
    negative_ratio: float | None = by_recipe("negatives per positive (--batching pairs)", float, range=_NUMBER)
    max_rotation: float | None = by_recipe("in-plane rotation augmentation, degrees", float, range=_NUMBER)
    max_zoom: float | None = by_recipe(
        "in-plane zoom augmentation, 1 +- this (--batching slices)",
        float,
        range=_FRACTION,
        hint="Use e.g. --max-zoom 0.1.",
    )
    intensity: float | None = by_recipe(
        "contrast/brightness/gamma jitter (--batching slices)", float, range=_FRACTION, hint="Use e.g. --intensity 0.2."
    )
    organ_intensity: float | None = by_recipe(  # augment.py
        "move each labelled organ's intensity level by up to +- this, one organ at a time (0-1 scale; for MR from "
        "few patients; --batching slices)",
        float,
        range=_FRACTION,
        hint="Use e.g. --organ-intensity 0.3.",
        predating=0.0,
    )
    random_contrast: float | None = by_recipe(  # augment.py: organ brightness stops being a cue
        "probability of a random convolutional network remapping a chunk's intensities and textures (GIN; "
        "--batching slices)",
        float,
        range=Range(float, 0, 1),
        hint="Use e.g. --random-contrast 0.5.",
        predating=0.0,
    )
    flip_probability: float | None = by_recipe(
        "left-right flips of organs without a side (--batching pairs)",
        float,
        range=Range(float, 0, 1),
        hint="Use e.g. 0.5.",
    )
    boundary_weight: float | None = by_recipe(
        "extra draws of the 2 slices beyond each organ's extent (--batching slices)", float, range=_NUMBER
    )
    hint_weight: float | None = by_recipe(
        "extra draws of the slices a dataset lists as hard (--batching slices)", float, range=_NUMBER
    )
    thresholds: str | None = by_recipe(  # evaluation/calibration.py
        "the checkpoint's decision thresholds: fixed (0.5 for every organ) or calibrated (each organ's best on "
        "the validation volumes, chosen at every validation)",
        str,
        choices=THRESHOLD_CHOICES,
        resume=CHANGE,
        predating="fixed",
    )
    # "bf16" or "fp16" on CUDA; float32 otherwise (--amp and --device: cli/common.py, as for every command)
    amp: str | None = setting(
        None,
        type=str,
        choices=("bf16", "fp16"),
        optional=True,
        shared=True,
        what="mixed precision",
        hint="Use --amp bf16 or --amp fp16 (CUDA only).",
    )
    device: str = setting("auto", type=str, shared=True, resume=CHANGE)
    num_workers: int | None = setting(
        None,
        "data loading processes (default: 2 on CUDA, 0 on CPU)",
        int,
        range=_COUNT,
        optional=True,
        hint="Pass --num-workers 0 or more.",
        resume=CHANGE,
    )
    seed: int = setting(0, "seed for initialisation, sampling and the split (default 0)", int)
    image_size: int | None = by_recipe(
        "model input size in px (a pretrained base: its own, 352)", int, range=_SIZE, optional=True
    )
    cache_dir: str | Path | None = setting(  # preprocessed volumes (training/cache.py)
        None, "volume cache, shareable between runs (default RUN_DIR/cache)", str, metavar="DIR", path=True, resume=OWN
    )
    val_batch_size: int = setting(4, range=_SIZE, resume=CHANGE)  # slices per encoder batch in validation
    save_every_steps: int | None = setting(
        None, "also save last/ and resume/ every N steps", int, range=_SIZE, optional=True, resume=CHANGE
    )
    save_every_minutes: float | None = setting(30.0, resume=CHANGE)  # ... or this long after the last save
    resume: bool = setting(
        False, "continue a stopped run from its last saved step", str, metavar="RUN_DIR", resume=OWN
    )  # the flag names the run folder (cli/train.py)
    overwrite: bool = setting(False, "replace an earlier run in RUN_DIR (keeps its cache)", resume=OWN)

    def __post_init__(self) -> None:
        apply_recipe(self)
        # local paths are recorded absolute: the metadata stays meaningful and --resume works from any folder
        self.data = local_path(self.data)
        self.val = (
            local_path(self.val) if self.val is not None and not str(self.val).strip().startswith("split") else self.val
        )
        self.base = local_path(self.base)
        self.tokenizer = local_path(self.tokenizer) if self.tokenizer not in (None, "compact") else self.tokenizer
        self.output = str(self.output)
        for entry in settings(type(self)):  # each value in its declared range or choices
            check_value(entry, getattr(self, entry.name))
        # what concerns several settings
        if self.adapter == "reference" and self.refine:
            raise InputError(
                "the refinement head is not part of the authors' model (--adapter reference)",
                "Pass --refine 0 with --adapter reference, or use --adapter residual.",
            )
        check_finetune(self)
        if self.token_cache:
            check_token_cache(self)
        if self.image_size is not None and self.image_size % 16:
            raise InputError(
                f"image_size {self.image_size} is not a multiple of 16",
                "The ViT patch grid must be square and whole: use e.g. 352, 224, 128 or 64.",
            )

    def peft_settings(self) -> dict | None:
        """The PeftConfig fields of ``--peft`` (None without it)."""
        if self.peft is None:
            return None
        parts = (self.peft_parts or ",".join(PEFT_PARTS)).split(",")
        return {"variant": self.peft, "dim": self.peft_dim, **{p: p in parts for p in PEFT_PARTS}}

    def to_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def run_dir(self) -> Path:
        return Path(self.output).expanduser()

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir else self.run_dir / "cache"


# Settings added after runs were saved without them, with the value those runs trained with (the
# fields' ``predating``, as a table).
PREDATING = predating(TrainConfig)

# STRUCTURAL was the list of the settings a resume may not change: now each field's ``resume``.
__getattr__ = deprecated_names(
    __name__,
    {
        "STRUCTURAL": (defining_the_run, "TGatedSegmentLib.training.options.defining_the_run()"),
    },
)

__all__ = [
    "ADAPTER_CHOICES",
    "BATCHINGS",
    "DEFAULT_LR_PEFT",
    "FINETUNE_MODES",
    "PEFT_PARTS",
    "PEFT_VARIANTS",
    "PREDATING",
    "TrainConfig",
    "local_path",
    "structural_differences",
]
