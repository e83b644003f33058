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
``(seed, split, i)``, so the files are byte-identical across runs and machines. The scene is
drawn by :mod:`dense.data.street_scene` (objects in :mod:`dense.data.street_objects`).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from cityscapesscripts.helpers.labels import labels as _CS_LABELS
from PIL import Image

from dense.data.street_scene import city_style, render_scene
from dense.data.synthetic import check_split_sizes, ensure_generated, image_rng, read_json, run_jobs

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
_GENERATOR = "dense.data.shapes_cityscapes"  # in the manifest: tells our folders from others
_IMAGES_PER_WORKER = 8  # fewer is not worth starting a process

_COLOR_LUT = np.zeros((256, 3), dtype=np.uint8)
for _lb in _CS_LABELS:
    if _lb.id >= 0:
        _COLOR_LUT[_lb.id] = _lb.color


def _write_one(
    job: tuple[str, int], *, root: Path, size: tuple[int, int], seed: int, write_color: bool
) -> None:
    """Draw image ``i`` of ``split`` (``job``) from its own random stream and write its files."""
    split, i = job
    cities = TRAIN_CITIES if split == "train" else VAL_CITIES
    city = cities[i % len(cities)]
    stem = f"{city}_{i // len(cities):06d}_{FRAME:06d}"
    img, lab = render_scene(image_rng(seed, split, i), size[0], size[1], city_style(city, seed))
    img_dir = root / "leftImg8bit" / split / city
    gt_dir = root / "gtFine" / split / city
    img_dir.mkdir(parents=True, exist_ok=True)
    gt_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img, "RGB").save(img_dir / f"{stem}_leftImg8bit.png")
    Image.fromarray(lab, "L").save(gt_dir / f"{stem}_gtFine_labelIds.png")
    if write_color:
        Image.fromarray(_COLOR_LUT[lab], "RGB").save(gt_dir / f"{stem}_gtFine_color.png")


# The generator's options and their defaults (the keyword arguments of generate / ensure).
DEFAULTS: dict[str, Any] = dict(num_train=300, num_val=50, size=(256, 512), seed=0, write_color=True)


def _params(options: dict[str, Any]) -> dict[str, Any]:
    """The validated parameters, as the manifest records them."""
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise TypeError(f"unknown shapes_cityscapes option(s) {unknown}; valid: {sorted(DEFAULTS)}")
    p = {**DEFAULTS, **options}
    h, w = int(p["size"][0]), int(p["size"][1])
    if h < 32 or w < 32:
        raise ValueError(f"size must be at least 32x32, got {h}x{w}")
    check_split_sizes(p["num_train"], p["num_val"])
    return {
        "generator": _GENERATOR,
        "version": GENERATOR_VERSION,
        "num_train": int(p["num_train"]),
        "num_val": int(p["num_val"]),
        "size": [h, w],
        "seed": int(p["seed"]),
        "write_color": bool(p["write_color"]),
        "train_cities": list(TRAIN_CITIES),
        "val_cities": list(VAL_CITIES),
    }


def generate_shapes_cityscapes(
    root: str | os.PathLike, *, workers: int | None = None, **options: Any
) -> Path:
    """Write the synthetic dataset under ``root`` (created if needed; files are overwritten).

    Options (`DEFAULTS`):
        num_train / num_val: images per split (300 / 50), spread round-robin over the split's
            cities (train: aachen, bochum, bremen, zurich; val: frankfurt, lindau, munster).
        size: ``(H, W)`` of every image (256x512: Cityscapes' 1024x2048 at 1/4).
        seed: everything is a function of ``(seed, split, index)`` (0).
        write_color: also write ``*_gtFine_color.png`` (official palette), for viewing (True).
    workers: processes (default: CPU count); the output does not depend on it.

    Returns:
        ``root``; also writes the manifest ``root/shapes_cityscapes.json``.
    """
    params = _params(options)
    root = Path(root)
    n_train, n_val, seed = params["num_train"], params["num_val"], params["seed"]
    jobs = [("train", i) for i in range(n_train)] + [("val", i) for i in range(n_val)]
    # each image is a pure function of (seed, split, i): order and process do not matter
    write = functools.partial(
        _write_one, root=root, size=tuple(params["size"]), seed=seed, write_color=params["write_color"]
    )
    run_jobs(write, jobs, workers, _IMAGES_PER_WORKER)
    (root / MANIFEST).write_text(json.dumps(params, indent=2))
    return root


def _read_manifest(root: Path) -> dict[str, Any] | None:
    """Our manifest's parameters, or None (missing, unreadable, or some other tool's file)."""
    data = read_json(root / MANIFEST)
    if data is None or data.get("generator") != _GENERATOR:
        return None
    return data


def ensure_shapes_cityscapes(root: str | os.PathLike, *, workers: int | None = None, **options: Any) -> Path:
    """Generate the dataset once and reuse it: a no-op when ``root``'s manifest has these parameters.

    Otherwise the data is written to a temporary sibling folder and renamed into place, so an
    interrupted run never leaves a half-written dataset that looks complete, and concurrent
    callers (DDP ranks) end with one complete copy. An existing ``root`` generated with other
    parameters is replaced; a non-empty ``root`` without our manifest raises FileExistsError
    instead of being deleted (:func:`dense.data.synthetic.ensure_generated`). Options as in
    :func:`generate_shapes_cityscapes`; returns ``Path(root)``.
    """
    generate = functools.partial(generate_shapes_cityscapes, workers=workers, **options)
    return ensure_generated(root, _params(options), generate, MANIFEST, _read_manifest)


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
