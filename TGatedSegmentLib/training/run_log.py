"""What a training did, step by step, in files a researcher can open: ``RUN/logs/``.

* ``steps.csv``: step, epoch, the step's loss and every optimiser group's learning rate;
* ``validation.csv``: one row per validation: step, epoch, mean training loss, validation mean
  Dice, each organ's Dice, and the temporal adapter's gate over the validation volumes (mean and
  10th/50th/90th percentiles of every token's and channel's value: near 0 the model ignores the
  neighbouring slices, near 1 it relies on them; empty for the slice-wise baseline);
* ``curves.png``: the training loss (raw and smoothed), the validation Dice and the gate against
  the step, redrawn at every validation (needs matplotlib, the ``plots`` extra; skipped without it);
* ``tensorboard/``: the same scalars as TensorBoard events, when ``tensorboard`` is installed
  (``pip install tensorboard``; ``tensorboard --logdir RUN/logs/tensorboard``).

Only the main rank writes. A resumed run continues the files: rows past the step it resumes from
(written after its last save point, so redone now) are dropped first, so each step appears once;
files from a version with other columns keep their rows, matched by column name.
Logging never stops a training: a failure to write is reported once and logging switches off.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path

from ..io.atomic import atomic_write_bytes

log = logging.getLogger(__name__)

LOG_DIR = "logs"
STEPS_FILE, VALIDATION_FILE, CURVES_FILE, TENSORBOARD_DIR = "steps.csv", "validation.csv", "curves.png", "tensorboard"
_FLUSH_EVERY = 50  # steps between writes of steps.csv
GATE_COLUMNS = ("mean", "p10", "p50", "p90")  # evaluation.gate.GateRecorder.summarize's keys


class RunLog:
    """Appends to ``RUN/logs/``; ``enabled=False`` (other ranks) makes every call a no-op."""

    def __init__(
        self, run_dir: Path, groups: list[str], organs: list[str], resume_step: int | None, enabled: bool = True
    ):
        self.folder = Path(run_dir) / LOG_DIR
        self.groups, self.organs = list(groups), list(organs)
        self.enabled = enabled
        self._pending: list[list] = []
        self._tensorboard = None
        if not enabled:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            steps_header = ["step", "epoch", "loss"] + [f"lr_{g}" for g in self.groups]
            val_header = (
                ["step", "epoch", "train_loss", "val_mean_dice"]
                + [f"dice_{o}" for o in self.organs]
                + [f"gate_{c}" for c in GATE_COLUMNS]
            )
            _start_csv(self.folder / STEPS_FILE, steps_header, resume_step)
            _start_csv(self.folder / VALIDATION_FILE, val_header, resume_step)
        except OSError as exc:
            self._disable(exc)
            return
        self._tensorboard = _tensorboard_writer(self.folder / TENSORBOARD_DIR, resume_step)

    def step(self, step: int, epoch: int, loss: float, lrs: dict[str, float]) -> None:
        if not self.enabled:
            return
        self._pending.append([step, epoch, _num(loss)] + [_num(lrs.get(g)) for g in self.groups])
        if self._tensorboard is not None:
            self._tensorboard.add_scalar("train/loss", loss, step)
            for group, lr in lrs.items():
                self._tensorboard.add_scalar(f"lr/{group}", lr, step)
        if len(self._pending) >= _FLUSH_EVERY:
            self.flush()

    def validation(self, entry: dict) -> None:
        """One validation (the trainer's history entry): a row, TensorBoard scalars, the curves."""
        if not self.enabled:
            return
        dice, gate = entry.get("val_dice") or {}, entry.get("gate") or {}
        row = [entry["step"], entry["epoch"], _num(entry.get("train_loss")), _num(entry.get("val_mean_dice"))]
        row += [_num(dice.get(organ)) for organ in self.organs] + [_num(gate.get(c)) for c in GATE_COLUMNS]
        self.flush()
        self._append(VALIDATION_FILE, [row])
        if self._tensorboard is not None:
            for name, value in (
                [("val/mean_dice", entry.get("val_mean_dice"))]
                + [(f"val_dice/{o}", dice.get(o)) for o in self.organs]
                + [(f"gate/{c}", gate.get(c)) for c in GATE_COLUMNS]
            ):
                if isinstance(value, float) and math.isfinite(value):
                    self._tensorboard.add_scalar(name, value, entry["step"])
            self._tensorboard.flush()
        if self.enabled:
            self._draw()

    def flush(self) -> None:
        if self.enabled and self._pending:
            rows, self._pending = self._pending, []
            self._append(STEPS_FILE, rows)

    def close(self) -> None:
        self.flush()
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None

    # -- internals ------------------------------------------------------------------------------
    def _append(self, name: str, rows: list[list]) -> None:
        try:
            with open(self.folder / name, "a", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerows(rows)
        except OSError as exc:
            self._disable(exc)

    def _draw(self) -> None:
        try:
            from ..evaluation.curves import render_training_curves
        except ImportError:
            return
        try:
            render_training_curves(self.folder / STEPS_FILE, self.folder / VALIDATION_FILE, self.folder / CURVES_FILE)
        except ImportError:  # no matplotlib: the CSV files are the log
            return
        except Exception as exc:  # a plot must never end a training
            log.warning("could not draw %s (%s); the CSV logs are complete", self.folder / CURVES_FILE, exc)

    def _disable(self, exc: Exception) -> None:
        log.warning("training logs switched off: cannot write to %s (%s)", self.folder, exc)
        self.enabled = False


def _start_csv(path: Path, header: list[str], resume_step: int | None) -> None:
    """A new file with ``header``; on resume, the existing one without rows past ``resume_step``."""
    if resume_step is not None and path.is_file():
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        if rows and rows[0] and rows[0][0] == "step":
            where = {name: i for i, name in enumerate(rows[0])}  # an older header: same columns by name
            kept = [
                [r[where[c]] if c in where and where[c] < len(r) else "" for c in header]
                for r in rows[1:]
                if r and int(float(r[0])) <= resume_step
            ]
            _write(path, [header] + kept)
            return
    _write(path, [header])


def _write(path: Path, rows: list[list]) -> None:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    atomic_write_bytes(path, buffer.getvalue().encode("utf-8"))  # bytes: the rows keep csv's line ends


def _tensorboard_writer(folder: Path, resume_step: int | None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional: the CSV files hold the same numbers
        return None
    try:
        return SummaryWriter(str(folder), purge_step=resume_step)
    except Exception as exc:  # e.g. an old tensorboard: the CSV log still works
        log.warning("TensorBoard logging off (%s)", exc)
        return None


def _num(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{float(value):.6g}"
