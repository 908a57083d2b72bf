"""The training loss (paper Sec. 3.4-3.5, authors' ``train_clipseg_temporal.py``).

``BCE + soft Dice`` with equal weights, Dice per sample (MONAI ``DiceLoss(sigmoid=True,
batch=False)`` with its 1e-5 smoothing, as the authors used), plus the gate penalty
``lambda * mean(s * (1 - s))`` on the gate bias (``model.gate_penalty()``, 0 for the baseline).
Targets may be soft (edges of masks resized to the model grid).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SMOOTH = 1e-5


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = SMOOTH) -> torch.Tensor:
    """Mean over samples of ``1 - (2 sum(p t) + smooth) / (sum p + sum t + smooth)``; (B, H, W) inputs.

    An empty target scores ~1 unless the prediction is empty too, which is what teaches negatives.
    """
    p = torch.sigmoid(logits.float()).flatten(1)
    t = target.float().flatten(1)
    dice = (2.0 * (p * t).sum(1) + smooth) / (p.sum(1) + t.sum(1) + smooth)
    return (1.0 - dice).mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, gate_penalty: torch.Tensor | None = None,
                      gate_weight: float = 1e-3) -> tuple[torch.Tensor, dict[str, float]]:
    """(total loss, its parts as floats for logging)."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float())
    dice = soft_dice_loss(logits, target)
    total = bce + dice
    parts = {"bce": float(bce.detach()), "dice": float(dice.detach())}
    if gate_penalty is not None and gate_weight:
        total = total + gate_weight * gate_penalty
        parts["gate"] = float(gate_penalty.detach())
    return total, parts
