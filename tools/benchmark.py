"""Benchmarks: complexity beside the papers' tables, and CPU latency beside the peers.

  python tools/benchmark.py --paper            params / MAdds vs the papers: classifiers, SSDLite
                                               (Table 6), R-ASPP / LR-ASPP (Tables 7-8)
  python tools/benchmark.py --speed            batch-1 latency, dense vs torchvision / timm, as ratios
  python tools/benchmark.py --detect           SSDLite predict / train step vs torchvision; COCO scoring
  python tools/benchmark.py --segment          LR-ASPP inference / train step vs torchvision; mIoU cost
  python tools/benchmark.py --paper --speed --out bench.json

Latency is measured in one process, interleaving dense and peer runs so that machine noise hits
both alike; the ratio (dense / peer, < 1 is faster) is the figure to read, not the milliseconds.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dense.backbones.blocks import fuse_batchnorm  # noqa: E402
from dense.classification import build_classifier  # noqa: E402
from dense.complexity import count_madds, count_params  # noqa: E402
from dense.papers import CLASSIFIERS, SEGMENTATION, SSDLITE, TORCHVISION_SSDLITE_PARAMS  # noqa: E402

console = Console(width=None if sys.stdout.isatty() else 150)

# dense backbone -> (library, peer name)
PEERS = {
    "v1": ("timm", "mobilenetv1_100"),
    "v2": ("torchvision", "mobilenet_v2"),
    "v3_large": ("torchvision", "mobilenet_v3_large"),
    "v3_small": ("torchvision", "mobilenet_v3_small"),
    "mixnet_s": ("timm", "mixnet_s"),
    "mixnet_m": ("timm", "mixnet_m"),
    "mixnet_l": ("timm", "mixnet_l"),
}


def build_peer(backbone: str) -> torch.nn.Module:
    lib, name = PEERS[backbone]
    if lib == "torchvision":
        import torchvision

        return getattr(torchvision.models, name)()
    import timm

    return timm.create_model(name)


def paper_table() -> list[dict]:
    table = Table(
        title="ImageNet classifiers: dense vs the papers (params without BN; MAdds at the resolution)"
    )
    for col in (
        "model",
        "width",
        "res",
        "params M",
        "paper",
        "Δ",
        "MAdds M",
        "paper",
        "Δ",
        "MAdds+elementwise M",
    ):
        table.add_column(col, justify="right")
    rows = []
    for r in CLASSIFIERS:
        model = build_classifier(r.backbone, width_mult=r.width_mult)
        p = count_params(model) / 1e6
        m = count_madds(model, r.resolution) / 1e6
        me = count_madds(model, r.resolution, elementwise=True) / 1e6
        rows.append(
            dict(
                model=r.backbone,
                width_mult=r.width_mult,
                resolution=r.resolution,
                params_m=round(p, 3),
                paper_params_m=r.params_m,
                madds_m=round(m, 1),
                paper_madds_m=r.madds_m,
                madds_elementwise_m=round(me, 1),
                source=r.source,
            )
        )
        table.add_row(
            r.backbone,
            f"{r.width_mult:g}",
            str(r.resolution),
            f"{p:.2f}",
            f"{r.params_m}",
            f"{(p / r.params_m - 1) * 100:+.1f}%",
            f"{m:.1f}",
            f"{r.madds_m}",
            f"{(m / r.madds_m - 1) * 100:+.1f}%",
            f"{me:.1f}",
        )
    console.print(table)
    return rows


def _delta(ours: float, paper: float | None) -> str:
    return "" if paper is None else f"{(ours / paper - 1) * 100:+.1f}%"


def detection_paper_table() -> list[dict]:
    """SSDLite, "tf" anchors, 320x320, 91 classes: MobileNetV3 Table 6; torchvision's preset."""
    import dense

    table = Table(title="SSDLite 320x320, 91 classes, tf anchors: dense vs MobileNetV3 Table 6")
    for col in ("backbone", "width", "reduced tail", "params M", "paper", "Δ", "MAdds B", "paper", "Δ"):
        table.add_column(col, justify="right")
    rows = []
    for r in SSDLITE:
        model = dense.build_model(
            "detect",
            r.backbone,
            num_classes=91,
            width_mult=r.width_mult,
            reduced_tail=r.reduced_tail,
            anchors="tf",
        )
        p, m = count_params(model) / 1e6, count_madds(model, 320) / 1e9
        rows.append(dict(r._asdict(), ours_params_m=round(p, 3), ours_madds_b=round(m, 3)))
        table.add_row(
            r.backbone,
            f"{r.width_mult:g}",
            str(r.reduced_tail),
            f"{p:.2f}",
            f"{r.params_m}",
            _delta(p, r.params_m),
            f"{m:.3f}",
            f"{r.madds_b}",
            _delta(m, r.madds_b),
        )
    tv = dense.build_model("detect", "v3_large", num_classes=91, reduced_tail=True, anchors="torchvision")
    n = count_params(tv, include_norm=True)
    table.add_row(
        "v3_large (torchvision anchors)",
        "1",
        "True",
        f"{n:,}",
        f"{TORCHVISION_SSDLITE_PARAMS:,}",
        "",
        "",
        "",
        "",
    )
    rows.append(
        dict(
            backbone="v3_large",
            anchors="torchvision",
            params=n,
            torchvision_params=TORCHVISION_SSDLITE_PARAMS,
        )
    )
    console.print(table)
    return rows


