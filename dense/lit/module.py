"""`TaskModule`: what the detection and segmentation Lightning modules share (thin glue only).

Optimizer / scheduler wiring, the world size, the image-logging hook, the final-metrics
bookkeeping and the checkpoint entry that rebuilds the model without Lightning or config files
(see `dense.lit.checkpoint`). A task module adds its step, its validation and its pictures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch import LightningModule
from torch import nn

from dense.data.info import DatasetInfo
from dense.lit.checkpoint import CHECKPOINT_KEY
from dense.lit.schedulers import lightning_optimizers

__all__ = ["TaskModule", "param_groups", "world_size"]

_NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
)


def param_groups(model: nn.Module, norm_weight_decay: float | None) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: normalisation parameters in their own group when they get
    their own weight decay (None: one group, the optimizer's weight decay for everything)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if norm_weight_decay is None:
        return [{"params": params}]
    norm_ids = {
        id(p) for m in model.modules() if isinstance(m, _NORM_TYPES) for p in m.parameters(recurse=False)
    }
    groups = [{"params": [p for p in params if id(p) not in norm_ids]}]
    norm = [p for p in params if id(p) in norm_ids]
    if norm:
        groups.append({"params": norm, "weight_decay": float(norm_weight_decay)})
    return groups


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class TaskModule(LightningModule):
    """Base of `DetectionModule` and `SegmentationModule`.

    Args:
        model: a built plain-torch model with `.config` (a `DetectorConfig` / `SegmenterConfig`),
            `.num_classes`, `loss` and `predict`.
        info: the data set's metadata (`datamodule.info()`); the model's class count must match it.
        optimizer: `params -> Optimizer` (a Hydra `_partial_: true` optimizer config). None is
            allowed for evaluation-only use.
        scheduler: `optimizer -> LR scheduler` partial; called with `total_steps` and
            `steps_per_epoch` when it accepts them (`dense.lit.schedulers`) and stepped every
            optimizer step. None: constant learning rate.
        norm_weight_decay: weight decay of normalisation-layer parameters (torchvision's SSDLite
            recipe uses 0); None = the optimizer's weight decay for every parameter.
        num_log_images: validation images drawn to TensorBoard per validation.

    After each validation: `last_metrics` (logged names -> floats) and `last_val_global_step`.
    """

    task: str = ""  # build_model's task name, stored in checkpoints

    def __init__(
        self,
        model: nn.Module,
        info: DatasetInfo,
        optimizer: Callable[[Iterable[Any]], torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        *,
        norm_weight_decay: float | None = None,
        num_log_images: int = 4,
    ) -> None:
        super().__init__()
        for attr in ("loss", "predict", "config", "num_classes"):
            if not hasattr(model, attr):
                raise TypeError(
                    f"{type(self).__name__} needs a model with .{attr}; got {type(model).__name__}"
                )
        if int(model.num_classes) != info.num_classes:
            raise ValueError(
                f"the model predicts {model.num_classes} classes but the data set has {info.num_classes} "
                f"(needs num_classes={info.num_classes})"
            )
        self.model = model
        self.info = info
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.norm_weight_decay = norm_weight_decay
        self.num_log_images = int(num_log_images)
        self.last_metrics: dict[str, float] = {}
        self.last_val_global_step: int | None = None

    def forward(self, images: torch.Tensor) -> Any:
        return self.model(images)

    # --- optimisation ---------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise ValueError(f"{type(self).__name__} was built without an optimizer (evaluation only)")
        optimizer = self.optimizer_factory(self._param_groups())
        return lightning_optimizers(optimizer, self.scheduler_factory, self.trainer)

    def _param_groups(self) -> list[dict[str, Any]]:
        return param_groups(self.model, self.norm_weight_decay)

    # --- validation bookkeeping -------------------------------------------------------------------
    def _publish(
        self, metrics: dict[str, float], prog_bar: str, logged: dict[str, float] | None = None
    ) -> None:
        """Log the final validation metrics (identical on every rank; sync_dist only silences
        Lightning's epoch-level DDP warning) and remember them for metrics.json."""
        sync = world_size() > 1
        self.log_dict(metrics if logged is None else logged, on_epoch=True, on_step=False, sync_dist=sync)
        self.log(prog_bar.replace("/", "_"), metrics[prog_bar], prog_bar=True, logger=False, sync_dist=sync)
        self.last_metrics = metrics
        self.last_val_global_step = int(self.global_step)

    def _where(self) -> str:
        """ "epoch E, step S; " while fitting (for the printed tables), else ""."""
        fitting = self.trainer.state.fn == "fit"
        return f"epoch {self.current_epoch}, step {self.global_step}; " if fitting else ""

    # --- pictures ---------------------------------------------------------------------------------
    def _image_writers(self) -> list[Any]:
        """TensorBoard-like writers of rank 0 (empty elsewhere, or without such a logger)."""
        if self.global_rank != 0:
            return []
        return [lg.experiment for lg in self.loggers if hasattr(lg.experiment, "add_image")]

    def _add_images(self, tag: str, images: Iterable[torch.Tensor], start: int = 0) -> None:
        """uint8 [3, H, W] pictures to every writer as `{tag}_{index}`."""
        writers = self._image_writers()
        for i, img in enumerate(images, start):
            for w in writers:
                w.add_image(f"{tag}_{i}", img, global_step=self.global_step)

    # --- checkpoints ------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store what rebuilds the model without the config files (plain types only, so the file
        loads with `torch.load(weights_only=True)`)."""
        checkpoint[CHECKPOINT_KEY] = {
            "task": self.task,
            "config": self.model.config.to_dict(),
            "state_dict_prefix": "model.",
            "info": self.info.to_dict(),
            "val_metrics": dict(self.last_metrics),
        }
