"""Quick-look figures: axial slices with predicted contours next to the reference.

Pure numpy + Pillow (no plotting library needed). Slices are drawn from canonical arrays, which are
already in the radiological view: anterior at the top, the patient's left on the image's right.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..vocabulary import Organ, generated_color

_NEAREST = 0  # PIL's nearest-neighbour filter (Image.Resampling.NEAREST needs Pillow 9.1; 9.0 is allowed)


def boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of a 2D mask that touch the background (4-neighbourhood)."""
    padded = np.pad(mask, 1)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def pick_slices(labels: np.ndarray, count: int = 4) -> list[int]:
    """``count`` slices spread over the labelled z-range (the middle ones if nothing is labelled)."""
    present = np.flatnonzero(labels.reshape(labels.shape[0], -1).any(axis=1))
    lo, hi = (present[0], present[-1]) if present.size else (0, labels.shape[0] - 1)
    return sorted({int(round(z)) for z in np.linspace(lo, hi, count + 2)[1:-1]}) or [labels.shape[0] // 2]


def _panel(grey: np.ndarray, labels: np.ndarray, colors: dict[int, tuple[int, ...]], scale: int) -> np.ndarray:
    rgb = np.repeat((np.clip(grey, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)
    rgb = rgb.repeat(scale, 0).repeat(scale, 1)
    big = labels.repeat(scale, 0).repeat(scale, 1)
    for value, color in colors.items():
        edge = boundary(big == value)
        rgb[edge] = color
    return rgb


def render_comparison(
    image: np.ndarray,
    prediction: np.ndarray,
    reference: np.ndarray | None,
    organs: dict[int, Organ],
    path: str | Path,
    slices: list[int] | None = None,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    title: str | None = None,
) -> Path:
    """Write a PNG: one row per slice, columns prediction | reference, with a colour legend.

    ``image`` is canonical (z, y, x) in [0, 1]; ``prediction``/``reference`` are labelmaps on the
    same grid whose values are the keys of ``organs``.
    """
    from PIL import Image, ImageDraw

    from ..io.atomic import atomic_path

    slices = slices or pick_slices(reference if reference is not None else prediction)
    colors = {v: tuple(o.color or generated_color(i)) for i, (v, o) in enumerate(organs.items())}
    scale = max(1, int(256 // max(image.shape[1:])))
    aspect = spacing[1] / spacing[2]  # rows vs columns in mm
    rows = []
    for z in slices:
        panels = [_panel(image[z], prediction[z], colors, scale)]
        if reference is not None:
            panels.append(_panel(image[z], reference[z], colors, scale))
        gap = np.full((panels[0].shape[0], 6, 3), 255, np.uint8)
        row = np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
        if abs(aspect - 1.0) > 0.05:  # show voxels with their physical proportions
            h = int(round(row.shape[0] * aspect))
            row = np.asarray(Image.fromarray(row).resize((row.shape[1], h), _NEAREST))
        rows.append(row)
    width = max(r.shape[1] for r in rows)
    header, legend_h = 22, 16 * ((len(organs) + 2) // 3) + 8
    canvas = Image.new("RGB", (width, header + sum(r.shape[0] + 6 for r in rows) + legend_h), "white")
    draw = ImageDraw.Draw(canvas)
    labels = "prediction" + ("  |  reference" if reference is not None else "")
    draw.text((4, 4), (title + ": " if title else "") + labels, fill="black")
    y = header
    for z, row in zip(slices, rows):
        canvas.paste(Image.fromarray(row), (0, y))
        draw.text((4, y + 2), f"z={z}", fill="yellow")
        y += row.shape[0] + 6
    for i, (value, organ) in enumerate(organs.items()):
        x0, y0 = 4 + (i % 3) * (width // 3), y + 4 + (i // 3) * 16
        draw.rectangle([x0, y0 + 2, x0 + 10, y0 + 12], fill=colors[value])
        draw.text((x0 + 14, y0), organ.name, fill="black")
    path = Path(path)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path
