"""Synthetic "shapes" detection data set written to disk in real COCO format.

The generator exists so that the whole detection pipeline (data loading, augmentation, training,
COCO scoring) can run end to end in minutes on a laptop, against files that have exactly the
layout and the quirks of COCO:

- ``root/train2017/*.jpg``, ``root/val2017/*.jpg`` and ``root/annotations/instances_{split}2017.json``;
- non-contiguous category ids (3, 7, 11, 19, 42, 57), so label mapping bugs show up;
- crowd regions (``iscrowd=1``: a cluster of small shapes covered by one box, uncompressed RLE
  segmentation as in COCO), images without any object, objects of 16..160 px (at 320 px) that
  may overlap a little, cluttered and textured backgrounds with distractors that are not objects.

Every image is drawn from its own random stream ``(seed, split, index)``, so an image does not
change when the number of images of a split changes, and the output is byte-identical for equal
parameters. :func:`ensure_shapes_coco` generates once and caches (``manifest.json`` holds the
parameters); concurrent callers are safe because the data set is written to a temporary directory
and renamed into place.

Command line: ``python -m dense.data.shapes_coco ROOT [--num-train N] [--num-val N] [--size S]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import shutil
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = [
    "CATEGORIES",
    "GENERATOR_VERSION",
    "ensure_shapes_coco",
    "generate_shapes_coco",
    "shapes_coco_paths",
]

log = logging.getLogger(__name__)

# Bump when the drawing code changes, so cached data sets are regenerated.
GENERATOR_VERSION = 1

# Deliberately non-contiguous ids (and not starting at 1), as in COCO (1..90 with gaps).
CATEGORIES: list[dict[str, Any]] = [
    {"id": 3, "name": "circle", "supercategory": "shape"},
    {"id": 7, "name": "square", "supercategory": "shape"},
    {"id": 11, "name": "triangle", "supercategory": "shape"},
    {"id": 19, "name": "star", "supercategory": "shape"},
    {"id": 42, "name": "hexagon", "supercategory": "shape"},
    {"id": 57, "name": "cross", "supercategory": "shape"},
]
_SHAPES = [c["name"] for c in CATEGORIES]
_SPLITS = {"train": 0, "val": 1}
_MANIFEST = "manifest.json"


# --------------------------------------------------------------------------------------------------
# Shape geometry: every shape is a polygon [P, 2] (x, y) around the origin with "radius" r.
# --------------------------------------------------------------------------------------------------
def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def _regular(n: int, r: float, phase: float = 0.0) -> np.ndarray:
    t = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _shape_polygon(name: str, size: float, rng: np.random.Generator) -> np.ndarray:
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
        a, b = r, r * rng.uniform(0.28, 0.4)
        pts = np.array(
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
        return _rotate(pts, angle)
    raise ValueError(f"unknown shape {name!r}")


def _polygon_area(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _rle_uncompressed(mask: np.ndarray) -> dict[str, Any]:
    """COCO uncompressed RLE (column-major run lengths, starting with a run of zeros)."""
    flat = np.asarray(mask, dtype=np.uint8).ravel(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0, *counts]
    return {"counts": [int(c) for c in counts], "size": [int(mask.shape[0]), int(mask.shape[1])]}


# --------------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------------
def _random_color(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, size=3))


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """Gradient + low-frequency texture + clutter (lines, irregular blobs) that are not objects."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / np.float32(size)
    theta = rng.uniform(0, 2 * np.pi)
    t = np.cos(theta) * xx + np.sin(theta) * yy
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    c0 = rng.uniform(0, 255, size=3).astype(np.float32)
    c1 = rng.uniform(0, 255, size=3).astype(np.float32)
    img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    # Texture: a few random sinusoids (stripes / ripples) of small amplitude.
    for _ in range(int(rng.integers(1, 4))):
        f = rng.uniform(2, 20)
        phi = rng.uniform(0, 2 * np.pi)
        d = rng.uniform(0, 2 * np.pi)
        wave = np.sin(2 * np.pi * f * (np.cos(d) * xx + np.sin(d) * yy) + phi)
        img += wave[..., None] * rng.uniform(5, 25, size=3).astype(np.float32)
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im, "RGBA")
    scale = size / 320
    # Distractor lines and arcs.
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
    # Irregular blobs: random radii polygons, semi-transparent; they never match a class shape.
    for _ in range(int(rng.integers(1, 6))):
        n = int(rng.integers(7, 14))
        radii = rng.uniform(0.35, 1.0, size=n) * rng.uniform(10, 60) * scale
        t = np.sort(rng.uniform(0, 2 * np.pi, size=n))
        cx, cy = rng.uniform(0, size, size=2)
        pts = [(cx + r * math.cos(a), cy + r * math.sin(a)) for r, a in zip(radii, t)]
        draw.polygon(pts, fill=(*_random_color(rng), int(rng.integers(60, 180))))
    if rng.random() < 0.5:
        im = im.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.5, 2.0))))
    return im


