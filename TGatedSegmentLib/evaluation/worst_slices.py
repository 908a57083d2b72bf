"""Where each checkpoint fails worst, to look at: ``tgated evaluate``'s ``worst_slices/ORGAN.png``.

Per organ and checkpoint, the axial slice (over every case) with the largest wrongly labelled area:
false-positive plus false-negative pixels, in mm². A slice Dice would rank a one-pixel miss at an
organ's tip level with a missed organ; the error area ranks what a reader would notice. Each PNG
shows one column per checkpoint, side by side: the image slice with the reference contour (green)
and the prediction's (red; yellow where they coincide), captioned with the case, the slice, its Dice
and error area. Slices are drawn in the canonical radiological view (anterior at the top, the
patient's left on the image's right) whatever the volume's orientation. ``report.md`` links them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_path
from .figures import boundary

FOLDER = "worst_slices"
REFERENCE, PREDICTION, BOTH = (40, 220, 40), (255, 50, 50), (255, 230, 0)
PANEL_PIXELS = 256  # the longer side of each slice, after nearest-neighbour scaling


@dataclass
class WorstSlice:
    case: str
    z: int  # canonical slice index (inferior to superior)
    error_mm2: float
    dice: float  # of this slice (NaN when both are empty, which never makes a worst slice)
    image: np.ndarray  # (y, x) in [0, 1]
    prediction: np.ndarray  # (y, x) bool
    reference: np.ndarray  # (y, x) bool
    aspect: float  # row spacing / column spacing


class WorstSlices:
    """Collects, per (checkpoint, organ), the worst slice seen so far; renders one PNG per organ."""

    def __init__(self) -> None:
        self.checkpoints: list[str] = []
        self.organs: list[str] = []
        self.worst: dict[tuple[str, str], WorstSlice] = {}

    def collector(self, checkpoint: str):
        """``add`` bound to ``checkpoint``: what :func:`evaluate.score_case` calls per scored organ."""
        if checkpoint not in self.checkpoints:
            self.checkpoints.append(checkpoint)
        return lambda case, organ, prepared, prediction, reference: self.add(
            checkpoint, case, organ, prepared, prediction, reference
        )

    def add(
        self, checkpoint: str, case: str, organ: str, prepared, prediction: np.ndarray, reference: np.ndarray
    ) -> None:
        """One case's masks of one organ (on the file's grid); ``prepared`` is its :class:`PreparedVolume`."""
        if organ not in self.organs:
            self.organs.append(organ)
        pred, ref = (
            prepared.to_canonical(np.asarray(prediction, bool)),
            prepared.to_canonical(np.asarray(reference, bool)),
        )
        _, sy, sx = prepared.spacing
        errors = (pred ^ ref).reshape(pred.shape[0], -1).sum(axis=1) * (sy * sx)
        z = int(np.argmax(errors))
        current = self.worst.get((checkpoint, organ))
        if errors[z] <= 0 or (current is not None and errors[z] <= current.error_mm2):
            return
        p, r = pred[z], ref[z]
        total = int(p.sum()) + int(r.sum())
        dice = 2.0 * int((p & r).sum()) / total if total else float("nan")
        self.worst[(checkpoint, organ)] = WorstSlice(
            case, z, float(errors[z]), dice, prepared.unit[z].copy(), p.copy(), r.copy(), sy / sx
        )

    def write(self, folder: str | Path) -> list[Path]:
        """``folder/ORGAN.png`` for every organ some checkpoint got wrong somewhere."""
        folder = Path(folder)
        return [
            self._render(organ, folder / f"{_file_name(organ)}.png")
            for organ in self.organs
            if any((c, organ) in self.worst for c in self.checkpoints)
        ]

    def markdown(self, written: list[Path]) -> str:
        """The report's section: each organ's figure, linked relative to report.md."""
        lines = [
            "## Worst slices",
            "",
            "Per organ, each checkpoint's slice with the largest wrongly labelled area (reference green, "
            "prediction red, both yellow).",
            "",
        ]
        for path in written:
            lines += [f"![{path.stem}]({FOLDER}/{path.name})", ""]
        clean = [o for o in self.organs if not any((c, o) in self.worst for c in self.checkpoints)]
        if clean:
            lines += [f"No wrongly labelled pixel on any slice: {', '.join(clean)}.", ""]
        return "\n".join(lines)

    def _render(self, organ: str, path: Path) -> Path:
        from PIL import Image, ImageDraw

        panels, captions = [], []
        for checkpoint in self.checkpoints:
            entry = self.worst.get((checkpoint, organ))
            panels.append(_panel(entry) if entry is not None else None)
            captions.append(
                [checkpoint]
                + (
                    [f"{entry.case}, slice {entry.z}", f"Dice {entry.dice:.2f}, error {entry.error_mm2:.0f} mm2"]
                    if entry is not None
                    else ["no error"]
                )
            )
        height = max(p.shape[0] for p in panels if p is not None)
        width = max(p.shape[1] for p in panels if p is not None)
        top, bottom, gap = 46, 18, 8
        canvas = Image.new("RGB", (len(panels) * (width + gap) + gap, top + height + bottom), "white")
        draw = ImageDraw.Draw(canvas)
        for n, (panel, caption) in enumerate(zip(panels, captions)):
            x = gap + n * (width + gap)
            for line, text in enumerate(caption):
                draw.text((x, 4 + 14 * line), text[:48], fill="black")
            if panel is not None:
                canvas.paste(Image.fromarray(panel), (x, top))
        draw.text((gap, top + height + 3), f"{organ}: reference green, prediction red, both yellow", fill="black")
        with atomic_path(path) as tmp:
            canvas.save(tmp, format="PNG")
        return path


def _panel(entry: WorstSlice) -> np.ndarray:
    """The slice in grey, scaled to :data:`PANEL_PIXELS` with its physical aspect, contours drawn."""
    rows, cols = entry.image.shape
    scale_x = max(1, int(round(PANEL_PIXELS / max(cols, rows * entry.aspect))))
    scale_y = max(1, int(round(scale_x * entry.aspect)))
    big = lambda a: a.repeat(scale_y, 0).repeat(scale_x, 1)  # noqa: E731
    rgb = np.repeat(big((np.clip(entry.image, 0, 1) * 255).astype(np.uint8))[..., None], 3, axis=2)
    ref, pred = boundary(big(entry.reference)), boundary(big(entry.prediction))
    rgb[ref] = REFERENCE
    rgb[pred] = PREDICTION
    rgb[ref & pred] = BOTH
    return rgb


def _file_name(organ: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in organ) or "organ"
