"""SSDLite and LR-ASPP beside torchvision's on the CPU: inference and a training step, dense / torchvision.

Both sides hold the same weights (dense's twin is loaded from torchvision's state dict) and see the
same inputs; each is called the way its users call it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from dense.benchmark.coco_scoring import coco_scoring_table
from dense.benchmark.peers import normalise, torchvision_pair
from dense.benchmark.report import console, print_table
from dense.benchmark.timing import median_seconds, time_pair
from dense.complexity import count_madds
from dense.constants import IGNORE_INDEX
from dense.evaluation.cityscapes import CityscapesMIoU

__all__ = ["detect_tables", "segment_tables"]


def ratio(dense_s: float, torchvision_s: float) -> dict:
    return dict(dense_ms=dense_s * 1e3, torchvision_ms=torchvision_s * 1e3, ratio=dense_s / torchvision_s)


def print_ratios(title: str, rows: dict, labels: dict[str, str], *, digits: int) -> None:
    """The `ratio` entries of `rows` named in `labels`, milliseconds to `digits` decimals."""
    cells = []
    for key, what in labels.items():
        r = rows[key]
        cells.append(
            (what, f"{r['dense_ms']:.{digits}f}", f"{r['torchvision_ms']:.{digits}f}", f"{r['ratio']:.3f}")
        )
    print_table(title, ("what", "dense ms", "torchvision ms", "ratio"), cells)


def sgd_step(model: torch.nn.Module, loss_fn: Callable) -> Callable:
    """A training step: loss_fn(x), backward, SGD step (lr 1e-3, momentum 0.9)."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step(x):
        loss = loss_fn(x)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def time_train_steps(models: tuple, losses: tuple, images, *, iters: int, warmup: int) -> tuple[float, float]:
    """Median seconds of a training step of each of two models on `images`; both are left in eval mode."""
    steps = [sgd_step(model, loss) for model, loss in zip(models, losses)]
    for model in models:
        model.train()
    with torch.enable_grad():
        times = time_pair(*steps, images, images, iters=iters, warmup=warmup, grad=True)
    for model in models:
        model.eval()
    return times


def random_targets(n: int, g: torch.Generator) -> list[dict]:
    """1-5 boxes of 16-80 px per 320x320 image, labels among COCO's 90 classes."""
    targets = []
    for _ in range(n):
        k = int(torch.randint(1, 6, (1,), generator=g))
        xy = torch.rand(k, 2, generator=g) * 240
        wh = 16 + torch.rand(k, 2, generator=g) * 64
        targets.append(
            {"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.randint(1, 91, (k,), generator=g)}
        )
    return targets


def detect_tables(*, threads: int, iters: int, warmup: int) -> dict:
    """predict end to end and a training step, dense vs torchvision's SSDLite; COCO scoring engines."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    tv, ours = torchvision_pair("ssdlite320_mobilenet_v3_large", num_classes=91)
    rows = {}

    # predict: batch 1, 320x320, transform + network + postprocess; torchvision called the usual way
    img = torch.rand(1, 3, 320, 320)
    rows["predict"] = ratio(*time_pair(ours.predict, tv, img, [img[0]], iters=iters, warmup=warmup))
    rows["predict"]["madds"] = count_madds(ours, 320, forward="forward")  # the network, no postprocess

    # training step: batch 8, loss + backward + SGD step
    g = torch.Generator().manual_seed(0)
    images = torch.rand(8, 3, 320, 320, generator=g)
    targets = random_targets(8, g)

    def dense_loss(x):
        return ours.loss(ours(x), targets)["loss"]

    def tv_loss(x):
        return sum(tv(list(x), targets).values())

    times = time_train_steps((ours, tv), (dense_loss, tv_loss), images, iters=max(5, iters // 5), warmup=2)
    rows["train_step"] = ratio(*times)
    print_ratios(
        f"SSDLite320 V3-Large, CPU, {threads} threads (median of {iters}); ratio = dense / torchvision",
        rows,
        {"predict": "predict, batch 1", "train_step": "train step, batch 8"},
        digits=1,
    )
    rows["coco_scoring"] = coco_scoring_table()
    return rows


def segment_tables(*, threads: int, iters: int, warmup: int) -> dict:
    """LR-ASPP V3-Large (torchvision's configuration) vs torchvision: inference at 1024x2048,
    a training step at batch 8, 256x512, with the same loss; and the mIoU metric's cost."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    tv, ours = torchvision_pair("lraspp_mobilenet_v3_large", num_classes=19)
    rows = {}

    # inference, batch 1, full Cityscapes resolution
    img = torch.rand(1, 3, 1024, 2048)
    n = max(3, iters // 5)
    times = time_pair(ours, lambda x: tv(x)["out"], img, normalise(img), iters=n, warmup=min(warmup, 2))
    rows["inference_1024x2048"] = ratio(*times)
    rows["inference_1024x2048"]["madds"] = count_madds(ours, (1024, 2048))

    # training step: batch 8, 256x512, cross-entropy (void pixels ignored) + backward + SGD step
    g = torch.Generator().manual_seed(0)
    images = torch.rand(8, 3, 256, 512, generator=g)
    masks = torch.randint(0, 19, (8, 256, 512), generator=g)
    masks[:, :16] = IGNORE_INDEX

    def dense_loss(x):
        return ours.loss(ours(x), masks)

    def tv_loss(x):
        return F.cross_entropy(tv(normalise(x))["out"], masks, ignore_index=IGNORE_INDEX)

    times = time_train_steps((ours, tv), (dense_loss, tv_loss), images, iters=n, warmup=1)
    rows["train_step_8x256x512"] = ratio(*times)
    print_ratios(
        f"LR-ASPP MobileNetV3-Large, CPU, {threads} threads (median); ratio = dense / torchvision",
        rows,
        {
            "inference_1024x2048": "inference 1024x2048, batch 1",
            "train_step_8x256x512": "train step, batch 8, 256x512",
        },
        digits=0,
    )
    per_image = miou_update_seconds(g)
    rows["miou_update_s_per_image"] = per_image
    console.print(
        f"mIoU accumulation: {per_image * 1e3:.1f} ms per 1024x2048 image "
        f"({per_image / rows['inference_1024x2048']['dense_ms'] * 1e5:.1f}% of the network's time)"
    )
    return rows


def miou_update_seconds(g: torch.Generator) -> float:
    """Median seconds of one mIoU confusion-matrix update with a 1024x2048 image."""
    metric = CityscapesMIoU()
    target = torch.randint(0, 19, (1, 1024, 2048), generator=g)
    target[:, :64] = IGNORE_INDEX
    preds = torch.randint(0, 19, (1, 1024, 2048), generator=g)
    metric.update(preds, target)  # the first update allocates
    return median_seconds(lambda: metric.update(preds, target), 10)
