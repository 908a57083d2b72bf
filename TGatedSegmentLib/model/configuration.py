"""Configuration objects for the T-Gated CLIPSeg model (its input preprocessing: ``preprocessing.config``).

A checkpoint's ``config.json`` is ``TGatedConfig.to_dict()``: it names the CLIPSeg base (hub id
and full architecture), the adapter sizes (``None`` for the slice-wise baseline), the image
preprocessing the weights were trained with, and the organ vocabulary the model knows.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

from ..preprocessing.config import PreprocessConfig  # noqa: F401  (part of TGatedConfig; old import path)
from ..vocabulary import Organ

FORMAT_NAME = "tgated-segment"
FORMAT_VERSION = 1
DEFAULT_BASE_MODEL = "CIDAS/clipseg-rd64-refined"


ADAPTER_MODES = ("residual", "reference")
CONTEXT_HEADS = ("none", "loss", "logits")
#: What the residual adapter's temporal transformer reads (``AdapterConfig.temporal_input``).
ADAPTER_INPUTS = ("slices", "differences")


@dataclass
class AdapterConfig:
    """Sizes and wiring of the temporal adapter. Sizes default to the paper's (for a 768-wide ViT-B/16).

    ``mode`` says how the adapter meets the decoder (see ``adapter.py``):

    * ``"residual"`` (new models): the adapter rewrites only the last of the decoder's extracted
      activations, as ``c + g * f(window)`` with ``f`` zero-initialised, so a fresh model computes
      exactly what the slice-wise baseline computes and both use the same three-layer decoder;
    * ``"reference"`` (the authors' ``CLIPSegTemporalAdapter``, and every checkpoint saved before
      the residual mode existed): ``head(spatial(g * t + (1 - g) * c))`` on the last encoder state
      is the decoder's only activation.

    ``ignore_context`` feeds the adapter 5 copies of the centre slice: the equal-capacity control
    of the ablation (same parameters and compute, no neighbours).
    """

    context_size: int = 5  # slices per window: the centre and its 4 nearest neighbours
    proj_dim: int = 256  # width of the temporal transformer
    num_heads: int = 8
    num_layers: int = 4
    ffn_dim: int = 1024
    dropout: float = 0.1
    drop_path_rate: float = 0.1  # rises linearly from 0 over the temporal layers
    spatial_heads: int = 8
    spatial_mlp_ratio: float = 2.0  # 768 -> 1536 -> 768
    spatial_drop_path: float = 0.05
    head_dropout: float = 0.1
    head_out_dropout: float = 0.05
    gate_bias_init: float | None = None  # None: -5 for "reference" (sigmoid ~ 0.007, the paper), 0 for "residual"
    probabilistic: bool = False  # Gaussian keys/values in the temporal attention (uncertainty, MedCLIPSeg-style)
    prob_beta: float = 2.35  # weight of the key-uncertainty penalty in the attention scores
    prob_init_variance: float = 1e-3
    mode: str = "residual"
    ignore_context: bool = False
    # residual mode: which of the decoder's extracted activations (encoder order, -1 the deepest) the
    # adapter reads over the window and rewrites. New models take the one the decoder's FiLM reads
    # (``conditioned_activation``): an activation the decoder has learnt to ignore carries no context
    activation: int = -1
    # residual mode: a prompt-conditioned linear read-out of per-token organ logits from the adapter's
    # output (``modeling.TGatedCLIPSeg.context_logits``). "loss": read by the training loss only
    # (``--context-loss``); "logits": also added to the decoder's coarse logits, a direct path from
    # the prediction to the adapter; "none": no read-out (see docs/model.md, "Context head")
    context_head: str = "none"
    # residual mode: what the temporal transformer reads at each token position. "slices": the five
    # slices' tokens (the paper); "differences": each neighbour's tokens minus the centre slice's, the
    # centre as it is, so that "is this blob also above and below?" is in the input rather than
    # something the attention must first learn to compute (docs/results.md, "Adapter input")
    temporal_input: str = "slices"

    def __post_init__(self) -> None:
        if self.mode not in ADAPTER_MODES:
            raise ValueError(f"adapter mode must be one of {ADAPTER_MODES}, got {self.mode!r}")
        if self.gate_bias_init is None:
            self.gate_bias_init = -5.0 if self.mode == "reference" else 0.0
        if self.context_size < 1 or self.context_size % 2 == 0:
            raise ValueError(f"context_size must be a positive odd number, got {self.context_size}")
        if self.context_head not in CONTEXT_HEADS:
            raise ValueError(f"context_head must be one of {CONTEXT_HEADS}, got {self.context_head!r}")
        if self.mode == "reference" and self.context_head != "none":
            raise ValueError("the context head reads the residual adapter's output (mode 'residual')")
        if self.temporal_input not in ADAPTER_INPUTS:
            raise ValueError(f"temporal_input must be one of {ADAPTER_INPUTS}, got {self.temporal_input!r}")
        if self.mode == "reference" and self.temporal_input != "slices":
            raise ValueError("the authors' wiring reads the slices' tokens (temporal_input 'slices')")
        if self.mode == "reference" and self.activation != -1:
            raise ValueError("the authors' wiring reads the last encoder state only (activation -1)")
        if self.proj_dim % self.num_heads:
            raise ValueError(f"proj_dim {self.proj_dim} is not divisible by num_heads {self.num_heads}")

    @classmethod
    def default_for(cls, hidden_size: int, **overrides: Any) -> "AdapterConfig":
        """The paper's adapter, narrowed for vision encoders thinner than 256 (tiny test models)."""
        proj_dim = overrides.pop("proj_dim", min(256, hidden_size))
        values = dict(proj_dim=proj_dim, ffn_dim=4 * proj_dim)
        values.update(overrides)
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AdapterConfig":
        """Configs written before ``mode`` existed describe the authors' wiring."""
        values = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        values.setdefault("mode", "reference")
        return cls(**values)


