"""The objects of the synthetic street scenes: windows, cars, persons, poles, trees, clutter.

Each function draws one object with its own random draws from ``rng`` onto a
:class:`~dense.data.street_canvas.Canvas`; objects on the ground stand on row ``yg`` (their
lowest pixel row) at column ``x``, and ``s`` is the scale there in pixels per metre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dense.data.street_canvas import (
    BUILDING,
    CAR,
    LIGHT,
    PERSON,
    POLE,
    SIGN,
    STATIC,
    VEGETATION,
    Canvas,
)

__all__ = ["car", "clutter", "person", "pole", "tree", "windows"]

_TYRE = (20, 20, 20)


def windows(cv: Canvas, rng: np.random.Generator, quad: list[tuple[float, float]], col: np.ndarray) -> None:
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


@dataclass(frozen=True)
class _CarFrame:
    """Where a car is drawn: ends ``x0`` < ``x1`` (``length`` px apart), ground row ``yg``, bottom
    of the body ``yb``, body height ``h`` px and ``s`` px per metre."""

    x0: float
    x1: float
    yg: float
    yb: float
    length: float
    h: float
    s: float

    def trapezoid(
        self, cv: Canvas, insets: tuple[float, float, float, float], v: tuple[float, float], col
    ) -> None:
        """The cabin's outline above the lower body: corners inset from the ends by ``insets``
        (bottom left, top left, top right, bottom right; fractions of the length), at heights
        ``v`` (bottom, top; fractions of ``h``) above ``yb``."""
        x0, x1, yb, length, h = self.x0, self.x1, self.yb, self.length, self.h
        cv.poly(
            [
                (x0 + insets[0] * length, yb - v[0] * h),
                (x0 + insets[1] * length, yb - v[1] * h),
                (x1 - insets[2] * length, yb - v[1] * h),
                (x1 - insets[3] * length, yb - v[0] * h),
            ],
            CAR,
            col,
        )


def _car_side(cv: Canvas, f: _CarFrame, body: np.ndarray, glass: np.ndarray) -> None:
    """Side view: roof, side windows and two wheels."""
    f.trapezoid(cv, (0.2, 0.32, 0.3, 0.12), (0.55, 1.0), body)
    f.trapezoid(cv, (0.25, 0.34, 0.32, 0.16), (0.58, 0.93), glass)
    r = 0.33 * f.s
    for wx in (f.x0 + 0.2 * f.length, f.x1 - 0.2 * f.length):
        cv.ellipse((wx - r, f.yg - 2 * r, wx + r, f.yg), CAR, _TYRE)


def _car_rear(
    cv: Canvas, rng: np.random.Generator, f: _CarFrame, body: np.ndarray, glass: np.ndarray
) -> None:
    """Rear view: roof, rear window, two lights and the tyres below the body."""
    f.trapezoid(cv, (0.1, 0.2, 0.2, 0.1), (0.55, 1.0), body)
    f.trapezoid(cv, (0.16, 0.24, 0.24, 0.16), (0.6, 0.92), glass)
    x0, x1, yg, yb, length, h = f.x0, f.x1, f.yg, f.yb, f.length, f.h
    lw, lh = 0.15 * length, 0.1 * h
    light = (rng.uniform(150, 230), 20, 20) if rng.random() < 0.7 else (230, 230, 200)
    cv.rect((x0 + 0.04 * length, yb - 0.45 * h, x0 + 0.04 * length + lw, yb - 0.45 * h + lh), CAR, light)
    cv.rect((x1 - 0.04 * length - lw, yb - 0.45 * h, x1 - 0.04 * length, yb - 0.45 * h + lh), CAR, light)
    cv.rect((x0 + 0.05 * length, yb, x0 + 0.2 * length, yg), CAR, _TYRE)
    cv.rect((x1 - 0.2 * length, yb, x1 - 0.05 * length, yg), CAR, _TYRE)


def car(cv: Canvas, rng: np.random.Generator, x: float, yg: float, s: float, side: bool) -> None:
    """A car centred at ``x``, seen from the side (parked along the kerb) or from behind."""
    if s < 1.0:
        return
    U = rng.uniform
    palette = [(235, 235, 235), (30, 30, 35), (160, 160, 165), (150, 20, 25), (30, 50, 130), (90, 95, 100)]
    body = np.array(palette[int(rng.integers(len(palette)))], dtype=float) * U(0.8, 1.15) + U(-15, 15, 3)
    glass = np.array([U(30, 70), U(40, 80), U(50, 95)])
    length = (U(3.8, 4.8) if side else U(1.7, 1.9)) * s
    h = U(1.4, 1.6) * s
    f = _CarFrame(x0=x - length / 2, x1=x + length / 2, yg=yg, yb=yg - 0.15 * s, length=length, h=h, s=s)
    cv.rect((f.x0, f.yb - 0.55 * h, f.x1, f.yb), CAR, body)  # lower body
    if side:
        _car_side(cv, f, body, glass)
    else:
        _car_rear(cv, rng, f, body, glass)


def person(cv: Canvas, rng: np.random.Generator, x: float, yg: float, s: float) -> None:
    """A standing or walking pedestrian."""
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


def _traffic_light(cv: Canvas, rng: np.random.Generator, x: float, top: float, s: float) -> None:
    """A housing with three lamps, one of them lit, on top of a pole."""
    bw, bh = 0.35 * s, 0.9 * s
    cv.rect((x - bw / 2, top - bh, x + bw / 2, top), LIGHT, (25, 25, 25))
    lit = int(rng.integers(3))
    for k, c in enumerate([(220, 30, 30), (230, 180, 20), (30, 200, 80)]):
        cy, r = top - bh + (k + 0.5) * bh / 3, 0.12 * s
        cv.ellipse((x - r, cy - r, x + r, cy + r), LIGHT, c if k == lit else (60, 60, 60))


def _traffic_sign(cv: Canvas, rng: np.random.Generator, x: float, top: float, s: float) -> None:
    """A round, triangular or square sign on top of a pole."""
    U = rng.uniform
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


def pole(cv: Canvas, rng: np.random.Generator, x: float, yg: float, s: float) -> None:
    """A pole carrying a traffic sign (or, one in four, a traffic light)."""
    if s < 1.0:
        return
    U = rng.uniform
    h, w = U(3.0, 4.5) * s, max(1.0, U(0.1, 0.18) * s)
    grey = np.full(3, U(90, 170))
    cv.rect((x - w / 2, yg - h, x + w / 2, yg), POLE, grey)
    if rng.random() < 0.25:
        _traffic_light(cv, rng, x, yg - h, s)
    else:
        _traffic_sign(cv, rng, x, yg - h, s)


def tree(cv: Canvas, rng: np.random.Generator, xc: float, yg: float, s: float) -> None:
    """A trunk and a crown of overlapping ellipses, all labelled vegetation."""
    U = rng.uniform
    trunk_h, trunk_w = U(1.5, 3.0) * s, max(1.0, 0.3 * s)
    bark = (U(50, 90), U(35, 60), U(20, 40))
    cv.rect((xc - trunk_w / 2, yg - trunk_h, xc + trunk_w / 2, yg), VEGETATION, bark)
    r = U(1.2, 2.8) * s
    cy = yg - trunk_h - r * 0.6
    base = np.array([U(30, 90), U(70, 140), U(20, 60)])
    for _ in range(int(rng.integers(3, 7))):
        ox, oy, rr = U(-0.8, 0.8) * r, U(-0.6, 0.5) * r, r * U(0.5, 0.9)
        cv.ellipse((xc + ox - rr, cy + oy - rr, xc + ox + rr, cy + oy + rr), VEGETATION, base * U(0.7, 1.2))


def clutter(cv: Canvas, rng: np.random.Generator, x: float, yg: float, w: float, h: float) -> None:
    """A ``w`` x ``h`` px box (bin, crate): void 'static', which the evaluation ignores."""
    cv.rect((x - w / 2, yg - h, x + w / 2, yg), STATIC, rng.uniform(20, 200, 3))
