"""COCO scoring: both engines agree, empty / perfect / hand-computed cases, DDP merge, score.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from dense.evaluation.coco import (
    STAT_NAMES,
    detections_to_coco_results,
    evaluate_coco,
    merge_detections,
)

REPO = Path(__file__).resolve().parents[1]
ENGINES = ["faster_coco_eval", "pycocotools"]


@pytest.fixture(scope="module")
def gt_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dense.data.shapes_coco import generate_shapes_coco

    paths = generate_shapes_coco(
        tmp_path_factory.mktemp("gt"), num_train=0, num_val=40, image_size=160, seed=5
    )
    return paths["val_annotations"]


def noisy_detections(
    gt: dict[str, Any], seed: int = 0, skip_category: int | None = None
) -> list[dict[str, Any]]:
    """Detections with localisation noise, misses, wrong classes, hits on crowd regions, false
    positives (also on images without objects) and no detection at all for ``skip_category``."""
    rng = np.random.default_rng(seed)
    cat_ids = [c["id"] for c in gt["categories"]]
    size = gt["images"][0]["width"]
    dets = []
    for a in gt["annotations"]:
        if rng.random() < 0.15:
            continue  # missed
        x, y, w, h = a["bbox"]
        for _ in range(1 + int(rng.random() < 0.2)):  # sometimes a duplicate
            n = rng.normal(0, 0.12, 4) * [w, h, w, h]
            cat = a["category_id"] if rng.random() < 0.85 else int(rng.choice(cat_ids))
            dets.append(
                {
                    "image_id": a["image_id"],
                    "category_id": cat,
                    "bbox": [x + n[0], y + n[1], max(w + n[2], 1.0), max(h + n[3], 1.0)],
                    "score": float(rng.random()),
                }
            )
    for im in gt["images"]:  # false positives everywhere, empty images included
        for _ in range(int(rng.integers(0, 3))):
            x, y = rng.uniform(0, size - 20, 2)
            w, h = rng.uniform(4, 60, 2)
            dets.append(
                {
                    "image_id": im["id"],
                    "category_id": int(rng.choice(cat_ids)),
                    "bbox": [x, y, w, h],
                    "score": float(rng.random() * 0.6),
                }
            )
    if skip_category is not None:
        dets = [d for d in dets if d["category_id"] != skip_category]
    return dets


def test_engines_agree_on_generated_data(gt_file: Path) -> None:
    gt = json.loads(gt_file.read_text())
    # The set really has the awkward cases the comparison is about.
    assert any(a["iscrowd"] for a in gt["annotations"])
    annotated = {a["image_id"] for a in gt["annotations"]}
    assert any(im["id"] not in annotated for im in gt["images"])
    skip = gt["categories"][2]["id"]
    for seed in range(3):
        dets = noisy_detections(gt, seed=seed, skip_category=skip)
        assert not any(d["category_id"] == skip for d in dets)
        fast = evaluate_coco(gt_file, dets, engine="faster_coco_eval")
        ref = evaluate_coco(gt_file, dets, engine="pycocotools")
        assert list(fast.stats) == list(STAT_NAMES)
        for name in STAT_NAMES:
            assert fast.stats[name] == pytest.approx(ref.stats[name], abs=1e-9), name
        for name in ref.per_category_ap:
            assert fast.per_category_ap[name] == pytest.approx(ref.per_category_ap[name], abs=1e-9), name
        assert 0.05 < ref.stats["AP"] < 0.9  # a non-trivial score
        skipped_name = next(c["name"] for c in gt["categories"] if c["id"] == skip)
        assert ref.per_category_ap[skipped_name] == 0.0


def test_gt_as_path_dict_or_coco_object(gt_file: Path) -> None:
    from faster_coco_eval import COCO as FasterCOCO
    from pycocotools.coco import COCO

    gt = json.loads(gt_file.read_text())
    dets = noisy_detections(gt, seed=7)
    ref = evaluate_coco(gt_file, dets, engine="pycocotools").stats
    for engine in ENGINES:
        assert evaluate_coco(gt, dets, engine=engine).stats == pytest.approx(ref, abs=1e-9)
    assert not any("ignore" in a for a in gt["annotations"])  # the caller's dict is left alone
    assert evaluate_coco(COCO(str(gt_file)), dets, engine="pycocotools").stats == ref
    fast = evaluate_coco(FasterCOCO(str(gt_file)), dets).stats
    assert fast == pytest.approx(ref, abs=1e-9)
    # the caller's result dicts are not modified by the engines
    assert set(dets[0]) == {"image_id", "category_id", "bbox", "score"}


@pytest.mark.parametrize("engine", ENGINES)
def test_empty_results_score_zero(gt_file: Path, engine: str, tmp_path: Path) -> None:
    res = evaluate_coco(gt_file, [], engine=engine)
    assert res.stats == dict.fromkeys(STAT_NAMES, 0.0)
    assert set(res.per_category_ap.values()) == {0.0}
    empty_file = tmp_path / "dets.json"
    empty_file.write_text("[]")
    assert evaluate_coco(gt_file, empty_file, engine=engine).stats["AP"] == 0.0


@pytest.mark.parametrize("engine", ENGINES)
def test_perfect_results_score_one(gt_file: Path, engine: str) -> None:
    gt = json.loads(gt_file.read_text())
    dets = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
        for a in gt["annotations"]
        if not a["iscrowd"]
    ]
    res = evaluate_coco(gt_file, dets, engine=engine)
    for name in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR10", "AR100", "ARs", "ARm", "ARl"):
        # -1 only where no ground truth falls in the area range; AR10 is 1 with <= 10 objects per image
        assert res.stats[name] in (1.0, -1.0), (name, res.stats[name])
    assert res.stats["AP"] == 1.0 and res.stats["AR100"] == 1.0
    assert 0 < res.stats["AR1"] < 1  # one detection per image finds one object of several
    assert set(res.per_category_ap.values()) == {1.0}


@pytest.mark.parametrize("engine", ENGINES)
def test_hand_computed_ap(engine: str) -> None:
    # One image, three 50x50 (medium) objects. Ranked detections: TP, FP, TP, TP.
    # Precision after each: 1, 1/2, 2/3, 3/4 -> interpolated (running max from the right): 1, 3/4, 3/4, 3/4.
    # Recall thresholds 0.00..0.33 (34 of 101) see 1.0, 0.34..1.00 (67) see 0.75 at every IoU threshold.
    boxes = [[10, 10, 50, 50], [100, 10, 50, 50], [10, 100, 50, 50]]
    gt = {
        "images": [{"id": 4, "width": 200, "height": 200, "file_name": "x.jpg"}],
        "annotations": [
            {"id": i + 1, "image_id": 4, "category_id": 17, "bbox": b, "area": 2500.0, "iscrowd": 0}
            for i, b in enumerate(boxes)
        ],
        "categories": [{"id": 17, "name": "thing"}],
    }
    dets = [
        {"image_id": 4, "category_id": 17, "bbox": boxes[0], "score": 0.9},
        {"image_id": 4, "category_id": 17, "bbox": [150, 150, 40, 40], "score": 0.8},
        {"image_id": 4, "category_id": 17, "bbox": boxes[1], "score": 0.7},
        {"image_id": 4, "category_id": 17, "bbox": boxes[2], "score": 0.6},
    ]
    res = evaluate_coco(gt, dets, engine=engine)
    expected_ap = (34 * 1.0 + 67 * 0.75) / 101
    for name in ("AP", "AP50", "AP75", "APm"):
        assert res.stats[name] == pytest.approx(expected_ap, abs=1e-12)
    assert res.stats["APs"] == -1.0 and res.stats["APl"] == -1.0
    assert res.stats["AR1"] == pytest.approx(1 / 3) and res.stats["AR10"] == 1.0
    assert res.per_category_ap == {"thing": pytest.approx(expected_ap, abs=1e-12)}


def test_bad_results_raise(gt_file: Path) -> None:
    gt = json.loads(gt_file.read_text())
    good = {
        "image_id": gt["images"][0]["id"],
        "category_id": gt["categories"][0]["id"],
        "bbox": [1, 1, 5, 5],
        "score": 0.5,
    }
    with pytest.raises(ValueError, match="image ids not in"):
        evaluate_coco(gt_file, [{**good, "image_id": -5}])
    with pytest.raises(ValueError, match=r"category ids not in .*\[1\]"):
        evaluate_coco(gt_file, [{**good, "category_id": 1}])
    with pytest.raises(ValueError, match="unknown COCO engine"):
        evaluate_coco(gt_file, [good], engine="nope")  # type: ignore[arg-type]


def test_detections_to_coco_results() -> None:
    preds = [
        {
            "boxes": torch.tensor([[10.0, 20.0, 40.5, 60.25], [0.0, 0.0, 5.0, 5.0]]),
            "scores": torch.tensor([0.91234567, 0.00123456]),
            "labels": torch.tensor([1, 3]),
        },
        {"boxes": torch.zeros((0, 4)), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)},
        {"boxes": np.array([[1.004, 2.0, 3.0, 4.0]]), "scores": np.array([0.5]), "labels": np.array([2])},
    ]
    res = detections_to_coco_results(preds, [100, 101, 102], {1: 3, 2: 7, 3: 42})
    assert res == [
        {"image_id": 100, "category_id": 3, "bbox": [10.0, 20.0, 30.5, 40.25], "score": 0.91235},
        {"image_id": 100, "category_id": 42, "bbox": [0.0, 0.0, 5.0, 5.0], "score": 0.00123},
        {"image_id": 102, "category_id": 7, "bbox": [1.0, 2.0, 2.0, 2.0], "score": 0.5},
    ]
    json.dumps(res)  # plain Python types
    with pytest.raises(ValueError, match=r"labels \[0\]"):
        detections_to_coco_results([{**preds[2], "labels": np.array([0])}], [1], {1: 3})
    with pytest.raises(ValueError, match="2 predictions but 1 image ids"):
        detections_to_coco_results(preds[:2], [1], {1: 3})


def test_merge_detections_removes_sampler_padding(gt_file: Path) -> None:
    gt = json.loads(gt_file.read_text())
    dets = noisy_detections(gt, seed=3)
    img_ids = [im["id"] for im in gt["images"]]
    # DistributedSampler over 3 ranks: indices padded to a multiple of 3 by repeating the first
    # ones; rank r gets indices r, r + 3, ... Every rank reports its images' detections.
    padded = img_ids + img_ids[: (-len(img_ids)) % 3]
    assert len(padded) > len(img_ids)
    per_rank = [[d for i in padded[r::3] for d in dets if d["image_id"] == i] for r in range(3)]
    gathered = [d for rank in per_rank for d in rank]
    assert len(gathered) > len(dets)  # padding duplicated some images' detections
    merged = merge_detections(per_rank)
    key = lambda d: (d["image_id"], d["category_id"], tuple(d["bbox"]), d["score"])  # noqa: E731
    assert sorted(map(key, merged)) == sorted(map(key, dets))
    assert evaluate_coco(gt, merged).stats == evaluate_coco(gt, dets).stats
    # unmerged, the padded copies are exact duplicates: refused (they would lower AP silently)
    with pytest.raises(ValueError, match="exact duplicate results"):
        evaluate_coco(gt, gathered)
    # A data set smaller than the world size puts the same image twice on one rank.
    one = [d for d in dets if d["image_id"] == dets[0]["image_id"]]
    assert merge_detections([one + one, one]) == one
    assert merge_detections([[], []]) == []


def test_score_tool_coco(gt_file: Path, tmp_path: Path) -> None:
    gt = json.loads(gt_file.read_text())
    dets = noisy_detections(gt, seed=1)
    dets_file = tmp_path / "detections.json"
    dets_file.write_text(json.dumps(dets))
    out = tmp_path / "out" / "metrics.json"
    proc = subprocess.run(
        [sys.executable, "tools/score.py", "coco", str(gt_file), str(dets_file), "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for name in (*STAT_NAMES, "circle", "hexagon", "AP per category"):
        assert name in proc.stdout
    assert str(out) in proc.stdout
    metrics = json.loads(out.read_text())
    expected = evaluate_coco(gt_file, dets, engine="pycocotools")
    for name in STAT_NAMES:
        assert metrics[name] == pytest.approx(expected.stats[name], abs=1e-9)
        assert -1.0 <= metrics[name] <= 1.0
    assert set(metrics["per_category_AP"]) == {c["name"] for c in gt["categories"]}

    bad = subprocess.run(
        [sys.executable, "tools/score.py", "coco", str(gt_file), str(tmp_path / "missing.json")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "missing.json" in bad.stderr
