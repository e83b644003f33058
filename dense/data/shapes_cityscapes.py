"""Synthetic street scenes written in the exact Cityscapes layout ("shapes-cityscapes").

A stand-in for Cityscapes when the real data is not at hand (tests, smoke runs, CI): the same
folders, file names and label encoding, so the real :class:`~dense.data.cityscapes.
CityscapesSegmentation`, the metric and the official evaluator run on it unchanged::

    root/leftImg8bit/{train,val}/<city>/<city>_<seq:06d>_<frame:06d>_leftImg8bit.png   RGB
    root/gtFine/{train,val}/<city>/<city>_<seq:06d>_<frame:06d>_gtFine_labelIds.png    labelIds
    root/gtFine/{train,val}/<city>/<city>_<seq:06d>_<frame:06d>_gtFine_color.png       (optional)
    root/shapes_cityscapes.json                                                         manifest

Each scene is drawn in perspective from one vanishing point on the horizon: sky, building
facades of varied heights with windows on both sides plus a far skyline, a road with lane
markings, sidewalks (sometimes with a terrain strip), and objects placed on the ground and
sized by their distance: cars (rear and side views), persons, poles with traffic signs or
traffic lights, trees, static clutter. Real labelIds are used (road 7, sidewalk 8, building 11,
pole 17, traffic light 19, traffic sign 20, vegetation 21, terrain 22, sky 23, person 24,
car 26) plus void pixels (unlabeled 0, ego vehicle 1, rectification border 2, static 4) that
the metric must ignore. Colours vary per city, image and object, classes overlap in colour
(grey road / facade / sidewalk), and texture, illumination and noise are added, so a model has
to use shape and context: learnable, not trivial.

Defaults (300 train / 50 val at 256x512) generate in about half a minute on 2 CPU cores and
are sized for a training run of under 10 minutes there at 256x512 crops.

Everything is deterministic in ``seed``: image ``i`` of a split depends only on
``(seed, split, i)``, so the files are byte-identical across runs and machines.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from cityscapesscripts.helpers.labels import labels as _CS_LABELS
from PIL import Image, ImageDraw, ImageFilter

__all__ = [
    "generate_shapes_cityscapes",
    "ensure_shapes_cityscapes",
    "render_scene",
    "TRAIN_CITIES",
    "VAL_CITIES",
]

GENERATOR_VERSION = 1
MANIFEST = "shapes_cityscapes.json"
TRAIN_CITIES = ("aachen", "bochum", "bremen", "zurich")
VAL_CITIES = ("frankfurt", "lindau", "munster")
FRAME = 19  # Cityscapes annotates the 20th frame of each 30-frame snippet: *_000019

# labelIds (cityscapesscripts.helpers.labels)
UNLABELED, EGO, RECT_BORDER, STATIC = 0, 1, 2, 4
ROAD, SIDEWALK, BUILDING, POLE, LIGHT, SIGN = 7, 8, 11, 17, 19, 20
VEGETATION, TERRAIN, SKY, PERSON, CAR = 21, 22, 23, 24, 26

_COLOR_LUT = np.zeros((256, 3), dtype=np.uint8)
for _lb in _CS_LABELS:
    if _lb.id >= 0:
        _COLOR_LUT[_lb.id] = _lb.color

# Multiplicative per-pixel texture amplitude by labelId (foliage grainy, sky smooth).
_TEXTURE = np.full(256, 0.04, dtype=np.float32)
_TEXTURE[[VEGETATION, TERRAIN, ROAD, SIDEWALK, BUILDING, SKY]] = [0.28, 0.18, 0.07, 0.08, 0.05, 0.01]

Color = tuple[int, int, int]


def _clip_color(c: Sequence[float]) -> Color:
    return tuple(int(min(255, max(0, round(v)))) for v in c)  # type: ignore[return-value]


class _Canvas:
    """Draws each shape into the RGB image and the labelIds map at once."""

    def __init__(self, rgb: Image.Image, lab: Image.Image) -> None:
        self.rgb, self.lab = rgb, lab
        self.d_rgb, self.d_lab = ImageDraw.Draw(rgb), ImageDraw.Draw(lab)

    def poly(self, pts: Sequence[tuple[float, float]], label: int, color: Sequence[float]) -> None:
        pts = [(float(x), float(y)) for x, y in pts]
        self.d_rgb.polygon(pts, fill=_clip_color(color))
        self.d_lab.polygon(pts, fill=label)

    def ellipse(self, box: Sequence[float], label: int, color: Sequence[float]) -> None:
        x0, y0, x1, y1 = (float(v) for v in box)
        if x1 - x0 < 0.5 or y1 - y0 < 0.5:
            return
        self.d_rgb.ellipse((x0, y0, x1, y1), fill=_clip_color(color))
        self.d_lab.ellipse((x0, y0, x1, y1), fill=label)

    def rect(self, box: Sequence[float], label: int, color: Sequence[float]) -> None:
        x0, y0, x1, y1 = box
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], label, color)

    def line(
        self, pts: Sequence[tuple[float, float]], width: float, label: int, color: Sequence[float]
    ) -> None:
        w = max(1, round(width))
        self.d_rgb.line([tuple(p) for p in pts], fill=_clip_color(color), width=w)
        self.d_lab.line([tuple(p) for p in pts], fill=label, width=w)


def _city_style(city: str, seed: int) -> dict[str, Any]:
    # Stable per city (hash of the name, not Python's salted hash()).
    rng = np.random.default_rng([seed, sum((i + 1) * ord(c) for i, c in enumerate(city))])
    return {
        "facade": np.full(3, rng.uniform(100, 190)) + rng.uniform(-30, 30, size=3),  # tinted grey
        "road": rng.uniform(70, 110),
        "brick": rng.random() < 0.4,
        "bright": rng.uniform(0.85, 1.15),
        "cars": rng.uniform(1.5, 4.5),
        "persons": rng.uniform(1.0, 4.0),
        "green": rng.uniform(0.2, 0.6),
    }


def render_scene(
    rng: np.random.Generator, height: int, width: int, style: dict[str, Any] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one street scene. Returns (image uint8 [H, W, 3], labelIds uint8 [H, W])."""
    H, W = height, width
    st = style or _city_style("aachen", 0)
    U = rng.uniform

    # --- camera: horizon and vanishing point; road geometry fixed at the bottom row
    hy = H * U(0.36, 0.5)
    vx = W * U(0.38, 0.62)
    road_w = W * U(1.0, 1.8)
    rc = vx + W * U(-0.2, 0.2)
    xr_l, xr_r = rc - road_w / 2, rc + road_w / 2
    xs_l, xs_r = xr_l - W * U(0.25, 0.8), xr_r + W * U(0.25, 0.8)
    cam_h = 8.0 * (H - hy) / road_w  # road = 8 m wide: metres -> pixels at row y is (y - hy) / cam_h

    def ppm(y: float) -> float:
        return max(y - hy, 0.0) / cam_h

    def x_on(xb: float, y: float) -> float:  # x of the line from the vanishing point to (xb, H)
        return vx + (xb - vx) * (y - hy) / (H - hy)

    # --- sky: vertical gradient, clear blue or overcast
    if rng.random() < 0.6:
        top, bot = (
            np.array([U(60, 110), U(110, 160), U(170, 235)]),
            np.array([U(170, 215), U(190, 225), U(215, 250)]),
        )
    else:
        g = U(150, 215)
        top, bot = np.full(3, g) + U(-10, 10, 3), np.full(3, g + U(10, 35))
    t = np.clip(np.arange(H, dtype=np.float32) / max(hy, 1), 0, 1)[:, None]
    sky = (top[None] * (1 - t) + bot[None] * t)[:, None, :].repeat(W, axis=1)
    rgb = Image.fromarray(np.clip(sky, 0, 255).astype(np.uint8), "RGB")
    lab = Image.new("L", (W, H), SKY)
    cv = _Canvas(rgb, lab)

    facade_base = np.asarray(st["facade"])

    def facade_color() -> np.ndarray:
        if rng.random() < 0.25:
            return np.full(3, U(70, 230)) + U(-12, 12, 3)
        return facade_base * U(0.7, 1.25) + U(-25, 25, 3)

    def tree(xc: float, yg: float) -> None:
        s = ppm(yg)
        trunk_h, trunk_w = U(1.5, 3.0) * s, max(1.0, 0.3 * s)
        bark = (U(50, 90), U(35, 60), U(20, 40))
        cv.rect((xc - trunk_w / 2, yg - trunk_h, xc + trunk_w / 2, yg), VEGETATION, bark)
        r = U(1.2, 2.8) * s
        cy = yg - trunk_h - r * 0.6
        base = np.array([U(30, 90), U(70, 140), U(20, 60)])
        for _ in range(int(rng.integers(3, 7))):
            ox, oy, rr = U(-0.8, 0.8) * r, U(-0.6, 0.5) * r, r * U(0.5, 0.9)
            cv.ellipse(
                (xc + ox - rr, cy + oy - rr, xc + ox + rr, cy + oy + rr), VEGETATION, base * U(0.7, 1.2)
            )

    # --- far skyline along the horizon (behind everything else)
    x = -5.0
    while x < W:
        w = U(0.03, 0.12) * W
        h = U(0.02, 0.16) * H
        if rng.random() < st["green"] * 0.6:
            cv.ellipse((x, hy - h, x + w * 1.3, hy + h * 0.4), VEGETATION, (U(30, 80), U(70, 120), U(25, 60)))
        else:
            cv.rect((x, hy - h, x + w, hy + 2), BUILDING, facade_color() * 0.9)
        x += w * U(0.6, 1.0)

    # --- facades: quads between the sidewalk's outer line (bottom) and a top line, one side at a time
    def facade_side(xs: float, side: int) -> None:
        # walk from the image edge towards the vanishing point; segments shrink with distance
        x0 = -0.3 * W if side < 0 else 1.3 * W
        while abs(vx - x0) > 3:
            x1 = x0 + (vx - x0) * U(0.2, 0.5)
            if abs(vx - x1) < 3:
                x1 = vx
            yb0 = hy + (H - hy) * (vx - x0) / (vx - xs)
            yb1 = hy + (H - hy) * (vx - x1) / (vx - xs)
            if rng.random() < st["green"] * 0.5:  # gap with a tree in front
                tree((x0 + x1) / 2, (yb0 + yb1) / 2)
            else:
                hs = U(2.0, 12.0)  # building height in camera heights
                yt0, yt1 = hy - hs * (yb0 - hy), hy - hs * (yb1 - hy)
                col = facade_color()
                quad = [(x0, yt0), (x1, yt1), (x1, yb1 + 1), (x0, yb0 + 1)]
                cv.poly(quad, BUILDING, col)
                _windows(cv, rng, quad, col)
            x0 = x1

    facade_side(xs_l, -1)
    facade_side(xs_r, +1)

    # --- ground: sidewalks (optionally with a terrain strip), road, markings
    road_grey = st["road"] * U(0.85, 1.15)
    road_col = np.array([road_grey, road_grey, road_grey]) + U(-6, 6, 3)
    if st["brick"] and rng.random() < 0.7:
        walk_col = np.array([U(140, 190), U(90, 130), U(80, 110)])
    else:
        walk_col = np.full(3, U(110, 180)) + U(-10, 10, 3)
    for xs, xr in ((xs_l, xr_l), (xs_r, xr_r)):
        cv.poly([(vx, hy), (xs, H), (xr, H)], SIDEWALK, walk_col * U(0.92, 1.08))
        if rng.random() < 0.4:
            xt = xs + (xr - xs) * U(0.2, 0.5)
            cv.poly([(vx, hy), (xs, H), (xt, H)], TERRAIN, (U(90, 150), U(120, 180), U(50, 100)))
        # paving joints: transverse lines at geometric depth steps
        s = U(0.04, 0.08)
        while s < 1.0:
            y = hy + (H - hy) * s
            cv.line([(x_on(xs, y), y), (x_on(xr, y), y)], 1, SIDEWALK, walk_col * 0.8)
            s *= U(1.15, 1.35)
    cv.poly([(vx, hy), (xr_l, H), (xr_r, H)], ROAD, road_col)
    curb = walk_col * 1.15
    for xr in (xr_l, xr_r):
        cv.poly([(vx, hy), (xr, H), (xr + (4 if xr < vx else -4) * W / 512, H)], SIDEWALK, curb)
    # dashed centre line (and sometimes edge lines): painted markings are road
    lane_col = np.full(3, U(170, 235))
    xc = (xr_l + xr_r) / 2 + road_w * U(-0.1, 0.1)
    s = U(0.03, 0.06)
    while s < 1.0:
        s2 = min(s * 1.25, 1.0)
        ya, yb = hy + (H - hy) * s, hy + (H - hy) * s2
        wa, wb = 0.08 * ppm(ya), 0.08 * ppm(yb)
        cv.poly(
            [
                (x_on(xc, ya) - wa, ya),
                (x_on(xc, ya) + wa, ya),
                (x_on(xc, yb) + wb, yb),
                (x_on(xc, yb) - wb, yb),
            ],
            ROAD,
            lane_col,
        )
        s = s2 * 1.3

    # --- objects on the ground, drawn far to near
    objects: list[tuple[float, Callable[[], None]]] = []

    def ground_y(near: float = 1.0) -> float:
        return hy + (H - hy) * (U(0.05, 1.0) ** 0.7) * near + 1

    for _ in range(rng.poisson(st["cars"])):
        yg = ground_y(1.05)
        f = U(0.05, 0.95)
        x = x_on(xr_l, yg) + f * (x_on(xr_r, yg) - x_on(xr_l, yg))
        side_view = f < 0.2 or f > 0.8  # parked along the kerb, seen from the side
        objects.append((yg, lambda x=x, yg=yg, sv=side_view: _car(cv, rng, x, yg, ppm(yg), sv)))
    for _ in range(rng.poisson(st["persons"])):
        yg = ground_y()
        xs, xr = (xs_l, xr_l) if rng.random() < 0.5 else (xs_r, xr_r)
        if rng.random() < 0.15:  # crossing the road
            xs, xr = xr_l, xr_r
        x = x_on(xs, yg) + U(0.1, 0.9) * (x_on(xr, yg) - x_on(xs, yg))
        objects.append((yg, lambda x=x, yg=yg: _person(cv, rng, x, yg, ppm(yg))))
    for _ in range(int(rng.integers(1, 5))):
        yg = ground_y()
        xr = xr_l if rng.random() < 0.5 else xr_r
        x = x_on(xr, yg) + (-1 if xr < vx else 1) * 0.5 * ppm(yg)
        objects.append((yg, lambda x=x, yg=yg: _pole(cv, rng, x, yg, ppm(yg))))
    for _ in range(rng.poisson(3 * st["green"])):
        yg = ground_y()
        xs, xr = (xs_l, xr_l) if rng.random() < 0.5 else (xs_r, xr_r)
        x = x_on(xs, yg) + U(0.1, 0.4) * (x_on(xr, yg) - x_on(xs, yg))
        objects.append((yg, lambda x=x, yg=yg: tree(x, yg)))
    for _ in range(rng.poisson(1.0)):  # void clutter: bins, boxes ('static', ignored in eval)
        yg = ground_y()
        xs, xr = (xs_l, xr_l) if rng.random() < 0.5 else (xs_r, xr_r)
        x = x_on(xs, yg) + U(0.2, 0.8) * (x_on(xr, yg) - x_on(xs, yg))
        s = ppm(yg)
        w, h = U(0.5, 1.0) * s, U(0.7, 1.2) * s
        objects.append(
            (
                yg,
                lambda x=x, yg=yg, w=w, h=h: cv.rect(
                    (x - w / 2, yg - h, x + w / 2, yg), STATIC, U(20, 200, 3)
                ),
            )
        )
    for _, draw in sorted(objects, key=lambda o: o[0]):
        draw()

    # --- void regions: unlabeled blobs, ego-vehicle hood, rectification border
    for _ in range(rng.poisson(0.7)):
        cx, cy, r = U(0, W), U(hy * 0.5, H), U(0.01, 0.05) * W
        pts = [
            (cx + r * U(0.5, 1.2) * math.cos(a), cy + r * U(0.5, 1.2) * math.sin(a))
            for a in np.linspace(0, 2 * math.pi, 7)[:-1]
        ]
        cv.poly(pts, UNLABELED, U(0, 255, 3))
    if rng.random() < 0.7:
        hh = H * U(0.06, 0.13)
        cx = W / 2 + W * U(-0.05, 0.05)
        hood = np.array([U(20, 200)] * 3) + U(-10, 10, 3)
        cv.ellipse((cx - W * 0.75, H - hh, cx + W * 0.75, H + hh * 1.5), EGO, hood)
        cv.ellipse((cx - W * 0.2, H - hh * 0.8, cx + W * 0.2, H - hh * 0.4), EGO, hood * 1.25)  # reflection
    if rng.random() < 0.3:
        bw = max(1.0, W * U(0.004, 0.012))
        cv.rect((0, 0, bw, H), RECT_BORDER, (0, 0, 0))
        cv.rect((W - bw, 0, W, H), RECT_BORDER, (0, 0, 0))

    return _finish(rng, rgb, lab, st["bright"])


