"""Training settings: one dataclass shared by ``tgated train`` and Python (Slicer's console).

Settings left at ``None`` come from the run's recipe (``recipes.py``: ``paper`` for a pretrained
base, ``cpu`` for random weights); see docs/training.md for where the paper recipe departs from
the authors' code. Importing this module does not import torch, so the CLI can reject bad input
in a fraction of a second.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import InputError
from .recipes import RECIPES, recipe_for

# Settings that define what is trained: a resumed run must keep them (the others may change).
STRUCTURAL = ("data", "val", "base", "tokenizer", "temporal", "freeze_encoders", "batch_size", "samples_per_epoch",
              "lr_encoder", "lr_text", "lr_decoder", "lr_adapter", "weight_decay", "restart_epochs", "min_lr", "grad_clip",
              "gate_penalty", "negative_ratio", "max_rotation", "flip_probability", "seed", "image_size", "amp",
              "finetune", "peft", "peft_dim", "peft_parts", "lr_peft", "probabilistic", "recipe", "adapter",
              "refine", "batching", "chunk_slices", "schedule", "warmup_steps", "dice", "max_zoom", "intensity",
              "boundary_weight", "hint_weight", "exclusive", "organ_intensity", "hard_pixels")
# Settings added after runs were saved without them: the value those runs trained with. A resumed
# run keeps it (a recipe's newer default must not change a run half way).
PREDATING = {"organ_intensity": 0.0, "hard_pixels": 0.0}
ADAPTER_CHOICES = ("residual", "reference", "control")  # control: the residual adapter fed 5 copies of the centre
BATCHINGS = ("pairs", "slices")

FINETUNE_MODES = ("full", "decoder", "adapters")
PEFT_VARIANTS = ("dense", "shallow")
PEFT_PARTS = ("vision", "text", "conditional")
# VLSM-Adapter's learning rates (scripts/finetune.py): 1e-3 for the dense adapters, 3e-4 for the shallow ones
DEFAULT_LR_PEFT = {"dense": 1e-3, "shallow": 3e-4}


@dataclass
class TrainConfig:
    """Everything :func:`TGatedSegmentLib.training.trainer.train` needs.

    ``val``: a dataset folder, ``"split:N"`` (hold out N cases of ``data``, chosen by ``seed``) or
    ``None`` (validate on the training volumes: only an overfitting check, the run says so).
    ``steps`` bounds the total number of optimiser steps and ``max_seconds`` the wall-clock time
    (the run then validates and saves as at the end of an epoch). ``samples_per_epoch`` overrides
    the paper's epoch (every positive (slice, organ) pair once in expectation plus 1 negative per 3).
    """

    data: str | Path
    output: str | Path
    val: str | None = None
    recipe: str | None = None  # "paper" or "cpu" (None: by the base, see recipes.py)
    base: str | None = None
    tokenizer: str | None = None
    temporal: bool = True
    adapter: str | None = None  # a new adapter's wiring: residual (default), reference (the authors') or control
    refine: int | None = None  # channels of a new refinement head (0: none)
    freeze_encoders: bool = False  # the same as finetune="decoder" (kept for compatibility)
    finetune: str = "full"  # "full" (the paper), "decoder" (CLIP frozen) or "adapters" (CLIP and decoder frozen)
    peft: str | None = None  # add VLSM bottleneck adapters to a base without them: "dense" or "shallow"
    peft_dim: int | None = None  # their bottleneck width (default 64 dense, 512 shallow)
    peft_parts: str | None = None  # comma list of vision, text, conditional (default all three)
    lr_peft: float | None = None  # the PEFT adapters' learning rate (default 1e-3 dense, 3e-4 shallow)
    probabilistic: bool = False  # probabilistic temporal attention (a deterministic base initialises its means)
    token_cache: bool = False  # train from the frozen vision encoder's cached output (token_cache.py)
    epochs: int | None = None
    steps: int | None = None
    max_seconds: float | None = None
    batching: str | None = None  # "pairs": one (window, organ) per sample; "slices": chunks, every organ decoded
    batch_size: int | None = None  # pairs, or centre slices, per step and process
    chunk_slices: int | None = None  # consecutive centre slices per chunk ("slices")
    samples_per_epoch: int | None = None  # pairs or chunks
    lr_encoder: float | None = None  # CLIP vision encoder, and the text encoder unless lr_text is set
    lr_text: float | None = None  # CLIP text encoder and projection (None: lr_encoder)
    lr_decoder: float | None = None  # CLIPSeg decoder
    lr_adapter: float | None = None  # every adapter parameter (temporal position embedding included), refinement head
    weight_decay: float | None = None
    schedule: str | None = None  # "restarts" (the paper) or "cosine" (warm-up + one cosine over the budget)
    warmup_steps: int | None = None
    restart_epochs: int | None = None  # CosineAnnealingWarmRestarts T_0
    min_lr: float | None = None
    grad_clip: float | None = None
    dice: str | None = None  # "sample" (the paper's per-sample Dice) or "batch" (per prompt over the batch)
    exclusive: float | None = None  # weight of the one-organ-per-pixel softmax over a slice's prompts ("slices")
    hard_pixels: float | None = None  # weight of the BCE of each item's hardest 1 % of pixels (losses.py)
    gate_penalty: float | None = None
    negative_ratio: float | None = None  # negatives per positive ("pairs")
    max_rotation: float | None = None  # degrees, uniform in +-max_rotation
    max_zoom: float | None = None  # in-plane scale uniform in 1 +- max_zoom ("slices")
    intensity: float | None = None  # contrast/brightness/gamma jitter ("slices")
    organ_intensity: float | None = None  # each organ's level moved by up to +- this ("slices", augment.py)
    flip_probability: float | None = None  # left-right flip, organs without a side only ("pairs")
    boundary_weight: float | None = None  # extra draws of the 2 slices beyond each organ's extent ("slices")
    hint_weight: float | None = None  # extra draws of the slices a dataset lists as hard ("slices")
    amp: str | None = None  # "bf16" or "fp16" on CUDA; float32 otherwise
    device: str = "auto"
    num_workers: int | None = None  # DataLoader workers (None: 2 on CUDA, 0 on CPU)
    seed: int = 0
    image_size: int | None = None  # model input size (None: the base checkpoint's, 352)
    cache_dir: str | Path | None = None  # preprocessed volumes (None: OUTPUT/cache)
    val_batch_size: int = 4  # slices per encoder batch in validation
    save_every_steps: int | None = None  # also save last/ and the resume state every N steps
    save_every_minutes: float | None = 30.0  # ... or when this long has passed since the last save
    resume: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        self._apply_recipe()
        # local paths are recorded absolute: the metadata stays meaningful and --resume works from any folder
        self.data = local_path(self.data)
        self.val = local_path(self.val) if self.val is not None and not str(self.val).strip().startswith("split") \
            else self.val
        self.base = local_path(self.base)
        self.tokenizer = local_path(self.tokenizer) if self.tokenizer not in (None, "compact") else self.tokenizer
        self.output = str(self.output)
        checks = [
            ("epochs", self.epochs, 1), ("batch_size", self.batch_size, 1), ("restart_epochs", self.restart_epochs, 1),
            ("val_batch_size", self.val_batch_size, 1), ("chunk_slices", self.chunk_slices, 1),
            ("warmup_steps", self.warmup_steps, 0), ("refine", self.refine, 0),
        ]
        for name, value, low in checks:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InputError(f"{name} must be an integer >= {low}, got {value!r}", f"Pass a valid --{_flag(name)}.")
        for name in ("steps", "samples_per_epoch", "save_every_steps", "image_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InputError(f"{name} must be a positive integer, got {value!r}", f"Pass a valid --{_flag(name)}.")
        if self.num_workers is not None and (not isinstance(self.num_workers, int) or self.num_workers < 0):
            raise InputError(f"num_workers must be >= 0, got {self.num_workers!r}", "Pass --num-workers 0 or more.")
        for name in ("lr_encoder", "lr_decoder", "lr_adapter", "weight_decay", "min_lr", "grad_clip", "gate_penalty",
                     "negative_ratio", "max_rotation", "max_zoom", "intensity", "boundary_weight", "hint_weight",
                     "exclusive", "organ_intensity", "hard_pixels"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise InputError(f"{name} must be a finite number >= 0, got {value!r}",
                                 f"Pass a valid --{_flag(name)}.")
        if not 0.0 <= self.flip_probability <= 1.0:
            raise InputError(f"flip_probability must be in [0, 1], got {self.flip_probability}", "Use e.g. 0.5.")
        if self.lr_text is not None and (not isinstance(self.lr_text, (int, float)) or not math.isfinite(self.lr_text)
                                         or self.lr_text < 0):
            raise InputError(f"lr_text must be a finite number >= 0, got {self.lr_text!r}", "Pass a valid --lr-text.")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise InputError(f"max_seconds must be > 0, got {self.max_seconds}", "Pass a positive time budget.")
        if self.amp not in (None, "bf16", "fp16"):
            raise InputError(f"unknown mixed precision '{self.amp}'", "Use --amp bf16 or --amp fp16 (CUDA only).")
        choices = (("adapter", self.adapter, ADAPTER_CHOICES), ("batching", self.batching, BATCHINGS),
                   ("schedule", self.schedule, ("restarts", "cosine")), ("dice", self.dice, ("sample", "batch")))
        for name, choice, allowed in choices:
            if choice not in allowed:
                raise InputError(f"unknown {name.replace('_', ' ')} '{choice}'",
                                 f"Use --{_flag(name)} {' or '.join(allowed)}.")
        if self.max_zoom >= 1.0 or self.intensity >= 1.0 or self.organ_intensity >= 1.0:
            raise InputError("max_zoom, intensity and organ_intensity must be below 1",
                             "Use e.g. --max-zoom 0.1 --intensity 0.2 --organ-intensity 0.3.")
        if self.adapter == "reference" and self.refine:
            raise InputError("the refinement head is not part of the authors' model (--adapter reference)",
                             "Pass --refine 0 with --adapter reference, or use --adapter residual.")
        self._check_finetune()
        if self.token_cache:
            self._check_token_cache()
        if self.image_size is not None and self.image_size % 16:
            raise InputError(f"image_size {self.image_size} is not a multiple of 16",
                             "The ViT patch grid must be square and whole: use e.g. 352, 224, 128 or 64.")

    def _check_token_cache(self) -> None:
        """Cached tokens are the encoder's output for unaugmented slices of a frozen encoder."""
        if self.batching != "slices":
            raise InputError("--token-cache works with multi-prompt slice batches", "Add --batching slices.")
        if self.finetune == "full" and self.lr_encoder > 0:
            raise InputError("--token-cache needs a frozen vision encoder (cached tokens cannot train it)",
                             "Add --finetune decoder or --finetune adapters.")
        augmented = [f"--{_flag(n)} 0" for n in ("max_rotation", "max_zoom", "intensity", "organ_intensity")
                     if getattr(self, n)]
        if augmented:
            raise InputError("--token-cache stores the tokens of unaugmented slices, so pixel augmentation is off",
                             f"Add {' '.join(augmented)}.")

    def _apply_recipe(self) -> None:
        """Fill every setting left at None from the recipe (named, or chosen by the base)."""
        self.recipe = recipe_for(self.recipe, self.base)
        if self.recipe not in RECIPES:
            raise InputError(f"unknown recipe '{self.recipe}'", f"Use --recipe {' or '.join(RECIPES)}.")
        given = {name for name in RECIPES[self.recipe] if getattr(self, name) is not None}
        for name, value in RECIPES[self.recipe].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        self.refine = int(self.refine or 0)
        if self.batching == "pairs" and self.exclusive:
            # the exclusive term compares the prompts decoded for one slice: pair batches have one
            if "exclusive" in given:
                raise InputError("--exclusive needs multi-prompt slice batches (each pair batch decodes one prompt "
                                 "per slice)", "Add --batching slices, or leave --exclusive out.")
            self.exclusive = 0.0

    def _check_finetune(self) -> None:
        if self.finetune not in FINETUNE_MODES:
            raise InputError(f"unknown fine-tuning mode '{self.finetune}'", "Use --finetune full, decoder or adapters.")
        if self.freeze_encoders and self.finetune == "full":
            self.finetune = "decoder"  # --freeze-encoders is the decoder mode under its old name
        self.freeze_encoders = self.finetune != "full"  # CLIP is frozen in both other modes
        if self.peft is not None and self.peft not in PEFT_VARIANTS:
            raise InputError(f"unknown PEFT variant '{self.peft}'", "Use --peft dense or --peft shallow.")
        if self.peft is None:
            given = [f"--{_flag(n)}" for n in ("peft_dim", "peft_parts") if getattr(self, n) is not None]
            if given:
                raise InputError(f"{' and '.join(given)} without --peft", "Add --peft dense or --peft shallow.")
        if self.peft_dim is not None and (isinstance(self.peft_dim, bool) or not isinstance(self.peft_dim, int)
                                          or self.peft_dim < 1):
            raise InputError(f"peft_dim must be a positive integer, got {self.peft_dim!r}", "Pass a valid --peft-dim.")
        if self.peft_parts is not None:
            parts = [p.strip().lower() for p in str(self.peft_parts).split(",") if p.strip()]
            unknown = [p for p in parts if p not in PEFT_PARTS]
            if unknown or not parts:
                raise InputError(f"--peft-parts '{self.peft_parts}' " + (f"names unknown parts ({', '.join(unknown)})"
                                 if unknown else "names no part"),
                                 f"Use a comma list of {', '.join(PEFT_PARTS)}, e.g. vision,text.")
            self.peft_parts = ",".join(p for p in PEFT_PARTS if p in parts)
        if self.lr_peft is not None and (not isinstance(self.lr_peft, (int, float)) or not math.isfinite(self.lr_peft)
                                         or self.lr_peft < 0):
            raise InputError(f"lr_peft must be a finite number >= 0, got {self.lr_peft!r}", "Pass a valid --lr-peft.")
        if self.probabilistic and not self.temporal:
            raise InputError("--probabilistic needs the temporal adapter (it makes its attention probabilistic)",
                             "Drop --no-temporal, or train without --probabilistic.")

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


def local_path(value) -> str:
    """An existing local file or folder as an absolute path; anything else (hub id, builtin:) as is."""
    text = str(value)
    path = Path(text).expanduser()
    return str(path.absolute()) if text and path.exists() else text


def _flag(name: str) -> str:
    return name.replace("_", "-")


def structural_differences(saved: dict, current: TrainConfig) -> list[str]:
    """Settings a resume may not change (they define the run), as 'name: saved -> now'.

    A setting the saved run predates counts as its default (e.g. ``finetune`` of runs made before
    it existed: ``decoder`` when they froze the encoders, else ``full``).
    """
    # runs saved before recipes existed were the paper's
    defaults = {**{f.name: f.default for f in fields(TrainConfig)}, **RECIPES["paper"], "recipe": "paper", **PREDATING}
    saved = dict(saved)
    saved.setdefault("finetune", "decoder" if saved.get("freeze_encoders") else "full")
    now = current.to_dict()
    return [f"{k}: {saved.get(k, defaults.get(k))!r} -> {now.get(k)!r}" for k in STRUCTURAL
            if saved.get(k, defaults.get(k)) != now.get(k)]
