"""Multi-prompt training batches: runs of consecutive slices, each decoded for all its organs.

The paper's sample is one (5-slice window, organ) pair: 5 slice encodings buy one mask. Here a
sample is a :class:`Chunk`: ``n`` consecutive centre slices of one volume. Their windows overlap,
so the chunk encodes ``n + 4`` slices once (edges replicated, as inference does), runs the adapter
once per centre, and decodes every centre for every organ the volume is annotated for, positives
and negatives alike, exactly as the inference engine runs a volume. Per encoded slice this
supervises ``K`` masks instead of 1/5 of one.

Sampling weights choose *which* slices a chunk covers (never how often a slice is re-encoded):
an anchor slice is drawn per chunk with probability proportional to :func:`slice_weights`
(extra weight on the slices just outside each organ's axial extent, where "is it still there?"
is decided, and on slices a dataset marks as hard, such as the phantom's look-alikes), and the
chunk is placed around it at a random offset. Augmentation parameters are drawn with the chunk
and applied identically to all its slices and masks.

Shapes: U unique slices of a batch, B centre slices, S window slices, M (centre, prompt) items.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..inference.engine import window_indices
from ..preprocessing.config import PreprocessConfig
from . import augment
from .cache import CachedVolume
from .sampling import EpochSampler
from .windows import SliceDataset, make_loader


@dataclass(frozen=True)
class Chunk:
    """Centre slices ``start..stop-1`` of volume ``volume`` and the augmentation drawn for them."""

    volume: int
    start: int
    stop: int
    angle: float = 0.0  # rotation, degrees
    zoom: float = 1.0  # in-plane scale (> 1 enlarges)
    contrast: float = 1.0
    brightness: float = 0.0
    gamma: float = 1.0
    organ_seed: int = 0  # per-organ intensity draws (augment.apply_organ_intensity)
    contrast_seed: int = 0  # the random network's draws (augment.apply_random_contrast)


@dataclass(frozen=True)
class ChunkAugmentation:
    """Ranges of the per-chunk augmentation (0 switches a part off)."""

    max_rotation: float = 0.0  # degrees, uniform in +-max_rotation
    max_zoom: float = 0.0  # zoom uniform in [1 - max_zoom, 1 + max_zoom]
    intensity: float = 0.0  # contrast 1 +- a, brightness +- a / 2, gamma exp(+- a)
    organ_intensity: float = 0.0  # each organ's level moved by up to +- a (augment.apply_organ_intensity)
    random_contrast: float = 0.0  # probability of a random intensity network (augment.apply_random_contrast)


def slice_weights(
    presence: np.ndarray,
    organ_ids: Sequence[int],
    boundary_margin: int = 2,
    boundary_weight: float = 0.0,
    hints: Sequence[int] = (),
    hint_weight: float = 0.0,
) -> np.ndarray:
    """(depth,) anchor weights of one volume: 1 per slice, plus ``boundary_weight`` on the
    ``boundary_margin`` slices just beyond each organ's first and last slice, plus ``hint_weight``
    on the slices ``hints`` names (canonical z)."""
    depth = presence.shape[0]
    weights = np.ones(depth, dtype=np.float64)
    for label in organ_ids:
        if label >= presence.shape[1] or not presence[:, label].any():
            continue
        z = np.flatnonzero(presence[:, label])
        near = np.zeros(depth, dtype=bool)
        near[max(0, z[0] - boundary_margin) : z[0]] = True
        near[z[-1] + 1 : z[-1] + 1 + boundary_margin] = True
        weights[near] += boundary_weight
    for z in hints:
        if 0 <= int(z) < depth:
            weights[int(z)] += hint_weight
    return weights


class ChunkSampler(EpochSampler):
    """Yields this rank's :class:`Chunk` items of the current epoch (``batch_size`` chunks a step).

    ``weights[v]`` is volume v's (depth,) anchor weights; ``epoch_size`` counts chunks.
    """

    def __init__(
        self,
        depths: Sequence[int],
        weights: Sequence[np.ndarray],
        chunk_slices: int,
        batch_size: int,
        epoch_size: int,
        seed: int = 0,
        augmentation: ChunkAugmentation = ChunkAugmentation(),
        rank: int = 0,
        world_size: int = 1,
    ):
        super().__init__(batch_size, seed, epoch_size, rank, world_size)
        self.depths = [int(d) for d in depths]
        self.chunk_slices = int(chunk_slices)
        self.augmentation = augmentation
        flat = np.concatenate([np.asarray(w, np.float64) for w in weights])
        self._anchors = np.concatenate(
            [np.stack([np.full(d, v), np.arange(d)], 1) for v, d in enumerate(self.depths)]
        )  # (sum depth, 2): volume, z
        self._p = flat / flat.sum()

    def epoch_items(self, epoch: int) -> list[Chunk]:
        rng = np.random.default_rng([self.seed, int(epoch)])
        n = self.epoch_size
        anchors = self._anchors[rng.choice(len(self._anchors), n, p=self._p)]
        offsets = rng.integers(0, self.chunk_slices, n)
        a = self.augmentation
        angles = rng.uniform(-a.max_rotation, a.max_rotation, n) if a.max_rotation else np.zeros(n)
        zooms = rng.uniform(1 - a.max_zoom, 1 + a.max_zoom, n) if a.max_zoom else np.ones(n)
        if a.intensity:
            contrast = rng.uniform(1 - a.intensity, 1 + a.intensity, n)
            brightness = rng.uniform(-a.intensity / 2, a.intensity / 2, n)
            gamma = np.exp(rng.uniform(-a.intensity, a.intensity, n))
        else:
            contrast, brightness, gamma = np.ones(n), np.zeros(n), np.ones(n)
        # drawn after the others, and only when on: runs without it keep their exact draws
        organ_seeds = rng.integers(0, 2**31 - 1, n) if a.organ_intensity else np.zeros(n, dtype=np.int64)
        contrast_seeds = rng.integers(0, 2**31 - 1, n) if a.random_contrast else np.zeros(n, dtype=np.int64)
        chunks = []
        for i, (v, z) in enumerate(anchors):
            depth = self.depths[int(v)]
            length = min(self.chunk_slices, depth)
            start = int(np.clip(int(z) - int(offsets[i]) % length, 0, depth - length))
            chunks.append(
                Chunk(
                    int(v),
                    start,
                    start + length,
                    float(angles[i]),
                    float(zooms[i]),
                    float(contrast[i]),
                    float(brightness[i]),
                    float(gamma[i]),
                    int(organ_seeds[i]),
                    int(contrast_seeds[i]),
                )
            )
        return chunks


class ChunkDataset(SliceDataset):
    """``dataset[chunk]`` -> {"pixels": (U, 3, H, W), "windows": (n, S) rows of pixels,
    "targets": (n, K_v, H, W), "prompts": (K_v,) prompt rows}.

    ``organs[v]`` lists the label ids volume v is trained on; ``prompts`` maps a label id to its
    row in the trainer's prompt list. ``augmentation`` is the sampler's: the chunk carries the
    draws, the dataset takes the strengths of the pixel-level parts from the same object.
    """

    def __init__(
        self,
        volumes: list[CachedVolume],
        preprocessing: PreprocessConfig,
        context_size: int,
        organs: Sequence[Sequence[int]],
        prompts: dict[int, int],
        tokens: Sequence | None = None,
        augmentation: ChunkAugmentation = ChunkAugmentation(),
    ):
        super().__init__(volumes, preprocessing, context_size, prompts)
        self.augmentation = augmentation
        self.organs = [np.asarray(list(ids), dtype=np.int64) for ids in organs]
        self.token_files = list(tokens) if tokens is not None else None  # token_cache.build_token_cache
        self._tokens: dict = {}

    def __getstate__(self) -> dict:  # memory maps are reopened in the worker, not pickled
        state = super().__getstate__()
        state["_tokens"] = {}
        return state

    def _token_array(self, v: int) -> np.ndarray:
        if v not in self._tokens:
            self._tokens[v] = np.load(self.token_files[v], mmap_mode="r")
        return self._tokens[v]

    def __len__(self) -> int:
        raise TypeError("ChunkDataset is indexed by Chunk objects from a ChunkSampler")

    def __getitem__(self, chunk: Chunk) -> dict:
        volume = self.volumes[chunk.volume]
        centres = range(chunk.start, chunk.stop)
        windows = [window_indices(c, volume.depth, self.context_size) for c in centres]
        needed = sorted({z for w in windows for z in w})
        row = {z: i for i, z in enumerate(needed)}
        unit = volume.unit_slices(needed)
        a = self.augmentation
        if a.organ_intensity:
            unit = augment.apply_organ_intensity(
                unit, np.asarray(volume.labels[needed]), a.organ_intensity, chunk.organ_seed
            )
        unit = augment.apply_random_contrast(unit, a.random_contrast, chunk.contrast_seed)
        unit = augment.apply_intensity(unit, chunk.contrast, chunk.brightness, chunk.gamma)
        codec = self.codec
        pixels = codec.encode(unit)  # (U, 3, H, W)
        ids = self.organs[chunk.volume]
        labels = np.asarray(volume.labels[chunk.start : chunk.stop])  # (n, Y, X)
        masks = labels[:, None] == ids[None, :, None, None]  # (n, K_v, Y, X)
        n, k = masks.shape[:2]
        targets = codec.encode_masks(masks.reshape(n * k, *masks.shape[2:]))  # (n*K_v, H, W)
        pixels, targets = augment.apply_geometry(pixels, targets, chunk.angle, chunk.zoom, codec.fill)
        out = {
            "pixels": pixels,
            "windows": torch.tensor([[row[z] for z in w] for w in windows]),
            "targets": targets.view(n, k, *targets.shape[-2:]),
            "prompts": torch.tensor([self.prompts[int(i)] for i in ids], dtype=torch.long),
        }
        if self.token_files is not None:  # (U, L, T, C): the encoder's output for the same slices
            out["tokens"] = torch.from_numpy(np.asarray(self._token_array(chunk.volume)[needed], dtype=np.float32))
        return out


def collate_chunks(chunks: list[dict]) -> dict:
    """Chunks -> one batch: {"pixels": (U, 3, H, W), "windows": (B, S), "items": (M, 2) rows of
    (centre, prompt), "targets": (M, H, W)} and, from a token cache, "tokens" (U, L, T, C); items
    are centre-major."""
    pixels, windows, items, targets = [], [], [], []
    offset = centre = 0
    tokens = [chunk["tokens"] for chunk in chunks if "tokens" in chunk]
    for chunk in chunks:
        n, k = chunk["targets"].shape[:2]
        pixels.append(chunk["pixels"])
        windows.append(chunk["windows"] + offset)
        b = torch.arange(centre, centre + n).repeat_interleave(k)
        items.append(torch.stack([b, chunk["prompts"].repeat(n)], dim=1))
        targets.append(chunk["targets"].flatten(0, 1))
        offset += chunk["pixels"].shape[0]
        centre += n
    batch = {
        "pixels": torch.cat(pixels),
        "windows": torch.cat(windows),
        "items": torch.cat(items),
        "targets": torch.cat(targets),
    }
    if tokens:
        batch["tokens"] = torch.cat(tokens)  # (U, L, T, C)
    return batch


def make_chunk_loader(
    dataset: ChunkDataset, sampler: ChunkSampler, num_workers: int, pin_memory: bool = False
) -> DataLoader:
    return make_loader(dataset, sampler, num_workers, pin_memory, collate_fn=collate_chunks)
