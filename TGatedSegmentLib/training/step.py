"""One optimisation step (forward, loss, backward, clipping, AdamW), shared by the trainer and the benchmarks."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..model.modeling import TGatedCLIPSeg
from .config import TrainConfig
from .losses import context_token_loss, segmentation_loss

log = logging.getLogger(__name__)


def _grad_scaler():
    """float16 loss scaling (``torch.amp.GradScaler`` from torch 2.3, ``torch.cuda.amp`` before)."""
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda")
    return torch.cuda.amp.GradScaler()


@dataclass
class BatchLogits:
    """What the loss needs of one batch, of either kind (see :meth:`StepRunner.logits`)."""

    logits: torch.Tensor  # (N, H, W), one per item
    targets: torch.Tensor  # (N, H, W)
    prompts: torch.Tensor  # (N,) each item's row of prompt_ids
    slices: torch.Tensor | None = None  # (N,) each item's slice in slice batches; None for pairs


class StepRunner:
    """One optimisation step: forward (through DDP when wrapped), loss, backward, clipping, AdamW.

    The gradient norm is taken after DDP averaged the gradients, so every rank makes the same
    skip decision for a non-finite step. Used by the trainer and the throughput benchmark.
    """

    def __init__(
        self,
        model: TGatedCLIPSeg,
        optimizer: torch.optim.Optimizer,
        config: TrainConfig,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        net: torch.nn.Module | None = None,
        amp_dtype: torch.dtype | None = None,
    ):
        self.model, self.net = model, net if net is not None else model
        self.optimizer, self.config = optimizer, config
        self.prompt_ids, self.prompt_mask = prompt_ids, prompt_mask  # (K, tokens): one row per prompt
        self.device = prompt_ids.device
        self.amp_dtype = amp_dtype if self.device.type == "cuda" else None
        self.scaler = _grad_scaler() if self.amp_dtype == torch.float16 else None
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.skipped = 0

    def _autocast(self):
        if self.amp_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def logits(self, batch: dict) -> BatchLogits:
        """Logits, targets, each item's prompt and (slice batches) slice of a batch of either kind:

        * pairs: pixels (B, S, 3, H, W), target (B, H, W), prompt (B,) rows of prompt_ids;
        * slices (``chunks.collate_chunks``): pixels (U, 3, H, W), windows (B, S), items (M, 2),
          targets (M, H, W); every prompt is encoded once.
        """
        device = self.device
        pixels = batch["pixels"].to(device, non_blocking=True)
        if "items" in batch:
            items = batch["items"].to(device)
            tokens = batch["tokens"].to(device, non_blocking=True) if "tokens" in batch else None
            with self._autocast():
                logits = self.net(
                    pixels,
                    self.prompt_ids,
                    self.prompt_mask,
                    windows=batch["windows"].to(device),
                    items=items,
                    tokens=tokens,
                )  # (M, H, W)
            return BatchLogits(logits, batch["targets"].to(device, non_blocking=True), items[:, 1], items[:, 0])
        prompt = batch["prompt"].to(device)
        with self._autocast():
            logits = self.net(pixels, self.prompt_ids[prompt], self.prompt_mask[prompt])  # (B, H, W)
        return BatchLogits(logits, batch["target"].to(device, non_blocking=True), prompt)

    def loss(self, batch: dict) -> torch.Tensor:
        out = self.logits(batch)
        exclusive = self.config.exclusive if out.slices is not None else 0.0
        total = segmentation_loss(
            out.logits,
            out.targets,
            self.model.gate_penalty(),
            self.config.gate_penalty,
            self.config.dice,
            out.prompts,
            out.slices,
            exclusive,
            self.config.hard_pixels,
        )[0]
        context = self.model.context_logits  # set by this forward when the model has a context probe
        if self.config.context_loss and context is not None:
            total = total + self.config.context_loss * context_token_loss(context, out.targets)
        return total

    def __call__(self, batch: dict) -> float:
        """One optimisation step on a batch (see :meth:`logits`) -> its loss."""
        loss = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.config.grad_clip or float("inf"))
        if torch.isfinite(norm):
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
            else:
                self.optimizer.step()
        else:
            self.skipped += 1
            log.warning("optimiser step skipped: non-finite gradient norm")
        if self.scaler is not None:
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())
