"""COCO box scoring: faster-coco-eval vs pycocotools on a synthetic result set (time, same 12 stats)."""

from __future__ import annotations

import numpy as np

from dense.benchmark.report import console, print_table
from dense.benchmark.timing import interleave
from dense.evaluation.coco import evaluate_coco

__all__ = ["coco_scoring_table", "synthetic_coco"]

ENGINES = ("faster_coco_eval", "pycocotools")


def synthetic_coco(num_images: int, seed: int = 0) -> tuple[dict, list]:
    """Ground truth and noisy detections in COCO format (no pixels needed to score)."""
    rng = np.random.default_rng(seed)
    cats = [{"id": c, "name": f"c{c}", "supercategory": "x"} for c in (1, 3, 7, 11, 19, 42)]
    images, anns, dets = [], [], []
    for i in range(num_images):
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "width": 640, "height": 480})
        for _ in range(rng.integers(0, 12)):
            w, h = rng.uniform(8, 300, 2)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            cat = int(rng.choice([c["id"] for c in cats]))
            crowd = int(rng.random() < 0.02)
            anns.append(
                dict(
                    id=len(anns) + 1,
                    image_id=i + 1,
                    category_id=cat,
                    bbox=[x, y, w, h],
                    area=w * h,
                    iscrowd=crowd,
                    segmentation=[[x, y, x + w, y, x + w, y + h, x, y + h]],
                )
            )
            for _ in range(rng.integers(0, 3)):  # 0-2 detections of it, a little off
                n = rng.normal(0, 0.1, 4) * [w, h, w, h]
                dets.append(
                    dict(
                        image_id=i + 1,
                        category_id=cat,
                        score=float(rng.random()),
                        bbox=[x + n[0], y + n[1], max(1.0, w + n[2]), max(1.0, h + n[3])],
                    )
                )
        for _ in range(rng.integers(0, 20)):  # false positives
            w, h = rng.uniform(8, 200, 2)
            dets.append(
                dict(
                    image_id=i + 1,
                    category_id=int(rng.choice([c["id"] for c in cats])),
                    score=float(rng.random() * 0.5),
                    bbox=[rng.uniform(0, 400), rng.uniform(0, 300), w, h],
                )
            )
    return {"images": images, "annotations": anns, "categories": cats}, dets


def coco_scoring_table(num_images: int = 2000, repeats: int = 3) -> dict:
    """Median seconds of each engine, interleaved, and whether their 12 stats agree to 1e-12."""
    gt, dets = synthetic_coco(num_images)
    stats = {}

    def scorer(engine: str):
        def score(d: list) -> None:
            stats[engine] = evaluate_coco(gt, d, engine=engine).stats

        return score

    evaluate_coco(gt, dets[:100], engine=ENGINES[0])  # first-call set-up is not scoring time
    seconds = interleave(scorer(ENGINES[0]), scorer(ENGINES[1]), dets, dets, iters=repeats, warmup=0)
    times = dict(zip(ENGINES, seconds))
    same = all(
        abs(stats["faster_coco_eval"][k] - stats["pycocotools"][k]) < 1e-12 for k in stats["pycocotools"]
    )
    speedup = times["pycocotools"] / times["faster_coco_eval"]
    print_table(
        f"COCO scoring, {num_images} images, {len(dets)} detections (median of {repeats})",
        ("engine", "seconds", "AP", "identical 12 stats"),
        [(e, f"{times[e]:.2f}", f"{stats[e]['AP']:.4f}", str(same)) for e in times],
    )
    console.print(f"faster-coco-eval is {speedup:.1f}x faster than pycocotools")
    return dict(seconds=times, speedup=speedup, identical=same, num_detections=len(dets))
