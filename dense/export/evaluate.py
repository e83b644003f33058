"""Score an exported ONNX file (float or int8) on a validation set with the project's own metrics:
the `dense.deploy` runner over every val picture, then COCO AP (`dense.evaluation.coco`) or the
Cityscapes mIoU (`dense.evaluation.cityscapes.score_folder`, on labelIds PNGs as submitted).

Layouts: COCO (``<root>/annotations/instances_<split>2017.json``, ``<root>/<split>2017/``) for
detection; Cityscapes (``<root>/leftImg8bit/<split>/``, ``<root>/gtFine/<split>/``) for
segmentation, the layouts the training data modules read (and the built-in shapes sets use).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from dense.data.cityscapes import IMAGE_SUFFIX
from dense.deploy import DetectorRunner, SegmenterRunner, load
from dense.evaluation.cityscapes import prediction_filename, save_label_ids_png, score_folder
from dense.evaluation.coco import STAT_NAMES, detections_to_coco_results, evaluate_coco

__all__ = ["COCO_METRIC_NAMES", "evaluate_onnx", "evaluate_onnx_cityscapes", "evaluate_onnx_coco"]

# COCOeval stat -> the name training logs under "val/" (dense.lit.detection.METRIC_NAMES; a test
# checks they agree: the Lightning layer is above this one)
COCO_METRIC_NAMES = dict(
    zip(
        STAT_NAMES,
        ("map", "map_50", "map_75", "map_small", "map_medium", "map_large")
        + ("mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large"),
    )
)


def evaluate_onnx_coco(
    runner: DetectorRunner,
    ann_file: str | os.PathLike,
    image_dir: str | os.PathLike,
    *,
    limit: int | None = None,
) -> dict[str, Any]:
    """COCO bbox metrics of `runner` on the images of `ann_file` (``val/map``, ``val/map_50``, ...)."""
    ann_file, image_dir = Path(ann_file), Path(image_dir)
    if not ann_file.is_file():
        raise FileNotFoundError(f"annotation file not found: {ann_file}")
    images = sorted(json.loads(ann_file.read_text())["images"], key=lambda im: im["id"])[:limit]
    label_to_cat = {int(k): int(v) for k, v in runner.meta["classes"]["label_to_cat_id"].items()}
    results = []
    for im in images:
        det = runner.predict(image_dir / im["file_name"])
        results += detections_to_coco_results([det], [im["id"]], label_to_cat)
    gt = json.loads(ann_file.read_text())
    if limit is not None:  # score the evaluated images only (as training's limit_val_batches)
        keep = {im["id"] for im in images}
        gt["images"] = [im for im in gt["images"] if im["id"] in keep]
        gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in keep]
    coco = evaluate_coco(gt, results)
    return {
        **{f"val/{COCO_METRIC_NAMES[k]}": float(v) for k, v in coco.stats.items()},
        "num_images": len(images),
        "num_detections": len(results),
    }


def evaluate_onnx_cityscapes(
    runner: SegmenterRunner,
    image_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    *,
    pred_dir: str | os.PathLike | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Cityscapes mIoU of `runner`: one labelIds PNG per ``*_leftImg8bit.png`` under `image_dir`
    (written to `pred_dir`, a temporary folder by default), scored against `gt_dir`."""
    image_dir = Path(image_dir)
    files = sorted(image_dir.rglob(f"*{IMAGE_SUFFIX}"))[:limit]
    if not files:
        raise FileNotFoundError(f"{image_dir}: no *{IMAGE_SUFFIX} pictures")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(pred_dir) if pred_dir is not None else Path(tmp)
        for f in files:
            name = f.name.removesuffix(IMAGE_SUFFIX)
            save_label_ids_png(runner.predict(f), out / prediction_filename(name))
        gt = Path(gt_dir)
        if limit is not None:  # score the predicted pictures only
            gt = Path(tmp) / "gt"
            for f in files:
                name = f.name.removesuffix(IMAGE_SUFFIX)
                src = next(Path(gt_dir).rglob(f"{name}_gtFine_labelIds.png"))
                (gt / src.name).parent.mkdir(parents=True, exist_ok=True)
                (gt / src.name).symlink_to(src.resolve())
        result = score_folder(gt, out)
    # the names training logs (dense.lit.segmentation.iou_metric_name)
    metrics = {
        "val/miou": result["mIoU"],
        **{"val/iou/" + k.replace(" ", "_"): v for k, v in result["IoU"].items()},
    }
    return {**metrics, "num_images": result["num_images"]}


def evaluate_onnx(
    onnx_path: str | os.PathLike,
    data_root: str | os.PathLike,
    *,
    split: str = "val",
    threads: int | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Metrics of an exported file on `data_root`'s `split` (layout by the file's task, see the
    module doc), under training's names: detect ``val/map``, ``val/map_50``, ...; segment
    ``val/miou``, ``val/iou/<class>``. `limit`: the first N pictures only."""
    runner = load(onnx_path, threads=threads)
    root = Path(data_root)
    if isinstance(runner, DetectorRunner):
        ann = root / "annotations" / f"instances_{split}2017.json"
        metrics = evaluate_onnx_coco(runner, ann, root / f"{split}2017", limit=limit)
    else:
        metrics = evaluate_onnx_cityscapes(
            runner, root / "leftImg8bit" / split, root / "gtFine" / split, limit=limit
        )
    return {**metrics, "onnx": str(onnx_path), "data_root": str(root)}
