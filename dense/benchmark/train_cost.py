"""Where a training step of the built-in detection recipe spends its time (`tools/benchmark.py
--train-cost`): SSDLite V3-Large (reduced tail, the recipe's anchors, the head's default losses and
matcher) on batches of the built-in shapes_coco data, read and augmented as `make train` reads
them (flip, no loader workers).

- the phases of a step (data, forward, loss, backward, AdamW step), medians over the steps;
- the memory format: the whole step in channels-last (the default) against contiguous (NCHW)
  weights and inputs, interleaved in one process, as a ratio;
- the loss switches (matcher, box loss, classification loss): forward + loss + backward of each,
  interleaved, as a ratio to the head's defaults;
- the AdamW step: torch's default (on CPU a loop over the parameters), its multi-tensor ("foreach")
  and its fused implementation;
- torch.profiler's operators by self CPU time over a few steps.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.data import DataLoader

import dense
from dense.benchmark.report import console, print_table
from dense.benchmark.timing import interleave_many
from dense.data.coco import CocoDetection, collate_detection
from dense.data.det_transforms import build_detection_transform

__all__ = ["train_cost_tables"]

# the loss switches of conf/head/ssdlite.yaml, each beside the head's defaults
SWITCHES = {
    "defaults (iou, smooth_l1, softmax)": {},
    "head.matcher=atss": {"matcher": "atss"},  # shapes_coco's recipe
    "head.box_loss=giou": {"box_loss": "giou"},
    "head.cls_loss=focal": {"cls_loss": "focal"},
    "head.cls_loss=qfl": {"cls_loss": "qfl"},
}


def _loader(root: Path, batch: int, image_size: int, seed: int) -> DataLoader:
    data = CocoDetection(
        root / "train2017",
        root / "annotations" / "instances_train2017.json",
        transform=build_detection_transform("flip", image_size, train=True),
    )
    g = torch.Generator().manual_seed(seed)
    return DataLoader(
        data,
        batch_size=batch,
        shuffle=True,
        num_workers=0,
        collate_fn=collate_detection,
        generator=g,
        drop_last=True,  # as training: a last batch of one image would break train-mode BatchNorm
    )


def _model(num_classes: int, image_size: int, **switches) -> dense.Detector:
    torch.manual_seed(0)
    return dense.build_model(
        "detect",
        "v3_large",
        num_classes=num_classes,
        reduced_tail=True,
        image_size=image_size,
        **switches,
    ).train()


def _step(model: torch.nn.Module) -> Callable[[torch.Tensor, list], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(images, targets):
        loss = model.loss(model(images), targets)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _on(step: Callable, images: torch.Tensor, targets: list) -> Callable[[], None]:
    return lambda: step(images, targets)


def _compare(title: str, column: str, fns: dict[str, Callable[[], None]], *, iters: int, warmup: int) -> dict:
    """Milliseconds per call of each of `fns`, interleaved; printed with the ratio to the first."""
    ms = {k: v * 1e3 for k, v in interleave_many(fns, iters=iters, warmup=warmup).items()}
    base = next(iter(ms.values()))
    print_table(title, (column, "ms", "ratio"), [(k, f"{v:.1f}", f"{v / base:.3f}") for k, v in ms.items()])
    return ms


def _forever(loader: DataLoader) -> Iterator:
    """Batches without end; a batch whose every image was unreadable (None) is passed over."""
    while True:
        yield from (b for b in loader if b is not None)


def phase_seconds(model, loader: DataLoader, steps: int, warmup: int) -> dict[str, float]:
    """Median seconds of each phase of a training step, over `steps` steps after `warmup`."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times: dict[str, list[float]] = {k: [] for k in ("data", "forward", "loss", "backward", "optimizer")}
    batches = _forever(loader)
    for i in range(warmup + steps):
        t = [time.perf_counter()]
        images, targets = next(batches)
        t.append(time.perf_counter())
        out = model(images)
        t.append(time.perf_counter())
        loss = model.loss(out, targets)["loss"]
        t.append(time.perf_counter())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t.append(time.perf_counter())
        opt.step()
        t.append(time.perf_counter())
        if i >= warmup:
            for k, a, b in zip(times, t, t[1:]):
                times[k].append(b - a)
    return {k: statistics.median(v) for k, v in times.items()}


def train_cost_tables(root: Path, *, threads: int, iters: int, warmup: int, batch: int = 4) -> dict:
    """The tables of the module docstring, for batches of `batch` images of the data at `root`."""
    torch.set_num_threads(threads)
    image_size = 320
    loader = _loader(root, batch, image_size, seed=0)
    num_classes = loader.dataset.num_classes
    steps = max(2, iters // 2)
    rows: dict = {"batch": batch, "threads": threads, "steps": steps}

    phases = phase_seconds(_model(num_classes, image_size), loader, steps, warmup=max(1, warmup // 5))
    total = sum(phases.values())
    rows["phases_ms"] = {k: v * 1e3 for k, v in phases.items()}
    print_table(
        f"a training step (head defaults, AdamW), batch {batch}, {threads} threads (median of {steps})",
        ("phase", "ms", "share"),
        [(k, f"{v * 1e3:.1f}", f"{v / total:.0%}") for k, v in phases.items()]
        + [("sum", f"{total * 1e3:.1f}", "100%")],
    )

    # one fixed batch for the interleaved comparisons: the data cost is the same for all
    images, targets = next(_forever(loader))
    compare = partial(_compare, iters=steps, warmup=min(2, warmup))
    last = _model(num_classes, image_size)
    nchw = copy.deepcopy(last).set_memory_format(torch.contiguous_format)
    rows["memory_format_ms"] = compare(
        "memory format: forward + loss + backward + AdamW step (interleaved)",
        "layout",
        {
            "channels-last": _on(_step(last), images, targets),
            "contiguous (NCHW)": _on(_step(nchw), images, targets),
        },
    )
    models = {k: _model(num_classes, image_size, **v) for k, v in SWITCHES.items()}
    rows["switches_ms"] = compare(
        "loss switches: a whole training step (interleaved)",
        "switch",
        {k: _on(_step(m), images, targets) for k, m in models.items()},
    )
    # the optimizer step alone: torch's default (a per-parameter loop on CPU), multi-tensor, fused
    model = _model(num_classes, image_size)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    kinds = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    rows["adamw_step_ms"] = compare(
        "AdamW step (optim=adamw_fused: fused)",
        "implementation",
        {k: torch.optim.AdamW(model.parameters(), lr=1e-4, **kw).step for k, kw in kinds.items()},
    )

    model = _model(num_classes, image_size)
    step = _step(model)
    step(images, targets)  # the optimizer's state and oneDNN's kernels are set up outside the profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            with record_function("train_step"):
                step(images, targets)
    ops = [e for e in prof.key_averages() if e.key != "train_step"]
    ops.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    spent = sum(e.self_cpu_time_total for e in ops)
    rows["profile_top"] = [
        {"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 3e3, "share": e.self_cpu_time_total / spent}
        for e in ops[:10]
    ]
    print_table(
        "torch.profiler: operators by self CPU time (3 steps)",
        ("operator", "ms per step", "share"),
        [(r["op"], f"{r['self_ms_per_step']:.1f}", f"{r['share']:.0%}") for r in rows["profile_top"]],
    )
    console.print(
        "read the ratios, not the milliseconds: other work on the machine moves the times, "
        "and the interleaving moves them alike"
    )
    return rows