def _windows(cv: _Canvas, rng: np.random.Generator, quad: list[tuple[float, float]], col: np.ndarray) -> None:
    """A perspective grid of windows inside a facade quad (labelled building)."""
    (x0, yt0), (x1, yt1), (_, yb1), (_, yb0) = quad
    if abs(x1 - x0) < 6:
        return
    nu, nv = int(rng.integers(3, 9)), int(rng.integers(4, 12))
    wc = col * rng.uniform(0.35, 0.6) if rng.random() < 0.8 else col * 1.4
    fu, fv = rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.6)

    def at(u: float, v: float) -> tuple[float, float]:
        # bilinear position on the quad: u along the street, v from the top (0) to the bottom (1)
        yt, yb = yt0 + (yt1 - yt0) * u, yb0 + (yb1 - yb0) * u
        return x0 + (x1 - x0) * u, yt + (yb - yt) * (0.15 + 0.75 * v)

    for i in range(nu):
        for j in range(nv):
            ua, ub = (i + (1 - fu) / 2) / nu, (i + (1 + fu) / 2) / nu
            va, vb = (j + (1 - fv) / 2) / nv, (j + (1 + fv) / 2) / nv
            cv.poly([at(ua, va), at(ub, va), at(ub, vb), at(ua, vb)], BUILDING, wc)


