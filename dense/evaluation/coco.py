"""COCO detection scoring with pycocotools' COCOeval semantics.

``evaluate_coco`` scores COCO results (dataset image ids and category ids, boxes ``[x, y, w, h]``
in original image pixels) against the dataset's own annotation file. Two engines compute the same
numbers: ``"faster_coco_eval"`` (C++, the default: much faster on 5k images) and ``"pycocotools"``
(the reference implementation); tests check they agree.

Conventions kept from pycocotools: maxDets (1, 10, 100), crowd annotations are "ignore" regions,
a stat is ``-1`` when it is undefined (no ground truth in that area range). On top of it: an empty
result list scores 0 instead of crashing, and results that the two engines would treat differently
or silently get wrong raise :class:`CocoResultsError` before scoring, naming every offending result:
not a JSON list of objects, missing keys, a bbox that is not 4 finite numbers, a negative width or
height, a score that is not a finite number, image or category ids not in the ground truth, exact
duplicates. So both engines give the same error or the same numbers on any input.

Also here, for the training loop: :func:`detections_to_coco_results` (model outputs -> results)
and :func:`merge_detections` (results gathered from DDP ranks -> one copy per image).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from dense.data.jsonfile import read_json
from dense.data.report import DataError, DataReport

__all__ = [
    "ENGINES",
    "STAT_NAMES",
    "CocoResult",
    "CocoResultsError",
    "detections_to_coco_results",
    "evaluate_coco",
    "merge_detections",
]

# The order of COCOeval.stats (summarize()) for iouType "bbox" / "segm".
STAT_NAMES: tuple[str, ...] = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)
ENGINES = ("faster_coco_eval", "pycocotools")
Engine = Literal["faster_coco_eval", "pycocotools"]


class CocoResultsError(DataError):
    """Results (or ground truth) that cannot be scored as they are; names every offending result."""


@dataclass
class CocoResult:
    """COCO scores as fractions (0..1; -1 where COCOeval leaves a stat undefined).

    Attributes:
        stats: the 12 COCOeval stats by name (:data:`STAT_NAMES`).
        per_category_ap: AP@[.5:.95] per category name (-1 for a category without ground truth).
        engine: the engine that computed it.
        num_images / num_detections: size of the evaluation.
    """

    stats: dict[str, float]
    per_category_ap: dict[str, float] = field(default_factory=dict)
    engine: str = "faster_coco_eval"
    num_images: int = 0
    num_detections: int = 0

    def __getitem__(self, name: str) -> float:
        return self.stats[name]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the 12 stats at top level, then ``per_category_AP`` and metadata."""
        return {
            **{k: float(v) for k, v in self.stats.items()},
            "per_category_AP": {k: float(v) for k, v in self.per_category_ap.items()},
            "engine": self.engine,
            "num_images": self.num_images,
            "num_detections": self.num_detections,
        }

    def format_table(self, title: str | None = None) -> str:
        """A readable table of the 12 stats and the per-category AP (percent, ``-`` = undefined)."""
        try:
            from rich import box
            from rich.console import Console
            from rich.table import Table
        except ImportError:  # rich is a dependency, but keep a plain fallback for minimal installs
            return self._plain_table(title)

        def pct(v: float) -> str:
            return "-" if v < 0 else f"{100 * v:.1f}"

        # ASCII borders: the table also lands in log files and CI output.
        main = Table(
            box=box.ASCII,
            title=title
            or f"COCO bbox ({self.engine}, {self.num_images} images, {self.num_detections} detections)",
        )
        for name in STAT_NAMES:
            main.add_column(name, justify="right")
        main.add_row(*(pct(self.stats[n]) for n in STAT_NAMES))
        cats = Table(box=box.ASCII, title="AP per category")
        cats.add_column("category")
        cats.add_column("AP", justify="right")
        for name, v in self.per_category_ap.items():
            cats.add_row(name, pct(v))
        buf = io.StringIO()
        console = Console(file=buf, width=120, force_terminal=False, color_system=None)
        console.print(main)
        if self.per_category_ap:
            console.print(cats)
        return buf.getvalue().rstrip("\n")

    def _plain_table(self, title: str | None) -> str:
        lines = [title or f"COCO bbox ({self.engine})"]
        lines.append(" ".join(f"{n:>6}" for n in STAT_NAMES))
        lines.append(
            " ".join(f"{100 * self.stats[n]:6.1f}" if self.stats[n] >= 0 else f"{'-':>6}" for n in STAT_NAMES)
        )
        for name, v in self.per_category_ap.items():
            lines.append(f"{name:<24} {100 * v:6.1f}" if v >= 0 else f"{name:<24} {'-':>6}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format_table()


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------
def _engine_classes(engine: str) -> tuple[type, type]:
    if engine == "faster_coco_eval":
        from faster_coco_eval import COCO, COCOeval_faster

        return COCO, COCOeval_faster
    if engine == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    raise ValueError(f"unknown COCO engine {engine!r}; valid: {list(ENGINES)}")


def _load_gt_dict(gt: Any) -> tuple[dict[str, Any], str]:
    """Ground truth as a dataset dict plus a description (for error messages)."""
    if isinstance(gt, (str, os.PathLike)):
        return read_json(gt, "COCO ground-truth file"), str(gt)
    if isinstance(gt, Mapping):
        return dict(gt), "ground-truth dict"
    if hasattr(gt, "dataset"):  # a pycocotools or faster_coco_eval COCO object
        return gt.dataset, "ground-truth COCO object"
    raise TypeError(f"gt must be a path, a dict or a COCO object, got {type(gt).__name__}")


def _load_results(detections: Any) -> tuple[list[dict[str, Any]], str]:
    if isinstance(detections, (str, os.PathLike)):
        dets, where = read_json(detections, "COCO results file"), str(detections)
    else:
        dets, where = detections, "results list"
    if not isinstance(dets, list):
        raise CocoResultsError(
            f"{where}: COCO results must be a JSON list of objects, got {type(dets).__name__}"
        )
    not_dict = [i for i, d in enumerate(dets) if not isinstance(d, Mapping)]
    if not_dict:
        report = DataReport(where)
        report.error("results are not JSON objects: result indices", not_dict)
        report.raise_errors(CocoResultsError)
    # Both engines write 'id', 'area', 'segmentation' into the result dicts: work on copies.
    return [dict(d) for d in dets], where


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_results(dets: list[dict[str, Any]], gt: dict[str, Any], where: str, gt_where: str) -> None:
    """Every problem of the results at once (result indices, capped list and count)."""
    img_ids = {im["id"] for im in gt.get("images", [])}
    cat_ids = {c["id"] for c in gt.get("categories", [])}
    report = DataReport(where)
    seen: dict[tuple[Any, ...], int] = {}
    for i, d in enumerate(dets):
        missing = [k for k in ("image_id", "category_id", "bbox", "score") if k not in d]
        if missing:
            report.error(f"results lack {missing}: result indices", [i])
            continue
        box = d["bbox"]
        if not isinstance(box, list) or len(box) != 4:
            report.error("results whose bbox is not [x, y, w, h]: result indices", [i])
        elif not all(_finite(v) for v in box):
            report.error("results whose bbox holds a non-number, NaN or infinity: result indices", [i])
        elif box[2] < 0 or box[3] < 0:
            report.error("results with a negative box width or height: result indices", [i])
        if not _finite(d["score"]):
            # pycocotools would rank a NaN score arbitrarily, faster-coco-eval rejects it.
            report.error("results whose score is not a finite number: result indices", [i])
        key = (str(d["image_id"]), str(d["category_id"]), str(box), str(d["score"]))
        if key in seen:
            report.error(
                "exact duplicate results (each would count as a second detection): result indices", [i]
            )
        seen.setdefault(key, i)
    report.raise_errors(CocoResultsError)
    _hashable = [
        d for d in dets if isinstance(d["image_id"], (int, str)) and isinstance(d["category_id"], (int, str))
    ]
    if len(_hashable) != len(dets):
        raise CocoResultsError(f"{where}: image_id and category_id must be integers")
    bad_img = sorted({d["image_id"] for d in dets} - img_ids, key=str)
    if bad_img:
        n = sum(d["image_id"] not in img_ids for d in dets)
        raise CocoResultsError(
            f"{where}: {n} results for image ids not in {gt_where}: {bad_img[:10]}"
            f"{f' ... ({len(bad_img)} ids in all)' if len(bad_img) > 10 else ''}"
        )
    bad_cat = sorted({d["category_id"] for d in dets} - cat_ids, key=str)
    if bad_cat:
        raise CocoResultsError(
            f"{where}: results with category ids not in {gt_where}: {bad_cat} "
            f"(valid: {sorted(cat_ids)}); were contiguous labels written instead of dataset ids?"
        )


def _make_coco(coco_cls: type, data: dict[str, Any]) -> Any:
    coco = coco_cls()
    # COCOeval writes into the annotation dicts ('ignore', RLE for segm): copy them, not the whole
    # tree (a deep copy of COCO val's polygons costs seconds).
    coco.dataset = {**data, "annotations": [dict(a) for a in data.get("annotations", [])]}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


# --------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------
def evaluate_coco(
    gt: str | os.PathLike | Mapping[str, Any] | Any,
    detections: Sequence[Mapping[str, Any]] | str | os.PathLike,
    *,
    engine: Engine = "faster_coco_eval",
    iou_type: str = "bbox",
) -> CocoResult:
    """Score COCO results against ground truth.

    Args:
        gt: annotation file path, dataset dict, or a pycocotools / faster_coco_eval ``COCO`` object.
        detections: list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` (dataset
            ids, original image pixels) or the path of such a JSON file.
        engine: ``"faster_coco_eval"`` (default) or ``"pycocotools"``; same numbers.
        iou_type: ``"bbox"`` (``"segm"`` works when results carry segmentations).

    Returns:
        :class:`CocoResult` with the 12 stats (fractions) and AP per category name.
    """
    coco_cls, eval_cls = _engine_classes(engine)
    gt_data, gt_where = _load_gt_dict(gt)
    if not isinstance(gt_data, Mapping):
        raise CocoResultsError(f"{gt_where}: expected a COCO instances JSON object")
    for key in ("images", "categories"):
        if key not in gt_data:
            raise CocoResultsError(f"{gt_where}: missing top-level key '{key}'")
    dets, where = _load_results(detections)
    _check_results(dets, gt_data, where, gt_where)
    cats = sorted(gt_data["categories"], key=lambda c: c["id"])
    cat_names = [str(c.get("name", c["id"])) for c in cats]
    num_images = len(gt_data["images"])

    if not dets:
        # pycocotools' loadRes([]) crashes (IndexError on anns[0]); nothing detected scores 0.
        return CocoResult(
            stats=dict.fromkeys(STAT_NAMES, 0.0),
            per_category_ap=dict.fromkeys(cat_names, 0.0),
            engine=engine,
            num_images=num_images,
            num_detections=0,
        )

    coco_gt = _make_coco(coco_cls, gt_data)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(dets)
        evaluator = eval_cls(coco_gt, coco_dt, iouType=iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [float(v) for v in np.asarray(evaluator.stats, dtype=np.float64)[: len(STAT_NAMES)]]
    return CocoResult(
        stats=dict(zip(STAT_NAMES, stats)),
        per_category_ap=dict(zip(cat_names, _per_category_ap(evaluator, len(cats)))),
        engine=engine,
        num_images=num_images,
        num_detections=len(dets),
    )


def _per_category_ap(evaluator: Any, num_cats: int) -> list[float]:
    """AP@[.5:.95], area "all", maxDets 100, per category (-1 when it has no ground truth)."""
    precision = np.asarray(evaluator.eval["precision"])  # [T, R, K, A, M]
    out = []
    for k in range(num_cats):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        out.append(float(p.mean()) if p.size else -1.0)
    return out


# --------------------------------------------------------------------------------------------------
# Glue for the training loop
# --------------------------------------------------------------------------------------------------
def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def detections_to_coco_results(
    predictions: Iterable[Mapping[str, Any]],
    image_ids: Iterable[int],
    label_to_cat_id: Mapping[int, int],
    *,
    box_decimals: int = 2,
    score_decimals: int = 5,
) -> list[dict[str, Any]]:
    """Model outputs -> COCO result dicts.

    Args:
        predictions: one dict per image with ``boxes`` [M, 4] xyxy pixels in ORIGINAL image
            coordinates, ``scores`` [M], ``labels`` [M] contiguous 1..K (tensors or arrays).
        image_ids: the dataset image id of each prediction.
        label_to_cat_id: contiguous label -> dataset category id (``CocoDetection.label_to_cat_id``).
        box_decimals / score_decimals: rounding (0.01 px boxes as in COCO files; scores keep 5
            decimals, enough to preserve the ranking that AP depends on at the 1e-3 score floor).

    Returns:
        ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]`` (plain Python types).
    """
    results: list[dict[str, Any]] = []
    image_ids = list(image_ids)
    predictions = list(predictions)
    if len(predictions) != len(image_ids):
        raise ValueError(f"{len(predictions)} predictions but {len(image_ids)} image ids")
    for pred, image_id in zip(predictions, image_ids):
        boxes = _to_numpy(pred["boxes"]).astype(np.float64).reshape(-1, 4)
        scores = _to_numpy(pred["scores"]).astype(np.float64).reshape(-1)
        labels = _to_numpy(pred["labels"]).astype(np.int64).reshape(-1)
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError(
                f"image {image_id}: {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels"
            )
        unknown = sorted(set(labels.tolist()) - set(label_to_cat_id))
        if unknown:
            raise ValueError(
                f"image {image_id}: labels {unknown} have no category id "
                f"(known labels: {sorted(label_to_cat_id)}; 0 is the background)"
            )
        xywh = boxes.copy()
        xywh[:, 2:] -= xywh[:, :2]
        xywh = np.round(xywh, box_decimals)
        scores = np.round(scores, score_decimals)
        for b, s, lab in zip(xywh.tolist(), scores.tolist(), labels.tolist()):
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(label_to_cat_id[lab]),
                    "bbox": [float(v) for v in b],
                    "score": float(s),
                }
            )
    return results


def merge_detections(per_rank: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Merge COCO results gathered from DDP ranks (``all_gather_object``), one copy per image.

    ``DistributedSampler`` pads the data set so every rank gets the same number of samples: a few
    images are evaluated twice, on different ranks (or, when the data set is smaller than the
    world size, twice on one rank). Scoring both copies would count every detection of those
    images twice (extra false positives). For each image id only the detections of the first rank
    (in rank order) that reported it are kept, and exact duplicates inside that rank are dropped.

    Args:
        per_rank: one list of result dicts (with ``image_id``) per rank, in rank order.

    Returns:
        The merged list, ordered by rank then original order.
    """
    owner: dict[Any, int] = {}
    for rank, dets in enumerate(per_rank):
        for d in dets:
            owner.setdefault(d["image_id"], rank)
    merged: list[dict[str, Any]] = []
    seen: set[tuple[Any, ...]] = set()
    for rank, dets in enumerate(per_rank):
        for d in dets:
            if owner[d["image_id"]] != rank:
                continue
            key = (d["image_id"], d.get("category_id"), tuple(d.get("bbox", ())), d.get("score"))
            if key in seen:
                continue
            seen.add(key)
            merged.append(dict(d))
    return merged
