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
``--base`` gives, extended for the run), :mod:`.run_folder` (``best/``, ``last/``, ``resume/``).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch

from ..compat import moved_names
from ..errors import Cancelled, InputError
from ..inference.api import Segmenter, resolve_device
from ..model.checkpoint import LoadedModel, load_model
from ..model.modeling import TGatedCLIPSeg
from ..model.tokenizer import tokenize
from ..preprocessing.slices import SliceCodec
from ..progress import CancelToken, Progress, Throttle
from . import distributed
from .cache import CachedVolume, cache_cases
from .chunks import ChunkAugmentation, ChunkDataset, ChunkSampler, make_chunk_loader, slice_weights
from .config import TrainConfig
from .optim import make_optimizer, set_train_mode_for
from .preflight import BEST_DIR, RESUME_DIR, Plan, preflight
from .run_folder import RunFolderMixin
from .run_log import RunLog
from .sampling import SampleIndex, WindowSampler
from .schedule import make_schedule
from .starting_model import build_training_model
from .step import StepRunner
from .token_cache import build_token_cache
from .windows import WindowDataset, make_loader

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
    ctx, device = distributed.setup(device)
    try:
        plan = plan or preflight(config)
        ctx.barrier()  # every rank has checked the run folder before rank 0 writes to it
        run_dir = _Run(plan, device, ctx, progress if ctx.is_main else Progress(), cancel).run()
        ctx.barrier()  # no rank leaves the group while another is still in a collective
        return run_dir
    finally:
        distributed.teardown(ctx)


