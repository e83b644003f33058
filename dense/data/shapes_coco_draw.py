"""Drawing of one image of the shapes data set, with its annotations.

:func:`render_image` takes the image's own random stream and draws, in this order (the order of
the random draws is part of the output): a cluttered, textured background; optionally one crowd
region; the objects; sensor noise over everything.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from dense.data.shapes_coco_geometry import (
    SHAPES,
    category_id,
    overlap_ok,
    polygon_area,
    rle_uncompressed,
    shape_polygon,
)
from dense.data.synthetic import to_uint8

__all__ = ["render_image"]

# Sizes are specified at this image side and scale with the actual one.
_REFERENCE_SIZE = 320


def _random_color(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, size=3))


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    """Float32 [size, size, 3]: a two-colour linear gradient plus a few faint sinusoids."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / np.float32(size)
    theta = rng.uniform(0, 2 * np.pi)
    t = np.cos(theta) * xx + np.sin(theta) * yy
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    c0 = rng.uniform(0, 255, size=3).astype(np.float32)
    c1 = rng.uniform(0, 255, size=3).astype(np.float32)
    img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    # Texture: stripes / ripples of small amplitude.
    for _ in range(int(rng.integers(1, 4))):
        f = rng.uniform(2, 20)
        phi = rng.uniform(0, 2 * np.pi)
        d = rng.uniform(0, 2 * np.pi)
        wave = np.sin(2 * np.pi * f * (np.cos(d) * xx + np.sin(d) * yy) + phi)
        img += wave[..., None] * rng.uniform(5, 25, size=3).astype(np.float32)
    return img


def _distractors(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int) -> None:
    """Lines, arcs and irregular blobs: clutter that never matches a class shape."""
    scale = size / _REFERENCE_SIZE
    for _ in range(int(rng.integers(2, 9))):
        p = rng.uniform(-0.1 * size, 1.1 * size, size=4)
        width = max(1, int(rng.integers(1, 5) * scale))
        draw.line(
            [(p[0], p[1]), (p[2], p[3])], fill=(*_random_color(rng), int(rng.integers(90, 256))), width=width
        )
    for _ in range(int(rng.integers(0, 3))):
        cx, cy = rng.uniform(0, size, size=2)
        rad = rng.uniform(20, 90) * scale
        start = rng.uniform(0, 360)
        draw.arc(
            [cx - rad, cy - rad, cx + rad, cy + rad],
            start,
            start + rng.uniform(40, 200),
            fill=(*_random_color(rng), 200),
            width=max(1, int(2 * scale)),
        )
    # Semi-transparent polygons with random radii.
    for _ in range(int(rng.integers(1, 6))):
        n = int(rng.integers(7, 14))
        radii = rng.uniform(0.35, 1.0, size=n) * rng.uniform(10, 60) * scale
        t = np.sort(rng.uniform(0, 2 * np.pi, size=n))
        cx, cy = rng.uniform(0, size, size=2)
        pts = [(cx + r * math.cos(a), cy + r * math.sin(a)) for r, a in zip(radii, t)]
        draw.polygon(pts, fill=(*_random_color(rng), int(rng.integers(60, 180))))


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """Gradient + low-frequency texture + clutter (lines, irregular blobs) that are not objects."""
    im = Image.fromarray(to_uint8(_gradient(rng, size)))
    _distractors(ImageDraw.Draw(im, "RGBA"), rng, size)
    if rng.random() < 0.5:
        im = im.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.5, 2.0))))
    return im


def _draw_shape(draw: ImageDraw.ImageDraw, pts: np.ndarray, rng: np.random.Generator, scale: float) -> None:
    fill = _random_color(rng)
    poly = [tuple(p) for p in pts.tolist()]
    draw.polygon(poly, fill=fill)
    if rng.random() < 0.4:  # outline in another colour: shapes differ in appearance, not just colour
        draw.line([*poly, poly[0]], fill=_random_color(rng), width=max(1, int(rng.integers(1, 4) * scale)))


