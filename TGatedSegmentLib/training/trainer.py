"""Fine-tune T-Gated CLIPSeg (or the slice-wise baseline) on labelled volumes, resumably.

>>> from TGatedSegmentLib.training import TrainConfig, train
>>> run = train(TrainConfig(data="Dataset001", val="split:2", output="runs/tgated"), progress=print)

A run folder holds ``best/`` (highest mean validation Dice) and ``last/`` (the latest weights),
both checkpoint folders with the training metadata in ``config.json`` ("training"), and
``resume/``: a checkpoint plus ``state.pt`` (optimiser, scheduler, RNG, counters) and
``run.json`` (settings, readable without torch). Every folder is swapped in atomically, so a
kill at any moment leaves complete ``best/``, ``last/`` and ``resume/``; cancelling (CancelToken,
SIGTERM / Ctrl-C in the CLI) saves ``last/`` and ``resume/`` at the last completed step.

Optimisation follows the paper and the authors' optimiser (docs/training.md lists where we
depart from their code): AdamW (weight decay 1e-4) with learning rates 1e-6 for the CLIP vision
and text encoders, 1e-5 for the decoder, 5e-5 for every adapter parameter; cosine annealing with
warm restarts every 5 epochs (evaluated at fractional epochs, so the rate also falls within an
epoch); gradient clipping at 0.5; non-finite steps skipped. The encoders are called as submodules
(never HF's ``no_grad`` paths), so the baseline trains them exactly like the T-Gated model.

``finetune`` selects what trains (``TGatedCLIPSeg.set_finetune``): ``full`` everything (the
paper), ``decoder`` (alias ``freeze_encoders``) the decoder and the adapters with CLIP frozen,
``adapters`` the temporal adapter and the PEFT bottlenecks only (VLSM-Adapter), which get their
own optimiser group ``peft``. When the vision encoder needs no gradient it runs under
``no_grad``. In the two frozen modes ``best/``, ``last/`` and ``resume/`` store only the trained
parameters, on top of the base model's identity (see :func:`run_folder.checkpoint_identity`).

This module is the loop; the other jobs have their own modules: :mod:`.optim` (parameter groups,
AdamW, learning rates), :mod:`.step` (one optimisation step), :mod:`.starting_model` (the model
``--base`` gives, extended for the run), :mod:`.run_folder` (``best/``, ``last/``, ``resume/``),
:mod:`.run_setup` (what a run starts with: model, volumes, loader, optimiser), :mod:`.validation`
(Dice and the gate after each epoch, ``best/``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from ..allocator import give_back_freed_memory, keep_freed_memory
from ..compat import moved_names
from ..errors import Cancelled
from ..inference.api import resolve_device
from ..progress import CancelToken, Progress, Throttle
from . import distributed
from .config import TrainConfig
from .optim import set_train_mode_for
from .preflight import Plan, preflight
from .run_log import RunLog
from .validation import ValidationMixin, _fmt

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the run


def _as_progress(progress) -> Progress:
    if progress is None:
        return Progress()
    if isinstance(progress, Progress):
        return progress
    if callable(progress):
        return Progress(progress)
    raise TypeError("progress must be a Progress, a callable taking an event dict, or None")


def train(config: TrainConfig, progress=None, cancel: CancelToken | None = None, plan: Plan | None = None) -> Path:
    """Train as ``config`` says and return the run folder (``best/``, ``last/``, ``resume/``).

    ``progress``: a :class:`Progress` (``make_progress("tqdm")`` in a shell), a callable receiving
    event dicts, or None. ``cancel``: set it to stop after the current step; the last completed
    step is saved and :class:`Cancelled` raised. ``plan``: a :func:`preflight` result already
    computed by the caller (the CLI checks before importing torch).
    """
    progress = _as_progress(progress)
    cancel = cancel or CancelToken()
    device = resolve_device(config.device)
    if device.type == "cpu":
        keep_freed_memory()  # a step's full-resolution maps reuse the last step's memory (allocator.py)
    ctx, device = distributed.setup(device)
    try:
        plan = plan or preflight(config)
        ctx.barrier()  # every rank has checked the run folder before rank 0 writes to it
        run_dir = _Run(plan, device, ctx, progress if ctx.is_main else Progress(), cancel).run()
        ctx.barrier()  # no rank leaves the group while another is still in a collective
        return run_dir
    finally:
        distributed.teardown(ctx)
        give_back_freed_memory()  # what the steps kept for each other, now that they are done


class _Run(ValidationMixin):
    """One training session: the loop (setup: :class:`RunSetupMixin`, validation: :class:`ValidationMixin`,
    the run folder's side: :class:`RunFolderMixin`)."""

    def __init__(
        self, plan: Plan, device: torch.device, ctx: distributed.DistContext, progress: Progress, cancel: CancelToken
    ):
        self.plan, self.config, self.device, self.ctx = plan, plan.config, device, ctx
        self.progress, self.cancel = progress, cancel
        self.run_dir = self.config.run_dir
        self.amp_dtype = None
        if self.config.amp and device.type == "cuda":
            self.amp_dtype = torch.bfloat16 if self.config.amp == "bf16" else torch.float16
        elif self.config.amp:
            log.warning("mixed precision (--amp %s) needs CUDA; training in float32 on %s", self.config.amp, device)
        self.epoch = self.position = self.global_step = 0
        self.seconds_before = 0.0  # wall time of the run's earlier sessions (a resumed run continues its budget)
        self.loss_sum, self.loss_steps = 0.0, 0
        self.history: list[dict] = []
        self.best: dict | None = None

    def seconds(self) -> float:
        """Wall time of the run so far, over all its sessions: what ``max_seconds`` and the cosine budget count."""
        return self.seconds_before + time.monotonic() - self._start

    # -- loop -----------------------------------------------------------------------------------
    def _stop_requested(self) -> str | None:
        cfg = self.config
        reasons = {
            "cancel": self.cancel.cancelled,
            "steps": cfg.steps is not None and self.global_step >= cfg.steps,
            "time": cfg.max_seconds is not None and self.seconds() >= cfg.max_seconds,
        }
        flags = self.ctx.any_of(list(reasons.values()))  # one collective: all ranks stop together
        return next((name for name, flag in zip(reasons, flags) if flag), None)

    def _save_due(self) -> bool:
        cfg = self.config
        due = bool(cfg.save_every_steps and self.global_step % cfg.save_every_steps == 0)
        if cfg.save_every_minutes:
            due = due or time.monotonic() - self._last_save >= 60.0 * cfg.save_every_minutes
        return self.ctx.any_of([due])[0]

    def _budget_spent(self) -> bool:
        cfg = self.config
        return self.epoch >= cfg.epochs or (cfg.steps is not None and self.global_step >= cfg.steps)

    def run(self) -> Path:
        cfg = self.config
        self._setup()
        self._start = self._last_save = time.monotonic()
        if not cfg.resume:
            self.save_point()  # resume/ and last/ exist from the first moment
        w = self.weights_info
        self.progress.info(
            message=f"fine-tuning '{cfg.finetune}': {w['trainable_parameters']:,} of "
            f"{w['parameters']:,} parameters trained; checkpoints store {w['stored']}"
            + (f" ({w['note']})" if cfg.finetune != "full" else "")
        )
        self.progress.info(
            message=f"training {'T-Gated' if self.model.temporal else 'baseline'} on {self.device}"
            f"{f' x {self.ctx.world_size} processes' if self.ctx.enabled else ''}: "
            f"{self.sampler.epoch_size} samples/epoch ({self.index.counts()['positives']} "
            f"positive and {self.index.counts()['negatives']} negative pairs), "
            f"{self.sampler.steps_per_epoch} steps/epoch, epochs {self.epoch + 1}..{cfg.epochs}"
        )
        if self._budget_spent():
            self.progress.info(
                kind="done",
                run_dir=str(self.run_dir),
                message=f"nothing left to do in {self.run_dir}: "
                f"{self.epoch} of {cfg.epochs} epochs and {self.global_step} steps done (raise --epochs "
                f"or --steps to continue)",
            )
            return self.run_dir
        self.run_log = RunLog(
            self.run_dir,
            [g["name"] for g in self.optimizer.param_groups],
            [organ.name for organ in self.plan.val.organs.values()],
            resume_step=self.global_step if cfg.resume else None,
            enabled=self.ctx.is_main,
        )
        try:
            self._loop()
        finally:
            self.run_log.close()
        best = self.best or {}
        self.progress.info(
            kind="done",
            run_dir=str(self.run_dir),
            best_epoch=best.get("epoch"),
            best_val_mean_dice=best.get("val_mean_dice"),
            step=self.global_step,
            message=f"finished after {self.global_step} steps; best epoch {best.get('epoch')} "
            f"(validation mean Dice {_fmt(best.get('val_mean_dice'))}); "
            f"checkpoints in {self.run_dir}",
        )
        return self.run_dir

    def _loop(self) -> None:
        """Epochs of steps until the budget, a stop or Cancel (raised after the state is saved)."""
        cfg = self.config
        throttle = Throttle(self.progress, 0.25)
        while self.epoch < cfg.epochs:
            steps = self.sampler.steps_per_epoch
            self.sampler.set_epoch(self.epoch, self.position)
            set_train_mode_for(self.model, cfg.finetune)
            stop = None
            for batch in self.loader:
                stop = self._stop_requested()
                if stop:
                    break
                self.scheduler.step(self.epoch + self.position / steps, self.global_step, self.seconds())
                loss = self.step(batch)
                self.position += 1
                self.global_step += 1
                self.loss_sum += loss
                self.loss_steps += 1
                self.run_log.step(
                    self.global_step, self.epoch + 1, loss, {g["name"]: g["lr"] for g in self.optimizer.param_groups}
                )
                throttle.update(
                    "train",
                    self.position,
                    steps,
                    epoch=self.epoch + 1,
                    epochs=cfg.epochs,
                    step=self.global_step,
                    loss=round(loss, 5),
                )
                if self.position < steps and self._save_due():
                    self.save_point()
            if stop == "cancel":
                self.save_point()
                raise Cancelled("training cancelled")
            self._end_epoch(partial=stop is not None)
            if stop is None and self._stop_requested() in ("steps", "time"):
                stop = "budget"
            if stop is not None:
                break


# Names that moved to the modules above; the old imports keep working with a DeprecationWarning.
__getattr__ = moved_names(
    __name__,
    {
        **dict.fromkeys(
            (
                "GROUPS",
                "PEFT_GROUP",
                "parameter_group",
                "group_learning_rates",
                "freeze_encoders",
                "model_learning_rates",
                "freeze_zero_rate_parts",
                "set_train_mode",
            ),
            "TGatedSegmentLib.training.optim",
        ),
        **dict.fromkeys(
            ("new_adapter_config", "extend_for_training", "_rebuild", "_adapter_changed"),
            "TGatedSegmentLib.training.starting_model",
        ),
        **dict.fromkeys(("checkpoint_identity", "STATE_FILE"), "TGatedSegmentLib.training.run_folder"),
        "_grad_scaler": "TGatedSegmentLib.training.step",
    },
)
