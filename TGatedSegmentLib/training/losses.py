"""The training losses: the paper's (Sec. 3.4-3.5, authors' ``train_clipseg_temporal.py``) and a batch Dice.

Both are ``BCE + soft Dice`` with equal weights plus the gate penalty
``lambda * mean(s * (1 - s))`` on the gate bias (``model.gate_penalty()``, 0 for the baseline).
Targets may be soft (edges of masks resized to the model grid). They differ in the Dice term:

* ``"sample"`` (the paper): Dice per sample, MONAI ``DiceLoss(sigmoid=True, batch=False)`` with its
  1e-5 smoothing. An empty target scores ~1 unless the prediction is *exactly* empty, so every
  negative pulls hard towards "predict nothing": from random weights the loss sits on that
  plateau for about a thousand steps.
* ``"batch"`` (nnU-Net's batch Dice, for multi-prompt steps): one Dice per prompt over all its
  items in the batch, for the prompts whose organ is in the batch; negatives are taught by BCE
  and by the false positives they add to their prompt's Dice. A loss over a set of
  (logits, target, prompt) items: how the items were batched does not change it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SMOOTH = 1e-5
BATCH_SMOOTH = 1.0  # one pixel: a prompt whose organ covers few pixels still has a defined Dice
DICE_KINDS = ("sample", "batch")


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = SMOOTH) -> torch.Tensor:
    """Mean over samples of ``1 - (2 sum(p t) + smooth) / (sum p + sum t + smooth)``; (B, H, W) inputs.

    An empty target scores ~1 unless the prediction is empty too, which is what teaches negatives.
    """
    p = torch.sigmoid(logits.float()).flatten(1)
    t = target.float().flatten(1)
    dice = (2.0 * (p * t).sum(1) + smooth) / (p.sum(1) + t.sum(1) + smooth)
    return (1.0 - dice).mean()


def batch_dice_loss(logits: torch.Tensor, target: torch.Tensor, groups: torch.Tensor,
                    smooth: float = BATCH_SMOOTH) -> torch.Tensor:
    """Mean over the groups (prompts) with target pixels of ``1 - Dice`` pooled over the group's items.

    logits, target (M, H, W); groups (M,) integer prompt of each item. 0 when no group has target pixels.
    """
    p = torch.sigmoid(logits.float()).flatten(1)
    t = target.float().flatten(1)
    _, group = torch.unique(groups, return_inverse=True)
    n = int(group.max()) + 1 if group.numel() else 0

    def pooled(values: torch.Tensor) -> torch.Tensor:  # per-item sums -> per-group sums
        return torch.zeros(n, dtype=values.dtype, device=values.device).index_add_(0, group, values)

    intersection, predicted, truth = pooled((p * t).sum(1)), pooled(p.sum(1)), pooled(t.sum(1))
    scored = truth > 0
    if not bool(scored.any()):
        return p.sum() * 0.0
    dice = (2.0 * intersection + smooth) / (predicted + truth + smooth)
    return (1.0 - dice[scored]).mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, gate_penalty: torch.Tensor | None = None,
                      gate_weight: float = 1e-3, dice: str = "sample",
                      groups: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """(total loss, its parts as floats for logging). ``groups``: each item's prompt (``dice="batch"``)."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float())
    if dice == "batch":
        if groups is None:
            raise ValueError("the batch Dice needs each item's prompt (groups)")
        dice_term = batch_dice_loss(logits, target, groups)
    elif dice == "sample":
        dice_term = soft_dice_loss(logits, target)
    else:
        raise ValueError(f"dice must be one of {DICE_KINDS}, got {dice!r}")
    total = bce + dice_term
    parts = {"bce": float(bce.detach()), "dice": float(dice_term.detach())}
    if gate_penalty is not None and gate_weight:
        total = total + gate_weight * gate_penalty
        parts["gate"] = float(gate_penalty.detach())
    return total, parts
