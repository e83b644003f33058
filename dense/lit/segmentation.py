"""`SegmentationModule`: Lightning glue around a plain-torch `Segmenter` (thin: no model logic here).

Training: forward + `model.loss` (cross-entropy, 255 ignored), logged as `train/loss`.
Validation: at full label resolution. When the datamodule evaluates a downscaled image
(`eval_scale < 1`) the logits are upsampled to the mask size before the argmax, as the official
metric is defined on the original pixels. A `CityscapesMIoU` confusion matrix is accumulated on the
device and summed over DDP ranks; logged: `val/miou` (a fraction), `val/iou/<class>` (spaces in
class names become `_`) and `val/loss`. The per-class table is printed after each validation, and
a few images are logged to TensorBoard as image | prediction | ground truth in the Cityscapes palette.

With `pred_dir` set, every validated prediction is also written there as a labelIds PNG named
after its input image (the official submission format; `tools/score.py cityscapes` scores it).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.aggregation import SumMetric

from dense.data.cityscapes import colorize_train_ids
from dense.data.seg_transforms import upsample_logits
from dense.evaluation.cityscapes import (
    CityscapesMIoU,
    format_iou_table,
    prediction_filename,
    save_label_ids_png,
)
from dense.lit.module import TaskModule, world_size

__all__ = ["SegmentationModule", "iou_metric_name"]


def iou_metric_name(class_name: str) -> str:
    """Logged name of a class's IoU: `val/iou/traffic_light`."""
    return "val/iou/" + class_name.replace(" ", "_")


class SegmentationModule(TaskModule):
    """Train and validate a `Segmenter` on Cityscapes-format data.

    Args (besides `TaskModule`'s: model, info, optimizer, scheduler, norm_weight_decay,
    num_log_images):
        log_image_height: height the logged panels are resized to (at most; keeps event files small).
        pred_dir: write every validation prediction there as a labelIds PNG (None: do not).

    After each validation, besides `last_metrics` (NaN for a class absent from the ground truth and
    never predicted): `last_iou` (per-class list) and `last_num_images`.
    """

    task = "segment"

    def __init__(
        self,
        *args: Any,
        log_image_height: int = 256,
        pred_dir: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.log_image_height = int(log_image_height)
        self.pred_dir = Path(pred_dir) if pred_dir is not None else None
        # No argument validation per batch: the dataset already rejected bad label values.
        self.val_miou = CityscapesMIoU(num_classes=self.info.num_classes, validate_args=False)
        self.val_images = SumMetric()
        self._logged_images = 0
        self.last_iou: list[float] = []
        self.last_num_images = 0

    # --- training ---------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any] | None, batch_idx: int) -> Tensor | None:
        if batch is None or (batch["image"].shape[0] < 2 and batch.get("num_skipped", 0)):
            # Every image of the batch was unreadable (collate returned None), or skipping left one:
            # R-ASPP's BatchNorm on the pooled 1x1 branch cannot train on one sample. Skip the step.
            # Under DDP every rank must run backward, so a zero loss stands in for the skip there.
            if world_size() > 1:
                return sum(p.sum() for p in self.model.parameters() if p.requires_grad) * 0.0
            return None
        images, masks = batch["image"], batch["mask"]
        loss = self.model.loss(self.model(images), masks)
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=False, batch_size=images.shape[0])
        self.log("train_loss", loss.detach(), prog_bar=True, logger=False, batch_size=images.shape[0])
        return loss

    # --- validation -------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self.val_miou.reset()
        self.val_images.reset()
        self._logged_images = 0

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        images, masks = batch["image"], batch["mask"]
        # Full label resolution: a downscaled image's logits are brought to the mask size first.
        logits = upsample_logits(self.model(images), masks.shape[-2:])
        self.log(
            "val/loss",
            self.model.loss(logits, masks),
            on_step=False,
            on_epoch=True,
            batch_size=images.shape[0],
            sync_dist=world_size() > 1,
        )
        preds = logits.argmax(1)
        self.val_miou.update(preds, masks)
        self.val_images.update(torch.tensor(float(images.shape[0]), device=images.device))
        if self.pred_dir is not None:
            for pred, name in zip(preds.cpu().numpy(), batch["name"]):
                save_label_ids_png(pred, self.pred_dir / prediction_filename(name))
        if not self.trainer.sanity_checking and self._logged_images < self.num_log_images:
            self._log_images(images, preds, masks)

    def on_validation_epoch_end(self) -> None:
        # compute() sums the confusion matrix over the DDP ranks (every rank gets the same numbers).
        result = self.val_miou.compute()
        num_images = int(self.val_images.compute().item())
        self.val_miou.reset()
        self.val_images.reset()
        if self.trainer.sanity_checking:
            return  # a batch or two: not a score
        iou = [float(v) for v in result["iou"].tolist()]
        names = self.info.class_names
        metrics = {"val/miou": float(result["miou"]), **{iou_metric_name(n): v for n, v in zip(names, iou)}}
        # NaN (class absent and never predicted) would only draw gaps in the loggers' charts.
        self._publish(
            metrics, prog_bar="val/miou", logged={k: v for k, v in metrics.items() if not math.isnan(v)}
        )
        self.last_iou = iou
        self.last_num_images = num_images
        title = f"Cityscapes mIoU ({self._where()}{num_images} images)"
        self.print(format_iou_table(iou, names, miou=metrics["val/miou"], title=title))

    # --- pictures ---------------------------------------------------------------------------------
    def _log_images(self, images: Tensor, preds: Tensor, masks: Tensor) -> None:
        """image | prediction | ground truth, side by side, for TensorBoard (rank 0)."""
        if not self._image_writers():
            self._logged_images = self.num_log_images
            return
        h, w = masks.shape[-2:]
        scale = min(1.0, self.log_image_height / h)
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        n = min(self.num_log_images - self._logged_images, images.shape[0])
        img = F.interpolate(images[:n].detach().float(), size=size, mode="bilinear", align_corners=False)
        img = (img.clamp(0, 1) * 255).round().to(torch.uint8).cpu()

        def colour(labels: Tensor) -> Tensor:
            small = F.interpolate(labels[:n, None].float(), size=size, mode="nearest")[:, 0]
            rgb = colorize_train_ids(small.to(torch.uint8).cpu().numpy())  # [n, h, w, 3]
            return torch.from_numpy(rgb).permute(0, 3, 1, 2)

        panels = torch.cat([img, colour(preds), colour(masks)], dim=-1)  # along the width
        self._add_images("val/segmentation", panels, start=self._logged_images)
        self._logged_images += n
