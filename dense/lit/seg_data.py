"""``CityscapesDataModule``: Cityscapes-layout segmentation data for Lightning (glue over ``dense.data``).

The layout is the official one (``root/leftImg8bit/{split}/<city>/*_leftImg8bit.png`` and
``root/gtFine/{split}/<city>/*_gtFine_labelIds.png``). With ``synthetic=True`` the
shapes-cityscapes scenes (:mod:`dense.data.shapes_cityscapes`) are generated at ``root`` in
``prepare_data`` when they are not there yet, so ``data=shapes_cityscapes`` works on a fresh machine.

Training batches are augmented crops (random scale, pad with ignore, crop, flip, optional colour
jitter); validation batches are whole images with their masks at full label resolution (the metric
is defined there), the image optionally downscaled by ``eval_scale``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from dense.data.cityscapes import CITYSCAPES_CLASSES, NUM_CLASSES, CityscapesSegmentation
from dense.data.seg_transforms import build_segmentation_transform

__all__ = ["CityscapesDataModule", "collate_segmentation"]

log = logging.getLogger(__name__)

_LAYOUT = (
    "expected the Cityscapes layout: ROOT/leftImg8bit/{train,val}/<city>/*_leftImg8bit.png and "
    "ROOT/gtFine/{train,val}/<city>/*_gtFine_labelIds.png (set data.root, or $CITYSCAPES_ROOT; "
    "data=shapes_cityscapes generates a small synthetic data set in this layout)"
)


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    size = (int(value),) * 2 if isinstance(value, (int, float)) else tuple(int(v) for v in value)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"{name} must be a positive side or (h, w), got {value}")
    return size  # type: ignore[return-value]


def collate_segmentation(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples of :class:`CityscapesSegmentation` into ``{"image" [N, 3, H, W], "mask" [N, H, W],
    "name": [str], "path": [str]}``; every image of a batch must have the same size."""
    shapes = {(tuple(s["image"].shape[-2:]), tuple(s["mask"].shape)) for s in samples}
    if len(shapes) > 1:
        names = ", ".join(f"{s['name']} {tuple(s['mask'].shape)}" for s in samples)
        raise ValueError(
            f"images of one batch differ in size ({names}); validation runs at full resolution, "
            "so use data.val_batch_size=1 for data sets with mixed image sizes"
        )
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "mask": torch.stack([s["mask"] for s in samples]),
        "name": [s["name"] for s in samples],
        "path": [s["path"] for s in samples],
    }


def _worker_init(worker_id: int) -> None:
    # The workers are the loading parallelism already; OpenCV's own pool in each would compete
    # with the training threads. (The dataset reseeds its augmentation per worker itself.)
    import cv2

    cv2.setNumThreads(1)


