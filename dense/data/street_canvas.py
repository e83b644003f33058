"""Label ids and the two-layer canvas of the synthetic street scenes (shapes_cityscapes).

Every shape is drawn twice, with the same geometry: in colour into the RGB image and as its
Cityscapes labelId into the label map, so the ground truth matches the image pixel for pixel.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

__all__ = ["Canvas", "Color", "clip_color"]

# labelIds (cityscapesscripts.helpers.labels)
UNLABELED, EGO, RECT_BORDER, STATIC = 0, 1, 2, 4
ROAD, SIDEWALK, BUILDING, POLE, LIGHT, SIGN = 7, 8, 11, 17, 19, 20
VEGETATION, TERRAIN, SKY, PERSON, CAR = 21, 22, 23, 24, 26

Color = tuple[int, int, int]


def clip_color(c: Sequence[float]) -> Color:
    """An RGB triple rounded to integers in [0, 255]."""
    return tuple(int(min(255, max(0, round(v)))) for v in c)  # type: ignore[return-value]


class Canvas:
    """Draws each shape into the RGB image and the labelIds map at once."""

    def __init__(self, rgb: Image.Image, lab: Image.Image) -> None:
        self.rgb, self.lab = rgb, lab
        self.d_rgb, self.d_lab = ImageDraw.Draw(rgb), ImageDraw.Draw(lab)

    def poly(self, pts: Sequence[tuple[float, float]], label: int, color: Sequence[float]) -> None:
        pts = [(float(x), float(y)) for x, y in pts]
        self.d_rgb.polygon(pts, fill=clip_color(color))
        self.d_lab.polygon(pts, fill=label)

    def ellipse(self, box: Sequence[float], label: int, color: Sequence[float]) -> None:
        x0, y0, x1, y1 = (float(v) for v in box)
        if x1 - x0 < 0.5 or y1 - y0 < 0.5:
            return
        self.d_rgb.ellipse((x0, y0, x1, y1), fill=clip_color(color))
        self.d_lab.ellipse((x0, y0, x1, y1), fill=label)

    def rect(self, box: Sequence[float], label: int, color: Sequence[float]) -> None:
        x0, y0, x1, y1 = box
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], label, color)

    def line(
        self, pts: Sequence[tuple[float, float]], width: float, label: int, color: Sequence[float]
    ) -> None:
        w = max(1, round(width))
        self.d_rgb.line([tuple(p) for p in pts], fill=clip_color(color), width=w)
        self.d_lab.line([tuple(p) for p in pts], fill=label, width=w)
