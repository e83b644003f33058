"""COCO-format detection data set (torch ``Dataset``) with annotation validation.

What it does with the annotation file, and why:

- category ids (any integers, contiguous or not) map to contiguous labels ``1..K`` in id order;
  ``0`` is the background inside the model. ``label_to_cat_id`` / ``cat_id_to_label`` map both
  ways, so predictions are written back with the dataset's own ids for COCO scoring.
- crowd annotations (``iscrowd=1``) are left out of the training targets; evaluation scores
  against the original annotation file, where COCOeval treats them as "ignore" regions.
- boxes ``[x, y, w, h]`` become ``xyxy`` pixels clipped to the image; boxes that are degenerate
  after clipping (width or height <= ``min_box_size``) are dropped and counted.
- an annotation file that would make metrics wrong is an error at load time naming every offending
  id (capped list and count, :class:`dense.data.report.DataReport`): annotations naming an unknown
  image or category (with the unknown category ids), bboxes that are not 4 finite numbers or have a
  negative width / height, duplicate annotation or image ids, no categories. An empty or absent
  ``annotations`` list is allowed here (image-info files, e.g. test-dev) and counted; the
  datamodule refuses to train or score on a set without a single box.
- category id 0 is allowed (ids are mapped to labels 1..K; the background is the model's own).
- a missing or unreadable image is skipped in training (``__getitem__`` returns ``None``, the
  collate function drops it, the file is recorded in :meth:`CocoDetection.skipped_files`) and is an
  error in evaluation (a score on a subset would be wrong without anyone noticing).
- pixels are used as stored (no EXIF rotation: COCO boxes refer to the stored pixel grid, and the
  COCO tools, pycocotools and torchvision, read images the same way); grayscale, RGBA, palette,
  CMYK and 16-bit images become 8-bit RGB; :meth:`CocoDetection.scan_images` counts all of these.
"""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from dense.data.images import UNREADABLE, ImageReadError, load_rgb, probe_image
from dense.data.jsonfile import read_json
from dense.data.report import DataError, DataReport
from dense.data.skips import SkipLog, SkippingDataset

__all__ = [
    "CocoAnnotationError",
    "CocoDetection",
    "ImageReadError",
    "collate_detection",
    "load_rgb",
]

log = logging.getLogger(__name__)


class CocoAnnotationError(DataError):
    """The annotation file is malformed or inconsistent (message names the file and the ids)."""


