"""Training augmentation (paper Sec. 3.5): a small rotation for every organ, a left-right flip only for
organs without a side, the same transform for all slices of a window and its mask.

Parameters are drawn by the sampler (from its seeded per-epoch generator) and travel with each
sample, so augmentation is reproducible, resumable and independent of DataLoader workers.
Validation never augments (the authors' validation did; see docs/training.md).

The flip runs along the patient's left-right axis of the model input, whatever the checkpoint's
slice layout (the authors' "horizontal" flip was along whichever image axis came second).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..vocabulary import Organ, laterality_of


def flip_allowed(organ: Organ) -> bool:
    """A left-right flip would turn a left organ into a right one: never for lateral organs."""
    return organ.lateral is None and laterality_of(organ.prompt) is None and laterality_of(organ.name) is None


def draw(
    rng: np.random.Generator, n: int, flippable: np.ndarray, max_rotation: float, flip_probability: float
) -> tuple[np.ndarray, np.ndarray]:
    """Angles (degrees, uniform in +-max_rotation) and flips (p, only where ``flippable``) for n samples."""
    angles = rng.uniform(-max_rotation, max_rotation, n) if max_rotation > 0 else np.zeros(n)
    coins = rng.random(n) < flip_probability
    return angles, coins & np.asarray(flippable, dtype=bool)


def _rotate(x: torch.Tensor, degrees: float, zoom: float = 1.0) -> torch.Tensor:
    """Bilinear rotation (and scaling by ``zoom``: > 1 enlarges) of (N, C, H, W) about the image
    centre; zeros come in at the corners."""
    theta = math.radians(degrees)
    c, s = math.cos(theta) / zoom, math.sin(theta) / zoom
    h, w = x.shape[-2:]
    # affine_grid works in normalised coordinates: correct for a non-square aspect ratio
    matrix = torch.tensor([[c, -s * h / w, 0.0], [s * w / h, c, 0.0]], dtype=x.dtype, device=x.device)
    grid = F.affine_grid(matrix.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def apply(
    pixels: torch.Tensor, target: torch.Tensor, angle: float, flip: bool, fill: torch.Tensor, lr_dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One transform for a whole window and its mask.

    pixels (S, 3, H, W) normalised model input, target (H, W) in [0, 1]; ``fill`` (3,) is the
    normalised black the rotation brings in (not 0, which is the mean grey); ``lr_dim`` the axis
    (-2 or -1) along the patient's left-right.
    """
    if angle:
        fill = fill.to(pixels).view(1, 3, 1, 1)
        pixels = _rotate(pixels - fill, angle) + fill
        target = _rotate(target[None, None], angle)[0, 0]
    if flip:
        pixels, target = pixels.flip(lr_dim), target.flip(lr_dim)
    return pixels, target


