"""The target organ and its look-alike distractors (see :mod:`.generator` for the rules)."""

from __future__ import annotations

import numpy as np

from .canvas import _Canvas
from .spec import Distractor
from .tissues import LABEL_IDS, ORGAN_TABLE, TARGET_ORGAN


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
