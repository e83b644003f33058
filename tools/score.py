"""Score saved predictions with the official semantics.

    python tools/score.py coco GT.json DETS.json [--out metrics.json] [--engine pycocotools]
    python tools/score.py cityscapes GT_DIR PRED_DIR [--out metrics.json]

Prints a readable table; ``--out FILE`` also writes the metrics as JSON (``--out -`` writes the
JSON to stdout and the table to stderr, for pipes). The logic lives in ``dense.evaluation``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

try:
    import dense  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dense.errors import UserError, exit_user_error  # noqa: E402
from dense.lit.config import json_safe  # noqa: E402


def _emit(table: str, metrics: dict[str, Any], out: str | None) -> None:
    metrics = json_safe(metrics)
    if out == "-":
        print(table, file=sys.stderr)
        print(json.dumps(metrics, indent=2))
        return
    print(table)
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(metrics, indent=2) + "\n")
        print(f"metrics written to {path}")


def cmd_coco(args: argparse.Namespace) -> int:
    from dense.data.coco import CocoDetection
    from dense.evaluation.coco import evaluate_coco

    # The ground truth gets the training's checks (ids, boxes, duplicates), every problem named.
    CocoDetection(Path(args.gt).parent, args.gt, train=False)
    result = evaluate_coco(args.gt, args.dets, engine=args.engine)
    metrics = {**result.to_dict(), "gt": str(args.gt), "detections": str(args.dets)}
    _emit(result.format_table(), metrics, args.out)
    return 0


def cmd_cityscapes(args: argparse.Namespace) -> int:
    from dense.evaluation.cityscapes import format_iou_table, score_folder

    result = score_folder(args.gt_dir, args.pred_dir)  # {"mIoU", "IoU": {class: fraction}, "num_images"}
    table = format_iou_table(result["IoU"], miou=result["mIoU"])
    metrics = {**result, "gt_dir": str(args.gt_dir), "pred_dir": str(args.pred_dir)}
    _emit(table, metrics, args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    coco = sub.add_parser("coco", help="COCO detection results (JSON list) against an instances file")
    coco.add_argument("gt", help="ground-truth annotation file (COCO instances JSON)")
    coco.add_argument(
        "dets", help="results file: JSON list of {image_id, category_id, bbox [x,y,w,h], score}"
    )
    coco.add_argument("--engine", choices=["faster_coco_eval", "pycocotools"], default="faster_coco_eval")
    coco.add_argument("--out", help="write the metrics as JSON to this file ('-' = stdout)")
    coco.set_defaults(func=cmd_coco)

    # --- cityscapes subcommand (scoring in dense.evaluation.cityscapes.score_folder) ---
    cs = sub.add_parser("cityscapes", help="Cityscapes labelIds PNGs against the gtFine folder")
    cs.add_argument("gt_dir", help="ground-truth folder (gtFine/<split>)")
    cs.add_argument("pred_dir", help="folder of predicted labelIds PNGs named after the input images")
    cs.add_argument("--out", help="write the metrics as JSON to this file ('-' = stdout)")
    cs.set_defaults(func=cmd_cityscapes)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as e:  # unreadable / inconsistent inputs; anything else is a bug: traceback
        exit_user_error(f"score.py {args.command}", e)


if __name__ == "__main__":
    sys.exit(main())
