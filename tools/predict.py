"""Draw a checkpoint's (or an ONNX export's) predictions on pictures: one PNG per input.

    python tools/predict.py ckpt=outputs/.../last.ckpt input=street.jpg output=preds/
    python tools/predict.py ckpt=... input=photos/ output=preds/ score_threshold=0.5
    python tools/predict.py onnx=model.onnx input=photos/ output=preds/            # no checkpoint needed
    python tools/predict.py ckpt=... backend=onnx input=photos/ output=preds/      # exports on the fly

Detections are drawn with class names and scores (those above ``score_threshold``, default 0.3);
segmentation as an overlay in the Cityscapes palette with a legend of the classes present. Any
picture size: detection resizes as training's evaluation did and maps the boxes back; segmentation
runs on the whole picture (backend=torch) or resizes to the export's input size (backend=onnx).
``backend=onnx`` runs ``dense.deploy`` (onnxruntime, no torch): the file given as ``onnx=``, or,
with only ``ckpt=``, an export of it to a temporary file (segmentation then exports at the size of
the first picture unless ``image_size=H,W`` is given).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

try:
    import dense  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from export import IMAGE_SUFFIXES, as_size, load_checkpoint, parse_args  # noqa: E402

from dense.errors import UserError, run_tool  # noqa: E402

TOOL = "predict.py"
KEYS = {
    "ckpt": None,
    "onnx": None,
    "input": None,
    "output": None,
    "backend": "torch",
    "score_threshold": "0.3",
    "image_size": None,
    "threads": None,
}


def list_inputs(path: str | None) -> list[Path]:
    if not path:
        raise UserError("input=IMAGE_OR_DIR is required")
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UserError(f"input={p}: no pictures ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return files
    if not p.is_file():
        raise UserError(f"input={p}: no such file or folder")
    return [p]


class TorchPredictor:
    """The checkpoint's model in PyTorch, fed as training's evaluation (same resize as the runner)."""

    def __init__(self, model, extras) -> None:
        from dense.export.metadata import onnx_metadata

        self.model, self.task = model, extras["task"]
        info = extras["info"]
        size = model.config.image_size if self.task == "detect" else (1, 1)
        meta = onnx_metadata(
            model, image_size=size, end_to_end=False, dynamic_batch=False, info=info, input_name="images"
        )
        # names and colours as an export would carry them
        self.class_names = json.loads(meta["dense.classes"])["names"]
        self.palette = json.loads(meta.get("dense.palette", "[]"))

    def predict(self, rgb):
        import numpy as np
        import torch

        from dense.deploy.images import resize_image

        if self.task == "detect":
            x = resize_image(rgb, self.model.config.image_size)
            t = torch.from_numpy(np.array(x)).permute(2, 0, 1)[None].float() / 255
            det = self.model.predict(t, orig_sizes=[rgb.shape[:2]])[0]
            return {k: v.numpy() for k, v in det.items()}
        t = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None].float() / 255
        return self.model.predict(t)[0].numpy()


def main(argv: list[str]) -> list[Path]:
    import numpy as np
    from PIL import Image
    from rich.progress import track

    import dense.deploy
    from dense.export.draw import draw_detections, draw_segmentation

    args = parse_args(argv, KEYS)
    inputs = list_inputs(args["input"])
    if not args["output"]:
        raise UserError("output=DIR is required")
    out_dir = Path(args["output"])
    try:
        thresh = float(args["score_threshold"])
    except ValueError:
        raise UserError(f"score_threshold={args['score_threshold']}: expected a number") from None
    backend = args["backend"]
    if backend not in ("torch", "onnx"):
        raise UserError(f"backend={backend}: expected torch or onnx")
    if args["onnx"]:
        backend = "onnx"
    elif not args["ckpt"]:
        raise UserError("ckpt=PATH (or onnx=PATH) is required")
    threads = int(args["threads"]) if args["threads"] else None

    tmp = None
    if backend == "onnx":
        onnx_path = args["onnx"]
        if not onnx_path:
            from dense.export import export_onnx

            model, extras = load_checkpoint(args["ckpt"])
            size = as_size(args["image_size"])
            if extras["task"] == "segment" and size is None:
                size = dense.deploy.read_image(inputs[0]).shape[:2]
            tmp = tempfile.TemporaryDirectory()
            onnx_path = export_onnx(
                model, Path(tmp.name) / "model.onnx", image_size=size, info=extras["info"]
            )
        try:
            predictor = dense.deploy.load(onnx_path, threads=threads)
        except (FileNotFoundError, ValueError) as e:
            raise UserError(str(e)) from e
        task, names, palette = predictor.task, predictor.class_names, predictor.meta.get("palette", [])
    else:
        model, extras = load_checkpoint(args["ckpt"])
        predictor = TorchPredictor(model, extras)
        task, names, palette = predictor.task, predictor.class_names, predictor.palette

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in track(inputs, description=f"predict ({backend})", disable=len(inputs) < 2):
        try:
            rgb = dense.deploy.read_image(path)
        except (FileNotFoundError, ValueError) as e:
            raise UserError(str(e)) from e
        pred = predictor.predict(rgb)
        if task == "detect":
            keep = pred["scores"] >= thresh
            picture = draw_detections(
                rgb, pred["boxes"][keep], pred["scores"][keep], pred["labels"][keep], names
            )
        else:
            picture = draw_segmentation(rgb, pred, np.asarray(palette, dtype=np.uint8), names)
        target = out_dir / f"{path.stem}.png"
        Image.fromarray(picture).save(target)
        written.append(target)
    if tmp is not None:
        tmp.cleanup()
    print(f"{len(written)} pictures written to {out_dir}")
    return written


if __name__ == "__main__":
    run_tool(TOOL, main, sys.argv[1:])
