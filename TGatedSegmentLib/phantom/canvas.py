"""The canvas one volume is drawn on: its geometry, arrays and the per-slice blob shapes."""

from __future__ import annotations

import math

import numpy as np

from .noise import _value_noise
from .spec import PhantomSpec
from .tissues import ORGAN_TABLE


def _profile(s: np.ndarray, p_inf: float, p_sup: float) -> np.ndarray:
    """Cross-section scale along a blob's axis, ``s`` in [-1, 1]: superellipse ends (blunt for large p)."""
    a = np.clip(np.abs(s), 0.0, 1.0)
    p = np.where(s < 0, p_inf, p_sup)
    return np.clip(1.0 - a**p, 0.0, 1.0) ** (1.0 / p)


class _Canvas:
    """Geometry and arrays of one volume while it is being drawn."""

    # set while drawing: the body and its inside, the per-slice body half-axes (the body's step),
    # where organs may still go and the liver's lowest slice (the organs' step)
    body: np.ndarray
    interior: np.ndarray
    A: np.ndarray
    B: np.ndarray
    allowed: np.ndarray
    liver_z0: int

    def __init__(self, spec: PhantomSpec, rng: np.random.Generator):
        self.spec, self.rng = spec, rng
        nz, ny, nx = self.shape = spec.shape
        self.image = np.empty(self.shape, np.float32)
        self.labels = np.zeros(self.shape, np.uint8)
        self.distractors = np.zeros(self.shape, bool)
        # Body: centre x on the (integer or half-integer) grid centre so that mirroring is exact.
        self.cx = (nx - 1) / 2.0 + int(rng.integers(-2, 3))
        self.cy = (ny - 1) / 2.0 + rng.uniform(-0.03, 0.03) * ny
        self.S = rng.uniform(0.40, 0.45) * nx  # body half-width in pixels: the in-plane unit
        self.ratio = min(rng.uniform(0.68, 0.78), 0.44 * ny / self.S)  # AP / LR half-axes
        self.t = np.linspace(0.0, 1.0, nz)  # 0 = most inferior slice, 1 = most superior
        self.zshift = int(rng.integers(-2, 3))  # shared axial shift of the organs
        self.vol_offset = rng.uniform(-spec.volume_offset_hu, spec.volume_offset_hu)
        self.shape_noise = _value_noise(rng, self.shape, (3, 12, 12))
        self.texture = _value_noise(rng, self.shape, (2, 3, 3))

    # organ-frame helpers ----------------------------------------------------------------------

    def zspan(self, t0: float, t1: float, jitter: int = 1) -> tuple[int, int]:
        """Slices of the axial fraction [t0, t1] (shifted per volume), inclusive; may reach past the top."""
        nz = self.shape[0]
        z0 = round(t0 * (nz - 1)) + self.zshift + int(self.rng.integers(-jitter, jitter + 1))
        z1 = round(t1 * (nz - 1)) + self.zshift + int(self.rng.integers(-jitter, jitter + 1))
        z0 = max(z0, 1)  # no organ starts in the first slice: each is absent somewhere
        return z0, max(z1, z0 + 2)

    def shape_mask(
        self,
        zs,
        s,
        u,
        v,
        ru,
        rv,
        angle=0.0,
        p=(2.0, 2.0),
        drift=(0.0, 0.0),
        grow=0.0,
        wobble=0.08,
        pad_px=0.0,
        box=None,
    ):
        """A blob given per slice: slices ``zs`` at axial coordinates ``s`` (in [-1, 1]).

        In-plane: an ellipse centred at ``(u, v)`` body units (``u`` to the patient's left, ``v``
        posterior, unit = body half-width), radii ``ru, rv`` scaled by the end profile, rotated by
        ``angle``, its centre drifting by ``drift * s`` and its size growing by ``1 + grow * s``;
        the boundary wobbles with the smooth shape-noise field. ``pad_px`` inflates it (keep-out
        zones). Returns ``(slices, mask)`` with the mask on the bounding box, or ``None``.
        """
        zs = np.asarray(zs, dtype=np.intp)
        s = np.asarray(s, dtype=np.float64)
        nz, ny, nx = self.shape
        ok = (zs >= 0) & (zs < nz)
        prof = _profile(s, *p) * (1.0 + grow * s)
        ok &= prof > 0.05
        zs, s, prof = zs[ok], s[ok], prof[ok]
        if zs.size == 0:
            return None
        S = self.S
        pad = pad_px / S
        uc, vc = u + drift[0] * s, v + drift[1] * s
        rx, ry = ru * prof + pad, rv * prof + pad
        rmax = float(np.max(np.maximum(rx, ry))) * (1.0 + 2 * wobble) + 2.0 / S
        y0 = max(int(math.floor(self.cy + (vc.min() - rmax) * S)), 0)
        y1 = min(int(math.ceil(self.cy + (vc.max() + rmax) * S)) + 1, ny)
        x0 = max(int(math.floor(self.cx + (uc.min() - rmax) * S)), 0)
        x1 = min(int(math.ceil(self.cx + (uc.max() + rmax) * S)) + 1, nx)
        if box is not None:
            y0, y1, x0, x1 = box
        if y1 <= y0 or x1 <= x0:
            return None
        z0, z1 = int(zs[0]), int(zs[-1]) + 1
        assert np.all(np.diff(zs) == 1), "slices must be consecutive"
        X = ((np.arange(x0, x1) - self.cx) / S)[None, None, :]
        Y = ((np.arange(y0, y1) - self.cy) / S)[None, :, None]
        du = X - uc[:, None, None]
        dv = Y - vc[:, None, None]
        c, sn = math.cos(angle), math.sin(angle)
        a = (du * c + dv * sn) / rx[:, None, None]
        b = (-du * sn + dv * c) / ry[:, None, None]
        sl = (slice(z0, z1), slice(y0, y1), slice(x0, x1))
        mask = a * a + b * b < 1.0 + wobble * self.shape_noise[sl]
        return sl, mask

    def axial(self, z0: int, z1: int):
        """Slices ``z0..z1`` and their axial coordinate ``s`` in (-1, 1) (slice centres)."""
        zs = np.arange(z0, z1 + 1)
        n = z1 - z0 + 1
        return zs, (zs - (z0 + z1) / 2.0) / (n / 2.0)

    def organ_hu(self, name: str) -> float:
        off = float(
            np.clip(
                self.rng.normal(0.0, self.spec.organ_offset_hu),
                -2 * self.spec.organ_offset_hu,
                2 * self.spec.organ_offset_hu,
            )
        )
        return ORGAN_TABLE[name]["hu"] + off + self.vol_offset

    def mirror(self, a: np.ndarray) -> np.ndarray:
        """``a`` mirrored about the body's midline ``x = cx`` (patient left <-> right); False outside."""
        nx = self.shape[2]
        shift = int(round(2 * self.cx)) - (nx - 1)  # x' = 2 cx - x = (nx - 1 - x) + shift
        flipped = a[..., ::-1]
        out = np.zeros_like(a)
        if shift >= 0:
            out[..., shift:] = flipped[..., : nx - shift]
        else:
            out[..., : nx + shift] = flipped[..., -shift:]
        return out

    def paint(self, sl, mask, hu, texture=0.0, label=None, allowed=None):
        if allowed is not None:
            mask = mask & allowed[sl]
        view = self.image[sl]
        view[mask] = hu + texture * self.texture[sl][mask]
        if label is not None:
            self.labels[sl][mask] = label
        return mask
