"""`CocoDataModule`: COCO-format detection data for Lightning (thin glue over `dense.data`).

The layout is COCO's (`root/train2017`, `root/val2017`,
`root/annotations/instances_{train,val}2017.json`); every path can be overridden, relative paths
are taken relative to `root`. With `synthetic=True` the shapes data set (`dense.data.shapes_coco`)
is generated at `root` in `prepare_data` when it is not there yet, so `data=shapes_coco` works on a
fresh machine.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dense.data.coco import CocoDetection, collate_detection
from dense.data.det_transforms import PRESETS, build_detection_transform
from dense.data.info import DatasetInfo
from dense.data.report import DataError, DataPathError, ids_text
from dense.data.shapes_coco import ensure_shapes_coco
from dense.lit.datamodule import TaskDataModule


def _check_files(ds: CocoDetection) -> None:
    """Before any work: every evaluation image must exist (a score on a subset would be wrong) and
    at least one training image must; a stat per file (decoding is left to tools/check_data.py)."""
    missing = [r["file_name"] for r in ds._records if not (ds.image_dir / r["file_name"]).is_file()]
    if not missing:
        return
    if not ds.train:
        raise DataError(
            f"{ds.image_dir}: {len(missing)} evaluation image(s) of {ds.ann_file} not found "
            f"{ids_text(missing)}"
        )
    if len(missing) == len(ds):
        raise DataError(
            f"{ds.image_dir}: none of the {len(ds)} training images of {ds.ann_file} was found "
            f"{ids_text(missing)}"
        )


__all__ = ["CocoDataModule"]


class CocoDataModule(TaskDataModule):
    """COCO-format detection data (train with augmentation, val resized to `image_size`).

    Args:
        root: data set directory.
        train_images / val_images: image directories (relative to `root` unless absolute).
        train_ann / val_ann: COCO instances JSON files (relative to `root` unless absolute).
        image_size: network input side (or `(h, w)`); the val transform is a plain resize to it, and
            the detector maps its boxes back to each original image (`predict(orig_sizes=...)`).
        augment: training augmentation preset, "ssdlite" (IoU crop + flip), "ssd" (plus photometric
            distortion and zoom out) or "flip" (flip only, for short runs).
        global_batch_size / batch_size (per process; wins) / val_batch_size / num_workers /
            pin_memory: as `TaskDataModule`.
        keep_empty_train: keep training images without any box (pure background samples).
        min_box_size: boxes whose width or height is <= this (px) are dropped.
        synthetic / synthetic_options: generate the shapes data set at `root` with
            `dense.data.shapes_coco.ensure_shapes_coco(**synthetic_options)` if needed.

    After `setup`: `train_dataset` / `val_dataset` (`CocoDetection`); `info()` gives the class
    count (K + 1, with the background), names, label -> category id and the val annotation file.
    """

    synthetic_name = "shapes_coco"
    layout = (
        "expected the COCO layout: ROOT/train2017/*.jpg, ROOT/val2017/*.jpg, "
        "ROOT/annotations/instances_train2017.json, ROOT/annotations/instances_val2017.json "
        "(set data.root, or data.train_images / data.train_ann / data.val_images / data.val_ann; "
        "data=shapes_coco generates a small synthetic data set in this layout)"
    )
    collate_fn = staticmethod(collate_detection)

    def __init__(
        self,
        root: str | os.PathLike,
        train_images: str = "train2017",
        train_ann: str = "annotations/instances_train2017.json",
        val_images: str = "val2017",
        val_ann: str = "annotations/instances_val2017.json",
        image_size: int | Sequence[int] = 320,
        augment: str = "ssdlite",
        keep_empty_train: bool = True,
        min_box_size: float = 1.0,
        **common: Any,
    ) -> None:
        super().__init__(root, **common)
        if augment not in PRESETS:
            raise ValueError(f"unknown augment preset {augment!r}; valid: {list(PRESETS)}")
        size = (int(image_size),) * 2 if isinstance(image_size, (int, float)) else tuple(map(int, image_size))
        if len(size) != 2 or min(size) < 32:
            raise ValueError(f"image_size must be a side >= 32 or (h, w), got {image_size}")
        self.train_images = self._resolve(train_images)
        self.train_ann = self._resolve(train_ann)
        self.val_images = self._resolve(val_images)
        self.val_ann = self._resolve(val_ann)
        self.image_size: int | tuple[int, int] = size[0] if size[0] == size[1] else size
        self.augment = augment
        self.keep_empty_train = bool(keep_empty_train)
        self.min_box_size = float(min_box_size)

    def _resolve(self, p: str | os.PathLike) -> Path:
        p = Path(p).expanduser()
        return p if p.is_absolute() else self.root / p

    def generate(self) -> None:
        ensure_shapes_coco(self.root, **self.synthetic_options)

    def _check_paths(self, stage: str | None) -> None:
        need = [("val_images", self.val_images, True), ("val_ann", self.val_ann, False)]
        if stage in (None, "fit"):
            need = [("train_images", self.train_images, True), ("train_ann", self.train_ann, False)] + need
        missing = [
            f"{name}={path} ({'directory' if is_dir else 'file'})"
            for name, path, is_dir in need
            if not (path.is_dir() if is_dir else path.is_file())
        ]
        if missing:
            raise DataPathError(f"missing under data root {self.root}: {', '.join(missing)}. {self.layout}")

    def build_datasets(self, stage: str | None) -> None:
        self._check_paths(stage)
        if self.val_dataset is None:
            self.val_dataset = CocoDetection(
                self.val_images,
                self.val_ann,
                transform=build_detection_transform(self.augment, self.image_size, train=False),
                train=False,
                min_box_size=self.min_box_size,
            )
            _check_files(self.val_dataset)
        if stage in (None, "fit") and self.train_dataset is None:
            train = CocoDetection(
                self.train_images,
                self.train_ann,
                transform=build_detection_transform(self.augment, self.image_size, train=True),
                train=True,
                keep_empty=self.keep_empty_train,
                min_box_size=self.min_box_size,
            )
            if train.cat_ids != self.val_dataset.cat_ids:
                raise DataError(
                    f"train and val annotation files have different categories: {self.train_ann} has ids "
                    f"{train.cat_ids}, {self.val_ann} has {self.val_dataset.cat_ids}"
                )
            if len(train) == 0:
                raise DataError(f"{self.train_ann}: no training images (after dropping images without boxes)")
            if not any(len(r["boxes"]) for r in train._records):
                raise DataError(f"{self.train_ann}: not a single usable box in the training annotations")
            _check_files(train)
            self.train_dataset = train

    def info(self) -> DatasetInfo:
        self._ready()
        ds = self.val_dataset
        return DatasetInfo(
            num_classes=ds.num_classes,
            class_names=ds.class_names,
            label_to_cat_id=ds.label_to_cat_id,
            val_ann_file=str(self.val_ann),
        )
