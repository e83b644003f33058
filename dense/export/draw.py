"""Pictures of predictions: boxes with class names and scores, label maps as a coloured overlay with
a legend of the classes present (torchvision's drawing utilities; Pillow for the legend)."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

__all__ = ["class_colors", "draw_detections", "draw_segmentation"]


def class_colors(n: int) -> list[tuple[int, int, int]]:
    """n distinct colours (golden-ratio hues), index = label."""
    out = []
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618034 + 0.1) % 1.0, 0.85, 1.0)
        out.append((round(r * 255), round(g * 255), round(b * 255)))
    return out


def _chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)  # a writable copy


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    *,
    width: int = 2,
) -> np.ndarray:
    """image [H, W, 3] uint8 RGB, boxes [M, 4] xyxy pixels, scores [M], labels [M] -> [H, W, 3] uint8
    with each box drawn in its class colour and labelled "name 0.87"."""
    colors = class_colors(len(class_names))
    boxes_t = torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4)
    text = [f"{class_names[int(c)]} {float(s):.2f}" for c, s in zip(labels, scores)]
    drawn = draw_bounding_boxes(
        _chw(image), boxes_t, labels=text, colors=[colors[int(c)] for c in labels], width=width
    )
    return drawn.permute(1, 2, 0).numpy()


def draw_segmentation(
    image: np.ndarray,
    label_map: np.ndarray,
    palette: np.ndarray | Sequence[Sequence[int]],
    class_names: Sequence[str],
    *,
    alpha: float = 0.55,
) -> np.ndarray:
    """image [H, W, 3] uint8, label_map [H, W] class indices -> the image with each class blended in
    its palette colour (e.g. the Cityscapes label table), and below it a legend of the classes
    present: [H + legend, W, 3] uint8."""
    label_map = np.asarray(label_map)
    present = [int(c) for c in np.unique(label_map) if 0 <= c < len(class_names)]
    masks = torch.from_numpy(np.stack([label_map == c for c in present])) if present else None
    colors = [tuple(int(v) for v in palette[c]) for c in present]
    out = _chw(image)
    if masks is not None:
        out = draw_segmentation_masks(out, masks, alpha=alpha, colors=colors)
    return _with_legend(out.permute(1, 2, 0).numpy(), [class_names[c] for c in present], colors)


def _with_legend(image: np.ndarray, names: list[str], colors: list[tuple[int, int, int]]) -> np.ndarray:
    font = ImageFont.load_default()
    h, w = image.shape[:2]
    row, swatch, pad = 16, 12, 4
    # entries laid out left to right, wrapping at the image width
    entries, x, y = [], pad, pad
    for name, color in zip(names, colors):
        tw = int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(name, font=font))
        cell = swatch + 4 + tw + 12
        if x + cell > w and x > pad:
            x, y = pad, y + row
        entries.append((x, y, name, color))
        x += cell
    legend = Image.new("RGB", (w, y + row + pad), (255, 255, 255))
    draw = ImageDraw.Draw(legend)
    for x, y, name, color in entries:
        draw.rectangle([x, y + 2, x + swatch, y + 2 + swatch], fill=color, outline=(0, 0, 0))
        draw.text((x + swatch + 4, y + 2), name, fill=(0, 0, 0), font=font)
    return np.concatenate([image, np.asarray(legend)], 0)
