"""One phantom volume: the parts drawn in order, then partial volume and CT noise."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .anatomy import _draw_body, _draw_lungs_and_spine, _draw_organs
from .canvas import _Canvas
from .lookalikes import _draw_target_and_distractors
from .noise import _smooth121_inplane
from .spec import Phantom, PhantomSpec
from .tissues import LABEL_IDS, TARGET_ORGAN


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
