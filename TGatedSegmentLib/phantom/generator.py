"""Synthetic abdominal CT phantoms: the project's embedded default data.

:func:`generate_phantom` draws one abdomen-like CT volume in Hounsfield units with its label map in
a fraction of a second, with numpy only (SimpleITK for writing). It is what ``tgated demo`` trains
a tiny model on, and what the ablation benchmarks use to compare the slice-wise baseline with the
T-Gated temporal model.

Canonical frame
    Arrays are numpy ``(z, y, x)`` exactly as ``SimpleITK.GetArrayFromImage`` returns them for an
    image with identity direction (SimpleITK physical space is LPS): ``x`` grows toward the
    patient's LEFT, ``y`` toward POSTERIOR, ``z`` toward SUPERIOR. The liver is therefore at small
    ``x``, the left kidney at large ``x`` and the spine at large ``y``.

Content
    Air outside a body outline (an ellipse whose size varies smoothly with ``z``) with
    subcutaneous fat, a muscle wall (thicker at the back) and lower ribs; visceral fat and bowel
    loops inside; lung bases at the top; a spine (vertebral bodies with discs, canal, posterior
    elements) with paraspinal and psoas muscles; and the labelled organs of :data:`ORGAN_TABLE`.
    Every volume has its own body size, organ positions, sizes, axial extents and HU offsets;
    CT-like noise (in-plane correlated Gaussian) is added at the end.

Target organ and distractors (the adapter's raison d'etre)
    The target is the **gallbladder** (:data:`TARGET_ORGAN`). It is the abdomen13 organ that is a
    compact, smooth, homogeneous blob with a HU level of its own (bile, ~10 HU) and a clear axial
    extent (``spec.target_slices``: 8-13 slices at 5 mm), so "the same blob in one slice" is well
    defined; the pancreas is lobulated and elongated and its look depends on the slice. It hangs in
    the liver's fossa: its top 2-9 slices above the liver's lowest slice, the fundus below the liver.

    Each volume also gets up to ``spec.n_distractors`` distractor blobs, as many as fit beside the
    target (3-8 of the default 8 at the default target size; think hepatic cysts or
    fluid-filled bowel). A distractor is a 1-2 slice *section* of a virtual gallbladder drawn from
    the very same distributions (axial extent and height relative to the liver, in-plane position,
    radii, orientation, tilt, boundary wobble), cut at a uniformly random height inside it, and
    painted with the volume's own gallbladder HU, texture and noise. One slice of a distractor thus
    has the distribution of one slice of the gallbladder, up to the placement rules that follow
    (the tests check HU, texture and area). Rules: at least half of the distractors lie in slices without
    gallbladder; none touches the gallbladder, another organ or another distractor (2-voxel gap
    in-plane, also against the slices above and below, so every distractor is its own 26-connected
    component); they may sit inside the liver (an unlabelled hole, like a cyst); they are never
    labelled. When no room is found (rare: 1 volume in 60 with the defaults) fewer are drawn;
    :attr:`Phantom.distractors` lists those drawn. A slice-wise model cannot separate them from the
    gallbladder; a model that sees 5 slices can, because a gallbladder section has gallbladder
    above or below it and a distractor has nothing.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..io.atomic import atomic_path, ensure_writable_dir
from ..io.jsonfile import write_json
from ..vocabulary import lookup

TARGET_ORGAN = "gallbladder"

#: Base HU of the labelled organs (before per-volume / per-organ offsets) and their texture
#: amplitude (HU, low-frequency variation inside the organ).
ORGAN_TABLE: dict[str, dict[str, float]] = {
    "liver": {"hu": 60.0, "texture": 6.0},
    "spleen": {"hu": 48.0, "texture": 4.0},
    "right_kidney": {"hu": 30.0, "texture": 4.0},
    "left_kidney": {"hu": 30.0, "texture": 4.0},
    "aorta": {"hu": 45.0, "texture": 2.0},
    "inferior_vena_cava": {"hu": 40.0, "texture": 2.0},
    "right_adrenal_gland": {"hu": 25.0, "texture": 2.0},
    "left_adrenal_gland": {"hu": 25.0, "texture": 2.0},
    "gallbladder": {"hu": 10.0, "texture": 2.0},
}

#: Base HU of the unlabelled tissues.
TISSUE_HU: dict[str, float] = {
    "air": -1000.0,
    "lung": -850.0,
    "subcutaneous_fat": -100.0,
    "visceral_fat": -90.0,
    "renal_sinus_fat": -60.0,
    "muscle": 50.0,
    "bowel": 45.0,
    "bowel_gas": -700.0,
    "cancellous_bone": 400.0,
    "cortical_bone": 700.0,
    "rib": 550.0,
    "disc": 90.0,
    "spinal_canal": 15.0,
}


#: FLARE22 label ids (those of :data:`TGatedSegmentLib.vocabulary.ABDOMEN13`), by organ name.
def _label_id(name: str) -> int:
    organ = lookup(name)
    if organ is None:
        raise KeyError(f"the phantom organ '{name}' is not in the organ vocabulary")
    return organ.label


LABEL_IDS: dict[str, int] = {name: _label_id(name) for name in ORGAN_TABLE}


@dataclass(frozen=True)
class PhantomSpec:
    """What to generate. Shapes and spacings are numpy order ``(z, y, x)``.

    The anatomy is laid out relative to the body outline, which fills ~80-90 % of the in-plane
    field of view whatever the shape; large organs span fixed fractions of the ``z`` range, while
    the target organ and the distractors have extents in *slices* (what the 5-slice window sees).
    The default spacing makes the default volume a 320 mm cube, an adult abdomen.
    """

    shape: tuple[int, int, int] = (64, 128, 128)
    spacing: tuple[float, float, float] = (5.0, 2.5, 2.5)
    noise_hu: float = 15.0  # standard deviation of the CT noise (in-plane correlated)
    n_distractors: int = 8  # target look-alikes, each 1-2 slices thick
    target_slices: tuple[int, int] = (8, 13)  # axial extent of the target organ, inclusive range
    distractor_slices: tuple[int, int] = (1, 2)  # axial extent of a distractor, inclusive range
    # in-plane size of the target (and its look-alikes): 1.8 makes its widest section 16-23 px across
    # at 128 px (2-3 tokens of the cpu recipe's 8-px patches, about a real gallbladder's 4-6 cm
    # against the 320 mm field of view): a blob half a token wide cannot be learnt at all
    target_scale: float = 1.8
    volume_offset_hu: float = 5.0  # per volume: every tissue shifted by U(-a, a)
    organ_offset_hu: float = 4.0  # per organ and volume: N(0, a), clipped to 2a
    origin: tuple[float, float, float] | None = None  # LPS (x, y, z) mm; None: centred on 0

    def __post_init__(self):
        shape = tuple(int(n) for n in self.shape)
        spacing = tuple(float(s) for s in self.spacing)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "target_slices", tuple(int(n) for n in self.target_slices))
        object.__setattr__(self, "distractor_slices", tuple(int(n) for n in self.distractor_slices))
        if self.origin is not None:
            object.__setattr__(self, "origin", tuple(float(o) for o in self.origin))
        if len(shape) != 3 or shape[0] < 24 or min(shape[1:]) < 48:
            raise InputError(
                f"phantom shape {shape} is too small", "Use (z, y, x) with at least 24 slices and 48x48 pixels."
            )
        if len(spacing) != 3 or min(spacing) <= 0:
            raise InputError(f"phantom spacing {spacing} is invalid", "Give three positive (z, y, x) spacings in mm.")
        lo, hi = self.target_slices
        if not 3 <= lo <= hi or hi > shape[0] // 2:
            raise InputError(
                f"target_slices {self.target_slices} do not fit {shape[0]} slices",
                f"Use 3 <= min <= max <= {shape[0] // 2}.",
            )
        dlo, dhi = self.distractor_slices
        if not 1 <= dlo <= dhi or dhi >= lo:
            raise InputError(
                f"distractor_slices {self.distractor_slices} is invalid",
                "Distractors must be thinner than the target organ (e.g. (1, 2)).",
            )
        if not self.target_scale > 0:
            raise InputError(f"target_scale must be positive, got {self.target_scale}")
        if self.noise_hu < 0 or self.n_distractors < 0:
            raise InputError("noise_hu and n_distractors must not be negative")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Distractor:
    """Bookkeeping of one distractor blob: slices ``z0..z1`` (inclusive), centre and voxel count."""

    z0: int
    z1: int
    center_yx: tuple[float, float]  # voxel indices of the in-plane centre
    voxels: int

    @property
    def n_slices(self) -> int:
        return self.z1 - self.z0 + 1


@dataclass
class Phantom:
    """One generated volume in the canonical frame (numpy ``(z, y, x)``, x→left, y→posterior, z→superior)."""

    image: np.ndarray  # float32 HU
    labels: np.ndarray  # uint8, FLARE22 ids (see label_names)
    label_names: dict[int, str]  # every organ the generator draws, present in this volume or not
    distractor_mask: np.ndarray  # bool, never labelled
    spacing: tuple[float, ...]  # (z, y, x) mm
    origin: tuple[float, ...]  # LPS (x, y, z) mm of voxel (0, 0, 0)
    target: str = TARGET_ORGAN
    distractors: list[Distractor] = field(default_factory=list)
    seed: object = None
    body_center_yx: tuple[float, float] = (0.0, 0.0)  # voxel indices of the body outline's centre

    @property
    def target_label(self) -> int:
        return LABEL_IDS[self.target]

    @property
    def present(self) -> list[int]:
        """Label ids with at least one voxel."""
        return [int(i) for i in np.unique(self.labels) if i != 0]

    @property
    def geometry(self):
        """The volume's grid (:class:`io.volume.Geometry`): identity direction, this spacing and origin."""
        from ..io.volume import Geometry

        return Geometry(self.image.shape[::-1], self.spacing[::-1], self.origin)

    def to_sitk(self, integer_hu: bool = False):
        """``(image, labels)`` SimpleITK images on :attr:`geometry`.

        ``integer_hu``: the image rounded to int16 HU, as a scanner stores CT (what files and users get).
        """
        from ..io.volume import image_from_array

        image = np.clip(np.round(self.image), -32768, 32767).astype(np.int16) if integer_hu else self.image
        return image_from_array(image, self.geometry), image_from_array(self.labels, self.geometry)


