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
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dense.benchmark import paper, speed, tasks  # noqa: E402
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
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    timing = dict(threads=args.threads, iters=args.iters, warmup=args.warmup)
    result = {"device": "cpu", "torch": torch.__version__}
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
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
        console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