def _car(cv: _Canvas, rng: np.random.Generator, x: float, yg: float, s: float, side: bool) -> None:
    """A car standing on row ``yg`` centred at ``x``; ``s`` pixels per metre at that row."""
    if s < 1.0:
        return
    U = rng.uniform
    palette = [(235, 235, 235), (30, 30, 35), (160, 160, 165), (150, 20, 25), (30, 50, 130), (90, 95, 100)]
    body = np.array(palette[int(rng.integers(len(palette)))], dtype=float) * U(0.8, 1.15) + U(-15, 15, 3)
    glass = np.array([U(30, 70), U(40, 80), U(50, 95)])
    length = (U(3.8, 4.8) if side else U(1.7, 1.9)) * s
    h = U(1.4, 1.6) * s
    x0, x1 = x - length / 2, x + length / 2
    yb = yg - 0.15 * s
    cv.rect((x0, yb - 0.55 * h, x1, yb), CAR, body)  # lower body
    if side:
        cv.poly(
            [
                (x0 + 0.2 * length, yb - 0.55 * h),
                (x0 + 0.32 * length, yb - h),
                (x1 - 0.3 * length, yb - h),
                (x1 - 0.12 * length, yb - 0.55 * h),
            ],
            CAR,
            body,
        )
        cv.poly(
            [
                (x0 + 0.25 * length, yb - 0.58 * h),
                (x0 + 0.34 * length, yb - 0.93 * h),
                (x1 - 0.32 * length, yb - 0.93 * h),
                (x1 - 0.16 * length, yb - 0.58 * h),
            ],
            CAR,
            glass,
        )
        r = 0.33 * s
        for wx in (x0 + 0.2 * length, x1 - 0.2 * length):
            cv.ellipse((wx - r, yg - 2 * r, wx + r, yg), CAR, (20, 20, 20))
    else:
        cv.poly(
            [
                (x0 + 0.1 * length, yb - 0.55 * h),
                (x0 + 0.2 * length, yb - h),
                (x1 - 0.2 * length, yb - h),
                (x1 - 0.1 * length, yb - 0.55 * h),
            ],
            CAR,
            body,
        )
        cv.poly(
            [
                (x0 + 0.16 * length, yb - 0.6 * h),
                (x0 + 0.24 * length, yb - 0.92 * h),
                (x1 - 0.24 * length, yb - 0.92 * h),
                (x1 - 0.16 * length, yb - 0.6 * h),
            ],
            CAR,
            glass,
        )
        lw, lh = 0.15 * length, 0.1 * h
        light = (U(150, 230), 20, 20) if rng.random() < 0.7 else (230, 230, 200)
        cv.rect((x0 + 0.04 * length, yb - 0.45 * h, x0 + 0.04 * length + lw, yb - 0.45 * h + lh), CAR, light)
        cv.rect((x1 - 0.04 * length - lw, yb - 0.45 * h, x1 - 0.04 * length, yb - 0.45 * h + lh), CAR, light)
        cv.rect((x0 + 0.05 * length, yb, x0 + 0.2 * length, yg), CAR, (20, 20, 20))  # tyres
        cv.rect((x1 - 0.2 * length, yb, x1 - 0.05 * length, yg), CAR, (20, 20, 20))


