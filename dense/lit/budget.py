"""Training to a wall-clock budget: Lightning's Timer sized from the job's budget, and the fraction
of the budget spent, which `dense.lit.schedulers.warmup_linear` follows instead of a step count
fixed in advance (a step count tuned on one machine is too long on a slower one and wastes budget
on a faster one).

``trainer.budget`` ("10min", "90s", "1h30min", "1.5h", or a number of minutes) is the wall-clock time
of the whole job from its start, data preparation and the final validation included.
`TrainingBudget` measures the time left when training starts, keeps back the time the final
validation needs (measured on the sanity-check batches) and stops training when the rest is spent.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import timedelta
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Timer

from dense.lit.config import parse_budget  # no Lightning there: the config checks use it too

__all__ = ["TrainingBudget", "find_budget", "parse_budget"]

log = logging.getLogger("dense.budget")


class TrainingBudget(Timer):
    """Lightning's `Timer` whose duration is what is left of a job's wall-clock budget when training
    starts, less the time kept for the final validation; also the budget fraction spent
    (`progress`, 0 -> 1, the same on every DDP rank) that `warmup_linear` follows.

    Args:
        budget_s: the whole job's budget in seconds.
        job_start: `time.monotonic()` when the job started (data preparation counts against it).
        reserve_s: seconds kept after training for the final validation, checkpoint and metrics;
            None: estimated, first from the sanity-check validation (its time per batch x the
            validation batches) or 5% of the budget without one, then from each real validation
            (1.25 x its time), plus `margin_s`.
        margin_s: added to the estimated reserve (checkpoint writing, metrics, start-up jitter).
    """

    def __init__(
        self, budget_s: float, *, job_start: float, reserve_s: float | None = None, margin_s: float = 15.0
    ) -> None:
        super().__init__(duration=timedelta(seconds=budget_s), interval="step", verbose=True)
        self.budget_s = float(budget_s)
        self.job_start = float(job_start)
        self.reserve_s = reserve_s
        self.margin_s = float(margin_s)
        self.progress = 0.0
        self._fixed_reserve = reserve_s is not None
        self._spent_before: float | None = None
        self._sanity_start: float | None = None
        self._resumed = False

    # --- the reserve for the final validation -------------------------------------------------
    def on_sanity_check_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._sanity_start = time.monotonic()

    def on_sanity_check_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # A first guess, refined by every real validation (on_validation_end).
        if self._fixed_reserve or self._sanity_start is None:
            return
        seen = sum(trainer.num_sanity_val_batches) if trainer.num_sanity_val_batches else 0
        total = sum(trainer.num_val_batches) if trainer.num_val_batches else 0
        if seen and total and math.isfinite(total):
            per_batch = (time.monotonic() - self._sanity_start) / seen
            self.reserve_s = per_batch * total + self.margin_s

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if self._resumed:  # a resumed run keeps the duration it started with
            return
        if self.reserve_s is None:
            self.reserve_s = 0.05 * self.budget_s + self.margin_s
        self._spent_before = time.monotonic() - self.job_start
        self._set_duration()
        log.info(
            "time budget %.0f s: %.0f s spent before training, %.0f s for training, %.0f s kept for the "
            "final validation",
            self.budget_s,
            self._spent_before,
            self._duration,
            self.reserve_s,
        )

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if trainer.sanity_checking or self._fixed_reserve or self._spent_before is None:
            return
        self.reserve_s = 1.25 * self.time_elapsed("validate") + self.margin_s
        self._set_duration()

    def _set_duration(self) -> None:
        assert self.reserve_s is not None and self._spent_before is not None
        self._duration = max(self.budget_s - self._spent_before - self.reserve_s, 1.0)

    # --- stop and progress, the same on every rank ----------------------------------------------
    def _check_time_remaining(self, trainer: Trainer) -> None:
        # One broadcast for both: every DDP rank must stop and set its learning rate alike.
        elapsed = self.time_elapsed()
        progress, stop = trainer.strategy.broadcast((elapsed / self._duration, elapsed >= self._duration))
        self.progress = min(float(progress), 1.0)
        if stop and not trainer.should_stop:
            log.info("time budget spent after %d optimizer steps: training stops", trainer.global_step)
        trainer.should_stop = trainer.should_stop or bool(stop)

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "duration_s": self._duration,
            "progress": self.progress,
            "spent_before_s": self._spent_before,
            "reserve_s": self.reserve_s,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if state_dict.get("duration_s"):
            self._duration = float(state_dict["duration_s"])
            self.progress = float(state_dict.get("progress", 0.0))
            self._spent_before = state_dict.get("spent_before_s")
            if not self._fixed_reserve:
                self.reserve_s = state_dict.get("reserve_s", self.reserve_s)
            self._resumed = True


def find_budget(trainer: Any) -> TrainingBudget | None:
    """The trainer's `TrainingBudget` callback, if any."""
    return next((c for c in getattr(trainer, "callbacks", []) if isinstance(c, TrainingBudget)), None)