def _overlap_ok(box: np.ndarray, boxes: list[np.ndarray], max_cover: float) -> bool:
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


def _draw_shape(draw: ImageDraw.ImageDraw, pts: np.ndarray, rng: np.random.Generator, scale: float) -> None:
    fill = _random_color(rng)
    poly = [tuple(p) for p in pts.tolist()]
    draw.polygon(poly, fill=fill)
    if rng.random() < 0.4:  # outline in another colour: shapes differ in appearance, not just colour
        draw.line([*poly, poly[0]], fill=_random_color(rng), width=max(1, int(rng.integers(1, 4) * scale)))


def _render_image(
    rng: np.random.Generator, size: int, *, empty: bool, crowd: bool, max_objects: int
) -> tuple[Image.Image, list[dict[str, Any]]]:
    """Draw one image. Returns the RGB image and its annotations (without ids)."""
    im = _background(rng, size)
    draw = ImageDraw.Draw(im)
    scale = size / 320
    anns: list[dict[str, Any]] = []
    placed: list[np.ndarray] = []

    if crowd:
        # A crowd: a tight cluster of small same-class shapes covered by one iscrowd=1 box.
        name = _SHAPES[int(rng.integers(len(_SHAPES)))]
        region = rng.uniform(60, 120) * scale
        x0, y0 = rng.uniform(2, size - region - 2, size=2)
        mask_im = Image.new("L", (size, size), 0)
        mdraw = ImageDraw.Draw(mask_im)
        fill = _random_color(rng)
        for _ in range(int(rng.integers(8, 20))):
            s = rng.uniform(6, 13) * scale
            cx = rng.uniform(x0 + s / 2, x0 + region - s / 2)
            cy = rng.uniform(y0 + s / 2, y0 + region - s / 2)
            pts = _shape_polygon(name, s, rng) + (cx, cy)
            poly = [tuple(p) for p in pts.tolist()]
            draw.polygon(poly, fill=fill)
            mdraw.polygon(poly, fill=1)
        mask = np.asarray(mask_im, dtype=np.uint8)
        ys, xs = np.nonzero(mask)
        box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=float)
        anns.append(
            {
                "category_id": CATEGORIES[_SHAPES.index(name)]["id"],
                "bbox_xyxy": box,
                "area": float(mask.sum()),
                "iscrowd": 1,
                "segmentation": _rle_uncompressed(mask),
            }
        )
        placed.append(box)

    if not empty:
        # 1..max_objects objects, mean about 4: learnable but not trivial.
        n = int(np.clip(rng.poisson(3.6) + 1, 1, max_objects))
        lo, hi = 16 * scale, 160 * scale
        for _ in range(n):
            for _attempt in range(30):
                name = _SHAPES[int(rng.integers(len(_SHAPES)))]
                # Log-uniform sizes: as many small objects as large ones.
                s = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
                pts = _shape_polygon(name, s, rng)
                # Scale so that the box's longer side is exactly s (the drawn extent depends on the
                # shape and its rotation).
                pts *= s / float((pts.max(0) - pts.min(0)).max())
                mn, mx = pts.min(0), pts.max(0)
                w, h = mx - mn
                if w >= size - 2 or h >= size - 2:
                    continue
                cx = rng.uniform(1 - mn[0], size - 1 - mx[0])
                cy = rng.uniform(1 - mn[1], size - 1 - mx[1])
                pts = pts + (cx, cy)
                box = np.array([*pts.min(0), *pts.max(0)])
                if not _overlap_ok(box, placed, max_cover=0.25):
                    continue
                _draw_shape(draw, pts, rng, scale)
                placed.append(box)
                anns.append(
                    {
                        "category_id": CATEGORIES[_SHAPES.index(name)]["id"],
                        "bbox_xyxy": box,
                        "area": _polygon_area(pts),
                        "iscrowd": 0,
                        "segmentation": [[round(float(v), 2) for v in pts.ravel()]],
                    }
                )
                break

    # Sensor-like noise over everything (objects too), so flat colours are not a give-away.
    arr = np.asarray(im, dtype=np.float32)
    arr += rng.standard_normal(size=arr.shape, dtype=np.float32) * np.float32(rng.uniform(2, 10))
    im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return im, anns


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------
def _special_indices(n: int, fraction: float, rng: np.random.Generator, exclude: set[int]) -> set[int]:
    """A fixed number (round(fraction * n), at least 1 when fraction > 0 and n >= 10) of indices."""
    if fraction <= 0 or n == 0:
        return set()
    k = int(round(fraction * n))
    if k == 0 and n >= 10:
        k = 1
    candidates = [i for i in rng.permutation(n).tolist() if i not in exclude]
    return set(candidates[:k])