def segmentation_paper_table() -> list[dict]:
    """R-ASPP / LR-ASPP, 19 classes: MobileNetV3 Tables 7-8 (see README for the params gap)."""
    import dense

    table = Table(title="Segmentation, 19 classes: dense vs MobileNetV3 Tables 7-8")
    for col in ("model", "F", "OS", "input", "params M", "paper", "MAdds B", "paper", "Δ"):
        table.add_column(col, justify="right")
    rows = []
    for r in SEGMENTATION:
        model = dense.build_model(
            "segment",
            r.backbone,
            head=r.head,
            num_classes=19,
            reduced_tail=r.reduced_tail,
            output_stride=r.output_stride,
            head_channels=r.head_channels,
        )
        p, m = count_params(model) / 1e6, count_madds(model, r.size) / 1e9
        rows.append(dict(r._asdict(), ours_params_m=round(p, 3), ours_madds_b=round(m, 3)))
        table.add_row(
            f"{r.backbone}{' RF2' if r.reduced_tail else ''} {r.head}",
            str(r.head_channels),
            str(r.output_stride),
            f"{r.size[0]}x{r.size[1]}",
            f"{p:.3f}",
            "" if r.params_m is None else f"{r.params_m}",
            f"{m:.2f}",
            f"{r.madds_b}",
            _delta(m, r.madds_b),
        )
    console.print(table)
    return rows


def time_pair(a, b, xa, xb, *, iters: int, warmup: int, grad: bool = False) -> tuple[float, float]:
    """Median seconds per call of a(xa) and b(xb), interleaved."""
    with torch.inference_mode(not grad):
        return _time_pair(a, b, xa, xb, iters=iters, warmup=warmup)


def _time_pair(a, b, xa, xb, *, iters: int, warmup: int) -> tuple[float, float]:
    for _ in range(warmup):
        a(xa), b(xb)
    ta, tb = [], []
    for i in range(iters):
        for fn, x, acc in ((a, xa, ta), (b, xb, tb)) if i % 2 == 0 else ((b, xb, tb), (a, xa, ta)):
            t0 = time.perf_counter()
            fn(x)
            acc.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def speed_table(names: list[str], *, threads: int, size: int, iters: int, warmup: int) -> list[dict]:
    torch.set_num_threads(threads)
    table = Table(title=f"CPU latency, batch 1, {size}x{size}, {threads} threads, eval (median of {iters})")
    for col in ("model", "peer", "dense ms", "peer ms", "dense / peer", "fused ms", "fused / peer"):
        table.add_column(col, justify="right")
    rows = []
    x = torch.rand(1, 3, size, size)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    xn = (x - mean) / std  # the peers get pre-normalised input (their usual call); dense normalises inside
    for name in names:
        ours, peer = build_classifier(name).eval(), build_peer(name).eval()
        td, tp = time_pair(ours, peer, x, xn, iters=iters, warmup=warmup)
        # dense's inference path: BatchNorm folded into the convolutions (fuse_batchnorm)
        tf, tp2 = time_pair(fuse_batchnorm(copy.deepcopy(ours)), peer, x, xn, iters=iters, warmup=warmup)
        lib, peer_name = PEERS[name]
        rows.append(
            dict(
                model=name,
                peer=f"{lib}:{peer_name}",
                dense_ms=td * 1e3,
                peer_ms=tp * 1e3,
                ratio=td / tp,
                fused_ms=tf * 1e3,
                fused_ratio=tf / tp2,
            )
        )
        table.add_row(
            name,
            f"{lib}:{peer_name}",
            f"{td * 1e3:.2f}",
            f"{tp * 1e3:.2f}",
            f"{td / tp:.3f}",
            f"{tf * 1e3:.2f}",
            f"{tf / tp2:.3f}",
        )
    console.print(table)
    return rows