def _person(cv: _Canvas, rng: np.random.Generator, x: float, yg: float, s: float) -> None:
    """A standing or walking pedestrian, feet on row ``yg``."""
    if s < 1.5:
        return
    U = rng.uniform
    h = U(1.55, 1.9) * s
    skin = np.array([U(120, 235), U(80, 190), U(60, 160)])
    shirt, trousers = U(10, 240, 3), U(10, 160, 3)
    w = 0.42 * h * U(0.45, 0.6)
    stride = U(0.0, 0.12) * h
    hip, shoulder = yg - 0.48 * h, yg - 0.82 * h
    cv.poly(
        [
            (x - w * 0.35, hip),
            (x - w * 0.05, hip),
            (x - stride / 2 + w * 0.1, yg),
            (x - stride / 2 - w * 0.2, yg),
        ],
        PERSON,
        trousers,
    )
    cv.poly(
        [
            (x + w * 0.05, hip),
            (x + w * 0.35, hip),
            (x + stride / 2 + w * 0.2, yg),
            (x + stride / 2 - w * 0.1, yg),
        ],
        PERSON,
        trousers * 0.9,
    )
    cv.rect((x - w / 2, shoulder, x + w / 2, hip + 0.03 * h), PERSON, shirt)
    cv.rect((x - w / 2 - 0.09 * w * 2, shoulder, x - w / 2, hip), PERSON, shirt * 0.85)
    cv.rect((x + w / 2, shoulder, x + w / 2 + 0.09 * w * 2, hip), PERSON, shirt * 0.85)
    r = 0.065 * h
    cv.ellipse((x - r, shoulder - 2.1 * r, x + r, shoulder - 0.05 * r), PERSON, skin)
    if rng.random() < 0.6:
        cv.ellipse((x - r, shoulder - 2.2 * r, x + r, shoulder - 1.2 * r), PERSON, U(10, 120, 3))  # hair