def _render_and_save(
    job: tuple[Path, tuple[int, int, int], int, bool, bool], *, max_objects: int, jpeg_quality: int
) -> list[dict[str, Any]]:
    """Draw one image from its own random stream, write it, return its annotations."""
    path, stream, size, empty, crowd = job
    im, anns = _render_image(
        np.random.default_rng(list(stream)), size, empty=empty, crowd=crowd, max_objects=max_objects
    )
    im.save(path, quality=jpeg_quality)
    return anns


def _write_split(
    out: Path,
    split: str,
    n: int,
    *,
    size: int,
    seed: int,
    empty_fraction: float,
    crowd_fraction: float,
    max_objects: int,
    jpeg_quality: int,
    workers: int,
) -> dict[str, Any]:
    img_dir = out / f"{split}2017"
    img_dir.mkdir(parents=True, exist_ok=True)
    split_rng = np.random.default_rng([seed, _SPLITS[split], 1_000_003])
    empty = _special_indices(n, empty_fraction, split_rng, set())
    crowd = _special_indices(n, crowd_fraction, split_rng, empty)
    images, annotations = [], []
    # Image ids do not start at 0 and are not the list index: eval must use the ids in the file.
    base_id = 100_000 * (1 + _SPLITS[split])
    ann_id = base_id * 10
    jobs = [
        (img_dir / f"{base_id + i:012d}.jpg", (seed, _SPLITS[split], i), size, i in empty, i in crowd)
        for i in range(n)
    ]
    render = functools.partial(_render_and_save, max_objects=max_objects, jpeg_quality=jpeg_quality)
    workers = min(workers, max(1, n // 16))
    if workers > 1:
        # Each image is a pure function of its (seed, split, index) stream: the output is the same
        # with any number of processes (about 2x faster generation on 2 cores).
        with ProcessPoolExecutor(max_workers=workers) as pool:
            rendered = list(pool.map(render, jobs, chunksize=16))
    else:
        rendered = [render(job) for job in jobs]
    for i, anns in enumerate(rendered):
        image_id = base_id + i
        images.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": size, "height": size})
        for a in anns:
            x0, y0, x1, y1 = (float(v) for v in a["bbox_xyxy"])
            ann_id += 1
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": a["category_id"],
                    "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                    "area": round(a["area"], 2),
                    "iscrowd": a["iscrowd"],
                    "segmentation": a["segmentation"],
                }
            )
    dataset = {
        "info": {
            "description": "dense synthetic shapes (COCO format)",
            "version": str(GENERATOR_VERSION),
            "year": 2017,
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [dict(c) for c in CATEGORIES],
    }
    ann_path = out / "annotations" / f"instances_{split}2017.json"
    ann_path.parent.mkdir(parents=True, exist_ok=True)
    ann_path.write_text(json.dumps(dataset))
    return {"images": len(images), "annotations": len(annotations)}


def shapes_coco_paths(root: str | os.PathLike) -> dict[str, Path]:
    """The paths of a shapes data set under ``root`` (whether or not it exists yet)."""
    root = Path(root)
    return {
        "root": root,
        "train_images": root / "train2017",
        "val_images": root / "val2017",
        "train_annotations": root / "annotations" / "instances_train2017.json",
        "val_annotations": root / "annotations" / "instances_val2017.json",
        "manifest": root / _MANIFEST,
    }


def _params(
    num_train: int,
    num_val: int,
    image_size: int,
    seed: int,
    empty_fraction: float,
    crowd_fraction: float,
    max_objects: int,
    jpeg_quality: int,
) -> dict[str, Any]:
    if image_size < 64:
        raise ValueError(f"image_size must be >= 64, got {image_size}")
    if num_train < 0 or num_val < 0:
        raise ValueError(f"num_train / num_val must be >= 0, got {num_train} / {num_val}")
    return {
        "generator_version": GENERATOR_VERSION,
        "num_train": int(num_train),
        "num_val": int(num_val),
        "image_size": int(image_size),
        "seed": int(seed),
        "empty_fraction": float(empty_fraction),
        "crowd_fraction": float(crowd_fraction),
        "max_objects": int(max_objects),
        "jpeg_quality": int(jpeg_quality),
    }


def generate_shapes_coco(
    root: str | os.PathLike,
    *,
    num_train: int = 1000,
    num_val: int = 200,
    image_size: int = 320,
    seed: int = 0,
    empty_fraction: float = 0.05,
    crowd_fraction: float = 0.08,
    max_objects: int = 10,
    jpeg_quality: int = 92,
    workers: int | None = None,
) -> dict[str, Path]:
    """Write a shapes data set in COCO layout under ``root`` (created; existing files overwritten).

    Args:
        root: output directory.
        num_train / num_val: number of images per split. The defaults (1000 / 200 at 320x320, about
            4.4 objects per image) train an SSDLite to a useful mAP in minutes on 2 CPU cores.
        image_size: square image side in px; object sizes scale with it (16..160 px at 320).
        seed: base seed; image ``i`` of a split is drawn from ``(seed, split, i)``.
        empty_fraction: fraction of images with no object at all (exact count per split).
        crowd_fraction: fraction of images holding one crowd region (``iscrowd=1``).
        max_objects: maximum number of (non-crowd) objects per image.
        jpeg_quality: JPEG quality of the written images.
        workers: processes (default: CPU count); the output does not depend on it.

    Returns:
        dict of paths: ``root``, ``train_images``, ``val_images``, ``train_annotations``,
        ``val_annotations``, ``manifest`` (``manifest.json`` records the parameters).
    """
    params = _params(
        num_train, num_val, image_size, seed, empty_fraction, crowd_fraction, max_objects, jpeg_quality
    )
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    counts = {}
    for split, n in (("train", num_train), ("val", num_val)):
        counts[split] = _write_split(
            root,
            split,
            n,
            size=image_size,
            seed=seed,
            empty_fraction=empty_fraction,
            crowd_fraction=crowd_fraction,
            max_objects=max_objects,
            jpeg_quality=jpeg_quality,
            workers=int(workers or os.cpu_count() or 1),
        )
    paths = shapes_coco_paths(root)
    # The manifest is written last: its presence means "complete".
    paths["manifest"].write_text(json.dumps({"params": params, "counts": counts}, indent=2, sort_keys=True))
    log.info("generated shapes COCO data set in %s (%s) in %.1fs", root, counts, time.perf_counter() - t0)
    return paths


def _read_params(root: Path) -> dict[str, Any] | None:
    try:
        return json.loads((root / _MANIFEST).read_text())["params"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def ensure_shapes_coco(
    root: str | os.PathLike,
    *,
    num_train: int = 1000,
    num_val: int = 200,
    image_size: int = 320,
    seed: int = 0,
    empty_fraction: float = 0.05,
    crowd_fraction: float = 0.08,
    max_objects: int = 10,
    jpeg_quality: int = 92,
    workers: int | None = None,
) -> dict[str, Path]:
    """Return the paths of a shapes data set at ``root``, generating it only when needed.

    The data set is reused when ``root/manifest.json`` records the same parameters; otherwise it is
    generated into a temporary sibling directory and renamed to ``root`` (atomic on one file
    system), so concurrent callers (DDP ranks, DataLoader workers, parallel tests) never see a
    half-written data set. A previous data set with other parameters is replaced; a non-empty
    ``root`` without a manifest is never deleted (error instead). Arguments as in
    :func:`generate_shapes_coco`.
    """
    params = _params(
        num_train, num_val, image_size, seed, empty_fraction, crowd_fraction, max_objects, jpeg_quality
    )
    root = Path(root).absolute()
    if _read_params(root) == params:
        return shapes_coco_paths(root)
    if root.exists() and _read_params(root) is None and any(root.iterdir()):
        raise FileExistsError(
            f"{root} exists, is not empty and has no {_MANIFEST}: refusing to overwrite it with a "
            "generated shapes data set; choose another directory or remove it"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        kwargs = {k: v for k, v in params.items() if k != "generator_version"}
        generate_shapes_coco(tmp, **kwargs, workers=workers)
        for _ in range(10):
            current = _read_params(root)
            if current == params:  # another process won the race with the same parameters
                break
            if root.exists():
                # Stale (other parameters) or an empty directory: move it aside atomically, then delete.
                stale = root.parent / f".{root.name}.stale-{uuid.uuid4().hex[:8]}"
                try:
                    os.rename(root, stale)
                except FileNotFoundError:
                    pass  # someone else moved it first
                else:
                    shutil.rmtree(stale, ignore_errors=True)
            try:
                os.rename(tmp, root)
                break
            except OSError:  # root re-appeared in between (another process): look again
                time.sleep(0.05)
        else:
            raise RuntimeError(f"could not install the generated data set at {root} (concurrent writers?)")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if _read_params(root) != params:
        raise RuntimeError(f"{root} does not hold the requested shapes data set after generation")
    return shapes_coco_paths(root)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Generate the synthetic shapes data set in COCO format.")
    p.add_argument("root")
    p.add_argument("--num-train", type=int, default=1000)
    p.add_argument("--num-val", type=int, default=200)
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    paths = ensure_shapes_coco(
        a.root, num_train=a.num_train, num_val=a.num_val, image_size=a.size, seed=a.seed
    )
    for k, v in paths.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
