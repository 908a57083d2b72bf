"""Training settings: one dataclass shared by ``tgated train`` and Python (Slicer's console).

Defaults are the paper's (Sec. 3.5) and the authors' optimiser; see README "Training" for where
we depart from their code. Importing this module does not import torch, so the CLI can reject bad
input in a fraction of a second.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import InputError

DEFAULT_BASE = "CIDAS/clipseg-rd64-refined"

# Settings that define what is trained: a resumed run must keep them (the others may change).
STRUCTURAL = ("data", "val", "base", "tokenizer", "temporal", "freeze_encoders", "batch_size", "samples_per_epoch",
              "lr_encoder", "lr_decoder", "lr_adapter", "weight_decay", "restart_epochs", "min_lr", "grad_clip",
              "gate_penalty", "negative_ratio", "max_rotation", "flip_probability", "seed", "image_size", "amp",
              "finetune", "peft", "peft_dim", "peft_parts", "lr_peft", "probabilistic")

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
    base: str = DEFAULT_BASE
    tokenizer: str | None = None
    temporal: bool = True
    freeze_encoders: bool = False  # the same as finetune="decoder" (kept for compatibility)
    finetune: str = "full"  # "full" (the paper), "decoder" (CLIP frozen) or "adapters" (CLIP and decoder frozen)
    peft: str | None = None  # add VLSM bottleneck adapters to a base without them: "dense" or "shallow"
    peft_dim: int | None = None  # their bottleneck width (default 64 dense, 512 shallow)
    peft_parts: str | None = None  # comma list of vision, text, conditional (default all three)
    lr_peft: float | None = None  # the PEFT adapters' learning rate (default 1e-3 dense, 3e-4 shallow)
    probabilistic: bool = False  # probabilistic temporal attention (a deterministic base initialises its means)
    epochs: int = 30
    steps: int | None = None
    max_seconds: float | None = None
    batch_size: int = 8
    samples_per_epoch: int | None = None
    lr_encoder: float = 1e-6  # CLIP vision and text encoders (text projection included)
    lr_decoder: float = 1e-5  # CLIPSeg decoder
    lr_adapter: float = 5e-5  # every adapter parameter, temporal position embedding included
    weight_decay: float = 1e-4
    restart_epochs: int = 5  # CosineAnnealingWarmRestarts T_0
    min_lr: float = 1e-7
    grad_clip: float = 0.5
    gate_penalty: float = 1e-3
    negative_ratio: float = 1.0 / 3.0  # negatives per positive
    max_rotation: float = 5.0  # degrees, uniform in +-max_rotation
    flip_probability: float = 0.5  # left-right flip, organs without a side only
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
        # local paths are recorded absolute: the metadata stays meaningful and --resume works from any folder
        self.data = local_path(self.data)
        self.val = local_path(self.val) if self.val is not None and not str(self.val).strip().startswith("split") \
            else self.val
        self.base = local_path(self.base)
        self.tokenizer = local_path(self.tokenizer) if self.tokenizer not in (None, "compact") else self.tokenizer
        self.output = str(self.output)
        checks = [
            ("epochs", self.epochs, 1), ("batch_size", self.batch_size, 1), ("restart_epochs", self.restart_epochs, 1),
            ("val_batch_size", self.val_batch_size, 1),
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
                     "negative_ratio", "max_rotation"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise InputError(f"{name} must be a finite number >= 0, got {value!r}",
                                 f"Pass a valid --{_flag(name)}.")
        if not 0.0 <= self.flip_probability <= 1.0:
            raise InputError(f"flip_probability must be in [0, 1], got {self.flip_probability}", "Use e.g. 0.5.")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise InputError(f"max_seconds must be > 0, got {self.max_seconds}", "Pass a positive time budget.")
        if self.amp not in (None, "bf16", "fp16"):
            raise InputError(f"unknown mixed precision '{self.amp}'", "Use --amp bf16 or --amp fp16 (CUDA only).")
        self._check_finetune()
        if self.image_size is not None and self.image_size % 16:
            raise InputError(f"image_size {self.image_size} is not a multiple of 16",
                             "The ViT patch grid must be square and whole: use e.g. 352, 224, 128 or 64.")

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
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    saved = dict(saved)
    saved.setdefault("finetune", "decoder" if saved.get("freeze_encoders") else "full")
    now = current.to_dict()
    return [f"{k}: {saved.get(k, defaults.get(k))!r} -> {now.get(k)!r}" for k in STRUCTURAL
            if saved.get(k, defaults.get(k)) != now.get(k)]
