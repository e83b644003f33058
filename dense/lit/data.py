"""``CocoDataModule``: COCO-format detection data for Lightning (thin glue over ``dense.data``).

The layout is COCO's (``root/train2017``, ``root/val2017``,
``root/annotations/instances_{train,val}2017.json``); every path can be overridden, relative
paths are taken relative to ``root``. With ``synthetic=True`` the shapes data set
(:mod:`dense.data.shapes_coco`) is generated at ``root`` in ``prepare_data`` when it is not there
yet, so ``data=shapes_coco`` works on a fresh machine.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, get_worker_info

from dense.data.coco import CocoDetection, collate_detection
from dense.data.det_transforms import PRESETS, build_detection_transform

__all__ = ["CocoDataModule"]

log = logging.getLogger(__name__)

_LAYOUT = (
    "expected the COCO layout: ROOT/train2017/*.jpg, ROOT/val2017/*.jpg, "
    "ROOT/annotations/instances_train2017.json, ROOT/annotations/instances_val2017.json "
    "(set data.root, or data.train_images / data.train_ann / data.val_images / data.val_ann; "
    "data=shapes_coco generates a small synthetic data set in this layout)"
)


def _seed_transform_in_worker(worker_id: int) -> None:
    """Give every DataLoader worker its own augmentation stream (and one OpenCV thread).

    albumentations' ``Compose`` keeps its own RNG (global seeds do not reach it); forked workers
    would all inherit the same state and draw identical crops / flips. ``worker_info.seed`` differs
    per worker and per epoch and follows ``torch.manual_seed`` (so runs stay reproducible).
    """
    import cv2

    # The workers are the data-loading parallelism already; OpenCV's own thread pool in each of them
    # would only compete with the training threads (badly so on small CPUs).
    cv2.setNumThreads(1)
    info = get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info is not None else None
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(info.seed % 2**32)


class CocoDataModule(LightningDataModule):
    """COCO-format detection data (train with augmentation, val resized to ``image_size``).

    Args:
        root: data set directory.
        train_images / val_images: image directories (relative to ``root`` unless absolute).
        train_ann / val_ann: COCO instances JSON files (relative to ``root`` unless absolute).
        image_size: network input side (or ``(h, w)``); the val transform is a plain resize to it, so
            predictions map back to the original image by a scale.
        augment: training augmentation preset, ``"ssdlite"`` (IoU crop + flip), ``"ssd"`` (plus
            photometric distortion and zoom out) or ``"flip"`` (flip only, for short runs).
        batch_size: training batch size per device; ``val_batch_size`` defaults to it.
        num_workers: DataLoader worker processes (per device).
        keep_empty_train: keep training images without any box (pure background samples).
        min_box_size: boxes whose width or height is <= this (px) are dropped.
        synthetic: generate the shapes data set at ``root`` in ``prepare_data`` if needed.
        synthetic_options: keyword arguments of :func:`dense.data.shapes_coco.ensure_shapes_coco`
            (``num_train``, ``num_val``, ``image_size``, ``seed``, ...).
        pin_memory: pin host memory (default: when CUDA is available).

    After :meth:`setup`: ``train_dataset`` / ``val_dataset`` (:class:`CocoDetection`),
    ``num_classes`` (K + 1, with the background), ``label_to_cat_id``, ``class_names`` and
    ``val_ann_file`` (the file COCO scoring uses).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        train_images: str = "train2017",
        train_ann: str = "annotations/instances_train2017.json",
        val_images: str = "val2017",
        val_ann: str = "annotations/instances_val2017.json",
        image_size: int | Sequence[int] = 320,
        augment: str = "ssdlite",
        batch_size: int = 16,
        val_batch_size: int | None = None,
        num_workers: int = 2,
        keep_empty_train: bool = True,
        min_box_size: float = 1.0,
        synthetic: bool = False,
        synthetic_options: Mapping[str, Any] | None = None,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__()
        if augment not in PRESETS:
            raise ValueError(f"unknown augment preset {augment!r}; valid: {list(PRESETS)}")
        size = (int(image_size),) * 2 if isinstance(image_size, (int, float)) else tuple(map(int, image_size))
        if len(size) != 2 or min(size) < 32:
            raise ValueError(f"image_size must be a side >= 32 or (h, w), got {image_size}")
        if int(batch_size) < 1 or (val_batch_size is not None and int(val_batch_size) < 1):
            raise ValueError(f"batch sizes must be >= 1, got {batch_size} / {val_batch_size}")
        if int(num_workers) < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.root = Path(root).expanduser()
        self.train_images = self._resolve(train_images)
        self.train_ann = self._resolve(train_ann)
        self.val_images = self._resolve(val_images)
        self.val_ann = self._resolve(val_ann)
        self.image_size: int | tuple[int, int] = size[0] if size[0] == size[1] else size
        self.augment = augment
        self.batch_size = int(batch_size)
        self.val_batch_size = int(val_batch_size) if val_batch_size is not None else self.batch_size
        self.num_workers = int(num_workers)
        self.keep_empty_train = bool(keep_empty_train)
        self.min_box_size = float(min_box_size)
        self.synthetic = bool(synthetic)
        self.synthetic_options = dict(synthetic_options or {})
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.train_dataset: CocoDetection | None = None
        self.val_dataset: CocoDetection | None = None

    def _resolve(self, p: str | os.PathLike) -> Path:
        p = Path(p).expanduser()
        return p if p.is_absolute() else self.root / p

    # ---------------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Generate the synthetic data set if asked (safe to call from several processes)."""
        if self.synthetic:
            from dense.data.shapes_coco import ensure_shapes_coco

            ensure_shapes_coco(self.root, **self.synthetic_options)

    def _check_paths(self, stage: str | None) -> None:
        if not self.root.is_dir():
            hint = "" if self.synthetic else "; data=shapes_coco (synthetic=true) generates one"
            raise FileNotFoundError(f"data root not found: {self.root}{hint}. {_LAYOUT}")
        need = [("val_images", self.val_images, True), ("val_ann", self.val_ann, False)]
        if stage in (None, "fit"):
            need = [("train_images", self.train_images, True), ("train_ann", self.train_ann, False)] + need
        missing = [
            f"{name}={path} ({'directory' if is_dir else 'file'})"
            for name, path, is_dir in need
            if not (path.is_dir() if is_dir else path.is_file())
        ]
        if missing:
            raise FileNotFoundError(f"missing under data root {self.root}: {', '.join(missing)}. {_LAYOUT}")

    def setup(self, stage: str | None = None) -> None:
        """Load the annotation files (once; later calls for the same stage are no-ops)."""
        self._check_paths(stage)
        if self.val_dataset is None:
            self.val_dataset = CocoDetection(
                self.val_images,
                self.val_ann,
                transform=build_detection_transform(self.augment, self.image_size, train=False),
                train=False,
                min_box_size=self.min_box_size,
            )
        if stage in (None, "fit") and self.train_dataset is None:
            transform = build_detection_transform(self.augment, self.image_size, train=True)
            # With num_workers=0 the main process augments: seed it from torch so runs repeat.
            transform.set_random_seed(torch.initial_seed() % 2**32)
            self.train_dataset = CocoDetection(
                self.train_images,
                self.train_ann,
                transform=transform,
                train=True,
                keep_empty=self.keep_empty_train,
                min_box_size=self.min_box_size,
            )
            if self.train_dataset.cat_ids != self.val_dataset.cat_ids:
                raise ValueError(
                    f"train and val annotation files have different categories: {self.train_ann} has ids "
                    f"{self.train_dataset.cat_ids}, {self.val_ann} has {self.val_dataset.cat_ids}"
                )
            if len(self.train_dataset) == 0:
                raise ValueError(
                    f"{self.train_ann}: no training images (after dropping images without boxes)"
                )

    def _require(self) -> CocoDetection:
        if self.val_dataset is None:
            raise RuntimeError("CocoDataModule.setup() has not been called yet")
        return self.val_dataset

    # --- what the model and the evaluation need ---------------------------------------------------
    @property
    def num_classes(self) -> int:
        """K + 1 (the model's class count, background included)."""
        return self._require().num_classes

    @property
    def label_to_cat_id(self) -> dict[int, int]:
        """Contiguous label 1..K -> the data set's category id (what COCO results must use)."""
        return dict(self._require().label_to_cat_id)

    @property
    def class_names(self) -> list[str]:
        """Class names indexed by label (index 0 = ``"__background__"``)."""
        return list(self._require().class_names)

    @property
    def val_ann_file(self) -> Path:
        """The val annotation file that COCO scoring uses as ground truth."""
        return self.val_ann

    # --- loaders ------------------------------------------------------------------------------------
    def _loader(self, dataset: CocoDetection, batch_size: int, train: bool) -> DataLoader:
        workers = self.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train,
            # Drop the ragged last training batch: a batch of one breaks BatchNorm on the 1x1 maps of
            # the extra layers. Keep it when the whole set fits in one batch (tiny smoke runs).
            drop_last=train and len(dataset) > batch_size,
            num_workers=workers,
            collate_fn=collate_detection,
            pin_memory=self.pin_memory,
            persistent_workers=workers > 0,  # worker start-up costs seconds per epoch on small CPUs
            worker_init_fn=_seed_transform_in_worker if train and workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            raise RuntimeError("CocoDataModule.setup('fit') has not been called yet")
        return self._loader(self.train_dataset, self.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._require(), self.val_batch_size, train=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