class CityscapesDataModule(LightningDataModule):
    """Cityscapes-format semantic segmentation data (19 trainIds, 255 = ignore).

    Args:
        root: data set directory (holds ``leftImg8bit/`` and ``gtFine/``).
        train_split / val_split: split folder names.
        crop: training crop ``(h, w)`` (or one side); the output of the training pipeline.
        scale: ``(min, max)`` random rescale of the training images before the crop.
        flip: horizontal flip probability (``True`` = 0.5, ``False`` = none).
        photometric: colour jitter in training.
        eval_scale: validation image scale (< 1 evaluates faster; the masks stay at full
            resolution and the module upsamples the logits to them).
        batch_size: training batch size per device; ``val_batch_size``: full-resolution
            validation images per batch (they must share one size).
        num_workers: DataLoader worker processes (per device).
        synthetic: generate the shapes-cityscapes data set at ``root`` in ``prepare_data`` if needed.
        synthetic_options: keyword arguments of
            :func:`dense.data.shapes_cityscapes.ensure_shapes_cityscapes` (``num_train``,
            ``num_val``, ``size``, ``seed``).
        check_values: let the data set decode every label once and reject values outside the
            label table (cached per file; see :class:`CityscapesSegmentation`).
        scan_cache: where that check caches its results (``None``: the data set's default under
            ``~/.cache``; ``False``: no cache; the synthetic data set is never cached).
        pin_memory: pin host memory (default: when CUDA is available).

    The data sets are built (and so validated: layout, pairs, sizes, label values) in
    :meth:`setup`, before any training step. After it: ``train_dataset`` / ``val_dataset``,
    ``num_classes`` (19) and ``class_names`` (by trainId).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        train_split: str = "train",
        val_split: str = "val",
        crop: int | Sequence[int] = (512, 1024),
        scale: Sequence[float] = (0.5, 2.0),
        flip: bool | float = True,
        photometric: bool = False,
        eval_scale: float = 1.0,
        batch_size: int = 8,
        val_batch_size: int = 2,
        num_workers: int = 2,
        synthetic: bool = False,
        synthetic_options: Mapping[str, Any] | None = None,
        check_values: bool = True,
        scan_cache: str | os.PathLike | bool | None = None,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__()
        if int(batch_size) < 1 or int(val_batch_size) < 1:
            raise ValueError(f"batch sizes must be >= 1, got {batch_size} / {val_batch_size}")
        if int(num_workers) < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        hflip = (0.5 if flip else 0.0) if isinstance(flip, bool) else float(flip)
        if not 0.0 <= hflip <= 1.0:
            raise ValueError(f"flip must be a bool or a probability, got {flip}")
        self.root = Path(root).expanduser()
        self.train_split, self.val_split = str(train_split), str(val_split)
        self.crop = _pair(crop, "crop")
        self.scale = (float(scale[0]), float(scale[1]))
        self.flip = hflip
        self.photometric = bool(photometric)
        self.eval_scale = float(eval_scale)
        # Built here so that a bad crop / scale / eval_scale fails before any data work.
        self.train_transform = build_segmentation_transform(
            True, crop=self.crop, scale=self.scale, photometric=self.photometric, hflip=self.flip
        )
        self.val_transform = build_segmentation_transform(False, eval_scale=self.eval_scale)
        self.batch_size = int(batch_size)
        self.val_batch_size = int(val_batch_size)
        self.num_workers = int(num_workers)
        self.synthetic = bool(synthetic)
        self.synthetic_options = dict(synthetic_options or {})
        self.check_values = bool(check_values)
        # The synthetic files are ours and checked by their generator: no cache entries for them.
        self.scan_cache = False if self.synthetic and scan_cache is None else scan_cache
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.train_dataset: CityscapesSegmentation | None = None
        self.val_dataset: CityscapesSegmentation | None = None

    # ---------------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Generate the synthetic data set if asked (safe to call from several processes)."""
        if self.synthetic:
            from dense.data.shapes_cityscapes import ensure_shapes_cityscapes

            ensure_shapes_cityscapes(self.root, **self.synthetic_options)

    def _dataset(self, split: str, transform: Any) -> CityscapesSegmentation:
        return CityscapesSegmentation(
            self.root,
            split,
            transform=transform,
            require_labels=True,
            check_values=self.check_values,
            cache_dir=self.scan_cache,
        )

    def setup(self, stage: str | None = None) -> None:
        """Scan and validate the splits (once; later calls for the same stage are no-ops)."""
        if not self.root.is_dir():
            hint = "" if self.synthetic else "; data=shapes_cityscapes (synthetic=true) generates one"
            raise FileNotFoundError(f"data root not found: {self.root}{hint}. {_LAYOUT}")
        if self.val_dataset is None:
            self.val_dataset = self._dataset(self.val_split, self.val_transform)
        if stage in (None, "fit") and self.train_dataset is None:
            self.train_dataset = self._dataset(self.train_split, self.train_transform)

    # --- what the model and the evaluation need ---------------------------------------------------
    @property
    def num_classes(self) -> int:
        """19: the evaluated Cityscapes classes (trainIds 0..18)."""
        return NUM_CLASSES

    @property
    def class_names(self) -> list[str]:
        """Class names indexed by trainId."""
        return list(CITYSCAPES_CLASSES)

    @property
    def val_label_dir(self) -> Path:
        """The folder of the val ground truth (``tools/score.py cityscapes`` scores against it)."""
        return self.root / "gtFine" / self.val_split

    # --- loaders ------------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            raise RuntimeError("CityscapesDataModule.setup('fit') has not been called yet")
        ds, workers = self.train_dataset, self.num_workers
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=True,
            # A ragged batch of one breaks BatchNorm after R-ASPP's image pooling; keep it only when
            # the whole set fits in one batch (tiny smoke runs).
            drop_last=len(ds) > self.batch_size,
            num_workers=workers,
            collate_fn=collate_segmentation,
            pin_memory=self.pin_memory,
            persistent_workers=workers > 0,  # worker start-up costs seconds per epoch on small CPUs
            worker_init_fn=_worker_init if workers > 0 else None,
        )

    def val_dataloader(self) -> DataLoader:
        if self.val_dataset is None:
            raise RuntimeError("CityscapesDataModule.setup() has not been called yet")
        sampler = None
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # Lightning's DistributedSampler pads the last ranks with repeated images, which a
            # confusion matrix would count twice; this one gives each image to exactly one rank
            # (and Lightning keeps a DistributedSampler it is handed).
            from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

            sampler = UnrepeatedDistributedSampler(self.val_dataset, shuffle=False)
        workers = self.num_workers
        return DataLoader(
            self.val_dataset,
            batch_size=self.val_batch_size,
            shuffle=False,
            sampler=sampler,
            num_workers=workers,
            collate_fn=collate_segmentation,
            pin_memory=self.pin_memory,
            persistent_workers=workers > 0,
            worker_init_fn=_worker_init if workers > 0 else None,
        )

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
