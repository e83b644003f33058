"""Benchmarks: complexity beside the papers' tables, and CPU latency beside the peers.

  python tools/benchmark.py --paper            params / MAdds of every classifier vs the papers
  python tools/benchmark.py --speed            batch-1 latency, dense vs torchvision / timm, as ratios
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
from dense.papers import CLASSIFIERS  # noqa: E402

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


@torch.inference_mode()
def time_pair(a, b, xa, xb, *, iters: int, warmup: int) -> tuple[float, float]:
    """Median seconds per call of a(xa) and b(xb), interleaved."""
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


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paper", action="store_true", help="complexity vs the papers' tables")
    ap.add_argument("--speed", action="store_true", help="latency vs torchvision / timm")
    ap.add_argument("--models", nargs="*", default=list(PEERS), help="backbones for --speed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--out", type=Path, help="write the figures as JSON")
    args = ap.parse_args(argv)
    if not (args.paper or args.speed):
        ap.error("choose --paper and/or --speed")
    unknown = sorted(set(args.models) - set(PEERS))
    if unknown:
        ap.error(f"unknown model(s) {unknown}; valid: {list(PEERS)}")
    result = {"device": "cpu", "torch": torch.__version__}
    if args.paper:
        result["paper"] = paper_table()
    if args.speed:
        result["speed"] = speed_table(
            args.models, threads=args.threads, size=args.size, iters=args.iters, warmup=args.warmup
        )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
        console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
