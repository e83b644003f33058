"""`CityscapesDataModule`: Cityscapes-layout segmentation data for Lightning (glue over `dense.data`).

The layout is the official one (`root/leftImg8bit/{split}/<city>/*_leftImg8bit.png` and
`root/gtFine/{split}/<city>/*_gtFine_labelIds.png`). With `synthetic=True` the shapes-cityscapes
scenes (`dense.data.shapes_cityscapes`) are generated at `root` in `prepare_data` when they are not
there yet, so `data=shapes_cityscapes` works on a fresh machine.

Training batches are augmented crops (random scale, pad with ignore, crop, flip, optional colour
jitter); validation batches are whole images with their masks at full label resolution (the metric
is defined there), the image optionally downscaled by `eval_scale`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import Sampler

from dense.data.cityscapes import CITYSCAPES_CLASSES, NUM_CLASSES, CityscapesSegmentation
from dense.data.info import DatasetInfo
from dense.data.seg_transforms import build_segmentation_transform
from dense.data.shapes_cityscapes import ensure_shapes_cityscapes
from dense.lit.datamodule import TaskDataModule

__all__ = ["CityscapesDataModule", "collate_segmentation"]


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    size = (int(value),) * 2 if isinstance(value, (int, float)) else tuple(int(v) for v in value)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"{name} must be a positive side or (h, w), got {value}")
    return size  # type: ignore[return-value]


def collate_segmentation(batch: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Stack samples of `CityscapesSegmentation` into `{"image" [N, 3, H, W], "mask" [N, H, W],
    "name": [str], "path": [str], "num_skipped": int}`; every image of a batch must have the same
    size. `None` samples (training images the data set skipped) are dropped and counted in
    `num_skipped`; `None` when every sample was skipped (the training step is skipped)."""
    samples = [s for s in batch if s is not None]
    if not samples:
        return None
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
        "num_skipped": len(batch) - len(samples),
    }


class CityscapesDataModule(TaskDataModule):
    """Cityscapes-format semantic segmentation data (19 trainIds, 255 = ignore).

    Args:
        root: data set directory (holds `leftImg8bit/` and `gtFine/`).
        train_split / val_split: split folder names.
        crop: training crop `(h, w)` (or one side); the output of the training pipeline.
        scale: `(min, max)` random rescale of the training images before the crop.
        flip: horizontal flip probability (True = 0.5, False = none).
        photometric: colour jitter in training.
        eval_scale: validation image scale (< 1 evaluates faster; the masks stay at full
            resolution and the module upsamples the logits to them).
        global_batch_size / batch_size (per process; wins) / val_batch_size (full-resolution
            images per batch; they must share one size) / num_workers / pin_memory: as
            `TaskDataModule`.
        synthetic / synthetic_options: generate the shapes-cityscapes set at `root` with
            `dense.data.shapes_cityscapes.ensure_shapes_cityscapes(**synthetic_options)` if needed.
        check_values: let the data set decode every label once and reject values outside the
            label table (cached per file; see `CityscapesSegmentation`).
        scan_cache: where that check caches its results (None: the data set's default under
            `~/.cache`; False: no cache; the synthetic data set is never cached).

    The data sets are built (and so validated: layout, pairs, sizes, label values) in `setup`,
    before any training step.
    """

    synthetic_name = "shapes_cityscapes"
    layout = (
        "expected the Cityscapes layout: ROOT/leftImg8bit/{train,val}/<city>/*_leftImg8bit.png and "
        "ROOT/gtFine/{train,val}/<city>/*_gtFine_labelIds.png (set data.root, or $CITYSCAPES_ROOT; "
        "data=shapes_cityscapes generates a small synthetic data set in this layout)"
    )
    collate_fn = staticmethod(collate_segmentation)

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
        check_values: bool = True,
        scan_cache: str | os.PathLike | bool | None = None,
        **common: Any,
    ) -> None:
        common.setdefault("val_batch_size", 2)  # whole full-resolution images
        super().__init__(root, **common)
        hflip = (0.5 if flip else 0.0) if isinstance(flip, bool) else float(flip)
        if not 0.0 <= hflip <= 1.0:
            raise ValueError(f"flip must be a bool or a probability, got {flip}")
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
        self.check_values = bool(check_values)
        # The synthetic files are ours and checked by their generator: no cache entries for them.
        self.scan_cache = False if self.synthetic and scan_cache is None else scan_cache

    def generate(self) -> None:
        ensure_shapes_cityscapes(self.root, **self.synthetic_options)

    def _dataset(self, split: str, transform: Any, train: bool) -> CityscapesSegmentation:
        # train: a bad image is skipped and counted (DataHealth); val: an error naming it
        return CityscapesSegmentation(
            self.root,
            split,
            train=train,
            transform=transform,
            require_labels=True,
            check_values=self.check_values,
            cache_dir=self.scan_cache,
        )

    def build_datasets(self, stage: str | None) -> None:
        if self.val_dataset is None:
            self.val_dataset = self._dataset(self.val_split, self.val_transform, train=False)
        if stage in (None, "fit") and self.train_dataset is None:
            self.train_dataset = self._dataset(self.train_split, self.train_transform, train=True)

    def info(self) -> DatasetInfo:
        # The 19 evaluated classes of the label table: nothing to read from the files.
        return DatasetInfo(
            num_classes=NUM_CLASSES,
            class_names=CITYSCAPES_CLASSES,
            val_label_dir=str(self.root / "gtFine" / self.val_split),
        )

    def val_sampler(self) -> Sampler | None:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # Lightning's DistributedSampler pads the last ranks with repeated images, which a
            # confusion matrix would count twice; this one gives each image to exactly one rank
            # (and Lightning keeps a DistributedSampler it is handed).
            return UnrepeatedDistributedSampler(self.val_dataset, shuffle=False)
        return None
