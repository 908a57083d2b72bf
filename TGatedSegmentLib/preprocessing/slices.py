"""Canonical axial slices <-> CLIPSeg input images, and model logits back to the native grid.

A canonical slice has rows running toward Posterior and columns toward the patient's Left (the
radiological axial view). :class:`SliceCodec` applies the checkpoint's ``slice_layout`` (a
transpose and/or flips), resizes to the model's square input, quantises to 8 bits as the CLIPSeg
processor would, and normalises with its mean/std; ``decode`` undoes the geometry for logits.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .config import PreprocessConfig

# Canonical in-plane frame: rows toward P, columns toward L.
_CANONICAL = ("P", "L")
_OPPOSITE = {"L": "R", "R": "L", "P": "A", "A": "P"}


def _layout_ops(layout: tuple[str, ...]) -> tuple[bool, bool, bool]:
    """(transpose, flip rows, flip columns) taking a canonical slice to ``layout``."""
    rows, cols = layout
    transpose = rows in "LR"
    src_rows, src_cols = (_CANONICAL[1], _CANONICAL[0]) if transpose else _CANONICAL
    return transpose, rows != src_rows, cols != src_cols


class SliceCodec:
    """Turns canonical slices into model input and model logits back into canonical slices."""

    def __init__(self, config: PreprocessConfig, device: torch.device | str = "cpu", dtype=torch.float32):
        self.config = config
        self.device = torch.device(device)
        self.dtype = dtype
        self.transpose, self.flip_rows, self.flip_cols = _layout_ops(config.slice_layout)
        self.mean = torch.tensor(config.mean, dtype=dtype, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(config.std, dtype=dtype, device=self.device).view(1, 3, 1, 1)

    def _to_layout(self, x: torch.Tensor) -> torch.Tensor:  # (..., rows, cols)
        if self.transpose:
            x = x.transpose(-1, -2)
        dims = [d for d, flip in ((-2, self.flip_rows), (-1, self.flip_cols)) if flip]
        return x.flip(dims) if dims else x

    def _from_layout(self, x: torch.Tensor) -> torch.Tensor:
        dims = [d for d, flip in ((-2, self.flip_rows), (-1, self.flip_cols)) if flip]
        x = x.flip(dims) if dims else x
        return x.transpose(-1, -2) if self.transpose else x

    def encode(self, slices: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(N, Y, X) canonical slices in [0, 1] -> (N, 3, S, S) normalised model input."""
        x = torch.as_tensor(np.ascontiguousarray(slices) if isinstance(slices, np.ndarray) else slices)
        x = self._to_layout(x.to(self.device, torch.float32)).unsqueeze(1)  # (N, 1, rows, cols)
        size = self.config.image_size
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        x = x.clamp_(0.0, 1.0)
        if self.config.quantize_8bit:
            x = torch.round(x * 255.0) / 255.0
        return ((x.expand(-1, 3, -1, -1) - self.mean) / self.std).to(self.dtype)

    def encode_masks(self, masks: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(N, Y, X) canonical binary masks -> (N, S, S) float32 training targets in [0, 1].

        The same layout and the same (bilinear, antialiased) resize as :meth:`encode`, so a target
        lies exactly on its image; shrinking gives soft edges instead of nearest neighbour's
        dropped thin structures, and :meth:`decode` maps predictions back with the same filter.
        """
        x = torch.as_tensor(np.ascontiguousarray(masks) if isinstance(masks, np.ndarray) else masks)
        x = self._to_layout(x.to(self.device, torch.float32)).unsqueeze(1)  # (N, 1, rows, cols)
        size = self.config.image_size
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return x.clamp_(0.0, 1.0).squeeze(1)

    @property
    def fill(self) -> torch.Tensor:
        """(3,) the normalised value of a black (0) pixel: what rotations bring in at the corners."""
        return (-self.mean / self.std).view(3)

    @property
    def left_right_dim(self) -> int:
        """The model-input axis (-2 rows, -1 columns) that runs along the patient's left-right."""
        return -2 if self.config.slice_layout[0] in "LR" else -1

    def decode(self, logits: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """(..., S, S) model logits -> (..., Y, X) logits on the canonical slice grid."""
        lead = logits.shape[:-2]
        x = logits.reshape(-1, 1, *logits.shape[-2:]).float()
        rows, cols = (shape[1], shape[0]) if self.transpose else shape
        if tuple(x.shape[-2:]) != (rows, cols):
            x = F.interpolate(x, size=(rows, cols), mode="bilinear", align_corners=False)
        return self._from_layout(x).reshape(*lead, *shape)