# -- numpy helpers --------------------------------------------------------------------------------


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


def _profile(s: np.ndarray, p_inf: float, p_sup: float) -> np.ndarray:
    """Cross-section scale along a blob's axis, ``s`` in [-1, 1]: superellipse ends (blunt for large p)."""
    a = np.clip(np.abs(s), 0.0, 1.0)
    p = np.where(s < 0, p_inf, p_sup)
    return np.clip(1.0 - a**p, 0.0, 1.0) ** (1.0 / p)


def blob_extents(mask: np.ndarray, fully_connected: bool = True) -> list[tuple[int, int]]:
    """``(z0, z1)`` (inclusive) of every 3D connected component of ``mask``, sorted.

    Uses SimpleITK's connected components (26-connectivity by default): e.g. to check that every
    distractor spans at most 2 slices, or to count false-positive blobs of a prediction.
    """
    import SimpleITK as sitk

    mask = np.asarray(mask)
    if not mask.any():
        return []
    cc = sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)), fully_connected)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(cc)
    extents = []
    for lab in stats.GetLabels():
        x, y, z, sx, sy, sz = stats.GetBoundingBox(lab)
        extents.append((int(z), int(z + sz - 1)))
    return sorted(extents)


# -- the generator --------------------------------------------------------------------------------


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


