"""A training run's validation (:class:`trainer._Run`): per-organ Dice and the adapter's gate on
the validation volumes, and the end of an epoch it decides (history, ``best/``, progress)."""

from __future__ import annotations

import math
import time
from dataclasses import replace

from ..errors import Cancelled
from ..inference.api import Segmenter
from ..model.checkpoint import LoadedModel
from .optim import set_train_mode_for
from .preflight import BEST_DIR
from .run_log import RunLog
from .run_setup import RunSetupMixin


class ValidationMixin(RunSetupMixin):
    """Validation and the end of an epoch, on top of the run's setup."""

    run_log: RunLog  # set by trainer._Run.run

    def validate(self) -> dict:
        """Per-organ volumetric Dice on whole validation volumes (streaming engine, native grid), and
        the adapter's gate over them (mean and percentiles: how much the neighbours are used).

        The Dice is at the checkpoint's one threshold (0.5), so that choosing ``best/`` does not depend
        on the calibration; with ``thresholds="calibrated"`` the same pass also chooses each organ's
        threshold (``evaluation.calibration``), which the checkpoints of these weights carry."""
        from ..evaluation.calibration import ThresholdCounts
        from ..evaluation.evaluate import ScoredCase, evaluate_segmenter
        from ..evaluation.gate import GateRecorder
        from ..evaluation.metrics import summarize

        organs = self.plan.val.organs
        mine = self.val_volumes[self.ctx.rank :: self.ctx.world_size]
        uncalibrated = replace(self.model_config, organ_thresholds={})
        loaded = LoadedModel(self.model, self.tokenizer, uncalibrated, "training")
        counts = ThresholdCounts() if self.config.thresholds == "calibrated" else None
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
                    calibration=counts,
                )
        finally:
            set_train_mode_for(self.model, self.config.finetune)
        rows = [r for part in self.ctx.all_gather(rows) for r in part]
        summary = summarize(rows)
        per_organ = {organ: stats["dice"] for organ, stats in summary["per_organ"].items()}
        result = {
            "val_dice": per_organ,
            "val_mean_dice": summary["overall"]["dice"],
            "val_cases": len(self.val_volumes),
            "gate": GateRecorder.summarize(self.ctx.all_gather(gates.state())),
        }
        if counts is not None:
            pooled = ThresholdCounts(counts.grid)
            for state in self.ctx.all_gather(counts.state()):
                pooled.merge(state)
            result["thresholds"] = pooled.choose()
        return result

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
        self.history.append(entry)  # best/ and last/ below carry its thresholds (run_folder._config_with)
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


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) and math.isfinite(value) else "n/a"
