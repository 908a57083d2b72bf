"""What the engine computed for the last volume, kept for the next request on the same volume.

The warm backend (``tgated serve``, :mod:`.server`) answers "the same volume, another prompt" in
the time of the decoder alone: the prompt-independent work of a volume (each slice's encoder
tokens, each centre slice's adapter output, and the refinement head's input pixels) is kept, keyed
by a content hash of the volume after preprocessing plus everything that shapes those tensors
(model, precision, slice preprocessing). A different key drops it all: one volume is kept, the
last one, within ``max_mb``; beyond that the rest of the volume is simply not cached.

Only the adapter's rewrite of the last decoder activation is stored (``TGatedCLIPSeg.fuse`` leaves
the others as the encoder made them), so a slice costs its tokens plus one activation.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def content_key(volume: np.ndarray, *parts) -> str:
    """SHA-256 of a volume's bytes, shape and dtype, and of ``parts`` (their ``repr``)."""
    digest = hashlib.sha256()
    digest.update(repr((volume.shape, str(volume.dtype), parts)).encode())
    digest.update(np.ascontiguousarray(volume).reshape(-1).view(np.uint8).data)
    return digest.hexdigest()


class VolumeCache:
    """Per-slice tensors of one volume: ``tokens`` (L, T, C), ``fused_last`` (T, C), ``pixels`` (3, H, W)."""

    def __init__(self, max_mb: float = 4096.0):
        self.max_bytes = int(max_mb * 2**20)
        self.key: str | None = None
        self.tokens: dict[int, torch.Tensor] = {}
        self.fused_last: dict[int, torch.Tensor] = {}
        self.pixels: dict[int, torch.Tensor] = {}
        self.nbytes = 0
        self.hits = 0  # slices whose encoder tokens came from the cache (since the key was set)

    def bind(self, key: str) -> bool:
        """Use the cache for the volume ``key``; returns whether it already holds that volume's tensors."""
        if key == self.key:
            return bool(self.tokens)
        self.clear()
        self.key = key
        return False

    def clear(self) -> None:
        self.key = None
        self.tokens.clear()
        self.fused_last.clear()
        self.pixels.clear()
        self.nbytes = 0
        self.hits = 0

    def _fits(self, tensor: torch.Tensor) -> bool:
        size = tensor.numel() * tensor.element_size()
        if self.nbytes + size > self.max_bytes:
            return False
        self.nbytes += size
        return True

    def put(self, store: dict, z: int, tensor: torch.Tensor) -> None:
        if z not in store and self._fits(tensor):
            store[z] = tensor