def _draw_body(cv: _Canvas):
    """Air, body outline with fat and muscle wall, ribs, visceral fat, bowel and lung bases."""
    rng = cv.rng
    nz, ny, nx = cv.shape
    t = cv.t
    phase, freq = rng.uniform(0, 2 * np.pi), rng.uniform(0.6, 1.2)
    A = cv.S * (1.0 + 0.04 * np.sin(2 * np.pi * freq * t + phase) + 0.03 * (0.5 - t))  # wider inferiorly
    B = cv.S * cv.ratio * (1.0 + 0.05 * np.sin(2 * np.pi * freq * t + phase + 1.0))
    dx = (np.arange(nx) - cv.cx).astype(np.float32)
    dy = (np.arange(ny) - cv.cy).astype(np.float32)
    rho2 = (dx[None, None, :] / A[:, None, None].astype(np.float32)) ** 2 + (
        dy[None, :, None] / B[:, None, None].astype(np.float32)
    ) ** 2
    rho = np.sqrt(rho2)
    # Layer thicknesses (fractions of the radius) as functions of the in-plane angle, symmetric
    # left/right (sin(theta) and cos(2 theta) only) so that mirrored organs see a mirrored body.
    theta = np.arctan2(dy[:, None] / cv.ratio, np.abs(dx)[None, :])  # |dx|: exactly symmetric
    fat = rng.uniform(0.06, 0.13) * (
        1 + rng.uniform(-0.3, 0.3) * np.sin(theta) + rng.uniform(0.0, 0.3) * np.cos(2 * theta)
    )
    muscle = rng.uniform(0.045, 0.06) * (1 + 1.2 * np.clip(np.sin(theta), 0, None))
    fat, muscle = fat.astype(np.float32)[None], muscle.astype(np.float32)[None]
    body = rho < 1.0
    inner = 1.0 - fat
    interior = rho < inner - muscle
    wall = body & ~interior & (rho >= inner - muscle)
    img = cv.image
    img[:] = TISSUE_HU["air"]
    off = cv.vol_offset
    img[body] = TISSUE_HU["subcutaneous_fat"] + off
    img[wall & (rho < inner)] = TISSUE_HU["muscle"] + off
    # Lower ribs: short bony arcs in the muscle wall of the upper slices, moving with z.
    rib_phase = rng.uniform(0, 2 * np.pi) + np.linspace(0, rng.uniform(4, 7), nz)
    ribs = (
        (np.cos(7 * theta[None] + rib_phase[:, None, None]) > 0.8)
        & (theta[None] > -0.5)
        & (t[:, None, None] > 0.55)
        & wall
        & (rho < inner)
        & (rho > inner - muscle * 0.8)
    )
    ribs &= np.sin(theta[None]) < 0.6  # not over the spine
    img[ribs] = TISSUE_HU["rib"] + off
    # Inside: visceral fat with texture, bowel loops (more inferiorly and anteriorly), gas pockets.
    img[interior] = TISSUE_HU["visceral_fat"] + off + 10.0 * cv.texture[interior]
    bowel_field = _value_noise(rng, cv.shape, (3, 10, 10))
    vnorm = (dy / (cv.S * cv.ratio))[None, :, None]
    threshold = 0.6 + 1.4 * t[:, None, None] + 0.8 * vnorm
    bowel = interior & (bowel_field > threshold)
    img[bowel] = TISSUE_HU["bowel"] + off + 20.0 * cv.texture[bowel]  # mottled content
    gas = bowel & (bowel_field > threshold + 0.9)
    img[gas] = TISSUE_HU["bowel_gas"] + off
    cv.interior = interior
    cv.body = body
    cv.A, cv.B = A, B


