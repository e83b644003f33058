"""Export a training checkpoint to ONNX (and optionally int8), check it, print the files written.

    python tools/export.py ckpt=outputs/.../checkpoints/last.ckpt
    python tools/export.py ckpt=... out=model.onnx end_to_end=true          # NMS inside the graph
    python tools/export.py ckpt=... image_size=256,512                        # segmentation: its input size
    python tools/export.py ckpt=... dynamic_batch=true opset=18
    python tools/export.py ckpt=... int8=true calib_images=200 [calib_dir=DIR]
    python tools/export.py ckpt=... int8=true eval_root=data/shapes_coco      # accuracy float vs int8

Arguments are key=value. ``out`` defaults to the checkpoint's name with ``.onnx`` beside it.
Detection exports at the checkpoint's ``image_size``; segmentation needs ``image_size`` (the size
of the pictures it will see: training evaluates whole images, e.g. 1024,2048 for Cityscapes).
``int8=true`` also writes ``<out>.int8.onnx`` (static QDQ quantization, per-channel weights),
calibrated on ``calib_images`` training pictures preprocessed by the runner itself; they come
from ``calib_dir``, by default the training folder beside the checkpoint's validation data
(``<root>/train2017`` for COCO layouts, ``<root>/leftImg8bit/train`` for Cityscapes). The files
are described in docs/deploy.md.

``eval_root=DIR`` scores every file written on that data set's val split with the runner
(``dense.export.evaluate.evaluate_onnx``: COCO AP or Cityscapes mIoU, training's metric names),
prints them side by side and writes ``<out>.metrics.json``; ``eval_limit=N`` takes the first N
pictures only.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

try:
    import dense  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dense.errors import UserError, run_tool  # noqa: E402

TOOL = "export.py"
KEYS = {
    "ckpt": None,
    "format": "onnx",
    "out": None,
    "image_size": None,
    "dynamic_batch": "false",
    "end_to_end": "false",
    "opset": None,
    "int8": "false",
    "calib_images": "100",
    "calib_dir": None,
    "eval_root": None,
    "eval_limit": None,
    "threads": None,
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def parse_args(argv: list[str], keys: dict[str, Any] = KEYS) -> dict[str, Any]:
    """key=value arguments (as the Hydra tools take them) -> dict with the defaults filled in."""
    args = dict(keys)
    for a in argv:
        key, sep, value = a.partition("=")
        if not sep or key not in keys:
            raise UserError(f"unknown argument {a!r}; expected key=value with key in {sorted(keys)}")
        args[key] = value
    return args


def as_bool(key: str, value: str) -> bool:
    v = str(value).lower()
    if v not in ("true", "false", "1", "0", "yes", "no"):
        raise UserError(f"{key}={value}: expected true or false")
    return v in ("true", "1", "yes")


def as_size(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        parts = [int(v) for v in str(value).strip("[]()").split(",")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) <= 0:
        raise UserError(f"image_size={value}: expected H,W or one side in pixels")
    return (parts[0], parts[-1])


def as_int(key: str, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise UserError(f"{key}={value}: expected an integer") from None


def load_checkpoint(path: str | None):
    """(model, extras) of a dense checkpoint; UserError for a missing or foreign file."""
    from dense.lit.checkpoint import load_model_from_checkpoint

    if not path:
        raise UserError("ckpt=PATH is required (a checkpoint written by tools/train.py)")
    try:
        return load_model_from_checkpoint(path)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from e


def calibration_images(info: Any, task: str, calib_dir: str | None, count: int) -> list[Path]:
    """`count` training pictures, evenly spaced over the sorted folder (deterministic)."""
    if calib_dir is None:
        if task == "detect" and info is not None and info.val_ann_file:
            calib_dir = str(Path(info.val_ann_file).parent.parent / "train2017")
        elif task == "segment" and info is not None and info.val_label_dir:
            calib_dir = str(Path(info.val_label_dir).parent.parent / "leftImg8bit" / "train")
        else:
            raise UserError("int8=true needs calib_dir=FOLDER of training pictures")
    folder = Path(calib_dir)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"calib_dir={folder}: no pictures ({', '.join(IMAGE_SUFFIXES)}) found there")
    step = max(1, len(files) // max(1, count))
    return files[::step][:count]


def main(argv: list[str]) -> list[Path]:
    args = parse_args(argv)
    if args["format"] != "onnx":
        raise UserError(f"format={args['format']}: the only export format is onnx")
    image_size = as_size(args["image_size"])
    end_to_end = as_bool("end_to_end", args["end_to_end"])
    dynamic_batch = as_bool("dynamic_batch", args["dynamic_batch"])
    int8 = as_bool("int8", args["int8"])
    opset = as_int("opset", args["opset"])
    count = as_int("calib_images", args["calib_images"])
    model, extras = load_checkpoint(args["ckpt"])
    task = extras["task"]
    if task == "segment" and image_size is None:
        raise UserError("a segmentation export needs image_size=H,W (e.g. 1024,2048 for Cityscapes frames)")
    if end_to_end and task != "detect":
        raise UserError("end_to_end=true applies to detection checkpoints only")
    if end_to_end and dynamic_batch:
        raise UserError("end_to_end=true takes one image at a time: drop dynamic_batch=true")
    if opset is not None and opset < 14:
        raise UserError(f"opset={opset}: HardSwish needs opset 14 or newer")
    out = Path(args["out"]) if args["out"] else Path(args["ckpt"]).with_suffix(".onnx")

    import dense.deploy
    from dense.deploy.quantize import quantize_int8
    from dense.export import export_onnx

    written = [
        export_onnx(
            model,
            out,
            image_size=image_size,
            end_to_end=end_to_end,
            dynamic_batch=dynamic_batch,
            opset=opset,
            info=extras["info"],
        )
    ]
    runner = dense.deploy.load(out)  # the file loads in onnxruntime alone
    print(
        f"{out}: {task}, input {runner.input_size[0]}x{runner.input_size[1]}, outputs {runner.output_names}"
    )
    if int8:
        files = calibration_images(extras["info"], task, args["calib_dir"], count)
        calib = (runner.preprocess(dense.deploy.read_image(p)) for p in files)
        q = quantize_int8(out, out.with_suffix(".int8.onnx"), calib)
        dense.deploy.load(q)
        print(
            f"{q}: int8 (QDQ, per-channel weights), {len(files)} calibration pictures from {files[0].parent}"
        )
        written.append(q)
    for path in written:
        print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    if args["eval_root"]:
        evaluate_files(
            written,
            args["eval_root"],
            as_int("eval_limit", args["eval_limit"]),
            as_int("threads", args["threads"]),
            out,
        )
    return written


def evaluate_files(files: list[Path], root: str, limit: int | None, threads: int | None, out: Path) -> dict:
    """Score each file on `root`'s val split; print a table and write `<out>.metrics.json`."""
    import json

    from dense.export.evaluate import evaluate_onnx

    if not Path(root).is_dir():
        raise UserError(f"eval_root={root}: no such folder")
    try:
        results = {str(f): evaluate_onnx(f, root, threads=threads, limit=limit) for f in files}
    except FileNotFoundError as e:
        raise UserError(f"eval_root={root}: {e}") from e
    keys = [
        k for k in ("val/map", "val/map_50", "val/map_75", "val/miou") if k in next(iter(results.values()))
    ]
    print(f"{'file':<48} " + " ".join(f"{k:>11}" for k in keys) + "  images")
    for f, m in results.items():
        print(f"{Path(f).name:<48} " + " ".join(f"{100 * m[k]:11.2f}" for k in keys) + f"  {m['num_images']}")
    target = out.with_suffix(".metrics.json")
    target.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {target}")
    return results


if __name__ == "__main__":
    run_tool(TOOL, main, sys.argv[1:])
