"""The anatomy: body outline and wall, bowel, lung bases, spine and muscles, the labelled organs."""

from __future__ import annotations

import math

import numpy as np

from .canvas import _Canvas
from .noise import _value_noise
from .tissues import LABEL_IDS, ORGAN_TABLE, TISSUE_HU


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
