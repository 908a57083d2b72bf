"""Which (volume, slice, organ) pairs a training epoch sees, as the paper describes (Sec. 3.5).

* A sample is a centre slice, its 4 nearest axial neighbours *in the volume* (edges replicated:
  :func:`inference.engine.window_indices`, the same windows inference uses) and one organ prompt.
  The authors' code built the window over manifest rows instead, so most windows repeated the
  centre slice.
* Positives: the organ is present in the centre slice. Negatives: it is absent from the centre
  slice, *including* slices where other organs are present (the hard case the adapter exists
  for; the authors drew negatives only from slices with no organ at all), at 1 negative per 3
  positives (theirs: 1 per 10). Only organs the case is annotated for count: an unannotated
  organ's absence from the label says nothing.
* Class weighting: within positives, and within negatives, a pair is drawn with probability
  proportional to its organ's ``sampling_weight`` (paper Table 1: adrenals and oesophagus 8, ...),
  with replacement, like the authors' ``WeightedRandomSampler``.

An epoch is a fixed list drawn from ``default_rng([seed, epoch])`` (augmentation parameters
included), so it is reproducible, can restart at any position (the resume state stores
``(epoch, position)``) and splits into equal disjoint shards for DDP ranks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from ..errors import InputError
from ..vocabulary import Organ
from . import augment


@dataclass(frozen=True)
class Sample:
    """One training item: centre slice ``z`` of volume ``volume`` prompted with label id ``label``."""

    volume: int
    z: int
    label: int
    positive: bool
    angle: float = 0.0  # rotation in degrees
    flip: bool = False  # left-right flip


class SampleIndex:
    """Every candidate pair of a set of volumes, split into positives and negatives.

    ``presence[v]`` is volume v's (z, n_values) table of label values per slice and
    ``scored[v]`` the label ids it is annotated for.
    """

    def __init__(self, presence: Sequence[np.ndarray], scored: Sequence[Sequence[int]], organs: dict[int, Organ]):
        pos: list[np.ndarray] = []
        neg: list[np.ndarray] = []
        for v, (table, ids) in enumerate(zip(presence, scored)):
            depth = table.shape[0]
            z = np.arange(depth)
            for label in ids:
                here = table[:, label] if label < table.shape[1] else np.zeros(depth, bool)
                for rows, mask in ((pos, here), (neg, ~here)):
                    n = int(mask.sum())
                    if n:
                        rows.append(np.stack([np.full(n, v), z[mask], np.full(n, label)], 1))
        empty = np.zeros((0, 3), np.int64)
        self.positives = np.concatenate(pos).astype(np.int64) if pos else empty  # (n, 3): volume, z, label
        self.negatives = np.concatenate(neg).astype(np.int64) if neg else empty
        self.organs = organs
        if not len(self.positives):
            raise InputError(
                "the training labels contain no organ voxels, so there is nothing to learn",
                "Check that the label files hold the ids of dataset.json.",
            )

    def weights(self, rows: np.ndarray) -> np.ndarray:
        table = {label: float(organ.sampling_weight) for label, organ in self.organs.items()}
        return np.array([table.get(int(label), 1.0) for label in rows[:, 2]], dtype=np.float64)

    def counts(self) -> dict[str, int]:
        return {"positives": int(len(self.positives)), "negatives": int(len(self.negatives))}


class EpochSampler(Sampler):
    """What every training sampler shares: an epoch is a fixed list drawn from
    ``default_rng([seed, epoch])`` by :meth:`epoch_items`, split into equal shards for DDP ranks,
    iterated from ``position`` batches in (the resume state is ``(epoch, position)``)."""

    def __init__(self, batch_size: int, seed: int, epoch_size: int, rank: int = 0, world_size: int = 1):
        super().__init__()
        self.batch_size, self.seed, self.epoch_size = int(batch_size), int(seed), int(epoch_size)
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch, self.position = 0, 0

    @property
    def per_rank(self) -> int:
        return math.ceil(self.epoch_size / self.world_size)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.per_rank / self.batch_size)

    def set_epoch(self, epoch: int, position: int = 0) -> None:
        """Start ``epoch`` after ``position`` batches of it (0: from the start)."""
        self.epoch, self.position = int(epoch), int(position)

    def epoch_items(self, epoch: int) -> list:
        raise NotImplementedError

    def shard(self, items: list) -> list:
        """This rank's equal share (the list is wrapped around so every rank gets ``per_rank``)."""
        total = self.per_rank * self.world_size
        padded = items + items[: total - len(items)]
        return padded[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator:
        mine = self.shard(self.epoch_items(self.epoch))
        return iter(mine[self.position * self.batch_size :])

    def __len__(self) -> int:
        return max(0, self.per_rank - self.position * self.batch_size)

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "epoch_size": self.epoch_size,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict) -> None:
        mismatch = [
            k for k in ("seed", "epoch_size", "world_size") if state.get(k, getattr(self, k)) != getattr(self, k)
        ]
        if mismatch:
            raise ValueError(f"the sampler state belongs to a different {', '.join(mismatch)}")
        self.set_epoch(state["epoch"], state["position"])


