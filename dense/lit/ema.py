"""The exponential moving average (EMA) of the weights (``ema.decay`` in conf/train.yaml).

Lightning's `EMAWeightAveraging` does the work: after each optimizer step it updates a copy of the
module, ``avg = decay * avg + (1 - decay) * live`` (the first update copies the live weights); it
swaps the averaged weights in for every validation (so the logged metrics, metrics.json and the
best checkpoint's score are the average's), writes them to a checkpoint's ``state_dict`` (what
`dense.lit.checkpoint.load_model_from_checkpoint`, tools/eval.py / export.py / predict.py read) with
the live weights under ``current_model_state`` and its own state under ``averaging_state`` (what a
resumed run restores), and copies them into the model when training ends (before the final
validation of tools/train.py, also after a `TrainingBudget` stop).

The glue here: (1) before the first update (``start_step``) Lightning would swap in and save the
copy of the module it made at setup, the untrained weights; until something has been averaged the
live weights stand for the average instead. (2) Once training ends Lightning's model holds the
average, so a checkpoint written then (tools/train.py's final validation, `ModelCheckpoint` at
train end) would store the average as the live weights too; the live ones are kept for it, so that
extending a finished run continues from them.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import EMAWeightAveraging

__all__ = ["WeightEMA"]


class WeightEMA(EMAWeightAveraging):
    """Lightning's `EMAWeightAveraging` that uses the live weights until its first update.

    BatchNorm running statistics (all buffers) are averaged like the parameters
    (``use_buffers=True``, as in torchvision's reference ``ExponentialMovingAverage``): Lightning
    swaps buffers together with the parameters, and with ``use_buffers=False`` torch's
    `AveragedModel` never updates them, so the averaged weights would be validated with the
    BatchNorm statistics of the initial model. Averaged statistics stay consistent with the
    averaged weights (both are the recent past of the same run).

    Args:
        decay: weight of the old average per update, 0 < decay < 1; the average spans about
            ``update_every / (1 - decay)`` optimizer steps.
        update_every: optimizer steps between updates.
        start_step: the first optimizer step (0-based) that updates the average; None: the first.
    """

    def __init__(self, decay: float, *, update_every: int = 1, start_step: int | None = None) -> None:
        super().__init__(
            decay=float(decay),
            use_buffers=True,
            update_every_n_steps=int(update_every),
            update_starting_at_step=None if start_step is None else int(start_step),
        )
        self.decay = float(decay)
        self._live_at_end: dict[str, Any] | None = None  # the live weights once training has ended

    @property
    def started(self) -> bool:
        """Whether the average holds at least one update (then it stands in for the live weights)."""
        return self._average_model is not None and int(self._average_model.n_averaged) > 0

    def _swap_models(self, pl_module: LightningModule) -> None:
        if self.started:
            super()._swap_models(pl_module)

    def _copy_average_to_current(self, pl_module: LightningModule) -> None:
        if self.started:
            super()._copy_average_to_current(pl_module)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._live_at_end = None

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.started:
            self._live_at_end = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        super().on_train_end(trainer, pl_module)

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self._average_model is not None and not self.started:
            # Nothing averaged yet: the checkpoint's model is the live one (n_averaged stays 0, so
            # a resumed run's first update still copies the live weights).
            self._average_model.module.load_state_dict(pl_module.state_dict())
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        if self._live_at_end is not None and "current_model_state" in checkpoint:
            checkpoint["current_model_state"] = self._live_at_end
