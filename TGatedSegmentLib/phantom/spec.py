"""What to generate (:class:`PhantomSpec`) and what comes out (:class:`Phantom`, :class:`Distractor`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import InputError
from .tissues import LABEL_IDS, TARGET_ORGAN


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
