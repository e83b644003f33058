"""Benchmarks: complexity beside the papers' tables, and CPU latency beside the peers.

  python tools/benchmark.py --paper            params / MAdds vs the papers: classifiers, SSDLite
                                               (Table 6), R-ASPP / LR-ASPP (Tables 7-8)
  python tools/benchmark.py --speed            batch-1 latency, dense vs torchvision / timm, as ratios
  python tools/benchmark.py --detect           SSDLite predict / train step vs torchvision; COCO scoring
  python tools/benchmark.py --segment          LR-ASPP inference / train step vs torchvision; mIoU cost
  python tools/benchmark.py --deploy           image in, result out: PyTorch eager / BN folded / ONNX
                                               Runtime fp32 / int8 vs torchvision (SSDLite, LR-ASPP)
  python tools/benchmark.py --paper --speed --out bench.json     also writes BENCHMARKS.md beside it

Latency is measured in one process, interleaving dense and peer runs so that machine noise hits
both alike; the ratio (dense / peer, < 1 is faster) is the figure to read, not the milliseconds.
Every latency is also put beside the machine's compute floor (2 x MAdds / its torch.mm rate).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dense.benchmark import deploy, floor, paper, speed, tasks  # noqa: E402
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
    if not (args.paper or args.speed or args.detect or args.segment or args.deploy):
        ap.error("choose --paper, --speed, --detect, --segment and/or --deploy")
    unknown = sorted(set(args.models) - set(PEERS))
    if unknown:
        ap.error(f"unknown model(s) {unknown}; valid: {list(PEERS)}")
    return args


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
