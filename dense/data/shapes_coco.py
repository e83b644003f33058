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
and renamed into place (:func:`dense.data.synthetic.ensure_generated`). The drawing of one image
is in :mod:`dense.data.shapes_coco_draw`, the shapes' geometry in :mod:`dense.data.shapes_coco_geometry`.

Command line: ``python -m dense.data.shapes_coco ROOT [--num-train N] [--num-val N] [--size S]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from dense.data.shapes_coco_draw import render_image
from dense.data.shapes_coco_geometry import CATEGORIES
from dense.data.synthetic import SPLITS, check_split_sizes, ensure_generated, image_rng, read_json, run_jobs

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
_MANIFEST = "manifest.json"
# Images per process and per pool task: fewer is not worth starting a process.
_IMAGES_PER_WORKER = 16


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
    job: tuple[Path, int, bool, bool], *, split: str, params: dict[str, Any]
) -> list[dict[str, Any]]:
    """Draw image ``index`` from its own random stream, write it to ``path``, return its annotations."""
    path, index, empty, crowd = job
    rng = image_rng(params["seed"], split, index)
    im, anns = render_image(
        rng, params["image_size"], empty=empty, crowd=crowd, max_objects=params["max_objects"]
    )
    im.save(path, quality=params["jpeg_quality"])
    return anns


def _render_split(
    img_dir: Path, split: str, base_id: int, params: dict[str, Any], workers: int | None
) -> list[list[dict[str, Any]]]:
    """Write the split's images to ``img_dir``; returns the annotations of each image, in order."""
    n = params[f"num_{split}"]
    img_dir.mkdir(parents=True, exist_ok=True)
    # Its own stream (index out of the images' range): which images are empty / hold a crowd.
    split_rng = np.random.default_rng([params["seed"], SPLITS[split], 1_000_003])
    empty = _special_indices(n, params["empty_fraction"], split_rng, set())
    crowd = _special_indices(n, params["crowd_fraction"], split_rng, empty)
    jobs = [(img_dir / f"{base_id + i:012d}.jpg", i, i in empty, i in crowd) for i in range(n)]
    # Each image is a pure function of its (seed, split, index) stream: the output is the same
    # with any number of processes (about 2x faster generation on 2 cores).
    render = functools.partial(_render_and_save, split=split, params=params)
    return run_jobs(render, jobs, workers, _IMAGES_PER_WORKER)


def _coco_dataset(rendered: list[list[dict[str, Any]]], base_id: int, size: int) -> dict[str, Any]:
    """The COCO instances file of a split (image ids from ``base_id``, one list of annotations each)."""
    images, annotations = [], []
    ann_id = base_id * 10
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
    return {
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


def _write_split(out: Path, split: str, params: dict[str, Any], workers: int | None) -> dict[str, int]:
    """Write one split (images and annotation file); returns its counts."""
    # Image ids do not start at 0 and are not the list index: eval must use the ids in the file.
    base_id = 100_000 * (1 + SPLITS[split])
    rendered = _render_split(out / f"{split}2017", split, base_id, params, workers)
    dataset = _coco_dataset(rendered, base_id, params["image_size"])
    ann_path = out / "annotations" / f"instances_{split}2017.json"
    ann_path.parent.mkdir(parents=True, exist_ok=True)
    ann_path.write_text(json.dumps(dataset))
    return {"images": len(dataset["images"]), "annotations": len(dataset["annotations"])}


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


# The generator's options and their defaults (the keyword arguments of generate / ensure).
DEFAULTS: dict[str, Any] = dict(
    num_train=1000,
    num_val=200,
    image_size=320,
    seed=0,
    empty_fraction=0.05,
    crowd_fraction=0.08,
    max_objects=10,
    jpeg_quality=92,
)


def _params(options: dict[str, Any]) -> dict[str, Any]:
    """The validated parameters, as the manifest records them."""
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise TypeError(f"unknown shapes_coco option(s) {unknown}; valid: {sorted(DEFAULTS)}")
    p = {**DEFAULTS, **options}
    if p["image_size"] < 64:
        raise ValueError(f"image_size must be >= 64, got {p['image_size']}")
    check_split_sizes(p["num_train"], p["num_val"])
    typed = {k: type(DEFAULTS[k])(v) for k, v in p.items()}
    return {"generator_version": GENERATOR_VERSION, **typed}


def generate_shapes_coco(
    root: str | os.PathLike, *, workers: int | None = None, **options: Any
) -> dict[str, Path]:
    """Write a shapes data set in COCO layout under ``root`` (created; existing files overwritten).

    Options (`DEFAULTS`):
        num_train / num_val: number of images per split (1000 / 200). These defaults (at 320x320,
            about 4.4 objects per image) train an SSDLite to a useful mAP in minutes on 2 CPU cores.
        image_size: square image side in px (320); object sizes scale with it (16..160 px at 320).
        seed: base seed (0); image ``i`` of a split is drawn from ``(seed, split, i)``.
        empty_fraction: fraction of images with no object at all (0.05; exact count per split).
        crowd_fraction: fraction of images holding one crowd region (0.08; ``iscrowd=1``).
        max_objects: maximum number of (non-crowd) objects per image (10).
        jpeg_quality: JPEG quality of the written images (92).
    workers: processes (default: CPU count); the output does not depend on it.

    Returns:
        dict of paths: ``root``, ``train_images``, ``val_images``, ``train_annotations``,
        ``val_annotations``, ``manifest`` (``manifest.json`` records the parameters).
    """
    params = _params(options)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    counts = {split: _write_split(root, split, params, workers) for split in ("train", "val")}
    paths = shapes_coco_paths(root)
    # The manifest is written last: its presence means "complete".
    paths["manifest"].write_text(json.dumps({"params": params, "counts": counts}, indent=2, sort_keys=True))
    log.info("generated shapes COCO data set in %s (%s) in %.1fs", root, counts, time.perf_counter() - t0)
    return paths


def _read_params(root: Path) -> dict[str, Any] | None:
    """The parameters in ``root``'s manifest, or None when it has none written by this generator."""
    manifest = read_json(root / _MANIFEST)
    params = manifest.get("params") if manifest is not None else None
    return params if isinstance(params, dict) and "generator_version" in params else None


def ensure_shapes_coco(
    root: str | os.PathLike, *, workers: int | None = None, **options: Any
) -> dict[str, Path]:
    """Return the paths of a shapes data set at ``root``, generating it only when needed.

    The data set is reused when ``root/manifest.json`` records the same parameters; otherwise it is
    generated into a temporary sibling directory and renamed to ``root`` (atomic on one file
    system), so concurrent callers (DDP ranks, DataLoader workers, parallel tests) never see a
    half-written data set. A previous data set with other parameters is replaced; a non-empty
    ``root`` without a manifest is never deleted (FileExistsError instead). Options as in
    :func:`generate_shapes_coco`; ``root`` is made absolute.
    """
    params = _params(options)
    root = Path(root).absolute()
    generate = functools.partial(generate_shapes_coco, workers=workers, **options)
    ensure_generated(root, params, generate, _MANIFEST, _read_params)
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
