"""Benchmarks: complexity beside the papers' tables, and CPU latency beside the peers.

  python tools/benchmark.py --paper            params / MAdds vs the papers: classifiers, SSDLite
                                               (Table 6), R-ASPP / LR-ASPP (Tables 7-8)
  python tools/benchmark.py --speed            batch-1 latency, dense vs torchvision / timm, as ratios
  python tools/benchmark.py --detect           SSDLite predict / train step vs torchvision; COCO scoring
  python tools/benchmark.py --segment          LR-ASPP inference / train step vs torchvision; mIoU cost
  python tools/benchmark.py --deploy           image in, result out: PyTorch eager / BN folded / ONNX
                                               Runtime fp32 / int8 vs torchvision (SSDLite, LR-ASPP)
  python tools/benchmark.py --train-cost       a training step of `make train`'s recipe on the built-in
                                               data: its phases, channels-last vs NCHW, the loss
                                               switches, torch.profiler's top operators
  python tools/benchmark.py --paper --speed --out bench.json     also writes BENCHMARKS.md beside it

Latency is measured in one process, interleaving dense and peer runs so that machine noise hits
both alike; the ratio (dense / peer, < 1 is faster) is the figure to read, not the milliseconds.
Every latency is also put beside the machine's compute floor (2 x MAdds / its torch.mm rate).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dense.benchmark import deploy, floor, paper, speed, tasks, train_cost  # noqa: E402
from dense.benchmark.machine import machine_info  # noqa: E402
from dense.benchmark.markdown import write_markdown  # noqa: E402
from dense.benchmark.peers import PEERS  # noqa: E402
from dense.benchmark.report import console  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paper", action="store_true", help="complexity vs the papers' tables")
    ap.add_argument("--speed", action="store_true", help="latency vs torchvision / timm")
    ap.add_argument(
        "--detect", action="store_true", help="SSDLite predict / train step vs torchvision; COCO scoring"
    )
    ap.add_argument(
        "--segment", action="store_true", help="LR-ASPP inference / train step vs torchvision; mIoU cost"
    )
    ap.add_argument(
        "--deploy",
        action="store_true",
        help="image in, result out: eager / BN folded / ONNX Runtime, vs torchvision",
    )
    ap.add_argument(
        "--train-cost",
        action="store_true",
        help="a training step of the built-in detection recipe: phases, memory format, losses, profile",
    )
    ap.add_argument(
        "--data-root",
        type=Path,
        help="--train-cost on this COCO-layout folder (train2017/, annotations/instances_train2017.json) "
        "instead of the built-in shapes_coco",
    )
    ap.add_argument("--no-onnx", action="store_true", help="--deploy without the ONNX Runtime rows")
    ap.add_argument("--models", nargs="*", default=list(PEERS), help="backbones for --speed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--out", type=Path, help="write the figures as JSON")
    ap.add_argument(
        "--markdown", type=Path, help="write the report as markdown (default: BENCHMARKS.md beside --out)"
    )
    args = ap.parse_args(argv)
    if not (args.paper or args.speed or args.detect or args.segment or args.deploy or args.train_cost):
        ap.error("choose --paper, --speed, --detect, --segment, --deploy and/or --train-cost")
    if args.data_root and not args.train_cost:
        ap.error("--data-root is for --train-cost")
    unknown = sorted(set(args.models) - set(PEERS))
    if unknown:
        ap.error(f"unknown model(s) {unknown}; valid: {list(PEERS)}")
    return args


def shapes_coco_root() -> Path:
    """The built-in detection data where `make train` keeps it, generated as its config says if absent."""
    import yaml

    from dense.data.shapes_coco import ensure_shapes_coco

    conf = yaml.safe_load((ROOT / "conf" / "data" / "shapes_coco.yaml").read_text())
    root = Path(os.environ.get("DENSE_DATA", "data")) / "shapes_coco"
    ensure_shapes_coco(root, **conf["synthetic_options"])
    return root


def main(argv=None) -> None:
    args = parse_args(argv)
    timing = dict(threads=args.threads, iters=args.iters, warmup=args.warmup)
    result = {"device": "cpu", "torch": torch.__version__, "machine": machine_info(args.threads)}
    result["settings"] = dict(
        command=" ".join(["python tools/benchmark.py", *(sys.argv[1:] if argv is None else argv)]),
        **timing,
        size=args.size,
    )
    if args.paper:
        result["paper"] = paper.classifier_table()
        result["paper_detection"] = paper.ssdlite_table()
        result["paper_segmentation"] = paper.segmentation_table()
    if args.speed:
        result["speed"] = speed.speed_table(args.models, size=args.size, **timing)
    if args.detect:
        result["detect"] = tasks.detect_tables(**timing)
    if args.segment:
        result["segment"] = tasks.segment_tables(**timing)
    if args.deploy:
        # the 1024x2048 rounds take seconds each: a few of them
        seg = dict(segment_iters=max(1, min(5, args.iters // 10)), segment_warmup=min(args.warmup, 2))
        result["deploy"] = deploy.deploy_tables(**timing, **seg, onnx=not args.no_onnx)
    if args.train_cost:
        root = args.data_root or shapes_coco_root()
        result["train_cost"] = train_cost.train_cost_tables(root, **timing)
    if args.speed or args.detect or args.segment or args.deploy:
        result["matmul"] = floor.matmul_gflops(args.threads)
        result["floor"] = floor.floor_rows(result, result["matmul"]["gflops"])
        console.print(f"matrix multiply: {result['matmul']['gflops']:.0f} GFLOP/s, {args.threads} threads")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
        console.print(f"wrote {args.out}")
    md = args.markdown or (args.out.parent / "BENCHMARKS.md" if args.out else None)
    if md:
        write_markdown(result, md)
        console.print(f"wrote {md}")


if __name__ == "__main__":
    from dense.errors import run_tool

    run_tool("benchmark.py", main)  # a missing weights file and the like: one line, exit status 2
