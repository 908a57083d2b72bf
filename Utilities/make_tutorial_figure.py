"""Render the figure of the Slicer tutorial (docs/slicer.md): what Apply and the uncertainty map show.

No 3D Slicer can run where the documentation is built, so the backend draws what the module's slice
views show: each prompt's segment outlined in its colour (left), and the uncertainty map overlaid
as the module overlays it (right: the same colour range, 0 to ln 2, the same see-through threshold
and opacity, TGatedSegmentGlue.UNCERTAINTY_*). The volume is a generated phantom and the model one
the project's own trainer made (``tgated demo``'s recipe), both offline; the tutorial's CTACardio
cannot be downloaded here.

    python Utilities/make_tutorial_figure.py                          # trains the demo's model (a few minutes)
    python Utilities/make_tutorial_figure.py --checkpoint demo_output/checkpoint   # or use a trained one

Writes docs/images/slicer-tutorial.png (``--output``), which CMakeLists.txt also names as the
extension's screenshot.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "TGatedSegment")]

PROMPTS = "liver, spleen, right kidney, left kidney, aorta, gallbladder"
SAMPLES = 10


def inferno(values: np.ndarray) -> np.ndarray:
    """A few stops of matplotlib's "inferno" (Slicer's Inferno colour table), interpolated: (..., 3) uint8."""
    stops = np.array(
        [
            [0, 0, 4],
            [40, 11, 84],
            [101, 21, 110],
            [159, 42, 99],
            [212, 72, 66],
            [245, 125, 21],
            [250, 193, 39],
            [252, 255, 164],
        ],
        float,
    )
    position = np.clip(values, 0, 1) * (len(stops) - 1)
    low = np.floor(position).astype(int).clip(0, len(stops) - 2)
    fraction = (position - low)[..., None]
    return (stops[low] * (1 - fraction) + stops[low + 1] * fraction).astype(np.uint8)


def slice_views(grey, labels, colors, entropy, scale):
    """One row: the segments outlined (left) and the uncertainty overlay (right), as Slicer's slice views."""
    import TGatedSegmentGlue as glue
    from TGatedSegmentLib.evaluation.figures import boundary

    base = np.repeat((np.clip(grey, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)
    base = base.repeat(scale, 0).repeat(scale, 1)
    outlined = base.copy()
    big = labels.repeat(scale, 0).repeat(scale, 1)
    for value, color in colors.items():
        outlined[boundary(big == value)] = color
    heat = entropy.repeat(scale, 0).repeat(scale, 1)
    shown = heat >= glue.UNCERTAINTY_SHOWN_FROM  # below it the overlay is see-through, as in the module
    overlay = base.copy()
    blended = 0.5 * base[shown] + 0.5 * inferno(heat[shown] / glue.UNCERTAINTY_MAX)  # 50 % opacity
    overlay[shown] = blended.astype(np.uint8)
    return np.concatenate([outlined, np.full((base.shape[0], 6, 3), 255, np.uint8), overlay], axis=1)


def render(result, grey, organs, path: Path, slices) -> Path:
    from PIL import Image, ImageDraw

    from TGatedSegmentLib.io.atomic import atomic_path
    from TGatedSegmentLib.vocabulary import generated_color

    colors = {n + 1: tuple(o.color or generated_color(n)) for n, o in enumerate(organs)}
    scale = max(1, 256 // max(grey.shape[1:]))
    entropy = result.combined_entropy
    rows = [slice_views(grey[z], result.labelmap[z], colors, entropy[z], scale) for z in slices]
    width, header, legend = rows[0].shape[1], 22, 16 * ((len(organs) + 2) // 3) + 8
    canvas = Image.new("RGB", (width, header + sum(r.shape[0] + 6 for r in rows) + legend), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text(
        (4, 4), f"segments (Apply)  |  uncertainty map, {SAMPLES} samples (0 = certain, bright = unsure)", fill="black"
    )
    y = header
    for z, row in zip(slices, rows):
        canvas.paste(Image.fromarray(row), (0, y))
        draw.text((4, y + 2), f"slice {z}", fill="yellow")
        y += row.shape[0] + 6
    for i, organ in enumerate(organs):
        x0, y0 = 4 + (i % 3) * (width // 3), y + 4 + (i // 3) * 16
        draw.rectangle([x0, y0 + 2, x0 + 10, y0 + 12], fill=colors[i + 1])
        draw.text((x0 + 14, y0), organ.name, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="a trained checkpoint folder (default: train the demo's model now)")
    parser.add_argument("--minutes", type=float, default=4.0, help="training time cap without --checkpoint")
    parser.add_argument("--output", default=str(REPO / "docs" / "images" / "slicer-tutorial.png"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from TGatedSegmentLib.demo import figure_slices, run_demo
    from TGatedSegmentLib.inference.api import Segmenter
    from TGatedSegmentLib.phantom import PhantomSpec, generate_phantom
    from TGatedSegmentLib.preprocessing.volume import prepare_volume
    from TGatedSegmentLib.vocabulary import resolve_prompts

    with tempfile.TemporaryDirectory(prefix="tgated-figure-") as work:
        checkpoint = args.checkpoint
        if not checkpoint:
            print(f"training the demo's model (at most {args.minutes:g} min)...", file=sys.stderr)
            checkpoint = str(run_demo(Path(work) / "demo", minutes=args.minutes, seed=args.seed).output / "checkpoint")
        phantom = generate_phantom((args.seed, 99), PhantomSpec())  # a phantom neither trained nor validated on
        ct, _ = phantom.to_sitk(integer_hu=True)
        organs = resolve_prompts(PROMPTS)
        segmenter = Segmenter(checkpoint, device="cpu")
        result = segmenter.segment(ct, prompts=organs, uncertainty=SAMPLES)
        grey = prepare_volume(ct, segmenter.config.preprocessing).unit  # the phantom's frame is the canonical one
        path = render(result, grey, organs, Path(args.output), figure_slices(phantom, count=2)[:2])
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
