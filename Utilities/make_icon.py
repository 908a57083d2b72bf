"""Draws the extension and module icon (128x128): an axial CT slice whose organs carry coloured
contours, under a text box where an organ name is being typed. Run from the repository root:

    python Utilities/make_icon.py

Writes TGatedSegment.png (extension) and TGatedSegment/Resources/Icons/TGatedSegment.png (module).
Drawn at 4x and downsampled, so edges are smooth; organ colours are the abdomen13 table's.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from TGatedSegmentLib.vocabulary import lookup  # noqa: E402

SIZE = 128
SCALE = 4
S = SIZE * SCALE
FONT_CANDIDATES = ["/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", "DejaVuSans-Bold.ttf", "Arial Bold.ttf"]


def px(*values: float) -> list[float]:
    return [v * SCALE for v in values]


def ellipse_mask(cx, cy, rx, ry, angle=0.0) -> np.ndarray:
    y, x = np.mgrid[0:S, 0:S].astype(float) / SCALE
    a = np.deg2rad(angle)
    u = (x - cx) * np.cos(a) + (y - cy) * np.sin(a)
    v = -(x - cx) * np.sin(a) + (y - cy) * np.cos(a)
    return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0


def ct_slice() -> Image.Image:
    """Grey values of a simplified abdominal CT slice (body, fat rim, organs, spine), at 4x."""
    rng = np.random.default_rng(3)
    grey = np.zeros((S, S), float)
    body = ellipse_mask(64, 50, 54, 38)
    grey[body] = 0.42
    grey[body & ~ellipse_mask(64, 50, 50, 34)] = 0.30  # subcutaneous fat
    organs = {
        "liver": (ellipse_mask(35, 45, 20, 16, -25) | ellipse_mask(50, 34, 15, 8, -12), 0.62),
        "spleen": (ellipse_mask(93, 40, 10, 13, 20), 0.60),
        "right kidney": (ellipse_mask(45, 64, 7, 9, 20), 0.66),
        "left kidney": (ellipse_mask(83, 64, 7, 9, -20), 0.66),
        "aorta": (ellipse_mask(66, 58, 4.2, 4.2), 0.80),
    }
    for mask, value in organs.values():
        grey[mask] = value
    grey[ellipse_mask(64, 73, 8.5, 7.5)] = 0.95  # vertebral body
    grey[ellipse_mask(64, 73, 4.5, 3.8)] = 0.70
    grey += rng.normal(0, 0.025, grey.shape) * body
    image = Image.fromarray((np.clip(grey, 0, 1) * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(SCALE * 0.6))
    return image, organs


def contour(mask: np.ndarray, width: int) -> np.ndarray:
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    grown = np.asarray(image.filter(ImageFilter.MaxFilter(2 * width + 1))) > 0
    shrunk = np.asarray(image.filter(ImageFilter.MinFilter(2 * width + 1))) > 0
    return grown & ~shrunk


def font(size: int) -> ImageFont.ImageFont:
    for name in FONT_CANDIDATES:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def draw_icon() -> Image.Image:
    """The box's outline and cursor have the liver's colour: the typed name becomes that segment."""
    grey, organs = ct_slice()
    canvas = Image.new("RGBA", (S, S), (0, 0, 0, 0))
    # Rounded dark tile behind the slice (the icon reads on light and dark module lists).
    tile = Image.new("RGBA", (S, S), (0, 0, 0, 0))
    ImageDraw.Draw(tile).rounded_rectangle(px(2, 2, 126, 126), radius=18 * SCALE, fill=(22, 27, 38, 255))
    canvas.alpha_composite(tile)
    body = Image.fromarray((ellipse_mask(64, 50, 55, 39) * 255).astype(np.uint8))
    slice_rgba = Image.merge("RGBA", [grey, grey, grey, body])
    canvas.alpha_composite(slice_rgba)

    pixels = np.asarray(canvas).copy()
    for name, (mask, _) in organs.items():
        r, g, b = lookup(name).color
        pixels[mask, :3] = (0.55 * pixels[mask, :3] + 0.45 * np.array([r, g, b])).astype(np.uint8)
        edge = contour(mask, int(1.4 * SCALE))
        pixels[edge, :3] = (r, g, b)
        pixels[edge, 3] = 255
    canvas = Image.fromarray(pixels)

    # The prompt box: an organ name being typed, with a cursor.
    draw = ImageDraw.Draw(canvas)
    draw.rounded_rectangle(
        px(8, 92, 120, 120),
        radius=7 * SCALE,
        fill=(250, 250, 252, 255),
        outline=tuple(lookup("liver").color) + (255,),
        width=int(2.2 * SCALE),
    )
    text_font = font(19 * SCALE)
    draw.text(px(15, 106), "liver", font=text_font, fill=(30, 34, 45, 255), anchor="lm")
    right = draw.textbbox(px(15, 106), "liver", font=text_font, anchor="lm")[2]
    draw.rectangle([right + 2.5 * SCALE, 97 * SCALE, right + 5 * SCALE, 115 * SCALE], fill=(221, 130, 101, 255))
    return canvas.resize((SIZE, SIZE), Image.LANCZOS)


def main() -> None:
    icon = draw_icon()
    for path in (REPO / "TGatedSegment.png", REPO / "TGatedSegment" / "Resources" / "Icons" / "TGatedSegment.png"):
        path.parent.mkdir(parents=True, exist_ok=True)
        icon.save(path, optimize=True)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
