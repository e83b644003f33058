"""Per-step learning-rate schedules with a linear warmup (torch's own schedulers, chained).

Hydra configs (``conf/sched/*.yaml``) name these with ``_partial_: true``; the Lightning modules
complete the call with the optimizer and the step counts, which are only known once the trainer
has seen the data: ``scheduler(optimizer, total_steps=..., steps_per_epoch=...)``.

Warmup follows torchvision's detection references: the factor grows linearly from
``warmup_factor`` to 1 over the warmup steps, then the main schedule runs over the remaining steps.
A resumed run restores the schedulers' state, so it keeps the length it started with: resume
with the same ``trainer.max_epochs`` (a longer run is a new run, or a fine-tune from the weights).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    LambdaLR,
    LinearLR,
    LRScheduler,
    PolynomialLR,
    SequentialLR,
)

from dense.lit.budget import TrainingBudget, find_budget

__all__ = ["lightning_optimizers", "warmup_cosine", "warmup_linear", "warmup_poly"]


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` (a function or functools.partial) takes the keyword ``name``."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _names(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` names the keyword ``name`` itself (not only through ``**kwargs``)."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def lightning_optimizers(
    optimizer: Optimizer, scheduler: Callable[..., Any] | None, trainer: Any
) -> Optimizer | dict[str, Any]:
    """What ``configure_optimizers`` returns: the optimizer, plus the scheduler partial completed
    with the run's step counts (when it takes them) and stepped every optimizer step."""
    if scheduler is None:
        return optimizer
    kwargs: dict[str, Any] = {}
    budget = find_budget(trainer)
    follows_budget = _names(scheduler, "budget")  # the wall-clock budget (dense.lit.budget), if any
    if follows_budget:
        kwargs["budget"] = budget
    total = trainer.estimated_stepping_batches  # computed once: Lightning recounts it on each access
    open_ended = not math.isfinite(total)
    if open_ended and budget is not None and follows_budget:
        kwargs["total_steps"] = None  # the budget alone sets the length
    elif _accepts(scheduler, "total_steps") or _accepts(scheduler, "steps_per_epoch"):
        if open_ended:
            raise ValueError(
                "this learning-rate schedule needs the run's length in steps, but trainer.max_epochs and "
                "trainer.max_steps leave it open: set one of them, or use a time budget "
                "(trainer.budget=10min sched=linear)"
            )
        total = int(total)
        kwargs.update(total_steps=total, steps_per_epoch=_steps_per_epoch(trainer, total))
    sched = scheduler(optimizer, **{k: v for k, v in kwargs.items() if _accepts(scheduler, k)})
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _steps_per_epoch(trainer: Any, total: int) -> int:
    """Optimizer steps in one epoch: the loader's batches (per process, after limit_train_batches)
    over gradient accumulation; Lightning steps on an epoch's last batch too, hence the ceiling.
    (total / max_epochs is wrong when max_steps ends the run first, and undefined for -1.)"""
    loop = getattr(trainer, "fit_loop", None)
    if getattr(trainer, "train_dataloader", 1) is None and loop is not None:
        loop.setup_data()  # as estimated_stepping_batches does, which skips it when max_epochs=-1
    batches = getattr(trainer, "num_training_batches", None)
    if isinstance(batches, (int, float)) and math.isfinite(batches) and batches > 0:
        return max(1, math.ceil(batches / max(int(getattr(trainer, "accumulate_grad_batches", 1) or 1), 1)))
    epochs = trainer.max_epochs
    return max(1, total // epochs) if epochs is not None and epochs > 0 else total


def _warmup_steps(warmup_epochs: float, steps_per_epoch: int, total_steps: int) -> int:
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
    # Never let the warmup eat the whole run (tiny smoke runs have a handful of steps).
    return min(int(round(warmup_epochs * steps_per_epoch)), max(total_steps - 1, 0))


def _with_warmup(
    optimizer: Optimizer,
    main: Callable[[int], LRScheduler],
    *,
    total_steps: int,
    steps_per_epoch: int,
    warmup_epochs: float,
    warmup_factor: float = 0.001,
) -> LRScheduler:
    """torch's LinearLR from `warmup_factor` to 1 over the warmup steps, then `main(steps_left)`.

    total_steps / steps_per_epoch: optimizer steps of the whole run and of one epoch (the Lightning
    module passes them); warmup_epochs: warmup length in epochs (fractions allowed, 0 = none);
    warmup_factor: the factor at step 0 of the warmup.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps} (no training batches?)")
    warmup = _warmup_steps(warmup_epochs, max(steps_per_epoch, 1), total_steps)
    rest = max(total_steps - warmup, 1)
    if warmup == 0:
        return main(rest)
    first = LinearLR(optimizer, start_factor=warmup_factor, end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, [first, main(rest)], milestones=[warmup])


def warmup_cosine(
    optimizer: Optimizer, *, warmup_epochs: float = 1.0, min_lr_ratio: float = 0.0, **steps: Any
) -> LRScheduler:
    """Linear warmup, then cosine annealing to ``min_lr_ratio * lr`` at the last step.

    steps: ``total_steps``, ``steps_per_epoch`` and optionally ``warmup_factor`` (see
    :func:`_with_warmup`); min_lr_ratio: the final learning rate as a fraction of the base rate.
    """
    if min_lr_ratio == 0.0:

        def main(n: int) -> LRScheduler:
            return CosineAnnealingLR(optimizer, T_max=n)

    else:
        # CosineAnnealingLR's floor is one absolute eta_min for every parameter group; a ratio of
        # each group's own rate needs the closed form.
        def main(n: int) -> LRScheduler:
            def factor(step: int) -> float:
                progress = min(step / n, 1.0)
                return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

            return LambdaLR(optimizer, factor)

    return _with_warmup(optimizer, main, warmup_epochs=warmup_epochs, **steps)


def warmup_poly(
    optimizer: Optimizer, *, power: float = 0.9, warmup_epochs: float = 0.0, **steps: Any
) -> LRScheduler:
    """Optional linear warmup, then ``lr * (1 - progress) ** power`` (DeepLab's "poly" schedule,
    torch's PolynomialLR); ``power`` 0.9 is the segmentation papers' value. steps: as
    :func:`warmup_cosine`."""

    def main(n: int) -> LRScheduler:
        return PolynomialLR(optimizer, total_iters=n, power=power)

    return _with_warmup(optimizer, main, warmup_epochs=warmup_epochs, **steps)


def warmup_linear(
    optimizer: Optimizer,
    *,
    total_steps: int | None = None,
    budget: TrainingBudget | None = None,
    warmup_fraction: float = 0.1,
    warmup_factor: float = 0.001,
    final_ratio: float = 0.0,
    **_: Any,
) -> LRScheduler:
    """Linear warmup over the first ``warmup_fraction`` of the run, then linear decay to
    ``final_ratio`` x the base rate at its end: Li, Yumer and Ramanan, "Budgeted Training" (ICLR
    2020), where linear decay to zero over the budget is a strong default.

    The run's progress is the larger of the steps done / ``total_steps`` and the wall-clock
    budget spent (``budget.progress``, `dense.lit.budget.TrainingBudget`): whichever limit ends
    the run first also ends the schedule. torch has no time-driven scheduler, hence a LambdaLR.
    """
    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}")
    if total_steps is None and budget is None:
        raise ValueError("warmup_linear needs total_steps or a time budget (trainer.budget)")

    def factor(step: int) -> float:
        p = step / total_steps if total_steps else 0.0
        if budget is not None:
            p = max(p, budget.progress)
        p = min(max(p, 0.0), 1.0)
        if p < warmup_fraction:
            return warmup_factor + (1.0 - warmup_factor) * p / warmup_fraction
        return final_ratio + (1.0 - final_ratio) * (1.0 - (p - warmup_fraction) / (1.0 - warmup_fraction))

    return LambdaLR(optimizer, factor)