def apply_geometry(
    pixels: torch.Tensor, targets: torch.Tensor, angle: float, zoom: float, fill: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One rotation + scaling for a stack of model-input slices (N, 3, H, W) and of their masks
    (M, H, W) in [0, 1] (soft edges stay soft); ``fill`` (3,) is the normalised black."""
    if not angle and zoom == 1.0:
        return pixels, targets
    fill = fill.to(pixels).view(1, 3, 1, 1)
    pixels = _rotate(pixels - fill, angle, zoom) + fill
    targets = _rotate(targets.unsqueeze(1), angle, zoom).squeeze(1)
    return pixels, targets


def apply_organ_intensity(unit: np.ndarray, labels: np.ndarray, strength: float, seed: int) -> np.ndarray:
    """Each labelled organ's intensities moved to a random level (SynthSeg-style, Billot et al. 2023).

    unit (n, Y, X) slices in [0, 1] and their labelmap (n, Y, X). Per organ, with probability 1/2:
    ``x -> m' + (x - m)`` inside the organ, ``m`` its median and ``m'`` drawn uniformly within
    ``strength`` of it (clipped to [0.02, 0.98]); its texture and every other voxel stay.

    Why: a few training patients fix each organ's brightness, and a model that learns "the liver is
    the mid-grey organ" loses a liver that is darker in the next patient (CHAOS T2 patient 15: liver
    and spleen as dark as each other, at a third of the others' level; no global contrast jitter
    maps one onto the other). Moving organs one at a time leaves shape, position and neighbourhood
    as the cues that hold. The draws are a function of ``seed`` (drawn by the sampler): reproducible
    and resumable.
    """
    if not strength:
        return unit
    rng = np.random.default_rng(int(seed))
    out = unit
    for label in np.unique(labels):
        if label == 0:
            continue
        move, shift = rng.random() < 0.5, rng.uniform(-strength, strength)
        if not move:
            continue
        inside = labels == label
        level = float(np.median(unit[inside]))
        target = float(np.clip(level + shift, 0.02, 0.98))
        if out is unit:
            out = unit.copy()
        out[inside] = np.clip(unit[inside] + np.float32(target - level), 0.0, 1.0)
    return out


def apply_intensity(unit: np.ndarray, contrast: float, brightness: float, gamma: float) -> np.ndarray:
    """Intensity jitter on [0, 1] slices before the slice codec: ``clip(x * contrast + brightness) ** gamma``.

    Scanners and MR sequences differ in gain, offset and curve; the model should not depend on them.
    """
    if contrast == 1.0 and brightness == 0.0 and gamma == 1.0:
        return unit
    out = np.clip(unit * np.float32(contrast) + np.float32(brightness), 0.0, 1.0)
    return out ** np.float32(gamma) if gamma != 1.0 else out


def apply_random_contrast(unit: np.ndarray, probability: float, seed: int) -> np.ndarray:
    """With ``probability``, the slices pass through one randomly drawn shallow convolutional network
    (global intensity non-linear augmentation, GIN: Ouyang et al., IEEE TMI 2022).

    unit (n, Y, X) slices in [0, 1]. The network: 4 convolutions (1 -> 2 -> 2 -> 2 -> 1 channels, each
    kernel 1 x 1 or 3 x 3 at random, weights and biases N(0, 1)), leaky ReLU between them; its output is
    standardised to the slices' own mean and standard deviation, blended with them by a weight drawn
    uniformly in [0, 1] and clipped to [0, 1]. One network for all n slices, so a window stays one image.

    Why: a random network maps intensities non-monotonically and changes local texture, so which organ
    is brighter than which stops being a cue; shape, position and neighbourhood are what hold. Few
    training patients otherwise fix each organ's contrast, and a patient whose liver and spleen are
    dark on T2 (the pattern iron deposition gives; CHAOS patient 15) is missed. Unlike :func:`apply_organ_intensity` it
    needs no labels and also changes the tissues around the organs. Draws are a function of ``seed``.
    """
    if not probability:
        return unit
    g = torch.Generator().manual_seed(int(seed))
    if float(torch.rand(1, generator=g)) >= probability:
        return unit
    x = torch.from_numpy(np.ascontiguousarray(unit, dtype=np.float32))[:, None]  # (n, 1, Y, X)
    h = x
    widths = (1, 2, 2, 2, 1)
    for layer in range(len(widths) - 1):
        k = 1 if float(torch.rand(1, generator=g)) < 0.5 else 3
        weight = torch.randn(widths[layer + 1], widths[layer], k, k, generator=g)
        bias = torch.randn(widths[layer + 1], generator=g)
        h = F.conv2d(F.pad(h, (k // 2,) * 4, mode="replicate"), weight, bias)  # no dark frame at the edges
        if layer < len(widths) - 2:
            h = F.leaky_relu(h, 0.2)
    alpha = float(torch.rand(1, generator=g))
    mean, std = x.mean(), x.std()
    h = (h - h.mean()) / h.std().clamp_min(1e-6) * std + mean  # the slices' own level and spread
    out = (alpha * h + (1.0 - alpha) * x).clamp_(0.0, 1.0)
    return out[:, 0].numpy()