class _Run(RunFolderMixin):
    """One training session: setup, the loop, validation (the run folder's side: :class:`RunFolderMixin`)."""

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

    # -- setup --------------------------------------------------------------------------------
    def _main_rank_first(self, build):
        """``build(progress, cancel)`` on the main rank (which writes the cache entries, with progress
        and Cancel), then on the others, which find every entry written and only open it."""
        if self.ctx.is_main:
            out = build(self.progress, self.cancel)
        self.ctx.barrier()
        if not self.ctx.is_main:
            out = build(None, None)
        return out

    def _volumes(self, cases) -> list[CachedVolume]:
        preprocessing = self.model_config.preprocessing
        return self._main_rank_first(
            lambda progress, cancel: cache_cases(cases, preprocessing, self.config.cache_path, progress, cancel)
        )

    def _setup(self) -> None:
        cfg, plan = self.config, self.plan
        self.label_ids = sorted(plan.train.organs)
        self.organs = [plan.train.organs[i] for i in self.label_ids]
        torch.manual_seed(cfg.seed)
        if cfg.resume:
            loaded = load_model(self.run_dir / RESUME_DIR)
        else:
            loaded = build_training_model(cfg, self.organs)
        self.tokenizer, self.model_config = loaded.tokenizer, loaded.config
        self._setup_finetune(loaded)
        self.model: TGatedCLIPSeg = loaded.model.to(self.device)
        self._prepare_folder()  # only now: a base that fails to load leaves an earlier run untouched

        self.progress.info(
            message=f"preparing {len(plan.train.cases)} training and {len(plan.val.cases)} validation "
            f"volume(s) (cache: {cfg.cache_path})"
        )
        all_cases = list({c.case_id: c for c in plan.train.cases + plan.val.cases}.values())
        cached = dict(zip([c.case_id for c in all_cases], self._volumes(all_cases)))
        self.train_volumes = [cached[c.case_id] for c in plan.train.cases]
        self.val_volumes = [(c, cached[c.case_id]) for c in plan.val.cases]

        trained_ids = [[i for i in plan.train.scored_ids(c) if i in plan.train.organs] for c in plan.train.cases]
        self.index = SampleIndex([v.presence for v in self.train_volumes], trained_ids, plan.train.organs)
        prompt_of = {label: n for n, label in enumerate(self.label_ids)}
        workers = cfg.num_workers if cfg.num_workers is not None else (2 if self.device.type == "cuda" else 0)
        pin = self.device.type == "cuda"
        if cfg.batching == "slices":
            self.sampler = self._chunk_sampler(trained_ids)
            dataset = ChunkDataset(
                self.train_volumes,
                self.model_config.preprocessing,
                self.model.context_size,
                trained_ids,
                prompt_of,
                self._token_cache() if cfg.token_cache else None,
                cfg.organ_intensity,
            )
            self.loader = make_chunk_loader(dataset, self.sampler, workers, pin_memory=pin)
        else:
            self.sampler = WindowSampler(
                self.index,
                cfg.batch_size,
                cfg.seed,
                cfg.negative_ratio,
                cfg.samples_per_epoch,
                cfg.max_rotation,
                cfg.flip_probability,
                self.ctx.rank,
                self.ctx.world_size,
            )
            dataset = WindowDataset(
                self.train_volumes, self.model_config.preprocessing, self.model.context_size, prompt_of
            )
            self.loader = make_loader(dataset, self.sampler, workers, pin_memory=pin)
        ids, mask = tokenize(self.tokenizer, [o.prompt for o in self.organs], self.device)  # one row per label id

        self.optimizer = make_optimizer(self.model, cfg)
        self.scheduler = make_schedule(self.optimizer, cfg)
        self.step = StepRunner(
            self.model,
            self.optimizer,
            cfg,
            ids,
            mask,
            net=distributed.wrap(self.model, self.ctx),
            amp_dtype=self.amp_dtype,
        )
        self.scaler = self.step.scaler
        # Dropout / drop-path streams differ per rank; weights are rank 0's (DDP broadcasts them).
        torch.manual_seed(cfg.seed * 1009 + 17 + self.ctx.rank)
        if cfg.resume:
            self._load_state()

    def _chunk_sampler(self, trained_ids: list[list[int]]) -> ChunkSampler:
        """Chunks of ``chunk_slices`` centres, ``batch_size // chunk_slices`` a step; anchors weighted
        towards organ boundaries and the dataset's hard slices (``chunks.slice_weights``)."""
        cfg = self.config
        weights = [
            slice_weights(
                v.presence, ids, 2, cfg.boundary_weight, v.canonical_slices(case.hard_slices), cfg.hint_weight
            )
            for v, ids, case in zip(self.train_volumes, trained_ids, self.plan.train.cases)
        ]
        depths = [v.depth for v in self.train_volumes]
        epoch = cfg.samples_per_epoch or max(
            1, math.ceil(sum(depths) / cfg.chunk_slices)
        )  # each slice once, on average
        augmentation = ChunkAugmentation(cfg.max_rotation, cfg.max_zoom, cfg.intensity, cfg.organ_intensity)
        return ChunkSampler(
            depths,
            weights,
            cfg.chunk_slices,
            max(1, cfg.batch_size // cfg.chunk_slices),
            epoch,
            cfg.seed,
            augmentation,
            self.ctx.rank,
            self.ctx.world_size,
        )

    def _token_cache(self) -> list:
        """``--token-cache``: the frozen encoder's output for every training slice, on disk (built once)."""
        if self.model.vision_needs_grad:
            raise InputError(
                "--token-cache needs a frozen vision encoder (cached tokens cannot train it)",
                "Add --finetune decoder or --finetune adapters (without dense vision PEFT), or leave "
                "--token-cache out.",
            )
        codec = SliceCodec(self.model_config.preprocessing, self.device, self.model.dtype)
        self.progress.info(message="caching the frozen encoder's tokens of every training slice (once)")
        return self._main_rank_first(
            lambda progress, cancel: build_token_cache(
                self.model, self.train_volumes, codec, self.config.val_batch_size, progress, cancel
            )
        )

    def seconds(self) -> float:
        """Wall time of the run so far, over all its sessions: what ``max_seconds`` and the cosine budget count."""
        return self.seconds_before + time.monotonic() - self._start

    # -- validation -----------------------------------------------------------------------------
    def validate(self) -> dict:
        """Per-organ volumetric Dice on whole validation volumes (streaming engine, native grid), and
        the adapter's gate over them (mean and percentiles: how much the neighbours are used)."""
        from ..evaluation.evaluate import ScoredCase, evaluate_segmenter
        from ..evaluation.gate import GateRecorder
        from ..evaluation.metrics import summarize

        organs = self.plan.val.organs
        mine = self.val_volumes[self.ctx.rank :: self.ctx.world_size]
        loaded = LoadedModel(self.model, self.tokenizer, self.model_config, "training")
        segmenter = Segmenter(
            loaded=loaded,
            device=self.device,
            batch_size=self.config.val_batch_size,
            amp=self.config.amp if self.amp_dtype is not None else None,
        )

        def cases():
            for case, volume in mine:
                ids = [i for i in self.plan.val.scored_ids(case) if i in organs]
                yield ScoredCase(
                    case.case_id,
                    volume.prepared(),
                    volume.native_labels(),
                    tuple(volume.geometry.spacing)[::-1],
                    {i: organs[i] for i in ids},
                )

        # in DDP a cancel must not leave the other ranks waiting in all_gather: finish, then stop
        cancel = self.cancel if not self.ctx.enabled else None
        try:
            with GateRecorder(self.model) as gates:
                rows = evaluate_segmenter(
                    segmenter,
                    cases(),
                    metrics=("dice",),
                    progress=self.progress,
                    cancel=cancel,
                    total=len(mine),
                    stage="validate",
                )
        finally:
            set_train_mode_for(self.model, self.config.finetune)
        rows = [r for part in self.ctx.all_gather(rows) for r in part]
        summary = summarize(rows)
        per_organ = {organ: stats["dice"] for organ, stats in summary["per_organ"].items()}
        return {
            "val_dice": per_organ,
            "val_mean_dice": summary["overall"]["dice"],
            "val_cases": len(self.val_volumes),
            "gate": GateRecorder.summarize(self.ctx.all_gather(gates.state())),
        }

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

    def _end_epoch(self, partial: bool) -> None:
        started = time.monotonic()
        try:
            result = self.validate()
        except Cancelled:
            self.save_point()  # the epoch's steps are kept; resuming validates it first
            raise
        loss = self.ctx.mean(self.loss_sum / self.loss_steps) if self.loss_steps else math.nan
        entry = {
            "epoch": self.epoch + 1,
            "step": self.global_step,
            "train_loss": loss,
            "lr": {g["name"]: g["lr"] for g in self.optimizer.param_groups},
            **result,
            "validation_seconds": round(time.monotonic() - started, 2),
        }
        if partial:
            entry["partial"] = True
        self.history.append(entry)
        self.run_log.validation(entry)
        score = result["val_mean_dice"]
        score = score if isinstance(score, float) and math.isfinite(score) else -1.0
        improved = self.best is None or score > self.best["score"]
        if improved:
            self.best = {
                "epoch": self.epoch + 1,
                "step": self.global_step,
                "score": score,
                "val_mean_dice": result["val_mean_dice"],
            }
        if not partial:
            self.epoch, self.position = self.epoch + 1, 0
            self.loss_sum, self.loss_steps = 0.0, 0
        if improved and self.ctx.is_main:
            self._save(self.run_dir / BEST_DIR, self._config_with("best"))
        self.save_point()
        self.progress.info(
            kind="epoch",
            epoch=entry["epoch"],
            epochs=self.config.epochs,
            step=self.global_step,
            train_loss=loss,
            val_mean_dice=result["val_mean_dice"],
            val_dice=result["val_dice"],
            gate=result["gate"],
            best_epoch=self.best["epoch"],
            partial=partial,
            message=f"epoch {entry['epoch']}/{self.config.epochs}{' (partial)' if partial else ''}: "
            f"loss {loss:.4f}, validation mean Dice {_fmt(result['val_mean_dice'])}"
            f"{' (best)' if improved else ''}",
        )

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


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) and math.isfinite(value) else "n/a"


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
