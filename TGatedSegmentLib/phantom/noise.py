"""Smooth random fields and in-plane smoothing (numpy only): texture, shape noise, CT noise."""

from __future__ import annotations

import numpy as np


def _value_noise(rng: np.random.Generator, shape, cell) -> np.ndarray:
    """A smooth random field (zero mean, unit std): random values every ``cell`` voxels,
    smoothstep-interpolated along each axis (separable, numpy only)."""
    out = rng.standard_normal(tuple(n // c + 3 for n, c in zip(shape, cell)), dtype=np.float32)
    for axis, (n, c) in enumerate(zip(shape, cell)):
        p = (np.arange(n, dtype=np.float32) + np.float32(rng.uniform(0, c))) / np.float32(c)
        i0 = np.floor(p).astype(np.intp)
        w = p - i0
        w = w * w * (3 - 2 * w)
        a = np.take(out, i0, axis=axis)
        b = np.take(out, i0 + 1, axis=axis)
        bshape = [1, 1, 1]
        bshape[axis] = n
        out = a + (b - a) * w.reshape(bshape)
    out -= out.mean()
    out /= max(float(out.std()), 1e-6)
    return out


def _smooth121_inplane(a: np.ndarray) -> np.ndarray:
    """[1, 2, 1] / 4 filter along y and x (edge-replicated): partial volume and correlated noise."""
    b = a * np.float32(0.5)
    b[:, 1:, :] += a[:, :-1, :] * np.float32(0.25)
    b[:, :-1, :] += a[:, 1:, :] * np.float32(0.25)
    b[:, 0, :] += a[:, 0, :] * np.float32(0.25)
    b[:, -1, :] += a[:, -1, :] * np.float32(0.25)
    c = b * np.float32(0.5)
    c[:, :, 1:] += b[:, :, :-1] * np.float32(0.25)
    c[:, :, :-1] += b[:, :, 1:] * np.float32(0.25)
    c[:, :, 0] += b[:, :, 0] * np.float32(0.25)
    c[:, :, -1] += b[:, :, -1] * np.float32(0.25)
    return c
