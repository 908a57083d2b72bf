"""Per-organ decision thresholds chosen on validation volumes (:class:`ThresholdCounts`).

Why: a model trained briefly from random weights is under-confident on its small organs. On the
demo's phantoms, the gallbladder's and the inferior vena cava's best thresholds lie at 0.25-0.4 on
the training phantoms themselves, so a fixed 0.5 under-segments them (predicted 43 ml against
76 ml of gallbladder). The trainer's validation pass already computes every prompt's
probabilities on whole validation volumes; counting, at each threshold of :data:`GRID`, the voxels
predicted and the voxels both predicted and true costs a few comparisons per slice, and gives each
organ the threshold with the best Dice pooled over the validation volumes. The checkpoint stores
them (``TGatedConfig.organ_thresholds``) and the engine applies them, unless the user names a threshold.

The choice must earn its place: an organ keeps :data:`DEFAULT` unless another threshold raises its
pooled validation Dice by at least :data:`MIN_GAIN` (one or two small validation volumes are noisy),
and organs without true voxels in the validation volumes keep it too.
Measured in docs/results.md ("Calibrated thresholds").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

DEFAULT = 0.5
GRID = tuple(round(0.2 + 0.05 * i, 2) for i in range(11))  # 0.20, 0.25, ..., 0.70
MIN_GAIN = 0.005  # pooled validation Dice an organ's threshold must gain over DEFAULT


class ThresholdCounts:
    """Voxel counts per organ and threshold, pooled over volumes: predicted, true positive, true."""

    def __init__(self, grid: tuple[float, ...] = GRID):
        if DEFAULT not in grid:
            raise ValueError(f"the threshold grid must contain the default {DEFAULT}")
        self.grid = tuple(grid)
        self.counts: dict[str, np.ndarray] = {}  # organ -> (T, 3) int64: predicted, true positive, true

    def add(self, organ: str, probabilities: torch.Tensor, truth: torch.Tensor) -> None:
        """Count one block of voxels (any shape; ``truth`` boolean, same shape)."""
        import torch

        p = probabilities.float().reshape(-1)
        t = truth.reshape(-1).to(device=p.device, dtype=torch.bool)
        grid = torch.tensor(self.grid, dtype=p.dtype, device=p.device)
        above = p.unsqueeze(0) >= grid.unsqueeze(1)  # (T, V)
        block = torch.stack([above.sum(1), (above & t).sum(1), t.sum().expand(len(self.grid))], 1)  # (T, 3)
        self._row(organ)[:] += block.cpu().numpy().astype(np.int64)

    def _row(self, organ: str) -> np.ndarray:
        """The organ's (T, 3) counts, zero the first time it is seen."""
        return self.counts.setdefault(organ, np.zeros((len(self.grid), 3), np.int64))

    def sink(self, canonical_labels: np.ndarray, organs: dict[int, str]):
        """A ``Segmenter.segment`` probability sink that counts the prompts, in the order of ``organs``
        (label id -> the organ's prompt, the key the engine finds it by), against ``canonical_labels``:
        the labels on the engine's slice grid."""
        import torch

        ids, names = list(organs), list(organs.values())

        def count(z0: int, z1: int, prob: torch.Tensor) -> None:  # prob (B, K, Y, X)
            block = canonical_labels[z0:z1]
            for n, label_id in enumerate(ids):  # compared in numpy: label ids may be uint16
                self.add(names[n], prob[:, n], torch.from_numpy(block == label_id).to(prob.device))

        return count

    def state(self) -> dict[str, list]:
        """Plain counts (to gather from several processes, then :meth:`merge`)."""
        return {organ: c.tolist() for organ, c in self.counts.items()}

    def merge(self, state: dict[str, list]) -> None:
        for organ, c in state.items():
            self._row(organ)[:] += np.asarray(c, np.int64)

    def dice(self, organ: str) -> np.ndarray:
        """Pooled Dice at each threshold of the grid (1 where nothing is true or predicted)."""
        predicted, hit, true = self.counts[organ].T.astype(np.float64)
        total = predicted + true
        return np.where(total > 0, 2 * hit / np.maximum(total, 1), 1.0)

    def choose(self) -> dict[str, float]:
        """Each organ with true voxels -> its threshold (see the module docstring)."""
        default = self.grid.index(DEFAULT)
        chosen = {}
        for organ, c in self.counts.items():
            if c[0, 2] == 0:
                continue
            dice = self.dice(organ)
            best = int(np.argmax(dice))  # the lowest of equal bests
            chosen[organ] = self.grid[best] if dice[best] - dice[default] >= MIN_GAIN else DEFAULT
        return chosen


def calibrate(segmenter, cases, progress=None, cancel=None, total: int | None = None) -> dict[str, float]:
    """Each organ's threshold on ``cases`` (:class:`evaluate.ScoredCase`), as the trainer's validation
    chooses them: for a checkpoint trained without, or trained before the option existed
    (``tgated calibrate``). Progress is reported per case (stage ``calibrate``)."""
    from .evaluate import evaluate_segmenter

    counts = ThresholdCounts()
    evaluate_segmenter(
        segmenter,
        cases,
        metrics=("dice",),
        progress=progress,
        cancel=cancel,
        total=total,
        stage="calibrate",
        calibration=counts,
    )
    return counts.choose()


def calibrate_checkpoint(
    checkpoint, cases, output, device="cpu", batch_size: int | None = None, progress=None, total: int | None = None
) -> dict[str, float]:
    """:func:`calibrate` a checkpoint (folder or hub id) on ``cases`` and write it to ``output`` (the
    same folder replaces it, atomically) with those thresholds and the same weights; nothing is
    written when no organ had true voxels. Used by ``tgated calibrate`` and the phantom benchmarks."""
    from ..inference.api import Segmenter
    from ..model.checkpoint import save_checkpoint

    # fp32: the thresholds belong to the weights, whatever precision later runs them
    segmenter = Segmenter(checkpoint, device=device, batch_size=batch_size, precision="fp32")
    thresholds = calibrate(segmenter, cases, progress=progress, total=total)
    if thresholds:
        loaded = segmenter.loaded
        loaded.config.organ_thresholds = dict(thresholds)
        save_checkpoint(loaded.model, loaded.tokenizer, output, config=loaded.config)
    return thresholds
