"""``SegmentationModule``: Lightning glue around a plain-torch ``Segmenter`` (thin: no model logic here).

Training: forward + ``model.loss`` (cross-entropy, 255 ignored), logged as ``train/loss``.
Validation: at full label resolution. When the datamodule evaluates a downscaled image
(``eval_scale < 1``) the logits are upsampled to the mask size before the argmax, as the official
metric is defined on the original pixels. A :class:`~dense.evaluation.cityscapes.CityscapesMIoU`
confusion matrix is accumulated on the device and summed over DDP ranks; logged:
``val/miou`` (a fraction), ``val/iou/<class>`` (spaces in class names become ``_``) and
``val/loss``. The per-class table is printed after each validation, and a few images are logged to
TensorBoard as image | prediction | ground truth in the Cityscapes palette.

With ``pred_dir`` set, every validated prediction is also written there as a labelIds PNG named
after its input image (the official submission format; ``tools/score.py cityscapes`` scores it).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torchmetrics.aggregation import SumMetric

from dense.data.cityscapes import CITYSCAPES_CLASSES, colorize_train_ids
from dense.data.seg_transforms import upsample_logits
from dense.evaluation.cityscapes import (
    CityscapesMIoU,
    format_iou_table,
    prediction_filename,
    save_label_ids_png,
)
from dense.lit.checkpoint import CHECKPOINT_KEY
from dense.lit.schedulers import lightning_optimizers

__all__ = ["SegmentationModule", "iou_metric_name"]


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def iou_metric_name(class_name: str) -> str:
    """Logged name of a class's IoU: ``val/iou/traffic_light``."""
    return "val/iou/" + class_name.replace(" ", "_")


class SegmentationModule(LightningModule):
    """Train and validate a ``Segmenter`` (DESIGN.md sec. 2) on Cityscapes-format data.

    Args:
        model: a built segmenter (``dense.build_model("segment", ...)``) with ``forward``,
            ``loss``, ``num_classes`` and ``config``.
        optimizer: ``params -> Optimizer`` (a Hydra ``_partial_: true`` optimizer config). ``None``
            is allowed for evaluation-only use.
        scheduler: ``optimizer -> LR scheduler`` partial; called with ``total_steps`` and
            ``steps_per_epoch`` when it accepts them (``dense.lit.schedulers``) and stepped every
            optimizer step. ``None``: constant learning rate.
        class_names: names by trainId (default: the datamodule's, else the 19 Cityscapes classes).
        num_log_images: validation images logged to TensorBoard per validation.
        log_image_height: height the logged panels are resized to (at most; keeps event files small).
        pred_dir: write every validation prediction there as a labelIds PNG (``None``: do not).

    After each validation: ``last_metrics`` (logged names -> floats; NaN for a class absent from
    the ground truth and never predicted), ``last_iou`` (per-class list), ``last_num_images``.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[[Iterable[Any]], torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        *,
        class_names: Sequence[str] | None = None,
        num_log_images: int = 4,
        log_image_height: int = 256,
        pred_dir: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        for attr in ("loss", "num_classes", "config"):
            if not hasattr(model, attr):
                raise TypeError(
                    f"SegmentationModule needs a Segmenter with .{attr}; got {type(model).__name__}"
                )
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.class_names = list(class_names) if class_names is not None else None
        self.num_log_images = int(num_log_images)
        self.log_image_height = int(log_image_height)
        self.pred_dir = Path(pred_dir) if pred_dir is not None else None
        # No argument validation per batch: the dataset already rejected bad label values.
        self.val_miou = CityscapesMIoU(num_classes=int(model.num_classes), validate_args=False)
        self.val_images = SumMetric()
        self._logged_images = 0
        self.last_metrics: dict[str, float] = {}
        self.last_iou: list[float] = []
        self.last_num_images = 0
        self.last_val_global_step: int | None = None

    # ---------------------------------------------------------------------------------------------
    # setup
    # ---------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Take the class names from the datamodule and check the class count against the model."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if self.class_names is None and hasattr(dm, "class_names"):
            self.class_names = list(dm.class_names)
        k = int(self.model.num_classes)
        if dm is not None and hasattr(dm, "num_classes") and int(dm.num_classes) != k:
            raise ValueError(
                f"the model predicts {k} classes but the data set has {dm.num_classes} "
                f"(needs num_classes={dm.num_classes})"
            )
        if self.class_names is None:
            self.class_names = list(CITYSCAPES_CLASSES) if k == len(CITYSCAPES_CLASSES) else None
        if self.class_names is not None and len(self.class_names) != k:
            raise ValueError(f"{len(self.class_names)} class names for a model of {k} classes")

    def _names(self) -> list[str]:
        return self.class_names or [str(i) for i in range(int(self.model.num_classes))]

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    # ---------------------------------------------------------------------------------------------
    # training
    # ---------------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        images, masks = batch["image"], batch["mask"]
        loss = self.model.loss(self.model(images), masks)
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=False, batch_size=images.shape[0])
        self.log("train_loss", loss.detach(), prog_bar=True, logger=False, batch_size=images.shape[0])
        return loss

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise ValueError("SegmentationModule was built without an optimizer (evaluation only)")
        optimizer = self.optimizer_factory([p for p in self.model.parameters() if p.requires_grad])
        return lightning_optimizers(optimizer, self.scheduler_factory, self.trainer)

    # ---------------------------------------------------------------------------------------------
    # validation
    # ---------------------------------------------------------------------------------------------
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
            sync_dist=_world_size() > 1,
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
        names = self._names()
        metrics = {"val/miou": float(result["miou"]), **{iou_metric_name(n): v for n, v in zip(names, iou)}}
        # NaN (class absent and never predicted) would only draw gaps in the loggers' charts.
        logged = {k: v for k, v in metrics.items() if not math.isnan(v)}
        sync = _world_size() > 1  # identical on every rank; only silences Lightning's DDP warning
        self.log_dict(logged, on_epoch=True, on_step=False, sync_dist=sync)
        self.log("val_miou", metrics["val/miou"], prog_bar=True, logger=False, sync_dist=sync)
        self.last_metrics = metrics
        self.last_iou = iou
        self.last_num_images = num_images
        self.last_val_global_step = int(self.global_step)
        fitting = self.trainer.state.fn == "fit"
        where = f"epoch {self.current_epoch}, step {self.global_step}; " if fitting else ""
        title = f"Cityscapes mIoU ({where}{num_images} images)"
        self.print(format_iou_table(iou, names, miou=metrics["val/miou"], title=title))

    # --- pictures -------------------------------------------------------------------------------------
    def _log_images(self, images: Tensor, preds: Tensor, masks: Tensor) -> None:
        """image | prediction | ground truth, side by side, for TensorBoard (rank 0)."""
        if self.global_rank != 0:
            return
        writers = [lg.experiment for lg in self.loggers if hasattr(lg.experiment, "add_image")]
        if not writers:
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
        for i in range(n):
            tag = f"val/segmentation_{self._logged_images + i}"
            for wr in writers:
                wr.add_image(tag, panels[i], global_step=self.global_step)
        self._logged_images += n

    # ---------------------------------------------------------------------------------------------
    # checkpoints
    # ---------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store what rebuilds the model without the config files (plain types only, so the file
        loads with ``torch.load(weights_only=True)``)."""
        checkpoint[CHECKPOINT_KEY] = {
            "task": "segment",
            "config": dict(self.model.config),
            "state_dict_prefix": "model.",
            "class_names": list(self.class_names or []),
            "val_metrics": dict(self.last_metrics),
        }