def _pole(cv: _Canvas, rng: np.random.Generator, x: float, yg: float, s: float) -> None:
    """A pole carrying a traffic sign (or a traffic light), standing on row ``yg``."""
    if s < 1.0:
        return
    U = rng.uniform
    h, w = U(3.0, 4.5) * s, max(1.0, U(0.1, 0.18) * s)
    grey = np.full(3, U(90, 170))
    cv.rect((x - w / 2, yg - h, x + w / 2, yg), POLE, grey)
    top = yg - h
    if rng.random() < 0.25:  # traffic light housing with three lamps
        bw, bh = 0.35 * s, 0.9 * s
        cv.rect((x - bw / 2, top - bh, x + bw / 2, top), LIGHT, (25, 25, 25))
        lit = int(rng.integers(3))
        for k, c in enumerate([(220, 30, 30), (230, 180, 20), (30, 200, 80)]):
            cy, r = top - bh + (k + 0.5) * bh / 3, 0.12 * s
            cv.ellipse((x - r, cy - r, x + r, cy + r), LIGHT, c if k == lit else (60, 60, 60))
        return
    r = U(0.3, 0.45) * s
    cy = top - r
    kind = int(rng.integers(3))
    if kind == 0:  # round prohibition sign: red ring, white disc
        cv.ellipse((x - r, cy - r, x + r, cy + r), SIGN, (200, 25, 30))
        cv.ellipse((x - 0.7 * r, cy - 0.7 * r, x + 0.7 * r, cy + 0.7 * r), SIGN, (235, 235, 235))
    elif kind == 1:  # warning triangle
        cv.poly([(x, cy - r), (x + r, cy + 0.8 * r), (x - r, cy + 0.8 * r)], SIGN, (200, 25, 30))
        cv.poly(
            [(x, cy - 0.45 * r), (x + 0.55 * r, cy + 0.55 * r), (x - 0.55 * r, cy + 0.55 * r)],
            SIGN,
            (235, 235, 225),
        )
    else:  # blue information square
        cv.rect((x - r, cy - r, x + r, cy + r), SIGN, (30, 70, U(150, 210)))
        cv.rect((x - 0.4 * r, cy - 0.5 * r, x + 0.4 * r, cy + 0.5 * r), SIGN, (230, 230, 230))


