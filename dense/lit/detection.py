"""``DetectionModule``: Lightning glue around a plain-torch ``Detector`` (thin: no model logic here).

Training: one shared step (forward, ``model.loss``) logs ``train/loss``, ``train/loss_cls``,
``train/loss_box``. Validation: ``model.predict`` on the resized val images, boxes scaled back to
each image's original size, turned into COCO results with the data set's category ids, gathered
from every DDP rank, de-duplicated and scored once with COCOeval semantics
(:func:`dense.evaluation.coco.evaluate_coco`): ``val/map``, ``val/map_50``, ``val/map_75``,
``val/map_small``, ``val/map_medium``, ``val/map_large`` and the recalls ``val/mar_*``.

Checkpoints carry the model's build config (``checkpoint["dense_model"]``), so
:func:`dense.lit.checkpoint.load_detector_from_checkpoint` rebuilds the model without the run's
config files and without Lightning.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from dense.data.coco import scale_boxes
from dense.evaluation.coco import (
    STAT_NAMES,
    CocoResult,
    detections_to_coco_results,
    evaluate_coco,
    merge_detections,
)
from dense.lit.checkpoint import CHECKPOINT_KEY
from dense.lit.schedulers import lightning_optimizers

__all__ = ["METRIC_NAMES", "DetectionModule"]

log = logging.getLogger(__name__)

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

_NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
)


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class DetectionModule(LightningModule):
    """Train and validate a ``Detector`` (DESIGN.md sec. 2) on COCO-format data.

    Args:
        model: a built detector (``dense.build_model("detect", ...)``) with ``forward``, ``loss``,
            ``predict`` and ``config``.
        optimizer: ``params -> Optimizer`` (a Hydra ``_partial_: true`` optimizer config). ``None``
            is allowed for evaluation-only use.
        scheduler: ``optimizer -> LR scheduler`` partial; called with ``total_steps`` and
            ``steps_per_epoch`` when it accepts them (``dense.lit.schedulers``) and stepped every
            optimizer step. ``None``: constant learning rate.
        val_ann_file: ground-truth COCO file of the val set; ``label_to_cat_id``: contiguous
            label -> data set category id; ``class_names``: names by label. Taken from the
            trainer's datamodule (``CocoDataModule``) when not given.
        norm_weight_decay: weight decay of normalisation-layer parameters (torchvision's SSDLite
            recipe uses 0); ``None`` = the optimizer's weight decay for every parameter.
        num_log_images: validation images drawn with their boxes to TensorBoard per validation.
        log_score_threshold: score above which predictions are drawn.
        val_loss: also compute and log ``val/loss*`` (one more forward pass per val batch).
        coco_engine: ``"faster_coco_eval"`` or ``"pycocotools"`` (same numbers).

    After each validation: ``last_metrics`` (logged names -> floats), ``last_coco`` (the
    :class:`CocoResult`) and ``last_detections`` (the scored COCO results list).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[[Iterable[Any]], torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        *,
        val_ann_file: str | os.PathLike | None = None,
        label_to_cat_id: Mapping[int, int] | None = None,
        class_names: Sequence[str] | None = None,
        norm_weight_decay: float | None = 0.0,
        num_log_images: int = 4,
        log_score_threshold: float = 0.3,
        val_loss: bool = False,
        coco_engine: str = "faster_coco_eval",
    ) -> None:
        super().__init__()
        for attr in ("loss", "predict", "config"):
            if not hasattr(model, attr):
                raise TypeError(f"DetectionModule needs a Detector with .{attr}; got {type(model).__name__}")
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.val_ann_file = str(val_ann_file) if val_ann_file is not None else None
        self.label_to_cat_id = (
            {int(k): int(v) for k, v in label_to_cat_id.items()} if label_to_cat_id else None
        )
        self.class_names = list(class_names) if class_names is not None else None
        self.norm_weight_decay = norm_weight_decay
        self.num_log_images = int(num_log_images)
        self.log_score_threshold = float(log_score_threshold)
        self.val_loss = bool(val_loss)
        self.coco_engine = coco_engine
        self._val_results: list[dict[str, Any]] = []
        self._val_image_ids: list[int] = []
        self._gt_cache: tuple[str, dict[str, Any]] | None = None
        self.last_metrics: dict[str, float] = {}
        self.last_coco: CocoResult | None = None
        self.last_detections: list[dict[str, Any]] = []
        self.last_val_global_step: int | None = None

    # ---------------------------------------------------------------------------------------------
    # setup
    # ---------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Take the evaluation metadata from the datamodule when it was not passed in."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None:
            if self.val_ann_file is None and hasattr(dm, "val_ann_file"):
                self.val_ann_file = str(dm.val_ann_file)
            if self.label_to_cat_id is None and hasattr(dm, "label_to_cat_id"):
                self.label_to_cat_id = dict(dm.label_to_cat_id)
            if self.class_names is None and hasattr(dm, "class_names"):
                self.class_names = list(dm.class_names)
        if stage in ("fit", "validate") and (self.val_ann_file is None or self.label_to_cat_id is None):
            raise ValueError(
                "DetectionModule needs val_ann_file and label_to_cat_id for COCO evaluation: pass them, "
                "or use a datamodule that provides them (dense.lit.data.CocoDataModule)"
            )
        num_classes = getattr(self.model, "num_classes", None)
        if self.label_to_cat_id is not None and num_classes is not None:
            if num_classes != len(self.label_to_cat_id) + 1:
                k = len(self.label_to_cat_id)
                raise ValueError(
                    f"the model predicts {num_classes} classes (with background) but the data set has "
                    f"{k} categories (needs num_classes={k + 1})"
                )

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return self.model(images)

    # ---------------------------------------------------------------------------------------------
    # training
    # ---------------------------------------------------------------------------------------------
    def _shared_step(self, images: Tensor, targets: list[dict[str, Any]], stage: str) -> dict[str, Tensor]:
        """Forward + loss, logged as ``{stage}/loss*``; returns the loss dict."""
        losses = self.model.loss(self.model(images), targets)
        if "loss" not in losses:
            raise KeyError(f"model.loss() must return a total 'loss', got keys {sorted(losses)}")
        train = stage == "train"
        self.log_dict(
            {f"{stage}/{k}": v.detach() for k, v in losses.items() if k.startswith("loss")},
            on_step=train,
            on_epoch=not train,
            batch_size=images.shape[0],
            sync_dist=not train and _world_size() > 1,
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
            if _world_size() > 1:
                return sum(p.sum() for p in self.model.parameters() if p.requires_grad) * 0.0
            return None
        return self._shared_step(images, targets, "train")["loss"]

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise ValueError("DetectionModule was built without an optimizer (evaluation only)")
        optimizer = self.optimizer_factory(self._param_groups())
        return lightning_optimizers(optimizer, self.scheduler_factory, self.trainer)

    def _param_groups(self) -> list[dict[str, Any]]:
        """Normalisation parameters in their own group when they get their own weight decay."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.norm_weight_decay is None:
            return [{"params": params}]
        norm_ids = {
            id(p)
            for m in self.model.modules()
            if isinstance(m, _NORM_TYPES)
            for p in m.parameters(recurse=False)
        }
        norm = [p for p in params if id(p) in norm_ids]
        other = [p for p in params if id(p) not in norm_ids]
        groups = [{"params": other}]
        if norm:
            groups.append({"params": norm, "weight_decay": float(self.norm_weight_decay)})
        return groups

    # --- skipped (unreadable) training images -------------------------------------------------------
    def _train_dataset(self) -> Any:
        dm = getattr(self.trainer, "datamodule", None)
        ds = getattr(dm, "train_dataset", None)
        if ds is None:
            loader = getattr(self.trainer, "train_dataloader", None)
            ds = getattr(loader, "dataset", None)
        return ds if hasattr(ds, "skipped_files") else None

    def on_train_epoch_start(self) -> None:
        ds = self._train_dataset()
        if ds is not None and hasattr(ds, "reset_skipped"):
            ds.reset_skipped()

    def on_train_epoch_end(self) -> None:
        ds = self._train_dataset()
        if ds is None:
            return
        skipped = ds.skipped_files()
        if skipped:
            shown = ", ".join(skipped[:20]) + (f" ... ({len(skipped)} in all)" if len(skipped) > 20 else "")
            rank_zero_warn(
                f"epoch {self.current_epoch}: skipped {len(skipped)} unreadable training image(s): {shown}"
            )
        self.log("train/skipped_images", float(len(skipped)), on_epoch=True, on_step=False, sync_dist=False)

    # ---------------------------------------------------------------------------------------------
    # validation
    # ---------------------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_results = []
        self._val_image_ids = []

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        if batch is None:  # eval data sets raise on unreadable images; nothing to do otherwise
            return
        images, targets = batch
        if self.val_loss:
            self._shared_step(images, targets, "val")
        preds = self.model.predict(images)
        in_hw = tuple(images.shape[-2:])
        scaled = []
        for pred, target in zip(preds, targets):
            oh, ow = (int(v) for v in target["orig_size"])
            boxes = scale_boxes(pred["boxes"].float(), in_hw, (oh, ow))
            # Clip to the original image: rounding of the scale must not leave the image.
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, ow)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, oh)
            scaled.append(
                {"boxes": boxes.cpu(), "scores": pred["scores"].cpu(), "labels": pred["labels"].cpu()}
            )
        image_ids = [int(t["image_id"]) for t in targets]
        self._val_results.extend(detections_to_coco_results(scaled, image_ids, self.label_to_cat_id))
        self._val_image_ids.extend(image_ids)
        if batch_idx == 0 and not self.trainer.sanity_checking and self.num_log_images > 0:
            self._log_images(images, preds, targets)

    def on_validation_epoch_end(self) -> None:
        results, seen = self._val_results, self._val_image_ids
        self._val_results, self._val_image_ids = [], []
        if self.trainer.sanity_checking:
            return  # a couple of batches: scoring them against the whole file means nothing
        if _world_size() > 1:
            # Results are Python objects (self.all_gather handles tensors only).
            gathered: list[Any] = [None] * _world_size()
            dist.all_gather_object(gathered, (results, seen))
            results = merge_detections([g[0] for g in gathered])
            seen = sorted({i for g in gathered for i in g[1]})
        else:
            results = merge_detections([results])
        # Every rank holds the same merged list and scores it (same numbers everywhere, no broadcast).
        coco = evaluate_coco(self._ground_truth(seen), results, engine=self.coco_engine)
        metrics = {f"val/{METRIC_NAMES[name]}": float(coco.stats[name]) for name in STAT_NAMES}
        # Identical on every rank; sync_dist only silences Lightning's epoch-level DDP warning.
        self.log_dict(metrics, on_epoch=True, on_step=False, sync_dist=_world_size() > 1)
        self.log("val_map", metrics["val/map"], prog_bar=True, logger=False, sync_dist=_world_size() > 1)
        self.last_metrics = metrics
        self.last_coco = coco
        self.last_detections = results
        self.last_val_global_step = int(self.global_step)
        self.print(coco.format_table(title=self._table_title(coco)))

    def _table_title(self, coco: CocoResult) -> str:
        fitting = self.trainer.state.fn == "fit"
        where = f"epoch {self.current_epoch}, step {self.global_step}; " if fitting else ""
        return f"COCO bbox ({where}{coco.num_images} images, {coco.num_detections} detections)"

    def _ground_truth(self, seen: Sequence[int]) -> str | dict[str, Any]:
        """The val annotation file, or the part of it that was evaluated.

        With ``limit_val_batches`` (or a sampler that covers part of the set) the images that were
        never predicted must not count as misses: the ground truth is cut to the evaluated images.
        """
        path = str(self.val_ann_file)
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

    # --- pictures -------------------------------------------------------------------------------------
    def _log_images(
        self, images: Tensor, preds: list[dict[str, Tensor]], targets: list[dict[str, Any]]
    ) -> None:
        """Draw ground truth (green) and predictions (red) on the first val images for TensorBoard."""
        if self.global_rank != 0:
            return
        writers = [lg.experiment for lg in self.loggers if hasattr(lg.experiment, "add_image")]
        if not writers:
            return
        from torchvision.utils import draw_bounding_boxes

        names = self.class_names

        def text(label: int, score: float | None = None) -> str:
            name = names[label] if names and 0 <= label < len(names) else str(label)
            return name if score is None else f"{name} {score:.2f}"

        for i in range(min(self.num_log_images, images.shape[0])):
            img = (images[i].detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
            gt_boxes, gt_labels = targets[i]["boxes"].detach().cpu(), targets[i]["labels"].cpu().tolist()
            if len(gt_boxes):
                img = draw_bounding_boxes(
                    img, gt_boxes, labels=[text(lab) for lab in gt_labels], colors="lime"
                )
            keep = preds[i]["scores"] >= self.log_score_threshold
            boxes = preds[i]["boxes"][keep].detach().float().cpu()
            if len(boxes):
                labels = [
                    text(lab, s)
                    for lab, s in zip(preds[i]["labels"][keep].tolist(), preds[i]["scores"][keep].tolist())
                ]
                img = draw_bounding_boxes(img, boxes, labels=labels, colors="red", width=2)
            for w in writers:
                w.add_image(f"val/predictions_{i}", img, global_step=self.global_step)

    # ---------------------------------------------------------------------------------------------
    # checkpoints
    # ---------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store what rebuilds the model without the config files (plain types only, so the file
        loads with ``torch.load(weights_only=True)``)."""
        checkpoint[CHECKPOINT_KEY] = {
            "task": "detect",
            "config": dict(self.model.config),
            "state_dict_prefix": "model.",
            "label_to_cat_id": dict(self.label_to_cat_id or {}),
            "class_names": list(self.class_names or []),
            "val_metrics": dict(self.last_metrics),
        }
