"""`DetectionModule`: Lightning glue around a plain-torch `Detector` (thin: no model logic here).

Training: forward + `model.loss` logs `train/loss`, `train/loss_cls`, `train/loss_box`.
Validation: `model.predict(images, orig_sizes)` gives boxes in each original image's pixels, turned
into COCO results with the data set's category ids, gathered from every DDP rank, de-duplicated
and scored once with COCOeval semantics (`dense.evaluation.coco.evaluate_coco`): `val/map`,
`val/map_50`, `val/map_75`, `val/map_small`, `val/map_medium`, `val/map_large` and the recalls
`val/mar_*`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torchvision.utils import draw_bounding_boxes

from dense.evaluation.coco import (
    STAT_NAMES,
    CocoResult,
    detections_to_coco_results,
    evaluate_coco,
    merge_detections,
)
from dense.lit.module import TaskModule, world_size

__all__ = ["METRIC_NAMES", "DetectionModule"]

# COCOeval stat -> logged name (torchmetrics' MeanAveragePrecision names, under "val/").
METRIC_NAMES: dict[str, str] = dict(
    zip(
        STAT_NAMES,
        (
            "map",
            "map_50",
            "map_75",
            "map_small",
            "map_medium",
            "map_large",
            "mar_1",
            "mar_10",
            "mar_100",
            "mar_small",
            "mar_medium",
            "mar_large",
        ),
    )
)


class DetectionModule(TaskModule):
    """Train and validate a `Detector` on COCO-format data.

    Args (besides `TaskModule`'s: model, info, optimizer, scheduler, num_log_images, and
    norm_weight_decay, here 0.0 by default):
        log_score_threshold: score above which predictions are drawn.
        val_loss: also compute and log `val/loss*` (one more forward pass per val batch).
        coco_engine: "faster_coco_eval" or "pycocotools" (same numbers).

    `info` must carry `label_to_cat_id` and `val_ann_file` (a `CocoDataModule`'s does).
    After each validation, besides `last_metrics`: `last_coco` (the `CocoResult`) and
    `last_detections` (the scored COCO results list).
    """

    task = "detect"

    def __init__(
        self,
        *args: Any,
        log_score_threshold: float = 0.3,
        val_loss: bool = False,
        coco_engine: str = "faster_coco_eval",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("norm_weight_decay", 0.0)  # no weight decay on BatchNorm (SSDLite recipes)
        super().__init__(*args, **kwargs)
        info = self.info
        if not info.label_to_cat_id or info.val_ann_file is None:
            raise ValueError("DetectionModule needs a DatasetInfo with label_to_cat_id and val_ann_file")
        self.log_score_threshold = float(log_score_threshold)
        self.val_loss = bool(val_loss)
        self.coco_engine = coco_engine
        self._val_results: list[dict[str, Any]] = []
        self._val_image_ids: list[int] = []
        self._gt_cache: tuple[str, dict[str, Any]] | None = None
        self.last_coco: CocoResult | None = None
        self.last_detections: list[dict[str, Any]] = []

    # --- training ---------------------------------------------------------------------------------
    def _shared_step(self, images: Tensor, targets: list[dict[str, Any]], stage: str) -> dict[str, Tensor]:
        """Forward + loss, logged as `{stage}/loss*`; returns the loss dict."""
        losses = self.model.loss(self.model(images), targets)
        train = stage == "train"
        self.log_dict(
            {f"{stage}/{k}": v.detach() for k, v in losses.items() if k.startswith("loss")},
            on_step=train,
            on_epoch=not train,
            batch_size=images.shape[0],
            sync_dist=not train and world_size() > 1,
        )
        self.log(
            f"{stage}_loss", losses["loss"].detach(), prog_bar=True, logger=False, batch_size=images.shape[0]
        )
        return losses

    def training_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        images, targets = batch if batch is not None else (None, None)
        if images is None or images.shape[0] < 2:
            # Every image of the batch was unreadable (collate returned None), or one image is left:
            # BatchNorm cannot train on one sample at the 1x1 extra-layer maps. Skip the step.
            # Under DDP every rank must run backward, so a zero loss stands in for the skip there.
            if world_size() > 1:
                return sum(p.sum() for p in self.model.parameters() if p.requires_grad) * 0.0
            return None
        return self._shared_step(images, targets, "train")["loss"]

    # --- validation -------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_results = []
        self._val_image_ids = []

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        if batch is None:  # eval data sets raise on unreadable images; nothing to do otherwise
            return
        images, targets = batch
        if self.val_loss:
            self._shared_step(images, targets, "val")
        preds = self.model.predict(images, orig_sizes=[t["orig_size"] for t in targets])
        preds = [{k: v.cpu() for k, v in p.items()} for p in preds]
        image_ids = [int(t["image_id"]) for t in targets]
        self._val_results.extend(detections_to_coco_results(preds, image_ids, self.info.label_to_cat_id))
        self._val_image_ids.extend(image_ids)
        if batch_idx == 0 and not self.trainer.sanity_checking and self.num_log_images > 0:
            self._log_images(images[: self.num_log_images], targets)

    def on_validation_epoch_end(self) -> None:
        results, seen = self._val_results, self._val_image_ids
        self._val_results, self._val_image_ids = [], []
        if self.trainer.sanity_checking:
            return  # a couple of batches: scoring them against the whole file means nothing
        if world_size() > 1:
            # Results are Python objects (self.all_gather handles tensors only).
            gathered: list[Any] = [None] * world_size()
            dist.all_gather_object(gathered, (results, seen))
            results = merge_detections([g[0] for g in gathered])
            seen = sorted({i for g in gathered for i in g[1]})
        else:
            results = merge_detections([results])
        # Every rank holds the same merged list and scores it (same numbers everywhere, no broadcast).
        coco = evaluate_coco(self._ground_truth(seen), results, engine=self.coco_engine)
        metrics = {f"val/{METRIC_NAMES[name]}": float(coco.stats[name]) for name in STAT_NAMES}
        self._publish(metrics, prog_bar="val/map")
        self.last_coco = coco
        self.last_detections = results
        title = f"COCO bbox ({self._where()}{coco.num_images} images, {coco.num_detections} detections)"
        self.print(coco.format_table(title=title))

    def _ground_truth(self, seen: list[int]) -> str | dict[str, Any]:
        """The val annotation file, or the part of it that was evaluated.

        With `limit_val_batches` (or a sampler that covers part of the set) the images that were
        never predicted must not count as misses: the ground truth is cut to the evaluated images.
        """
        path = str(self.info.val_ann_file)
        if self._gt_cache is None or self._gt_cache[0] != path:
            with open(path) as f:
                self._gt_cache = (path, json.load(f))
        gt = self._gt_cache[1]
        all_ids = {im["id"] for im in gt["images"]}
        seen_set = set(seen)
        if seen_set >= all_ids:
            return path
        rank_zero_warn(
            f"validation covered {len(seen_set & all_ids)} of {len(all_ids)} images of {Path(path).name}: "
            "scoring those only (limit_val_batches?)"
        )
        return {
            **gt,
            "images": [im for im in gt["images"] if im["id"] in seen_set],
            "annotations": [a for a in gt.get("annotations", []) if a["image_id"] in seen_set],
        }

    # --- pictures ---------------------------------------------------------------------------------
    def _log_images(self, images: Tensor, targets: list[dict[str, Any]]) -> None:
        """Ground truth (green) and predictions (red) on the first val images, in the network's input
        pixels (a second, small `predict` without `orig_sizes`), for TensorBoard."""
        if not self._image_writers():
            return
        names = self.info.class_names

        def text(label: int, score: float | None = None) -> str:
            name = names[label] if 0 <= label < len(names) else str(label)
            return name if score is None else f"{name} {score:.2f}"

        pictures = []
        for img_f, target, pred in zip(images, targets, self.model.predict(images)):
            img = (img_f.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
            if len(target["boxes"]):
                labels = [text(lab) for lab in target["labels"].tolist()]
                img = draw_bounding_boxes(img, target["boxes"].detach().cpu(), labels=labels, colors="lime")
            keep = pred["scores"] >= self.log_score_threshold
            if keep.any():
                labels = [
                    text(lab, s)
                    for lab, s in zip(pred["labels"][keep].tolist(), pred["scores"][keep].tolist())
                ]
                img = draw_bounding_boxes(
                    img, pred["boxes"][keep].float().cpu(), labels=labels, colors="red", width=2
                )
            pictures.append(img)
        self._add_images("val/predictions", pictures)