def _draw_crowd(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int) -> dict[str, Any]:
    """A tight cluster of small same-class shapes covered by one ``iscrowd=1`` annotation (RLE)."""
    scale = size / _REFERENCE_SIZE
    name = SHAPES[int(rng.integers(len(SHAPES)))]
    region = rng.uniform(60, 120) * scale
    x0, y0 = rng.uniform(2, size - region - 2, size=2)
    mask_im = Image.new("L", (size, size), 0)
    mdraw = ImageDraw.Draw(mask_im)
    fill = _random_color(rng)
    for _ in range(int(rng.integers(8, 20))):
        s = rng.uniform(6, 13) * scale
        cx = rng.uniform(x0 + s / 2, x0 + region - s / 2)
        cy = rng.uniform(y0 + s / 2, y0 + region - s / 2)
        pts = shape_polygon(name, s, rng) + (cx, cy)
        poly = [tuple(p) for p in pts.tolist()]
        draw.polygon(poly, fill=fill)
        mdraw.polygon(poly, fill=1)
    mask = np.asarray(mask_im, dtype=np.uint8)
    ys, xs = np.nonzero(mask)
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=float)
    return {
        "category_id": category_id(name),
        "bbox_xyxy": box,
        "area": float(mask.sum()),
        "iscrowd": 1,
        "segmentation": rle_uncompressed(mask),
    }


def _try_object(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, placed: list[np.ndarray]
) -> dict[str, Any] | None:
    """One attempt at placing a random object; None when it does not fit or overlaps too much."""
    scale = size / _REFERENCE_SIZE
    lo, hi = 16 * scale, 160 * scale
    name = SHAPES[int(rng.integers(len(SHAPES)))]
    # Log-uniform sizes: as many small objects as large ones.
    s = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    pts = shape_polygon(name, s, rng)
    # The box's longer side is exactly s (the drawn extent depends on the shape and its rotation).
    pts *= s / float((pts.max(0) - pts.min(0)).max())
    mn, mx = pts.min(0), pts.max(0)
    w, h = mx - mn
    if w >= size - 2 or h >= size - 2:
        return None
    cx = rng.uniform(1 - mn[0], size - 1 - mx[0])
    cy = rng.uniform(1 - mn[1], size - 1 - mx[1])
    pts = pts + (cx, cy)
    box = np.array([*pts.min(0), *pts.max(0)])
    if not overlap_ok(box, placed, max_cover=0.25):
        return None
    _draw_shape(draw, pts, rng, scale)
    placed.append(box)
    return {
        "category_id": category_id(name),
        "bbox_xyxy": box,
        "area": polygon_area(pts),
        "iscrowd": 0,
        "segmentation": [[round(float(v), 2) for v in pts.ravel()]],
    }


def _draw_objects(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, max_objects: int, placed: list[np.ndarray]
) -> list[dict[str, Any]]:
    """1..max_objects objects (mean about 4: learnable but not trivial), 30 attempts each."""
    n = int(np.clip(rng.poisson(3.6) + 1, 1, max_objects))
    anns = []
    for _ in range(n):
        for _attempt in range(30):
            ann = _try_object(draw, rng, size, placed)
            if ann is not None:
                anns.append(ann)
                break
    return anns


def _sensor_noise(rng: np.random.Generator, im: Image.Image) -> Image.Image:
    """Gaussian noise over everything (objects too), so flat colours are not a give-away."""
    arr = np.asarray(im, dtype=np.float32)
    arr += rng.standard_normal(size=arr.shape, dtype=np.float32) * np.float32(rng.uniform(2, 10))
    return Image.fromarray(to_uint8(arr))


def render_image(
    rng: np.random.Generator, size: int, *, empty: bool, crowd: bool, max_objects: int
) -> tuple[Image.Image, list[dict[str, Any]]]:
    """Draw one image of ``size`` x ``size`` px.

    Returns:
        the RGB image and its annotations (without ids), each a dict with ``category_id``,
        ``bbox_xyxy`` (float array ``[x0, y0, x1, y1]`` in px), ``area``, ``iscrowd`` and
        ``segmentation`` (COCO polygon, or uncompressed RLE for the crowd region).
    """
    im = _background(rng, size)
    draw = ImageDraw.Draw(im)
    anns: list[dict[str, Any]] = []
    placed: list[np.ndarray] = []  # boxes drawn so far, for the overlap test
    if crowd:
        anns.append(_draw_crowd(draw, rng, size))
        placed.append(anns[-1]["bbox_xyxy"])
    if not empty:
        anns += _draw_objects(draw, rng, size, max_objects, placed)
    return _sensor_noise(rng, im), anns