def _draw_lungs_and_spine(cv: _Canvas):
    rng = cv.rng
    nz = cv.shape[0]
    off = cv.vol_offset
    # Lung bases: posterolateral, growing toward the top slices; the liver / spleen domes cover them.
    t_lung = rng.uniform(0.78, 0.86)
    zl0 = int(np.ceil(t_lung * (nz - 1)))
    if zl0 < nz:
        zs = np.arange(zl0, nz)
        grow = np.sqrt((cv.t[zs] - t_lung) / (1 - t_lung) + 0.05)
        for side in (-1, 1):
            for z, g in zip(zs, grow):
                res = cv.shape_mask([z], [0.0], side * 0.5, 0.15, 0.38 * g, 0.45 * g, wobble=0.15)
                if res:
                    sl, m = res
                    cv.paint(sl, m, TISSUE_HU["lung"] + off, 30.0, allowed=cv.interior)
    # Spine: vertebral bodies with discs, canal, lamina and spinous process; paraspinal muscles and
    # psoas (larger inferiorly). All centred on the body's midline (x = cx).
    reserved = np.zeros(cv.shape, bool)
    zs = np.arange(nz)
    s0 = np.zeros(nz)
    period = max(3, round(32.0 / cv.spec.spacing[0]))
    disc = ((zs + int(rng.integers(0, period))) % period) == 0
    for u in (-0.17, 0.17):
        sl, m = cv.shape_mask(zs, s0, u, 0.44, 0.14, 0.12, wobble=0.05)
        cv.paint(sl, m, TISSUE_HU["muscle"] + off, 3.0, allowed=cv.body)
        reserved[sl] |= m & cv.body[sl]
    psoas_z = zs[cv.t < 0.55]
    if psoas_z.size:
        scale = 0.35 + 0.65 * (0.55 - cv.t[psoas_z]) / 0.55
        for u in (-0.19, 0.19):
            for z, g in zip(psoas_z, scale):
                sl, m = cv.shape_mask([z], [0.0], u, 0.17, 0.085 * g, 0.09 * g, wobble=0.04)
                cv.paint(sl, m, TISSUE_HU["muscle"] + off, 3.0, allowed=cv.interior)
                reserved[sl] |= m
    v_body, r_body = 0.16, 0.13
    sl, outer = cv.shape_mask(zs, s0, 0.0, v_body, r_body * 1.08, r_body, wobble=0.0)
    cv.paint(sl, outer & ~disc[:, None, None], TISSUE_HU["cortical_bone"] + off)
    cv.paint(sl, outer & disc[:, None, None], TISSUE_HU["disc"] + off, 5.0)
    reserved[sl] |= outer
    sli, inner = cv.shape_mask(zs, s0, 0.0, v_body, r_body * 1.08, r_body, wobble=0.0, pad_px=-1.6)
    cv.paint(sli, inner & ~disc[:, None, None], TISSUE_HU["cancellous_bone"] + off, 25.0)
    v_canal, r_canal = v_body + r_body + 0.055, 0.055
    sl, lamina = cv.shape_mask(zs, s0, 0.0, v_canal, r_canal + 0.035, r_canal + 0.035, wobble=0.0)
    cv.paint(sl, lamina & ~disc[:, None, None], TISSUE_HU["cortical_bone"] + off - 100.0, 20.0)
    reserved[sl] |= lamina
    sl, m = cv.shape_mask(zs, s0, 0.0, v_canal + 0.14, 0.028, 0.085, wobble=0.0)
    cv.paint(sl, m & ~disc[:, None, None], TISSUE_HU["cortical_bone"] + off - 150.0, 20.0)
    reserved[sl] |= m
    sl, m = cv.shape_mask(zs, s0, 0.0, v_canal, r_canal, r_canal, wobble=0.0)
    cv.paint(sl, m, TISSUE_HU["spinal_canal"] + off, 2.0)
    reserved[sl] |= m
    cv.allowed = cv.interior & ~reserved


