"""``RUN/logs/curves.png``: how a training went, at a glance (loss, validation Dice and the temporal
adapter's gate per step).

matplotlib is optional (the ``plots`` extra): without it :func:`render_training_curves` raises
ImportError and the caller keeps the CSV logs only.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_path


def _columns(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return {}
    header, body = rows[0], rows[1:]
    return {
        name: np.array([float(r[i]) if i < len(r) and r[i] != "" else np.nan for r in body])
        for i, name in enumerate(header)
    }


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` steps (NaNs ignored), so the trend shows through the noise."""
    out = np.full(values.shape, np.nan)
    for i in range(values.size):
        part = values[max(0, i - window + 1) : i + 1]
        if np.isfinite(part).any():
            out[i] = np.nanmean(part)
    return out


def render_training_curves(steps_csv: Path, validation_csv: Path, output: Path) -> None:
    """Two panels: training loss (raw, and smoothed over ~2 % of the steps) and validation Dice
    (mean bold, each organ thin, the gate's mean dashed with its 10-90th percentile band when the
    log has it) against the step. Written atomically (a viewer never sees half)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    steps, val = _columns(Path(steps_csv)), _columns(Path(validation_csv))
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    if steps.get("step") is not None and steps["step"].size:
        window = max(1, steps["step"].size // 50)
        top.plot(steps["step"], steps["loss"], color="0.75", linewidth=0.6, label="loss")
        top.plot(
            steps["step"], _smooth(steps["loss"], window), color="C0", linewidth=1.5, label=f"mean of {window} steps"
        )
        top.legend(loc="upper right", fontsize=8)
    top.set_ylabel("training loss")
    if val.get("step") is not None and val["step"].size:
        for name, values in val.items():
            if name.startswith("dice_"):
                bottom.plot(val["step"], values, linewidth=0.8, marker=".", label=name[5:])
        bottom.plot(val["step"], val["val_mean_dice"], color="black", linewidth=2, marker="o", label="mean")
        if "gate_mean" in val and np.isfinite(val["gate_mean"]).any():
            bottom.fill_between(val["step"], val["gate_p10"], val["gate_p90"], color="0.5", alpha=0.15)
            bottom.plot(val["step"], val["gate_mean"], color="0.4", linestyle="--", label="gate (p10-p90)")
        bottom.legend(loc="lower right", fontsize=7, ncol=3)
    bottom.set_ylim(0, 1)
    bottom.set_xlabel("step")
    bottom.set_ylabel("validation Dice, gate")
    figure.tight_layout()
    with atomic_path(output) as tmp:
        figure.savefig(tmp, dpi=100, format="png")
    plt.close(figure)
