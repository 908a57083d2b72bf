"""Which parameters train, in which AdamW group, at which learning rate.

Every parameter belongs to exactly one group (:data:`GROUPS`, plus ``peft`` for VLSM bottleneck
adapters); the groups carry the paper's learning rates (1e-6 CLIP encoders, 1e-5 decoder, 5e-5
adapters) or the recipe's. A part whose rate is 0, or that ``finetune`` freezes, gets no
gradients at all, so autograd and AdamW skip it. Add a new trainable part here: give it a group in
:func:`parameter_group` and a rate in :func:`group_learning_rates` (see docs/architecture.md).
"""

from __future__ import annotations

from typing import Any

import torch

from ..model.modeling import TGatedCLIPSeg
from .config import DEFAULT_LR_PEFT, TrainConfig

GROUPS = ("vision", "text", "decoder", "adapter", "refine")
PEFT_GROUP = "peft"  # VLSM bottleneck adapters, when the model has them


def parameter_group(name: str) -> str:
    """The optimiser group of a parameter; every parameter has one (a new one fails loudly)."""
    if name.startswith(("adapter.", "context_probe.")):  # the probe trains with the adapter it reads
        return "adapter"
    if name.startswith("refine."):
        return "refine"
    if name.startswith("peft."):
        return PEFT_GROUP
    if name.startswith("base_model.decoder."):
        return "decoder"
    if name.startswith(("base_model.clip.vision_model.", "base_model.clip.visual_projection.")):
        return "vision"
    if (
        name.startswith(("base_model.clip.text_model.", "base_model.clip.text_projection."))
        or name == "base_model.clip.logit_scale"
    ):
        return "text"
    raise RuntimeError(f"parameter '{name}' belongs to no optimiser group")


def group_learning_rates(config: TrainConfig, peft_variant: str | None = None) -> dict[str, float]:
    """Per group; the PEFT adapters' rate defaults to VLSM-Adapter's for their variant."""
    variant = peft_variant or config.peft or "dense"
    lr_peft = config.lr_peft if config.lr_peft is not None else DEFAULT_LR_PEFT[variant]
    text = config.lr_text if config.lr_text is not None else config.lr_encoder
    return {
        "vision": config.lr_encoder,
        "text": text,
        "decoder": config.lr_decoder,
        "adapter": config.lr_adapter,
        "refine": config.lr_adapter,
        PEFT_GROUP: lr_peft,
    }


def freeze_encoders(model: TGatedCLIPSeg) -> None:
    """Vision and text encoders fixed: no gradients, so autograd records nothing through them
    (the same as running them under ``no_grad``), and eval mode."""
    for name, p in model.named_parameters():
        if parameter_group(name) in ("vision", "text"):
            p.requires_grad_(False)


def model_learning_rates(model: TGatedCLIPSeg, config: TrainConfig) -> dict[str, float]:
    """:func:`group_learning_rates` for this model (its PEFT variant, if it has adapters)."""
    variant = model.peft.config.variant if getattr(model, "peft", None) is not None else None
    return group_learning_rates(config, variant)


def freeze_zero_rate_parts(model: TGatedCLIPSeg, config: TrainConfig) -> set[str]:
    """A part whose learning rate is 0 (the ``cpu`` recipe's text encoder) does not train: no
    gradients for it, so backward and AdamW skip it (the same weights as stepping it at lr 0,
    where AdamW's decoupled weight decay is lr x decay = 0 too). Returns the frozen names."""
    lrs = model_learning_rates(model, config)
    frozen = set()
    for name, p in model.named_parameters():
        if p.requires_grad and lrs[parameter_group(name)] == 0:
            p.requires_grad_(False)
            frozen.add(name)
    model.vision_without_grad = not model.vision_needs_grad
    return frozen


def set_train_mode(model: TGatedCLIPSeg, frozen_encoders: bool, frozen_decoder: bool = False) -> None:
    """Training mode, except frozen parts (eval: no dropout in what does not train)."""
    model.train()
    if frozen_encoders:
        model.base_model.clip.eval()
    if frozen_decoder:
        model.base_model.decoder.eval()


def set_train_mode_for(model: TGatedCLIPSeg, finetune: str) -> None:
    set_train_mode(model, finetune != "full", finetune == "adapters")


def make_optimizer(model: TGatedCLIPSeg, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with one group per part; all trainable parameters, ``temporal_pos_emb`` included,
    frozen ones left out (so every trained parameter is in exactly one group)."""
    lrs = model_learning_rates(model, config)
    params: dict[str, list] = {g: [] for g in GROUPS + (PEFT_GROUP,)}
    for name, p in model.named_parameters():
        group = parameter_group(name)
        if p.requires_grad:
            params[group].append(p)
    groups: list[dict[str, Any]] = [{"name": g, "params": ps, "lr": lrs[g]} for g, ps in params.items() if ps]
    # one fused kernel for all parameters: on a CPU a fifth of the per-tensor loop's time
    fused = all(p.dtype.is_floating_point and p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=config.lr_decoder, weight_decay=config.weight_decay, fused=fused or None)