class WindowSampler(EpochSampler):
    """Yields this rank's :class:`Sample` items of the current epoch, from ``position`` batches in.

    ``epoch_size`` samples per epoch over all ranks (default: as many positive draws as there are
    positive pairs, plus ``negative_ratio`` times that many negative draws).
    """

    def __init__(
        self,
        index: SampleIndex,
        batch_size: int,
        seed: int = 0,
        negative_ratio: float = 1.0 / 3.0,
        epoch_size: int | None = None,
        max_rotation: float = 5.0,
        flip_probability: float = 0.5,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.index = index
        self.negative_ratio = float(negative_ratio) if len(index.negatives) else 0.0
        n_pos = len(index.positives)
        epoch_size = int(epoch_size) if epoch_size else n_pos + int(round(n_pos * self.negative_ratio))
        super().__init__(batch_size, seed, epoch_size, rank, world_size)
        self.max_rotation, self.flip_probability = float(max_rotation), float(flip_probability)
        labels = sorted(index.organs)
        self._flippable = {label: augment.flip_allowed(index.organs[label]) for label in labels}
        self._p_pos = self._probabilities(index.positives)
        self._p_neg = self._probabilities(index.negatives)

    def _probabilities(self, rows: np.ndarray) -> np.ndarray | None:
        if not len(rows):
            return None
        w = self.index.weights(rows)
        return w / w.sum()

    # -- sizes ----------------------------------------------------------------------------------
    @property
    def split(self) -> tuple[int, int]:
        """(positive, negative) draws per epoch: exactly 1 negative per 1/negative_ratio positives."""
        n_pos = int(round(self.epoch_size / (1.0 + self.negative_ratio)))
        return n_pos, self.epoch_size - n_pos

    # -- content --------------------------------------------------------------------------------
    def epoch_items(self, epoch: int) -> list[Sample]:
        """The whole epoch, all ranks, in training order."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        n_pos, n_neg = self.split
        drawn = [self.index.positives[rng.choice(len(self.index.positives), n_pos, p=self._p_pos)]]
        if n_neg:
            drawn.append(self.index.negatives[rng.choice(len(self.index.negatives), n_neg, p=self._p_neg)])
        rows = np.concatenate(drawn)
        positive = np.arange(len(rows)) < n_pos
        order = rng.permutation(len(rows))
        rows, positive = rows[order], positive[order]
        flippable = np.array([self._flippable.get(int(label), False) for label in rows[:, 2]], dtype=np.bool_)
        angles, flips = augment.draw(rng, len(rows), flippable, self.max_rotation, self.flip_probability)
        return [
            Sample(int(v), int(z), int(label), bool(p), float(a), bool(f))
            for (v, z, label), p, a, f in zip(rows, positive, angles, flips)
        ]