def _draw_organ(cv, name, z0, z1, u, v, ru, rv, **kw):
    zs, s = cv.axial(z0, z1)
    res = cv.shape_mask(zs, s, u, v, ru, rv, **kw)
    if res is None:
        return None
    sl, m = res
    hu = cv.organ_hu(name)
    return cv.paint(sl, m, hu, ORGAN_TABLE[name]["texture"], LABEL_IDS[name], allowed=cv.allowed), sl, hu


def _draw_organs(cv: _Canvas):
    rng = cv.rng
    J = lambda a: rng.uniform(-a, a)  # noqa: E731
    nx = cv.shape[2]
    pair_allowed = cv.allowed & cv.mirror(cv.allowed)  # symmetric room for the lateral pairs
    # Liver (patient's right = small x): tapered inferior tip, blunt dome, left lobe across the
    # midline in its upper part.
    lz0, lz1 = cv.zspan(0.42, 0.95)
    cv.liver_z0 = lz0
    liver_hu = _draw_organ(
        cv,
        "liver",
        lz0,
        lz1,
        -0.45 + J(0.04),
        -0.05 + J(0.04),
        0.42 * (1 + J(0.08)),
        0.52 * (1 + J(0.08)),
        angle=J(0.2),
        p=(1.6, 4.0),
        drift=(0.10, 0.06),
        grow=0.15,
        wobble=0.18,
    )
    top = lz0 + 0.45 * (lz1 - lz0)
    zs = np.arange(int(math.ceil(top)), lz1 + 1)
    s = (zs - (top + lz1) / 2.0) / ((lz1 - top + 1) / 2.0)
    res = cv.shape_mask(
        zs,
        s,
        0.05 + J(0.05),
        -0.36 + J(0.03),
        0.32 * (1 + J(0.1)),
        0.17 * (1 + J(0.1)),
        angle=J(0.15),
        p=(2.0, 3.0),
        wobble=0.15,
    )
    if res:
        sl, m = res
        hu_liver = liver_hu[2] if liver_hu else cv.organ_hu("liver")
        cv.paint(sl, m, hu_liver, ORGAN_TABLE["liver"]["texture"], LABEL_IDS["liver"], allowed=cv.allowed)
    # Spleen: posterolateral on the patient's left.
    z0, z1 = cv.zspan(0.60, 0.88)
    _draw_organ(
        cv,
        "spleen",
        z0,
        z1,
        0.56 + J(0.04),
        0.24 + J(0.04),
        0.16 * (1 + J(0.1)),
        0.31 * (1 + J(0.1)),
        angle=-0.55 + J(0.15),
        p=(2.2, 2.2),
        wobble=0.15,
    )
    # Inferior vena cava (right, anterior to the spine, through the liver) and aorta (left, to the top).
    z0, z1 = cv.zspan(0.12, 0.84)
    _draw_organ(
        cv, "inferior_vena_cava", z0, z1, -0.14 + J(0.02), -0.04 + J(0.02), 0.085, 0.06, p=(8.0, 8.0), wobble=0.05
    )
    z0, _ = cv.zspan(0.14, 1.0)
    _draw_organ(
        cv,
        "aorta",
        z0,
        z0 + 2 * cv.shape[0],
        0.075 + J(0.015),
        -0.05 + J(0.02),
        0.072,
        0.072,
        p=(8.0, 8.0),
        wobble=0.03,
    )
    # Lateral pairs (adrenal glands, kidneys): drawn on the right, mirrored about the body midline,
    # so that the two sides differ only by side (shape, extent and HU are identical).
    z0, z1 = cv.zspan(0.57, 0.64)
    pair_params = [
        (
            "adrenal_gland",
            z0,
            z1,
            dict(u=-0.25 + J(0.02), v=0.09 + J(0.02), ru=0.075, rv=0.024, angle=1.0 + J(0.2), p=(2.0, 2.0), wobble=0.1),
        ),
    ]
    z0, z1 = cv.zspan(0.26, 0.56)
    pair_params.append(
        (
            "kidney",
            z0,
            z1,
            dict(
                u=-0.42 + J(0.03),
                v=0.22 + J(0.03),
                ru=0.12 * (1 + J(0.08)),
                rv=0.19 * (1 + J(0.08)),
                angle=-0.45 + J(0.15),
                p=(2.5, 2.5),
                wobble=0.06,
            ),
        )
    )
    for organ, z0, z1, kw in pair_params:
        zs, s = cv.axial(z0, z1)
        res = cv.shape_mask(zs, s, **kw)
        if res is None:
            continue
        sl, m = res
        # mirror about x = cx: x' = 2 cx - x (cx is on the half-integer / integer grid)
        xs = sl[2]
        mx0, mx1 = int(round(2 * cv.cx - (xs.stop - 1))), int(round(2 * cv.cx - xs.start)) + 1
        if mx0 < 0 or mx1 > nx:
            continue
        m = m & pair_allowed[sl]
        msl = (sl[0], sl[1], slice(mx0, mx1))
        mm = m[:, :, ::-1]
        hu = cv.organ_hu(f"right_{organ}")
        tex = ORGAN_TABLE[f"right_{organ}"]["texture"]
        cv.paint(sl, m, hu, tex, LABEL_IDS[f"right_{organ}"])
        cv.paint(msl, mm, hu, tex, LABEL_IDS[f"left_{organ}"])
        if organ == "kidney":  # renal sinus fat at the medial hilum (unlabelled), mirrored too
            kz = np.arange(z0, z1 + 1)
            ks = (kz - (z0 + z1) / 2.0) / ((z1 - z0 + 1) / 2.0)
            mid = np.abs(ks) < 0.45
            if mid.any():
                res2 = cv.shape_mask(
                    kz[mid],
                    np.zeros(mid.sum()),
                    kw["u"] + 0.75 * kw["ru"],
                    kw["v"] - 0.25 * kw["rv"],
                    0.45 * kw["ru"],
                    0.35 * kw["rv"],
                    angle=kw["angle"],
                    p=(8.0, 8.0),
                    wobble=0.0,
                )
                if res2:
                    ssl, sm = res2
                    xs2 = ssl[2]
                    sm &= cv.labels[ssl] == LABEL_IDS["right_kidney"]
                    m0, m1 = int(round(2 * cv.cx - (xs2.stop - 1))), int(round(2 * cv.cx - xs2.start)) + 1
                    smsl = (ssl[0], ssl[1], slice(m0, m1))
                    smm = sm[:, :, ::-1] & (cv.labels[smsl] == LABEL_IDS["left_kidney"])
                    fat = TISSUE_HU["renal_sinus_fat"] + cv.vol_offset
                    for a, b in ((ssl, sm), (smsl, smm)):
                        cv.image[a][b] = fat
                        cv.labels[a][b] = 0