#: How a window refinement head mixes its slices' features (``RefineConfig.window_mix``).
WINDOW_MIXES = ("linear", "hidden")


@dataclass
class RefineConfig:
    """The full-resolution boundary head (``refine.py``): ``channels`` image features per pixel,
    computed from ``window`` slices: 1 (the centre slice) or an odd number up to the adapter's
    window (the centre and its nearest neighbours: a pixel-level path for what only the neighbours
    tell, such as whether a bright blob continues above and below). ``window_mix`` is how the
    window's features meet per pixel: ``linear`` (one 1 x 1 convolution; heads saved before the
    choice) or ``hidden`` (a hidden layer of 2 x ``channels`` with a ReLU, so that "in how many of
    the slices" is a threshold the head can learn, not only a weighted sum)."""

    channels: int = 16
    window: int = 1
    window_mix: str = "linear"

    def __post_init__(self) -> None:
        if int(self.channels) < 1:
            raise ValueError(f"refinement channels must be positive, got {self.channels}")
        if int(self.window) < 1 or int(self.window) % 2 == 0:
            raise ValueError(f"the refinement head's window must be an odd number of slices, got {self.window}")
        if self.window_mix not in WINDOW_MIXES:
            raise ValueError(f"the window mix must be one of {', '.join(WINDOW_MIXES)}, got {self.window_mix!r}")
        self.channels, self.window = int(self.channels), int(self.window)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RefineConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class PeftConfig:
    """VLSM-style bottleneck adapters in the CLIP encoders (see ``peft.py``)."""

    variant: str = "dense"  # "dense" or "shallow"
    vision: bool = True
    text: bool = True
    conditional: bool = True
    dim: int | None = None  # bottleneck width; default 64 (dense) or 512 (shallow), as in VLSM-Adapter
    conditional_dim: int = 256

    def __post_init__(self) -> None:
        if self.variant not in ("dense", "shallow"):
            raise ValueError(f"PEFT variant must be 'dense' or 'shallow', got {self.variant!r}")
        if self.dim is None:
            self.dim = 64 if self.variant == "dense" else 512

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PeftConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


# The layout the authors' checkpoints saw (FLARE22 NIfTIs stored in LPS voxel order, sliced [:, :, z]).
REFERENCE_SLICE_LAYOUT = ("L", "P")


