"""Side by side: dense's SSDLite and torchvision's `ssdlite320_mobilenet_v3_large` trained on the same
data, batches, optimizer, schedule and wall-clock budget, and scored by the same COCO evaluation.

The two models take turns on the SAME batches in one process (interleaved), each with its own clock:
a model's clock counts its own steps plus the loading of the batches it used, and its learning rate
follows its own clock (`dense.lit.schedulers.warmup_linear`, the schedule of the built-in recipes).
A model whose budget is spent stops; the other goes on alone. Interleaving means a noisy machine
slows both alike. Lightning is left out on purpose: one plain loop drives both models, so the only
difference between the two runs is the model (its loss, matching and post-processing included).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import ssdlite320_mobilenet_v3_large

from dense.evaluation.coco import detections_to_coco_results, evaluate_coco
from dense.lit.module import param_groups
from dense.lit.schedulers import warmup_linear

__all__ = ["Contestant", "dense_contestant", "run_side_by_side", "torchvision_contestant"]


@dataclass
class Contestant:
    """One model in the race: `loss(images, targets)` -> scalar loss (train mode) and
    `predict(images, targets)` -> per-image dicts of boxes (original pixels), scores, labels."""

    name: str
    model: nn.Module
    loss: Callable[[Tensor, list[dict[str, Any]]], Tensor]
    predict: Callable[[Tensor, list[dict[str, Any]]], list[dict[str, Tensor]]]
    seconds: float = 0.0
    steps: int = 0
    progress: float = 0.0  # the budget spent, 0 -> 1 (what warmup_linear follows)
    losses: list[float] = field(default_factory=list)


def dense_contestant(model: nn.Module) -> Contestant:
    """A dense `Detector` (its own loss, decoding and NMS)."""

    def predict(images: Tensor, targets: list[dict[str, Any]]) -> list[dict[str, Tensor]]:
        return model.predict(images, orig_sizes=[t["orig_size"] for t in targets])

    return Contestant("dense", model, lambda x, t: model.loss(model(x), t)["loss"], predict)


def torchvision_contestant(num_classes: int) -> Contestant:
    """torchvision's `ssdlite320_mobilenet_v3_large`, from scratch, called the usual way (a list of
    [0, 1] images; its transform, loss and post-processing); boxes scaled to the original pixels
    as dense's `predict` does."""
    model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)

    def loss(images: Tensor, targets: list[dict[str, Any]]) -> Tensor:
        plain = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
        return sum(model(list(images), plain).values())

    def predict(images: Tensor, targets: list[dict[str, Any]]) -> list[dict[str, Tensor]]:
        outs = model(list(images))
        h, w = images.shape[-2:]
        for out, t in zip(outs, targets):
            oh, ow = t["orig_size"]
            out["boxes"] = out["boxes"] * torch.tensor([ow / w, oh / h, ow / w, oh / h])
        return outs

    return Contestant("torchvision", model, loss, predict)


def _batches(loader: Any) -> Iterator[tuple[Any, float]]:
    """(batch, seconds to load it), epoch after epoch."""
    while True:
        it = iter(loader)
        while True:
            start = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                break
            yield batch, time.perf_counter() - start


def run_side_by_side(
    contestants: list[Contestant],
    train_loader: Any,
    val_loader: Any,
    *,
    val_ann_file: str,
    label_to_cat_id: dict[int, int],
    budget_s: float,
    optimizer: Callable[..., torch.optim.Optimizer],
    norm_weight_decay: float | None = 0.0,
    warmup_fraction: float = 0.1,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Train every contestant for `budget_s` seconds of its own clock on the same batches, then score
    each on the validation loader with the same COCO evaluation; one result dict per contestant.

    optimizer: `param groups -> Optimizer` (the recipe's, e.g. AdamW 3e-3); norm_weight_decay: weight
    decay of normalisation parameters (0: none, as dense's recipes); warmup_fraction: of the budget.
    """
    sched = {}
    for c in contestants:
        opt = optimizer(param_groups(c.model, norm_weight_decay))
        sched[c.name] = (opt, warmup_linear(opt, budget=c, warmup_fraction=warmup_fraction))
        c.model.train()
    next_report, warm = 0.0, False
    for batch, load_s in _batches(train_loader):
        active = [c for c in contestants if c.seconds < budget_s]
        if not active:
            break
        images, targets = batch if batch is not None else (None, None)
        if images is None or images.shape[0] < 2:  # unreadable images, or one left (BatchNorm)
            continue
        if not warm:  # one untimed forward / backward each: one-off start-up costs count for neither
            for c in contestants:
                c.loss(images, targets).backward()
                c.model.zero_grad(set_to_none=True)
            warm = True
        for c in active:
            opt, lr = sched[c.name]
            start = time.perf_counter()
            loss = c.loss(images, targets)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"{c.name}: loss is {value} at step {c.steps}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            c.seconds += time.perf_counter() - start + load_s
            c.progress = min(c.seconds / budget_s, 1.0)
            lr.step()
            c.steps += 1
            c.losses.append(value)
        spent = min(c.seconds for c in contestants)
        if spent >= next_report:
            line = [f"{c.name}: step {c.steps}, {c.seconds:.0f} s, loss {c.losses[-1]:.3f}" for c in active]
            log(" | ".join(line))
            next_report = spent + budget_s / 10
    return [_score(c, val_loader, val_ann_file, label_to_cat_id) for c in contestants]


@torch.no_grad()
def _score(c: Contestant, val_loader: Any, val_ann_file: str, label_to_cat_id: dict[int, int]) -> dict:
    c.model.eval()
    results, start = [], time.perf_counter()
    for batch in val_loader:
        images, targets = batch
        preds = [{k: v.cpu() for k, v in p.items()} for p in c.predict(images, targets)]
        results += detections_to_coco_results(preds, [int(t["image_id"]) for t in targets], label_to_cat_id)
    coco = evaluate_coco(val_ann_file, results)
    return {
        "model": c.name,
        "steps": c.steps,
        "train_s": round(c.seconds, 1),
        "eval_s": round(time.perf_counter() - start, 1),
        "params_M": round(sum(p.numel() for p in c.model.parameters()) / 1e6, 3),
        "final_loss": round(sum(c.losses[-50:]) / max(len(c.losses[-50:]), 1), 4),
        "map_50": coco.stats["AP50"],
        "map": coco.stats["AP"],
    }