def _target_look(rng: np.random.Generator, scale: float = 1.0) -> dict:
    """One draw of the target organ's size and shape (shared by the target and its distractors)."""
    return dict(
        ru=scale * rng.uniform(0.09, 0.13),
        rv=scale * rng.uniform(0.085, 0.11),
        angle=rng.uniform(-0.6, 0.6),
        drift=(rng.uniform(-0.06, 0.06), rng.uniform(-0.06, 0.06)),
        p=(3.0, 3.0),
        wobble=0.06,
    )


def _target_position(rng: np.random.Generator) -> dict:
    """One draw of the target organ's in-plane centre (body units; patient's right, anterior)."""
    return dict(u=rng.uniform(-0.55, -0.15), v=rng.uniform(-0.45, -0.12))


def _draw_target_and_distractors(cv: _Canvas, target_hu: float):
    rng, spec = cv.rng, cv.spec
    nz = cv.shape[0]
    lo, hi = spec.target_slices
    tid = LABEL_IDS[TARGET_ORGAN]
    liver_id = LABEL_IDS["liver"]
    tex = ORGAN_TABLE[TARGET_ORGAN]["texture"]

    # Where gallbladders occur: in the liver's fossa, its top 2-9 slices above the liver's lowest
    # slice, the fundus hanging below the liver. Distractors are sections of virtual gallbladders
    # placed by the same rule, so their heights relative to the anatomy match the target's too.
    def virtual_slices(extent: int) -> tuple[int, int]:
        top = cv.liver_z0 + int(rng.integers(2, 10))
        top = min(max(top, extent - 1), nz - 1)
        return top - extent + 1, top

    # The target: its look is drawn once and kept while looking for room (so that rejections do
    # not bias its size), likewise for every distractor below.
    placed = None
    for _look in range(20):
        extent = int(rng.integers(lo, hi + 1))
        look = _target_look(rng, spec.target_scale)
        for _pos in range(40):
            z0, top = virtual_slices(extent)
            params = {**look, **_target_position(rng)}
            zs, s = cv.axial(z0, top)
            res = cv.shape_mask(zs, s, **params, pad_px=2.0)
            if res is None:
                continue
            sl, keep = res
            box = (sl[1].start, sl[1].stop, sl[2].start, sl[2].stop)
            _, m = cv.shape_mask(zs, s, **params, box=box)
            m &= cv.allowed[sl]
            others = (cv.labels[sl] != 0) & (cv.labels[sl] != liver_id)
            if (keep & others).any() or m.reshape(m.shape[0], -1).sum(1).min() < 6:
                continue
            placed = (sl, m)
            break
        if placed is not None:
            break
    if placed is None:  # pragma: no cover - the distributions above always leave room
        raise RuntimeError("could not place the target organ")
    sl, m = placed
    cv.paint(sl, m, target_hu, tex, tid)
    target_mask = cv.labels == tid
    tz0, tz1 = sl[0].start, sl[0].stop - 1
    target_slices = set(range(tz0, tz1 + 1))
    # Distractors: 1-2 slice sections of virtual targets from the same distribution.
    dlo, dhi = spec.distractor_slices
    occupied = np.zeros(cv.shape, bool)
    infos: list[Distractor] = []
    n_outside = (spec.n_distractors + 1) // 2  # these avoid the target's slices altogether
    for k in range(spec.n_distractors):
        done = False
        for _look in range(10):
            h = int(rng.integers(dlo, dhi + 1))
            extent = int(rng.integers(lo, hi + 1))
            j = int(rng.integers(0, extent - h + 1))  # which section of the virtual gallbladder
            s = (np.arange(j, j + h) - (extent - 1) / 2.0) / (extent / 2.0)
            look = _target_look(rng, spec.target_scale)
            for _pos in range(40):
                z0 = virtual_slices(extent)[0] + j
                zs = np.arange(z0, z0 + h)
                if zs[0] < 0 or zs[-1] >= nz:
                    continue
                if k < n_outside and target_slices.intersection(zs.tolist()):
                    continue
                params = {**look, **_target_position(rng)}
                # keep-out zone: 2 voxels around each section, in its slice and the slices above
                # and below (26-connected contact across slices is then impossible too)
                resp = cv.shape_mask(zs, s, **params, pad_px=2.0)
                if resp is None or resp[0][0].stop - resp[0][0].start != h:
                    continue
                slp, padded = resp
                box = (slp[1].start, slp[1].stop, slp[2].start, slp[2].stop)
                zk0, zk1 = max(z0 - 1, 0), min(z0 + h, nz - 1)
                keep = np.zeros((zk1 - zk0 + 1,) + padded.shape[1:], bool)
                for i in range(h):
                    for dz in (-1, 0, 1):
                        if zk0 <= z0 + i + dz <= zk1:
                            keep[z0 + i + dz - zk0] |= padded[i]
                slk = (slice(zk0, zk1 + 1), slp[1], slp[2])
                res = cv.shape_mask(zs, s, **params, box=box)
                if res is None:
                    continue
                sl, m = res
                m &= cv.allowed[sl]
                if m.reshape(h, -1).sum(1).min() < 6:
                    continue
                labk = cv.labels[slk]
                if (keep & (((labk != 0) & (labk != liver_id)) | target_mask[slk] | occupied[slk])).any():
                    continue
                cv.image[sl][m] = target_hu + tex * cv.texture[sl][m]
                cv.labels[sl][m] = 0
                cv.distractors[sl] |= m
                occupied[sl] |= m
                zz, yy, xx = np.nonzero(m)
                infos.append(
                    Distractor(
                        int(z0),
                        int(z0 + h - 1),
                        (float(yy.mean() + sl[1].start), float(xx.mean() + sl[2].start)),
                        int(m.sum()),
                    )
                )
                done = True
                break
            if done:
                break
    return infos


