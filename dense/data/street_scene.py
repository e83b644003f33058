"""One synthetic street scene in perspective: image and Cityscapes labelIds.

:func:`render_scene` draws, in this order (the order of the random draws is part of the output):
camera, sky, far skyline, facades on both sides, ground (sidewalks, road, markings), objects on
the ground from far to near, void regions, then blur, texture, illumination and noise.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from dense.data.street_canvas import (
    BUILDING,
    EGO,
    RECT_BORDER,
    ROAD,
    SIDEWALK,
    SKY,
    TERRAIN,
    UNLABELED,
    VEGETATION,
    Canvas,
)
from dense.data.street_objects import car, clutter, person, pole, tree, windows
from dense.data.synthetic import to_uint8

__all__ = ["StreetGeometry", "city_style", "render_scene"]

# Multiplicative per-pixel texture amplitude by labelId (foliage grainy, sky smooth).
_TEXTURE = np.full(256, 0.04, dtype=np.float32)
_TEXTURE[[VEGETATION, TERRAIN, ROAD, SIDEWALK, BUILDING, SKY]] = [0.28, 0.18, 0.07, 0.08, 0.05, 0.01]

# An object on the ground: its row (drawing order, far to near) and how to draw it.
_Placed = tuple[float, Callable[[], None]]


def city_style(city: str, seed: int) -> dict[str, Any]:
    """The look of a city: facade tint, road grey, brick sidewalks, brightness, object rates."""
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


@dataclass(frozen=True)
class StreetGeometry:
    """Camera and street layout of a ``height`` x ``width`` px scene.

    The street runs straight from the camera to the vanishing point ``(vx, hy)`` on the horizon
    row ``hy``. ``xr_l`` / ``xr_r`` are the road's edges and ``xs_l`` / ``xs_r`` the sidewalks'
    outer edges, as columns on the bottom row; the road is ``road_w`` px (8 m) wide there.
    """

    height: int
    width: int
    hy: float
    vx: float
    road_w: float
    xr_l: float
    xr_r: float
    xs_l: float
    xs_r: float
    cam_h: float  # metres -> pixels at row y is (y - hy) / cam_h

    def ppm(self, y: float) -> float:
        """Pixels per metre on the ground at row ``y``."""
        return max(y - self.hy, 0.0) / self.cam_h

    def x_on(self, xb: float, y: float) -> float:
        """Column at row ``y`` of the line from the vanishing point to ``(xb, height)``."""
        return self.vx + (xb - self.vx) * (y - self.hy) / (self.height - self.hy)

    def row(self, s: float) -> float:
        """The row a fraction ``s`` of the way from the horizon (0) to the bottom (1)."""
        return self.hy + (self.height - self.hy) * s

    def ground_y(self, rng: np.random.Generator, near: float = 1.0) -> float:
        """A random ground row, denser near the horizon (where the ground is smaller)."""
        return self.hy + (self.height - self.hy) * (rng.uniform(0.05, 1.0) ** 0.7) * near + 1

    def sidewalk(self, rng: np.random.Generator) -> tuple[float, float]:
        """(outer, road) edges of the left or the right sidewalk, at random."""
        return (self.xs_l, self.xr_l) if rng.random() < 0.5 else (self.xs_r, self.xr_r)


def _camera(rng: np.random.Generator, H: int, W: int) -> StreetGeometry:
    """Horizon and vanishing point; road and sidewalk edges fixed at the bottom row."""
    U = rng.uniform
    hy = H * U(0.36, 0.5)
    vx = W * U(0.38, 0.62)
    road_w = W * U(1.0, 1.8)
    rc = vx + W * U(-0.2, 0.2)
    xr_l, xr_r = rc - road_w / 2, rc + road_w / 2
    xs_l, xs_r = xr_l - W * U(0.25, 0.8), xr_r + W * U(0.25, 0.8)
    cam_h = 8.0 * (H - hy) / road_w  # the road is 8 m wide
    return StreetGeometry(H, W, hy, vx, road_w, xr_l, xr_r, xs_l, xs_r, cam_h)


def _sky(rng: np.random.Generator, g: StreetGeometry) -> Canvas:
    """A canvas filled with sky: a vertical gradient, clear blue or overcast."""
    U = rng.uniform
    if rng.random() < 0.6:
        top, bot = (
            np.array([U(60, 110), U(110, 160), U(170, 235)]),
            np.array([U(170, 215), U(190, 225), U(215, 250)]),
        )
    else:
        grey = U(150, 215)
        top, bot = np.full(3, grey) + U(-10, 10, 3), np.full(3, grey + U(10, 35))
    t = np.clip(np.arange(g.height, dtype=np.float32) / max(g.hy, 1), 0, 1)[:, None]
    sky = (top[None] * (1 - t) + bot[None] * t)[:, None, :].repeat(g.width, axis=1)
    rgb = Image.fromarray(to_uint8(sky), "RGB")
    return Canvas(rgb, Image.new("L", (g.width, g.height), SKY))


def _facade_color(rng: np.random.Generator, st: dict[str, Any]) -> np.ndarray:
    U = rng.uniform
    if rng.random() < 0.25:  # a house painted its own colour
        return np.full(3, U(70, 230)) + U(-12, 12, 3)
    return np.asarray(st["facade"]) * U(0.7, 1.25) + U(-25, 25, 3)


def _skyline(cv: Canvas, rng: np.random.Generator, g: StreetGeometry, st: dict[str, Any]) -> None:
    """Far buildings and tree tops along the horizon, behind everything else."""
    U = rng.uniform
    W, H, hy = g.width, g.height, g.hy
    x = -5.0
    while x < W:
        w = U(0.03, 0.12) * W
        h = U(0.02, 0.16) * H
        if rng.random() < st["green"] * 0.6:
            cv.ellipse((x, hy - h, x + w * 1.3, hy + h * 0.4), VEGETATION, (U(30, 80), U(70, 120), U(25, 60)))
        else:
            cv.rect((x, hy - h, x + w, hy + 2), BUILDING, _facade_color(rng, st) * 0.9)
        x += w * U(0.6, 1.0)


def _facades(
    cv: Canvas, rng: np.random.Generator, g: StreetGeometry, st: dict[str, Any], xs: float, side: int
) -> None:
    """Facade quads (with windows) or trees between the sidewalk's outer line ``xs`` and the
    vanishing point, on the left (``side`` < 0) or the right; segments shrink with distance."""
    U = rng.uniform
    vx, hy, H = g.vx, g.hy, g.height
    x0 = -0.3 * g.width if side < 0 else 1.3 * g.width
    while abs(vx - x0) > 3:
        x1 = x0 + (vx - x0) * U(0.2, 0.5)
        if abs(vx - x1) < 3:
            x1 = vx
        yb0 = hy + (H - hy) * (vx - x0) / (vx - xs)
        yb1 = hy + (H - hy) * (vx - x1) / (vx - xs)
        if rng.random() < st["green"] * 0.5:  # gap with a tree in front
            yg = (yb0 + yb1) / 2
            tree(cv, rng, (x0 + x1) / 2, yg, g.ppm(yg))
        else:
            hs = U(2.0, 12.0)  # building height in camera heights
            yt0, yt1 = hy - hs * (yb0 - hy), hy - hs * (yb1 - hy)
            col = _facade_color(rng, st)
            quad = [(x0, yt0), (x1, yt1), (x1, yb1 + 1), (x0, yb0 + 1)]
            cv.poly(quad, BUILDING, col)
            windows(cv, rng, quad, col)
        x0 = x1


def _sidewalk(
    cv: Canvas, rng: np.random.Generator, g: StreetGeometry, xs: float, xr: float, walk_col: np.ndarray
) -> None:
    """One sidewalk between its outer line ``xs`` and the road's edge ``xr``, maybe with a terrain
    strip, with paving joints at geometric depth steps."""
    U = rng.uniform
    vx, hy, H = g.vx, g.hy, g.height
    cv.poly([(vx, hy), (xs, H), (xr, H)], SIDEWALK, walk_col * U(0.92, 1.08))
    if rng.random() < 0.4:
        xt = xs + (xr - xs) * U(0.2, 0.5)
        cv.poly([(vx, hy), (xs, H), (xt, H)], TERRAIN, (U(90, 150), U(120, 180), U(50, 100)))
    s = U(0.04, 0.08)
    while s < 1.0:
        y = g.row(s)
        cv.line([(g.x_on(xs, y), y), (g.x_on(xr, y), y)], 1, SIDEWALK, walk_col * 0.8)
        s *= U(1.15, 1.35)


def _lane_markings(cv: Canvas, rng: np.random.Generator, g: StreetGeometry) -> None:
    """A dashed centre line; painted markings are labelled road."""
    U = rng.uniform
    lane_col = np.full(3, U(170, 235))
    xc = (g.xr_l + g.xr_r) / 2 + g.road_w * U(-0.1, 0.1)
    s = U(0.03, 0.06)
    while s < 1.0:
        s2 = min(s * 1.25, 1.0)
        ya, yb = g.row(s), g.row(s2)
        wa, wb = 0.08 * g.ppm(ya), 0.08 * g.ppm(yb)
        xa, xb = g.x_on(xc, ya), g.x_on(xc, yb)
        cv.poly([(xa - wa, ya), (xa + wa, ya), (xb + wb, yb), (xb - wb, yb)], ROAD, lane_col)
        s = s2 * 1.3


def _ground(cv: Canvas, rng: np.random.Generator, g: StreetGeometry, st: dict[str, Any]) -> None:
    """Sidewalks, road, kerbs and lane markings."""
    U = rng.uniform
    road_grey = st["road"] * U(0.85, 1.15)
    road_col = np.array([road_grey, road_grey, road_grey]) + U(-6, 6, 3)
    if st["brick"] and rng.random() < 0.7:
        walk_col = np.array([U(140, 190), U(90, 130), U(80, 110)])
    else:
        walk_col = np.full(3, U(110, 180)) + U(-10, 10, 3)
    for xs, xr in ((g.xs_l, g.xr_l), (g.xs_r, g.xr_r)):
        _sidewalk(cv, rng, g, xs, xr, walk_col)
    vx, hy, H, W = g.vx, g.hy, g.height, g.width
    cv.poly([(vx, hy), (g.xr_l, H), (g.xr_r, H)], ROAD, road_col)
    curb = walk_col * 1.15
    for xr in (g.xr_l, g.xr_r):
        cv.poly([(vx, hy), (xr, H), (xr + (4 if xr < vx else -4) * W / 512, H)], SIDEWALK, curb)
    _lane_markings(cv, rng, g)


def _cars(cv: Canvas, rng: np.random.Generator, g: StreetGeometry, st: dict[str, Any]) -> list[_Placed]:
    out = []
    for _ in range(rng.poisson(st["cars"])):
        yg = g.ground_y(rng, 1.05)
        f = rng.uniform(0.05, 0.95)
        x = g.x_on(g.xr_l, yg) + f * (g.x_on(g.xr_r, yg) - g.x_on(g.xr_l, yg))
        side_view = f < 0.2 or f > 0.8  # parked along the kerb, seen from the side
        out.append((yg, functools.partial(car, cv, rng, x, yg, g.ppm(yg), side_view)))
    return out


def _persons(cv: Canvas, rng: np.random.Generator, g: StreetGeometry, st: dict[str, Any]) -> list[_Placed]:
    out = []
    for _ in range(rng.poisson(st["persons"])):
        yg = g.ground_y(rng)
        xs, xr = g.sidewalk(rng)
        if rng.random() < 0.15:  # crossing the road
            xs, xr = g.xr_l, g.xr_r
        x = g.x_on(xs, yg) + rng.uniform(0.1, 0.9) * (g.x_on(xr, yg) - g.x_on(xs, yg))
        out.append((yg, functools.partial(person, cv, rng, x, yg, g.ppm(yg))))
    return out


def _poles(cv: Canvas, rng: np.random.Generator, g: StreetGeometry, st: dict[str, Any]) -> list[_Placed]:
    out = []
    for _ in range(int(rng.integers(1, 5))):
        yg = g.ground_y(rng)
        xr = g.xr_l if rng.random() < 0.5 else g.xr_r
        x = g.x_on(xr, yg) + (-1 if xr < g.vx else 1) * 0.5 * g.ppm(yg)  # on the kerb
        out.append((yg, functools.partial(pole, cv, rng, x, yg, g.ppm(yg))))
    return out


def _trees(cv: Canvas, rng: np.random.Generator, g: StreetGeometry, st: dict[str, Any]) -> list[_Placed]:
    out = []
    for _ in range(rng.poisson(3 * st["green"])):
        yg = g.ground_y(rng)
        xs, xr = g.sidewalk(rng)
        x = g.x_on(xs, yg) + rng.uniform(0.1, 0.4) * (g.x_on(xr, yg) - g.x_on(xs, yg))
        out.append((yg, functools.partial(tree, cv, rng, x, yg, g.ppm(yg))))
    return out


def _clutter(cv: Canvas, rng: np.random.Generator, g: StreetGeometry, st: dict[str, Any]) -> list[_Placed]:
    U = rng.uniform
    out = []
    for _ in range(rng.poisson(1.0)):
        yg = g.ground_y(rng)
        xs, xr = g.sidewalk(rng)
        x = g.x_on(xs, yg) + U(0.2, 0.8) * (g.x_on(xr, yg) - g.x_on(xs, yg))
        s = g.ppm(yg)
        w, h = U(0.5, 1.0) * s, U(0.7, 1.2) * s
        out.append((yg, functools.partial(clutter, cv, rng, x, yg, w, h)))
    return out


def _objects(cv: Canvas, rng: np.random.Generator, g: StreetGeometry, st: dict[str, Any]) -> None:
    """Place cars, persons, poles, trees and clutter, then draw them far to near (occlusion)."""
    placed: list[_Placed] = []
    for place in (_cars, _persons, _poles, _trees, _clutter):
        placed += place(cv, rng, g, st)
    for _, draw in sorted(placed, key=lambda o: o[0]):
        draw()


def _void_regions(cv: Canvas, rng: np.random.Generator, g: StreetGeometry) -> None:
    """Unlabeled blobs, the ego vehicle's hood, the rectification border: ignored by the metric."""
    U = rng.uniform
    H, W = g.height, g.width
    for _ in range(rng.poisson(0.7)):
        cx, cy, r = U(0, W), U(g.hy * 0.5, H), U(0.01, 0.05) * W
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
    return to_uint8(img), labels.copy()


def render_scene(
    rng: np.random.Generator, height: int, width: int, style: dict[str, Any] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one street scene. Returns (image uint8 [H, W, 3], labelIds uint8 [H, W]).

    ``style`` is a city's look (:func:`city_style`; default: aachen's with seed 0).
    """
    st = style or city_style("aachen", 0)
    g = _camera(rng, height, width)
    cv = _sky(rng, g)
    _skyline(cv, rng, g, st)
    _facades(cv, rng, g, st, g.xs_l, -1)
    _facades(cv, rng, g, st, g.xs_r, +1)
    _ground(cv, rng, g, st)
    _objects(cv, rng, g, st)
    _void_regions(cv, rng, g)
    return _finish(rng, cv.rgb, cv.lab, st["bright"])
