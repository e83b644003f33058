"""The categories of the shapes data set and their geometry (polygons, areas, COCO RLE masks).

Every shape is a polygon ``[P, 2]`` of ``(x, y)`` points around the origin; boxes are
``[x0, y0, x1, y1]`` arrays in pixels.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "CATEGORIES",
    "SHAPES",
    "category_id",
    "overlap_ok",
    "polygon_area",
    "rle_uncompressed",
    "shape_polygon",
]

# Deliberately non-contiguous ids (and not starting at 1), as in COCO (1..90 with gaps).
CATEGORIES: list[dict[str, Any]] = [
    {"id": 3, "name": "circle", "supercategory": "shape"},
    {"id": 7, "name": "square", "supercategory": "shape"},
    {"id": 11, "name": "triangle", "supercategory": "shape"},
    {"id": 19, "name": "star", "supercategory": "shape"},
    {"id": 42, "name": "hexagon", "supercategory": "shape"},
    {"id": 57, "name": "cross", "supercategory": "shape"},
]
SHAPES = [c["name"] for c in CATEGORIES]


def category_id(name: str) -> int:
    """The COCO category id of shape ``name``."""
    return CATEGORIES[SHAPES.index(name)]["id"]


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def _regular(n: int, r: float, phase: float = 0.0) -> np.ndarray:
    t = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _cross(a: float, b: float) -> np.ndarray:
    """A plus sign of half-length ``a`` and half-width ``b``: 12 points."""
    return np.array(
        [
            [-b, -a],
            [b, -a],
            [b, -b],
            [a, -b],
            [a, b],
            [b, b],
            [b, a],
            [-b, a],
            [-b, b],
            [-a, b],
            [-a, -b],
            [-b, -b],
        ],
        dtype=float,
    )


def shape_polygon(name: str, size: float, rng: np.random.Generator) -> np.ndarray:
    """Polygon [P, 2] of a shape whose axis-aligned extent is roughly ``size`` px, centred at 0."""
    r = size / 2
    angle = rng.uniform(0, 2 * np.pi)
    if name == "circle":
        # Circles may be slightly elliptic; still unmistakably round.
        pts = _regular(48, r)
        pts[:, 1] *= rng.uniform(0.85, 1.0)
        return _rotate(pts, angle)
    if name == "square":
        # Squares and mildly rectangular boxes.
        aspect = rng.uniform(0.75, 1.0)
        pts = np.array([[-1, -aspect], [1, -aspect], [1, aspect], [-1, aspect]], dtype=float) * r * 0.75
        return _rotate(pts, angle)
    if name == "triangle":
        return _rotate(_regular(3, r), angle)
    if name == "star":
        outer = _regular(5, r)
        inner = _regular(5, r * rng.uniform(0.38, 0.5), phase=np.pi / 5)
        pts = np.empty((10, 2))
        pts[0::2], pts[1::2] = outer, inner
        return _rotate(pts, angle)
    if name == "hexagon":
        return _rotate(_regular(6, r), angle)
    if name == "cross":
        return _rotate(_cross(r, r * rng.uniform(0.28, 0.4)), angle)
    raise ValueError(f"unknown shape {name!r}")


def polygon_area(pts: np.ndarray) -> float:
    """Area of a simple polygon [P, 2] (shoelace formula)."""
    x, y = pts[:, 0], pts[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def rle_uncompressed(mask: np.ndarray) -> dict[str, Any]:
    """COCO uncompressed RLE of a mask [H, W] (column-major run lengths, starting with zeros)."""
    flat = np.asarray(mask, dtype=np.uint8).ravel(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0, *counts]
    return {"counts": [int(c) for c in counts], "size": [int(mask.shape[0]), int(mask.shape[1])]}


def overlap_ok(box: np.ndarray, boxes: list[np.ndarray], max_cover: float) -> bool:
    """True when ``box`` covers at most ``max_cover`` of any placed box, and vice versa."""
    for b in boxes:
        iw = min(box[2], b[2]) - max(box[0], b[0])
        ih = min(box[3], b[3]) - max(box[1], b[1])
        if iw <= 0 or ih <= 0:
            continue
        inter = iw * ih
        a1 = (box[2] - box[0]) * (box[3] - box[1])
        a2 = (b[2] - b[0]) * (b[3] - b[1])
        if inter / min(a1, a2) > max_cover:
            return False
    return True