def generate_phantom(seed: int | Sequence[int] = 0, spec: PhantomSpec = PhantomSpec()) -> Phantom:
    """One abdomen-like CT volume (HU, canonical frame) with labels and target look-alikes.

    ``seed`` is an int or a sequence of ints (``(dataset_seed, case_index)``), fed to
    :class:`numpy.random.SeedSequence`: the same seed and spec give identical arrays.
    """
    seed_key = list(seed) if isinstance(seed, (list, tuple)) else seed
    rng = np.random.default_rng(np.random.SeedSequence(seed_key))
    cv = _Canvas(spec, rng)
    _draw_body(cv)
    _draw_lungs_and_spine(cv)
    _draw_organs(cv)
    target_hu = cv.organ_hu(TARGET_ORGAN)
    infos = _draw_target_and_distractors(cv, target_hu)
    # Partial volume (in-plane blur), then CT noise correlated in-plane like filtered back-projection.
    image = _smooth121_inplane(cv.image)
    if spec.noise_hu > 0:
        noise = _smooth121_inplane(rng.standard_normal(cv.shape, dtype=np.float32))
        image += noise * np.float32(spec.noise_hu / 0.375)  # [1,2,1]x[1,2,1] keeps 0.375 of the std
    np.clip(image, -1024.0, 3071.0, out=image)
    nz, ny, nx = spec.shape
    sz, sy, sx = spec.spacing
    origin = (
        spec.origin if spec.origin is not None else (-(nx - 1) * sx / 2.0, -(ny - 1) * sy / 2.0, -(nz - 1) * sz / 2.0)
    )
    return Phantom(
        image=image.astype(np.float32, copy=False),
        labels=cv.labels,
        label_names={LABEL_IDS[n]: n for n in sorted(LABEL_IDS, key=LABEL_IDS.__getitem__)},
        distractor_mask=cv.distractors,
        spacing=tuple(spec.spacing),
        origin=tuple(float(o) for o in origin),
        target=TARGET_ORGAN,
        distractors=infos,
        seed=seed_key,
        body_center_yx=(float(cv.cy), float(cv.cx)),
    )


