"""Learning-rate schedules: the paper's warm restarts, and warm-up + one cosine over the run's budget.

* ``"restarts"`` (the paper): cosine annealing with warm restarts every ``restart_epochs`` epochs
  down to ``min_lr``, evaluated at fractional epochs (the rate also falls within an epoch).
* ``"cosine"`` (from random weights): a linear warm-up over ``warmup_steps``, then one cosine from
  each group's rate down to ``min_lr`` over the run's budget: its ``steps`` or its
  ``max_seconds``, whichever is nearer to its end (a time-limited run anneals over its time, so
  stopping at the limit always stops at the bottom of the schedule). Without either, over
  ``epochs``.

Both take the same three facts each step (fractional epoch, optimiser step, training seconds),
so the trainer never needs to know which one runs.
"""

from __future__ import annotations

import math

import torch

SCHEDULES = ("restarts", "cosine")


class BudgetCosine:
    """Warm-up then a single cosine decay, as a pure function of the run's progress (no state)."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int,
        min_lr: float,
        epochs: int,
        steps: int | None,
        max_seconds: float | None,
    ):
        self.optimizer = optimizer
        self.base = [g["lr"] for g in optimizer.param_groups]
        self.warmup, self.min_lr, self.epochs = int(warmup_steps), float(min_lr), int(epochs)
        self.steps, self.max_seconds = steps, max_seconds

    def progress(self, epoch: float, step: int, seconds: float) -> float:
        parts = []
        if self.steps:
            parts.append(step / self.steps)
        if self.max_seconds:
            parts.append(seconds / self.max_seconds)
        if not parts:
            parts.append(epoch / self.epochs)
        return min(1.0, max(parts))

    def factor(self, epoch: float, step: int, seconds: float) -> tuple[float, float]:
        """(warm-up factor, cosine position in [0, 1])."""
        warm = min(1.0, (step + 1) / self.warmup) if self.warmup else 1.0
        return warm, 0.5 * (1.0 + math.cos(math.pi * self.progress(epoch, step, seconds)))

    def step(self, epoch: float, step: int = 0, seconds: float = 0.0) -> None:
        warm, cosine = self.factor(epoch, step, seconds)
        for group, base in zip(self.optimizer.param_groups, self.base):
            group["lr"] = warm * (self.min_lr + (base - self.min_lr) * cosine) if base > self.min_lr else warm * base

    def state_dict(self) -> dict:
        return {"base": list(self.base)}

    def load_state_dict(self, state: dict) -> None:
        self.base = list(state["base"])


class Restarts:
    """The paper's ``CosineAnnealingWarmRestarts`` behind the same ``step(epoch, step, seconds)``."""

    def __init__(self, optimizer: torch.optim.Optimizer, restart_epochs: int, min_lr: float):
        self.inner = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=restart_epochs, eta_min=min_lr)

    def step(self, epoch: float, step: int = 0, seconds: float = 0.0) -> None:
        self.inner.step(epoch)

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)


def make_schedule(optimizer: torch.optim.Optimizer, config):
    """The schedule ``config.schedule`` names, built from a :class:`TrainConfig`."""
    if config.schedule == "cosine":
        return BudgetCosine(
            optimizer, config.warmup_steps, config.min_lr, config.epochs, config.steps, config.max_seconds
        )
    if config.schedule == "restarts":
        return Restarts(optimizer, config.restart_epochs, config.min_lr)
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {config.schedule!r}")
