"""Samples -> model tensors: a window of cached slices through inference's SliceCodec, its mask, augmented.

Runs in DataLoader workers; every worker opens the cached volumes as its own memory maps.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from ..inference.engine import window_indices
from ..preprocessing.config import PreprocessConfig
from ..preprocessing.slices import SliceCodec
from . import augment
from .cache import CachedVolume
from .sampling import EpochSampler, Sample


class SliceDataset(Dataset):
    """What the training datasets share: cached volumes read through inference's :class:`SliceCodec`
    (made per DataLoader worker, never pickled). ``prompts`` maps a label id to its prompt's index
    in the trainer's prompt list."""

    def __init__(
        self, volumes: list[CachedVolume], preprocessing: PreprocessConfig, context_size: int, prompts: dict[int, int]
    ):
        self.volumes = volumes
        self.preprocessing = preprocessing
        self.context_size = int(context_size)
        self.prompts = dict(prompts)
        self._codec: SliceCodec | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_codec"] = None
        return state

    @property
    def codec(self) -> SliceCodec:
        if self._codec is None:
            self._codec = SliceCodec(self.preprocessing, "cpu")
        return self._codec


class WindowDataset(SliceDataset):
    """``dataset[sample]`` -> {"pixels": (S, 3, H, W), "target": (H, W), "prompt": prompt index}."""

    def __len__(self) -> int:  # samples come from the sampler, not from an index range
        raise TypeError("WindowDataset is indexed by Sample objects from a WindowSampler")

    def __getitem__(self, sample: Sample) -> dict:
        volume = self.volumes[sample.volume]
        window = window_indices(sample.z, volume.depth, self.context_size)  # edges replicated, as in inference
        codec = self.codec
        pixels = codec.encode(volume.unit_slices(window))  # (S, 3, H, W)
        mask = volume.labels[sample.z] == sample.label  # (Y, X) canonical
        target = codec.encode_masks(mask[None])[0]  # (H, W) in [0, 1]
        pixels, target = augment.apply(pixels, target, sample.angle, sample.flip, codec.fill, codec.left_right_dim)
        return {"pixels": pixels, "target": target, "prompt": self.prompts[sample.label]}


def _seed_worker(worker_id: int) -> None:
    torch.set_num_threads(1)  # workers only resize and rotate a few slices; leave the cores to the model


def make_loader(
    dataset: SliceDataset, sampler: EpochSampler, num_workers: int, pin_memory: bool = False, collate_fn=None
) -> DataLoader:
    """The training loader: the sampler's batches, ``num_workers`` workers; ``collate_fn`` None: torch's default."""
    return DataLoader(
        dataset,
        batch_size=sampler.batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        collate_fn=collate_fn,
        worker_init_fn=_seed_worker if num_workers else None,
        persistent_workers=False,
        drop_last=False,
        # its own generator: creating an iterator must not draw from the global RNG (resume)
        generator=torch.Generator().manual_seed(0),
    )