# -- datasets -------------------------------------------------------------------------------------


def case_name(index: int) -> str:
    return f"phantom_{index:03d}"


def write_phantom_dataset(
    folder: str | Path, n_cases: int, seed: int = 0, spec: PhantomSpec = PhantomSpec(), progress=None
) -> Path:
    """Write ``n_cases`` phantoms as an nnU-Net v2 style dataset in ``folder``; returns ``folder``.

    ``imagesTr/phantom_XXX_0000.nii.gz`` (int16 HU), ``labelsTr/phantom_XXX.nii.gz`` (uint8,
    FLARE22 ids) and ``dataset.json`` (written last). Case ``i`` is ``generate_phantom((seed, i))``.
    Every file is written under a temporary name and renamed, so nothing half-written is left.
    Label ids are the FLARE22 ones of the project's vocabulary, hence not consecutive (nnU-Net itself
    would want them renumbered). ``progress(i, n)`` is called after each case if given.
    """
    import SimpleITK as sitk

    if n_cases < 1:
        raise InputError("n_cases must be at least 1")
    folder = ensure_writable_dir(folder)
    images_dir = ensure_writable_dir(folder / "imagesTr")
    labels_dir = ensure_writable_dir(folder / "labelsTr")
    cases = {}
    label_names: dict[int, str] = {}
    for i in range(n_cases):
        ph = generate_phantom((int(seed), i), spec)
        label_names = ph.label_names
        image, labels = ph.to_sitk(integer_hu=True)
        name = case_name(i)
        with atomic_path(images_dir / f"{name}_0000.nii.gz") as tmp:
            sitk.WriteImage(image, str(tmp), True)
        with atomic_path(labels_dir / f"{name}.nii.gz") as tmp:
            sitk.WriteImage(labels, str(tmp), True)
        nz, ny, nx = ph.labels.shape
        cases[name] = {
            "modality": "CT",
            "label_type": "synthetic",
            "annotated": sorted(ph.label_names),
            "present": ph.present,
            "size_xyz": [nx, ny, nz],
            "spacing_xyz_mm": list(ph.spacing[::-1]),
            "direction": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            "seed": [int(seed), i],
            "target": ph.target,
            "n_distractors": len(ph.distractors),
            # the look-alikes' slices: hard negatives the "slices" batching draws more often
            "oversample_slices": sorted({z for d in ph.distractors for z in range(d.z0, d.z1 + 1)}),
            "source": "TGatedSegmentLib.phantom.generate_phantom",
        }
        if progress is not None:
            progress(i + 1, n_cases)
    dataset = {
        "name": "tgated-phantom",
        "description": (
            "Synthetic abdominal CT phantoms (TGatedSegmentLib.phantom): FLARE22 label ids; the "
            f"{TARGET_ORGAN} has 1-2 slice look-alike distractors that are never labelled."
        ),
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, **{n: i for i, n in sorted(label_names.items())}},
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
        "phantom": {
            "seed": int(seed),
            "spec": spec.to_dict(),
            "target": TARGET_ORGAN,
            "target_label": LABEL_IDS[TARGET_ORGAN],
        },
        "cases": cases,
    }
    write_json(folder / "dataset.json", dataset)
    return folder


def time_generation(n: int = 5, spec: PhantomSpec = PhantomSpec()) -> float:
    """Mean seconds per :func:`generate_phantom` call over ``n`` seeds (for benchmarks and tests)."""
    start = time.perf_counter()
    for i in range(n):
        generate_phantom(i, spec)
    return (time.perf_counter() - start) / n