def _ids_text(ids: Sequence[Any], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in list(ids)[:limit])
    more = f" ... ({len(ids)} in all)" if len(ids) > limit else ""
    return f"[{shown}{more}]"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _to_chw_float(image: Any) -> torch.Tensor:
    """HWC uint8 numpy / CHW tensor (uint8 or float) -> float32 CHW tensor in [0, 1]."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3:
            raise ValueError(f"expected an HWC image, got shape {image.shape}")
        t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    elif isinstance(image, torch.Tensor):
        t = image
    else:
        raise TypeError(f"transform returned an image of type {type(image).__name__}")
    if t.dtype == torch.uint8:
        return t.float().div_(255.0)
    return t.float()


class CocoDetection(SkippingDataset, Dataset):
    """COCO-format detection data set.

    Args:
        image_dir: directory holding the images (``file_name`` entries are relative to it).
        ann_file: COCO instances JSON file.
        transform: albumentations-style callable ``transform(image=HWC uint8, bboxes=[M, 4] xyxy
            pixels, labels=[M]) -> dict(image, bboxes, labels)``, e.g. from
            :func:`dense.data.det_transforms.build_detection_transform`. ``None``: no resize.
        train: training mode: unreadable images are skipped (``None``) instead of raising, and
            images without (non-crowd) boxes follow ``keep_empty``.
        keep_empty: in training, keep images with no usable box (pure background samples).
            Evaluation always keeps every image, because COCOeval scores all images in the file.
        min_box_size: boxes whose width or height after clipping is <= this (px) are dropped.

    A sample is ``{"image": float32 [3, H, W] in [0, 1], "target": {"boxes": float32 [M, 4] xyxy
    pixels of the transformed image, "labels": int64 [M] in 1..K, "image_id": int,
    "orig_size": (h, w)}}``, or ``None`` for a skipped image in training mode.

    Attributes:
        cat_ids: dataset category ids, sorted; ``label_to_cat_id`` / ``cat_id_to_label`` map
            contiguous labels 1..K <-> category ids; ``class_names[label]`` (index 0 is
            ``"__background__"``); ``num_classes`` = K + 1 (with background).
        image_ids: image ids in sample order.
        num_degenerate_boxes / degenerate_annotation_ids: boxes dropped after clipping.
        num_crowd: crowd annotations left out of the targets.
    """

    def __init__(
        self,
        image_dir: str | os.PathLike,
        ann_file: str | os.PathLike,
        *,
        transform: Callable[..., dict[str, Any]] | None = None,
        train: bool = True,
        keep_empty: bool = True,
        min_box_size: float = 1.0,
    ) -> None:
        self.image_dir = Path(image_dir)
        self.ann_file = Path(ann_file)
        self.transform = transform
        self.train = train
        self.keep_empty = keep_empty
        self.min_box_size = float(min_box_size)

        data = self._read_json(self.ann_file)
        self._build_categories(data)
        self._build_index(data)
        # unreadable training images are recorded here (from every DataLoader worker)
        self.skip_log = SkipLog("dense-coco-skipped-") if train else None

    # ---------------------------------------------------------------------------------------------
    # loading and validation
    # ---------------------------------------------------------------------------------------------
    @staticmethod
    def _read_json(path: Path) -> dict[str, Any]:
        data = read_json(path, "COCO annotation file", CocoAnnotationError)
        if not isinstance(data, dict):
            raise CocoAnnotationError(f"{path}: expected a JSON object with images/annotations/categories")
        missing = [k for k in ("images", "categories") if k not in data]
        if missing:
            raise CocoAnnotationError(f"{path}: missing top-level key(s) {missing}")
        data.setdefault("annotations", [])  # image-info files (test-dev) have no annotations
        for key in ("images", "annotations", "categories"):
            if not isinstance(data[key], list) or not all(isinstance(x, dict) for x in data[key]):
                raise CocoAnnotationError(f"{path}: '{key}' must be a list of objects")
        return data

    def _build_categories(self, data: dict[str, Any]) -> None:
        cats = data["categories"]
        ids = [c.get("id") for c in cats]
        if any(not isinstance(i, int) or isinstance(i, bool) for i in ids):
            raise CocoAnnotationError(f"{self.ann_file}: category ids must be integers, got {ids}")
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise CocoAnnotationError(f"{self.ann_file}: duplicate category ids {dup}")
        if not cats:
            raise CocoAnnotationError(f"{self.ann_file}: no categories")
        by_id = {c["id"]: c for c in cats}
        self.cat_ids: list[int] = sorted(by_id)
        self.cat_id_to_label: dict[int, int] = {cid: i + 1 for i, cid in enumerate(self.cat_ids)}
        self.label_to_cat_id: dict[int, int] = {v: k for k, v in self.cat_id_to_label.items()}
        self.class_names: list[str] = ["__background__"] + [
            str(by_id[c].get("name", c)) for c in self.cat_ids
        ]

    @property
    def num_classes(self) -> int:
        """Number of classes including the background (K + 1)."""
        return len(self.cat_ids) + 1

    def _build_index(self, data: dict[str, Any]) -> None:
        """Check the file's images and annotations, then one record per usable image."""
        self.report = DataReport(str(self.ann_file))
        self.report.counts.update(
            images=len(data["images"]), annotations=len(data["annotations"]), categories=len(self.cat_ids)
        )
        if not data["annotations"]:
            # Fine for an image-info file; the datamodules refuse to train or score on it.
            self.report.note("no annotations at all (every image is background)", [str(self.ann_file)])
        if 0 in self.cat_id_to_label:
            self.report.note("category id 0 (allowed: ids map to labels 1..K)", [0])
        img_by_id = self._index_images(data["images"])
        self._check_annotations(data["annotations"], img_by_id)
        self.report.raise_errors(CocoAnnotationError)
        per_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for a in data["annotations"]:
            per_image[a["image_id"]].append(a)
        self.num_crowd = 0
        self.crowd_annotation_ids: list[Any] = []
        self.degenerate_annotation_ids: list[Any] = []
        self._records: list[dict[str, Any]] = []
        self.num_empty_dropped = 0
        for im in data["images"]:
            record = self._record(im, per_image.get(im["id"], []))
            self.report.note("boxes clipped to the image", record.pop("clipped"))
            if self.train and not self.keep_empty and not len(record["boxes"]):
                self.num_empty_dropped += 1
                continue
            self._records.append(record)
        self.image_ids: list[int] = [r["image_id"] for r in self._records]
        self._log_index()

    def _index_images(self, images: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
        img_by_id: dict[int, dict[str, Any]] = {}
        report = self.report
        for im in images:
            lacking = [k for k in ("id", "file_name", "width", "height") if k not in im]
            if lacking:
                report.error(f"image entries without {lacking}: image entries", [im.get("id", im)])
                continue
            if not all(
                isinstance(im[k], int) and not isinstance(im[k], bool) and im[k] > 0
                for k in ("width", "height")
            ):
                report.error(
                    "image entries whose width / height is not a positive integer: image ids", [im["id"]]
                )
            if im["id"] in img_by_id:
                report.error("duplicate image ids (image entries share an id)", [im["id"]])
            img_by_id[im["id"]] = im
        report.raise_errors(CocoAnnotationError)  # the annotations cannot be checked against a broken index
        return img_by_id

    def _check_annotations(self, anns: list[dict[str, Any]], img_by_id: dict[int, Any]) -> None:
        """Every problem of the annotations into ``self.report`` (all ids, not only the first)."""
        report = self.report
        bad_image = [a.get("id") for a in anns if a.get("image_id") not in img_by_id]
        unknown_images = sorted({str(a.get("image_id")) for a in anns if a.get("image_id") not in img_by_id})
        report.error(
            f"annotation(s) name an image id that is not in 'images' (unknown image ids "
            f"{_ids_text(unknown_images)}): annotation ids",
            bad_image,
        )
        bad_cat = [a.get("id") for a in anns if a.get("category_id") not in self.cat_id_to_label]
        unknown_cats = sorted(
            {str(a.get("category_id")) for a in anns if a.get("category_id") not in self.cat_id_to_label}
        )
        report.error(
            f"annotation(s) name a category id that is not in 'categories' (unknown category ids "
            f"{_ids_text(unknown_cats)}; valid: {self.cat_ids}): annotation ids",
            bad_cat,
        )
        seen: set[Any] = set()
        dup = []
        for a in anns:
            if a.get("id") in seen:
                dup.append(a.get("id"))
            seen.add(a.get("id"))
        # pycocotools indexes annotations by id: a duplicate silently replaces the other one.
        report.error("duplicate annotation ids:", sorted(set(dup), key=str))
        no_box, not_finite, negative = [], [], []
        for a in anns:
            box = a.get("bbox")
            if not isinstance(box, list) or len(box) != 4:
                no_box.append(a.get("id"))
            elif not all(_is_number(v) for v in box):
                not_finite.append(a.get("id"))
            elif box[2] < 0 or box[3] < 0:
                negative.append(a.get("id"))
        report.error("annotation(s) without a 4-number 'bbox': ids", no_box)
        report.error("annotation(s) whose bbox holds a non-number, NaN or infinity: ids", not_finite)
        report.error("annotation(s) whose bbox has a negative width or height: ids", negative)

    def _record(self, im: dict[str, Any], anns: list[dict[str, Any]]) -> dict[str, Any]:
        """Boxes clipped to the image, xyxy; crowd regions are counted and left to the evaluation,
        boxes degenerate after clipping are counted and dropped."""
        w, h = float(im["width"]), float(im["height"])
        boxes, labels, clipped = [], [], []
        for a in anns:
            if a.get("iscrowd", 0):
                self.num_crowd += 1
                self.crowd_annotation_ids.append(a.get("id"))
                continue
            x, y, bw, bh = (float(v) for v in a["bbox"])
            x0, y0 = min(max(x, 0.0), w), min(max(y, 0.0), h)
            x1, y1 = min(max(x + bw, 0.0), w), min(max(y + bh, 0.0), h)
            if x1 - x0 <= self.min_box_size or y1 - y0 <= self.min_box_size:
                self.degenerate_annotation_ids.append(a.get("id"))
                continue
            if (x0, y0, x1, y1) != (x, y, x + bw, y + bh):
                clipped.append(a.get("id"))
            boxes.append((x0, y0, x1, y1))
            labels.append(self.cat_id_to_label[a["category_id"]])
        return {
            "image_id": im["id"],
            "file_name": im["file_name"],
            "size": (int(im["height"]), int(im["width"])),
            "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            "labels": np.asarray(labels, dtype=np.int64),
            "clipped": clipped,
        }

    def _log_index(self) -> None:
        self.report.note(
            f"boxes dropped: zero size, or degenerate after clipping (w or h <= {self.min_box_size:g} px)",
            self.degenerate_annotation_ids,
        )
        self.report.note(
            "crowd annotations (ignore regions: not trained on, scored by COCOeval): ids",
            self.crowd_annotation_ids,
        )
        if self.degenerate_annotation_ids:
            log.warning(
                "%s: dropped %d box(es) that are degenerate after clipping to the image (w or h <= %g px): "
                "annotation ids %s",
                self.ann_file,
                self.num_degenerate_boxes,
                self.min_box_size,
                _ids_text(self.degenerate_annotation_ids),
            )
        log.info(
            "%s: %d images (%d without boxes dropped), %d categories, %d crowd annotations ignored",
            self.ann_file,
            len(self._records),
            self.num_empty_dropped,
            len(self.cat_ids),
            self.num_crowd,
        )

    @property
    def num_degenerate_boxes(self) -> int:
        return len(self.degenerate_annotation_ids)

    # ---------------------------------------------------------------------------------------------
    # image files
    # ---------------------------------------------------------------------------------------------
    def scan_images(self, *, decode: bool = False, report: DataReport | None = None) -> DataReport:
        """Check every image file against its entry, into ``report`` (default: :attr:`report`).

        Missing, empty or unreadable files and sizes that disagree with the annotation file are
        errors of an evaluation set and notes ("skipped in training") of a training set; colour
        modes, bit depths, a format that disagrees with the extension, an EXIF orientation tag
        (ignored: boxes refer to the stored pixels), huge and tiny images are notes. ``decode``
        reads every pixel (finds truncated files; slow on big sets), else headers only.
        """
        report = self.report if report is None else report
        bad = report.note if self.train else report.error
        suffix = " (skipped in training)" if self.train else ""
        for r in self._records:
            name, path = r["file_name"], self.image_dir / r["file_name"]
            try:
                header = probe_image(path, decode=decode)
            except ImageReadError as e:
                bad(f"{e.problem}{suffix}:", [f"{name} ({e.detail})" if e.problem == UNREADABLE else name])
                continue
            size, mode, fmt, orientation = header.size, header.mode, header.format, header.orientation
            if (size[1], size[0]) != r["size"]:
                bad(
                    f"images whose size disagrees with the annotation file{suffix}:",
                    [f"{name} ({size[0]}x{size[1]}, file says {r['size'][1]}x{r['size'][0]})"],
                )
            if mode != "RGB":
                report.note(f"{mode} images converted to 8-bit RGB:", [name])
            ext = {"JPEG": (".jpg", ".jpeg"), "PNG": (".png",)}.get(fmt or "", ())
            if ext and path.suffix.lower() not in ext:
                report.note(f"{fmt} files named {path.suffix} (read by content):", [name])
            if orientation not in (1, None):
                report.note(
                    "images with an EXIF rotation tag (ignored: boxes refer to the stored pixels):", [name]
                )
            if size[0] * size[1] > 40_000_000:
                report.note("huge images (> 40 Mpixel, decoded in full):", [f"{name} ({size[0]}x{size[1]})"])
            if min(size) < 32:
                report.note("tiny images (a side < 32 px):", [f"{name} ({size[0]}x{size[1]})"])
        return report

    # ---------------------------------------------------------------------------------------------
    # samples
    # ---------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._records)

    def image_path(self, index: int) -> Path:
        return self.image_dir / self._records[index]["file_name"]

    def annotation(self, index: int) -> dict[str, Any]:
        """The untransformed target of sample ``index``: boxes [M, 4] xyxy (numpy), labels [M]."""
        r = self._records[index]
        return {
            "image_id": r["image_id"],
            "boxes": r["boxes"].copy(),
            "labels": r["labels"].copy(),
            "orig_size": r["size"],
        }

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        r = self._records[index]
        path = self.image_dir / r["file_name"]
        try:
            image = load_rgb(path)
            if image.shape[:2] != r["size"]:
                raise ImageReadError(
                    f"image {path} is {image.shape[1]}x{image.shape[0]} (w x h) but {self.ann_file} says "
                    f"{r['size'][1]}x{r['size'][0]}"
                )
        except ImageReadError as e:
            if not self.train:
                raise
            self._record_skip(r["file_name"], str(e))
            return None

        boxes, labels = r["boxes"], r["labels"]
        if self.transform is not None:
            out = self.transform(image=image, bboxes=boxes, labels=labels)
            image_t = _to_chw_float(out["image"])
            boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
            labels = np.asarray(out["labels"], dtype=np.int64).reshape(-1)
        else:
            image_t = _to_chw_float(image)
        return {
            "image": image_t,
            "target": {
                "boxes": torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)),
                "labels": torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)),
                "image_id": int(r["image_id"]),
                "orig_size": r["size"],
            },
        }


def collate_detection(
    batch: Sequence[dict[str, Any] | None],
) -> tuple[torch.Tensor, list[dict[str, Any]]] | None:
    """Collate detection samples, dropping ``None`` (skipped) entries.

    Returns:
        ``(images [N, 3, H, W] float32, targets)`` with one target dict per image, or ``None`` when
        every sample of the batch was skipped (the training loop should skip that step).

    Raises:
        ValueError: images of different sizes (use a transform that resizes).
    """
    samples = [s for s in batch if s is not None]
    if not samples:
        return None
    shapes = {tuple(s["image"].shape) for s in samples}
    if len(shapes) > 1:
        raise ValueError(
            f"cannot stack images of different sizes {sorted(shapes)}: resize them in the transform"
        )
    images = torch.stack([s["image"] for s in samples])
    return images, [s["target"] for s in samples]