@dataclass
class TGatedConfig:
    """Everything needed to rebuild a model without the network."""

    clipseg_config: dict  # transformers CLIPSegConfig.to_dict(): the full base architecture
    base_model_id: str | None = None  # where the base weights came from (hub id or path), if any
    adapter: AdapterConfig | None = field(default_factory=AdapterConfig)  # None: slice-wise baseline
    preprocessing: PreprocessConfig = field(default_factory=PreprocessConfig)
    vocabulary: list[Organ] = field(default_factory=list)
    threshold: float = 0.5
    # organ prompt -> its threshold, chosen on validation volumes by the trainer (evaluation.calibration);
    # the organs not listed, and every free-text prompt, use ``threshold``
    organ_thresholds: dict[str, float] = field(default_factory=dict)
    training: dict | None = None  # metadata written by the trainer
    peft: PeftConfig | None = None  # VLSM-style bottleneck adapters in the CLIP encoders, if any
    refine: RefineConfig | None = None  # full-resolution boundary head, if any (never with the authors' wiring)
    # the prompts' embeddings centred on a fixed point and rescaled before the decoder reads them
    # (``TGatedCLIPSeg.fit_prompt_centre``; buffers in the weights): for a text encoder that stays at
    # its random initialisation, whose embeddings share most of their length
    prompt_centring: bool = False

    def __post_init__(self) -> None:
        if self.refine is not None and self.adapter is not None and self.adapter.mode == "reference":
            raise ValueError(
                "the refinement head is not part of the authors' model: use adapter mode 'residual' "
                "or no refinement head"
            )
        if self.refine is not None and self.refine.window > self.context_size:
            raise ValueError(
                f"the refinement head reads {self.refine.window} slices but the model's window is "
                f"{self.context_size}: use a window of at most {self.context_size} slices"
            )

    @property
    def temporal(self) -> bool:
        return self.adapter is not None

    def thresholds_for(self, organs) -> list[float]:
        """Each organ's decision threshold: its calibrated one, else the checkpoint's ``threshold``.

        Matched on the prompt the model reads (case, ``_`` and spacing aside), so "RK", "right kidney"
        and a preset's "right kidney" all find the threshold calibrated for the dataset's ``right_kidney``."""
        from ..vocabulary import normalize

        table = {normalize(k): float(v) for k, v in self.organ_thresholds.items()}
        return [table.get(normalize(o.prompt), table.get(normalize(o.name), self.threshold)) for o in organs]

    @property
    def context_size(self) -> int:
        return self.adapter.context_size if self.adapter else 1

    def clipseg(self):
        from transformers import CLIPSegConfig

        return CLIPSegConfig.from_dict(copy.deepcopy(self.clipseg_config))

    def to_dict(self) -> dict:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "base_model_id": self.base_model_id,
            "clipseg_config": self.clipseg_config,
            "adapter": self.adapter.to_dict() if self.adapter else None,
            "preprocessing": self.preprocessing.to_dict(),
            "vocabulary": [o.to_dict() for o in self.vocabulary],
            "threshold": self.threshold,
            "organ_thresholds": dict(self.organ_thresholds),
            "training": self.training,
            "peft": self.peft.to_dict() if self.peft else None,
            "refine": self.refine.to_dict() if self.refine else None,
            "prompt_centring": self.prompt_centring,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "TGatedConfig":
        return cls(
            clipseg_config=d["clipseg_config"],
            base_model_id=d.get("base_model_id"),
            adapter=AdapterConfig.from_dict(d["adapter"]) if d.get("adapter") else None,
            preprocessing=PreprocessConfig.from_dict(d.get("preprocessing") or {}),
            vocabulary=[Organ.from_dict(o) for o in d.get("vocabulary") or []],
            threshold=float(d.get("threshold", 0.5)),
            organ_thresholds={str(k): float(v) for k, v in (d.get("organ_thresholds") or {}).items()},
            training=d.get("training"),
            peft=PeftConfig.from_dict(d["peft"]) if d.get("peft") else None,
            refine=RefineConfig.from_dict(d["refine"]) if d.get("refine") else None,
            prompt_centring=bool(d.get("prompt_centring", False)),
        )
