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

Multi-prompt steps may add :func:`exclusive_loss` (weight ``exclusive``): organs do not overlap, so
the prompts decoded for one slice, with a fixed background logit 0, form one softmax per pixel.
Independent sigmoids never learn that a pixel which is clearly spleen is therefore not left kidney;
the softmax teaches it from every pixel of every slice (see docs/training.md, "Recipes", for what it is worth).
Multi-prompt steps may also add :func:`hard_pixel_loss` (weight ``hard_pixels``): the mean BCE of each
item's hardest 1 % of pixels (online hard example mining, Shrivastava et al. 2016). A mean over every
pixel of every (slice, prompt) item drowns the few pixels where an organ is confused with a look-alike
or missed at its edge; this term gives them the weight of a whole item.
At inference each prompt keeps its sigmoid: with the background at 0, ``softmax_k ~ sigmoid(z_k)``
wherever one organ dominates, so the two losses agree on what a logit means.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SMOOTH = 1e-5
HARD_FRACTION = 0.01  # the share of each item's pixels that hard_pixel_loss averages
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


def batch_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, groups: torch.Tensor, smooth: float = BATCH_SMOOTH
) -> torch.Tensor:
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


def exclusive_loss(logits: torch.Tensor, target: torch.Tensor, slices: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of one softmax per pixel over a slice's prompts plus a background logit 0.

    logits, target (M, H, W) items; slices (M,) the slice each item decodes (its prompts must be
    distinct organs of a labelmap). Soft targets: background ``max(0, 1 - sum t)``. Mean over the
    slices' pixels.
    """
    z = logits.float().flatten(1)  # (M, P)
    t = target.float().flatten(1)
    _, slice_of = torch.unique(slices, return_inverse=True)
    n = int(slice_of.max()) + 1
    index = slice_of.unsqueeze(1).expand_as(z)
    # log(1 + sum_k exp z_k) per slice pixel, stabilised by the larger of 0 and the slice's max logit
    top = torch.zeros(n, z.shape[1], dtype=z.dtype, device=z.device).scatter_reduce(0, index, z.detach(), "amax")
    total = torch.zeros_like(top).index_add_(0, slice_of, torch.exp(z - top.index_select(0, slice_of)))
    lse = top + torch.log(torch.exp(-top) + total)  # (n, P)
    mass = torch.zeros_like(top).index_add_(0, slice_of, t)  # sum of the organ targets
    mass = mass + (1.0 - mass).clamp_min(0.0)  # + the background's
    return ((mass * lse).sum() - (t * z).sum()) / lse.numel()


def hard_pixel_loss(logits: torch.Tensor, target: torch.Tensor, fraction: float = HARD_FRACTION) -> torch.Tensor:
    """Mean over items of the mean BCE of the item's ``fraction`` hardest pixels; (M, H, W) inputs."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none").flatten(1)
    k = max(1, int(round(fraction * bce.shape[1])))
    return bce.topk(k, dim=1).values.mean()


def context_token_loss(token_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE of per-token logits (M, g * g) against each item's mask (M, H, W) pooled to the g x g token
    grid (the share of each token's pixels inside the organ: soft targets at edges)."""
    grid = int(round(token_logits.shape[1] ** 0.5))
    if grid * grid != token_logits.shape[1]:
        raise ValueError(f"expected a square token grid, got {token_logits.shape[1]} tokens")
    pooled = F.adaptive_avg_pool2d(target.float().unsqueeze(1), grid).flatten(1)  # (M, g * g), row-major
    return F.binary_cross_entropy_with_logits(token_logits.float(), pooled)


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    gate_penalty: torch.Tensor | None = None,
    gate_weight: float = 1e-3,
    dice: str = "sample",
    groups: torch.Tensor | None = None,
    slices: torch.Tensor | None = None,
    exclusive: float = 0.0,
    hard_pixels: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """(total loss, its parts as floats for logging). ``groups``: each item's prompt (``dice="batch"``);
    ``slices``: each item's slice (``exclusive`` > 0); ``hard_pixels``: weight of :func:`hard_pixel_loss`."""
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
    if exclusive:
        if slices is None:
            raise ValueError("the exclusive loss needs each item's slice (multi-prompt batches)")
        term = exclusive_loss(logits, target, slices)
        total = total + exclusive * term
        parts["exclusive"] = float(term.detach())
    if hard_pixels:
        term = hard_pixel_loss(logits, target)
        total = total + hard_pixels * term
        parts["hard"] = float(term.detach())
    if gate_penalty is not None and gate_weight:
        total = total + gate_weight * gate_penalty
        parts["gate"] = float(gate_penalty.detach())
    return total, parts