def _finish(
    rng: np.random.Generator, rgb: Image.Image, lab: Image.Image, bright: float
) -> tuple[np.ndarray, np.ndarray]:
    """Blur a little, add per-class texture, smooth illumination and sensor noise."""
    H, W = lab.size[1], lab.size[0]
    rgb = rgb.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 0.9))))
    img = np.asarray(rgb, dtype=np.float32)
    labels = np.asarray(lab)
    # texture at half resolution (2x2 grain) to look less like white noise
    grain = rng.standard_normal(((H + 1) // 2, (W + 1) // 2), dtype=np.float32)
    grain = grain.repeat(2, 0).repeat(2, 1)[:H, :W]
    img *= (1.0 + _TEXTURE[labels] * grain)[..., None]
    # low-frequency illumination (shadows, vignetting) from a coarse random grid
    field = rng.uniform(0.8, 1.2, size=(3, 5)).astype(np.float32)
    field = np.asarray(Image.fromarray(field, mode="F").resize((W, H), Image.BILINEAR))
    img *= (field * bright * rng.uniform(0.85, 1.15))[..., None]
    img += rng.normal(0, rng.uniform(2, 7), size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8), labels.copy()


# ----------------------------------------------------------------------------- writing to disk
def _write_one(
    root: Path, split: str, i: int, size: tuple[int, int], seed: int, cities: Sequence[str], write_color: bool
) -> None:
    city = cities[i % len(cities)]
    stem = f"{city}_{i // len(cities):06d}_{FRAME:06d}"
    rng = np.random.default_rng([seed, {"train": 0, "val": 1}[split], i])
    img, lab = render_scene(rng, size[0], size[1], _city_style(city, seed))
    img_dir = root / "leftImg8bit" / split / city
    gt_dir = root / "gtFine" / split / city
    img_dir.mkdir(parents=True, exist_ok=True)
    gt_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img, "RGB").save(img_dir / f"{stem}_leftImg8bit.png")
    Image.fromarray(lab, "L").save(gt_dir / f"{stem}_gtFine_labelIds.png")
    if write_color:
        Image.fromarray(_COLOR_LUT[lab], "RGB").save(gt_dir / f"{stem}_gtFine_color.png")


def _params(
    num_train: int, num_val: int, size: Sequence[int], seed: int, write_color: bool
) -> dict[str, Any]:
    return {
        "generator": "dense.data.shapes_cityscapes",
        "version": GENERATOR_VERSION,
        "num_train": int(num_train),
        "num_val": int(num_val),
        "size": [int(size[0]), int(size[1])],
        "seed": int(seed),
        "write_color": bool(write_color),
        "train_cities": list(TRAIN_CITIES),
        "val_cities": list(VAL_CITIES),
    }


def generate_shapes_cityscapes(
    root: str | os.PathLike,
    *,
    num_train: int = 300,
    num_val: int = 50,
    size: Sequence[int] = (256, 512),
    seed: int = 0,
    write_color: bool = True,
    workers: int | None = None,
) -> Path:
    """Write the synthetic dataset under ``root`` (created if needed; files are overwritten).

    Args:
        num_train / num_val: images per split, spread round-robin over the split's cities
            (train: aachen, bochum, bremen, zurich; val: frankfurt, lindau, munster).
        size: ``(H, W)`` of every image; 256x512 is Cityscapes' 1024x2048 at 1/4.
        seed: everything is a function of ``(seed, split, index)``.
        write_color: also write ``*_gtFine_color.png`` (official palette), for viewing.
        workers: processes (default: CPU count); the output does not depend on it.

    Returns:
        ``root``; also writes the manifest ``root/shapes_cityscapes.json``.
    """
    root = Path(root)
    h, w = int(size[0]), int(size[1])
    if h < 32 or w < 32:
        raise ValueError(f"size must be at least 32x32, got {h}x{w}")
    jobs = [("train", i, TRAIN_CITIES) for i in range(num_train)] + [
        ("val", i, VAL_CITIES) for i in range(num_val)
    ]
    workers = min(workers or os.cpu_count() or 1, max(1, len(jobs) // 8))
    if workers <= 1:
        for split, i, cities in jobs:
            _write_one(root, split, i, (h, w), seed, cities, write_color)
    else:
        # each image is a pure function of (seed, split, i): order and process do not matter
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [
                pool.submit(_write_one, root, split, i, (h, w), seed, cities, write_color)
                for split, i, cities in jobs
            ]
            for f in futures:
                f.result()
    (root / MANIFEST).write_text(json.dumps(_params(num_train, num_val, (h, w), seed, write_color), indent=2))
    return root


def _read_manifest(root: Path) -> dict[str, Any] | None:
    """Our manifest's parameters, or None (missing, unreadable, or some other tool's file)."""
    try:
        data = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("generator") != "dense.data.shapes_cityscapes":
        return None
    return data


def ensure_shapes_cityscapes(
    root: str | os.PathLike,
    *,
    num_train: int = 300,
    num_val: int = 50,
    size: Sequence[int] = (256, 512),
    seed: int = 0,
    write_color: bool = True,
    workers: int | None = None,
) -> Path:
    """Generate the dataset once and reuse it: a no-op when ``root``'s manifest has these parameters.

    Otherwise the data is written to a temporary sibling folder and renamed into place, so an
    interrupted run never leaves a half-written dataset that looks complete, and concurrent
    callers (DDP ranks) end with one complete copy. An existing ``root`` generated with other
    parameters is replaced; a non-empty ``root`` without our manifest raises instead of being
    deleted.
    """
    root = Path(root)
    want = _params(num_train, num_val, size, seed, write_color)
    if _read_manifest(root) == want:
        return root
    if root.exists() and (not root.is_dir() or any(root.iterdir())) and _read_manifest(root) is None:
        raise FileExistsError(
            f"{root}: exists, is not empty and has no {MANIFEST} written by this generator; "
            "refusing to overwrite it with synthetic data"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        generate_shapes_cityscapes(
            tmp,
            num_train=num_train,
            num_val=num_val,
            size=size,
            seed=seed,
            write_color=write_color,
            workers=workers,
        )
        if root.exists():
            if _read_manifest(root) == want:  # another process finished first
                return root
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
            os.replace(root, old / "data")
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, root)
        except OSError:
            if _read_manifest(root) != want:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Write synthetic street scenes in the Cityscapes layout.")
    p.add_argument("root")
    p.add_argument("--num-train", type=int, default=300)
    p.add_argument("--num-val", type=int, default=50)
    p.add_argument("--size", type=int, nargs=2, default=(256, 512), metavar=("H", "W"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-color", action="store_true", help="skip the *_gtFine_color.png previews")
    p.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    a = p.parse_args(argv)
    root = ensure_shapes_cityscapes(
        a.root,
        num_train=a.num_train,
        num_val=a.num_val,
        size=a.size,
        seed=a.seed,
        write_color=not a.no_color,
        workers=a.workers,
    )
    print(root)


if __name__ == "__main__":
    main()