def _tv_ssdlite_pair(num_classes: int = 91):
    """torchvision's ssdlite320_mobilenet_v3_large and dense's copy of it, same (random) weights."""
    import torchvision

    import dense

    tv = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=num_classes
    ).eval()
    return tv, dense.from_torchvision("ssdlite320_mobilenet_v3_large", tv.state_dict()).eval()


def detect_tables(*, threads: int, iters: int, warmup: int) -> dict:
    """predict end to end and a training step, dense vs torchvision's SSDLite; COCO scoring engines."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    tv, ours = _tv_ssdlite_pair()
    table = Table(
        title=f"SSDLite320 V3-Large, CPU, {threads} threads (median of {iters}); ratio = dense / torchvision"
    )
    for col in ("what", "dense ms", "torchvision ms", "ratio"):
        table.add_column(col, justify="right")
    rows = {}

    # predict: batch 1, 320x320, transform + network + postprocess; torchvision called the usual way
    img = torch.rand(1, 3, 320, 320)
    td, tt = time_pair(ours.predict, tv, img, [img[0]], iters=iters, warmup=warmup)
    rows["predict"] = dict(dense_ms=td * 1e3, torchvision_ms=tt * 1e3, ratio=td / tt)
    table.add_row("predict, batch 1", f"{td * 1e3:.1f}", f"{tt * 1e3:.1f}", f"{td / tt:.3f}")

    # training step: batch 8, loss + backward + SGD step
    g = torch.Generator().manual_seed(0)
    images = torch.rand(8, 3, 320, 320, generator=g)
    targets = []
    for _ in range(8):
        n = int(torch.randint(1, 6, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * 240
        wh = 16 + torch.rand(n, 2, generator=g) * 64
        targets.append(
            {"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.randint(1, 91, (n,), generator=g)}
        )
    opt_d = torch.optim.SGD(ours.parameters(), lr=1e-3, momentum=0.9)
    opt_t = torch.optim.SGD(tv.parameters(), lr=1e-3, momentum=0.9)

    def step_dense(x):
        loss = ours.loss(ours(x), targets)["loss"]
        opt_d.zero_grad()
        loss.backward()
        opt_d.step()

    def step_tv(x):
        losses = tv(list(x), targets)
        loss = sum(losses.values())
        opt_t.zero_grad()
        loss.backward()
        opt_t.step()

    ours.train(), tv.train()
    with torch.enable_grad():
        td, tt = time_pair(step_dense, step_tv, images, images, iters=max(5, iters // 5), warmup=2, grad=True)
    ours.eval(), tv.eval()
    rows["train_step"] = dict(dense_ms=td * 1e3, torchvision_ms=tt * 1e3, ratio=td / tt)
    table.add_row("train step, batch 8", f"{td * 1e3:.1f}", f"{tt * 1e3:.1f}", f"{td / tt:.3f}")
    console.print(table)
    rows["coco_scoring"] = coco_scoring_table()
    return rows


def segment_tables(*, threads: int, iters: int, warmup: int) -> dict:
    """LR-ASPP V3-Large (torchvision's configuration) vs torchvision: inference at 1024x2048,
    a training step at batch 8, 256x512, with the same loss; and the mIoU metric's cost."""
    import torchvision

    import dense
    from dense.evaluation.cityscapes import CityscapesMIoU

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    tv = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=19
    ).eval()
    ours = dense.from_torchvision("lraspp_mobilenet_v3_large", tv.state_dict()).eval()
    table = Table(
        title=f"LR-ASPP MobileNetV3-Large, CPU, {threads} threads (median); ratio = dense / torchvision"
    )
    for col in ("what", "dense ms", "torchvision ms", "ratio"):
        table.add_column(col, justify="right")
    rows = {}
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    # inference, batch 1, full Cityscapes resolution; torchvision gets normalised input (its usual call)
    img = torch.rand(1, 3, 1024, 2048)
    n = max(3, iters // 5)
    td, tt = time_pair(ours, lambda x: tv(x)["out"], img, (img - mean) / std, iters=n, warmup=min(warmup, 2))
    rows["inference_1024x2048"] = dict(dense_ms=td * 1e3, torchvision_ms=tt * 1e3, ratio=td / tt)
    table.add_row("inference 1024x2048, batch 1", f"{td * 1e3:.0f}", f"{tt * 1e3:.0f}", f"{td / tt:.3f}")

    # training step: batch 8, 256x512, cross-entropy (ignore 255) + backward + SGD step
    g = torch.Generator().manual_seed(0)
    images = torch.rand(8, 3, 256, 512, generator=g)
    masks = torch.randint(0, 19, (8, 256, 512), generator=g)
    masks[:, :16] = 255
    opt_d = torch.optim.SGD(ours.parameters(), lr=1e-3, momentum=0.9)
    opt_t = torch.optim.SGD(tv.parameters(), lr=1e-3, momentum=0.9)

    def step_dense(x):
        loss = ours.loss(ours(x), masks)
        opt_d.zero_grad()
        loss.backward()
        opt_d.step()

    def step_tv(x):
        loss = torch.nn.functional.cross_entropy(tv((x - mean) / std)["out"], masks, ignore_index=255)
        opt_t.zero_grad()
        loss.backward()
        opt_t.step()

    ours.train(), tv.train()
    with torch.enable_grad():
        td, tt = time_pair(step_dense, step_tv, images, images, iters=n, warmup=1, grad=True)
    ours.eval(), tv.eval()
    rows["train_step_8x256x512"] = dict(dense_ms=td * 1e3, torchvision_ms=tt * 1e3, ratio=td / tt)
    table.add_row("train step, batch 8, 256x512", f"{td * 1e3:.0f}", f"{tt * 1e3:.0f}", f"{td / tt:.3f}")
    console.print(table)

    # mIoU accumulation per full-resolution image (confusion matrix update), vs the network
    metric = CityscapesMIoU()
    target = torch.randint(0, 19, (1, 1024, 2048), generator=g)
    target[:, :64] = 255
    preds = torch.randint(0, 19, (1, 1024, 2048), generator=g)
    metric.update(preds, target)
    t = []
    for _ in range(10):
        t0 = time.perf_counter()
        metric.update(preds, target)
        t.append(time.perf_counter() - t0)
    per_image = statistics.median(t)
    rows["miou_update_s_per_image"] = per_image
    console.print(
        f"mIoU accumulation: {per_image * 1e3:.1f} ms per 1024x2048 image "
        f"({per_image / rows['inference_1024x2048']['dense_ms'] * 1e5:.1f}% of the network's time)"
    )
    return rows


def _synthetic_coco(num_images: int, seed: int = 0) -> tuple[dict, list]:
    """Ground truth and noisy detections in COCO format (no pixels needed to score)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    cats = [{"id": c, "name": f"c{c}", "supercategory": "x"} for c in (1, 3, 7, 11, 19, 42)]
    images, anns, dets = [], [], []
    for i in range(num_images):
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "width": 640, "height": 480})
        for _ in range(rng.integers(0, 12)):
            w, h = rng.uniform(8, 300, 2)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            cat = int(rng.choice([c["id"] for c in cats]))
            crowd = int(rng.random() < 0.02)
            anns.append(
                dict(
                    id=len(anns) + 1,
                    image_id=i + 1,
                    category_id=cat,
                    bbox=[x, y, w, h],
                    area=w * h,
                    iscrowd=crowd,
                    segmentation=[[x, y, x + w, y, x + w, y + h, x, y + h]],
                )
            )
            for _ in range(rng.integers(0, 3)):
                n = rng.normal(0, 0.1, 4) * [w, h, w, h]
                dets.append(
                    dict(
                        image_id=i + 1,
                        category_id=cat,
                        score=float(rng.random()),
                        bbox=[x + n[0], y + n[1], max(1.0, w + n[2]), max(1.0, h + n[3])],
                    )
                )
        for _ in range(rng.integers(0, 20)):  # false positives
            w, h = rng.uniform(8, 200, 2)
            dets.append(
                dict(
                    image_id=i + 1,
                    category_id=int(rng.choice([c["id"] for c in cats])),
                    score=float(rng.random() * 0.5),
                    bbox=[rng.uniform(0, 400), rng.uniform(0, 300), w, h],
                )
            )
    return {"images": images, "annotations": anns, "categories": cats}, dets


def coco_scoring_table(num_images: int = 2000, repeats: int = 3) -> dict:
    from dense.evaluation.coco import evaluate_coco

    gt, dets = _synthetic_coco(num_images)
    engines = ("faster_coco_eval", "pycocotools")
    runs, stats = {e: [] for e in engines}, {}
    evaluate_coco(gt, dets[:100], engine=engines[0])  # first-call set-up is not scoring time
    for r in range(repeats):  # interleaved, alternating order: machine noise hits both alike
        for engine in engines if r % 2 == 0 else engines[::-1]:
            t0 = time.perf_counter()
            res = evaluate_coco(gt, dets, engine=engine)
            runs[engine].append(time.perf_counter() - t0)
            stats[engine] = res.stats
    times = {e: statistics.median(v) for e, v in runs.items()}
    same = all(
        abs(stats["faster_coco_eval"][k] - stats["pycocotools"][k]) < 1e-12 for k in stats["pycocotools"]
    )
    speedup = times["pycocotools"] / times["faster_coco_eval"]
    table = Table(title=f"COCO scoring, {num_images} images, {len(dets)} detections (median of {repeats})")
    for col in ("engine", "seconds", "AP", "identical 12 stats"):
        table.add_column(col, justify="right")
    for engine in times:
        table.add_row(engine, f"{times[engine]:.2f}", f"{stats[engine]['AP']:.4f}", str(same))
    console.print(table)
    console.print(f"faster-coco-eval is {speedup:.1f}x faster than pycocotools")
    return dict(seconds=times, speedup=speedup, identical=same, num_detections=len(dets))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paper", action="store_true", help="complexity vs the papers' tables")
    ap.add_argument("--speed", action="store_true", help="latency vs torchvision / timm")
    ap.add_argument(
        "--detect", action="store_true", help="SSDLite predict / train step vs torchvision; COCO scoring"
    )
    ap.add_argument(
        "--segment", action="store_true", help="LR-ASPP inference / train step vs torchvision; mIoU cost"
    )
    ap.add_argument("--models", nargs="*", default=list(PEERS), help="backbones for --speed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--out", type=Path, help="write the figures as JSON")
    args = ap.parse_args(argv)
    if not (args.paper or args.speed or args.detect or args.segment):
        ap.error("choose --paper, --speed, --detect and/or --segment")
    unknown = sorted(set(args.models) - set(PEERS))
    if unknown:
        ap.error(f"unknown model(s) {unknown}; valid: {list(PEERS)}")
    result = {"device": "cpu", "torch": torch.__version__}
    if args.paper:
        result["paper"] = paper_table()
        result["paper_detection"] = detection_paper_table()
        result["paper_segmentation"] = segmentation_paper_table()
    if args.speed:
        result["speed"] = speed_table(
            args.models, threads=args.threads, size=args.size, iters=args.iters, warmup=args.warmup
        )
    if args.detect:
        result["detect"] = detect_tables(threads=args.threads, iters=args.iters, warmup=args.warmup)
    if args.segment:
        result["segment"] = segment_tables(threads=args.threads, iters=args.iters, warmup=args.warmup)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
        console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
