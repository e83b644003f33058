"""What an exported ONNX file carries in its metadata_props, so a runner needs nothing else.

Every key starts with ``dense.`` and holds JSON (see docs/deploy.md for the list):
task, outputs ("raw" / "end_to_end"), input (name, size, layout, value range), normalize (mean /
std, applied inside the graph), resize (the rule the training's eval pipeline used), classes
(names by label, label -> category id), postprocess (detection: the `Detector.predict` settings),
palette (segmentation colours), model (the build config).
"""

from __future__ import annotations

import colorsys
import json
from typing import Any

from torch import nn

from dense.classification import Classifier
from dense.data.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from dense.data.info import DatasetInfo
from dense.detection import Detector
from dense.detection.box_coder import WEIGHTS
from dense.segmentation.segmenter import Segmenter

__all__ = ["FORMAT_VERSION", "TOPK_PER_CLASS", "model_task", "onnx_metadata"]

FORMAT_VERSION = 1
TOPK_PER_CLASS = 300  # dense.detection.postprocess.postprocess's default, what Detector.predict uses


def model_task(model: nn.Module) -> str:
    if isinstance(model, Detector):
        return "detect"
    if isinstance(model, Segmenter):
        return "segment"
    if isinstance(model, Classifier):
        return "classify"
    raise TypeError(f"export needs a dense Detector, Segmenter or Classifier, got {type(model).__name__}")


def _palette(names: list[str]) -> list[list[int]]:
    """Cityscapes colours by class name (the official label table); other names get evenly spread hues."""
    cs = {n: [int(v) for v in c] for n, c in zip(CITYSCAPES_CLASSES, CITYSCAPES_PALETTE)}
    out = []
    for i, n in enumerate(names):
        if n in cs:
            out.append(cs[n])
        else:
            r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.65, 0.95)
            out.append([round(r * 255), round(g * 255), round(b * 255)])
    return out


def onnx_metadata(
    model: nn.Module,
    *,
    image_size: tuple[int, int],
    end_to_end: bool,
    dynamic_batch: bool,
    info: DatasetInfo | None,
    input_name: str,
) -> dict[str, str]:
    """metadata_props of the export of `model` (every value a JSON string)."""
    task = model_task(model)
    k = int(model.num_classes)
    if info is not None and info.num_classes != k:
        raise ValueError(f"info has {info.num_classes} classes, the model {k}")
    if info is not None:
        names, cat_ids = list(info.class_names), {str(a): b for a, b in info.label_to_cat_id.items()}
    elif task == "segment" and k == len(CITYSCAPES_CLASSES):
        names, cat_ids = list(CITYSCAPES_CLASSES), {}
    else:
        names = (["__background__"] if task == "detect" else []) + [
            str(i) for i in range(1 if task == "detect" else 0, k)
        ]
        cat_ids = {str(i): i for i in range(1, k)} if task == "detect" else {}
    norm = model.normalize
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "task": task,
        "outputs": "end_to_end" if end_to_end else "raw",
        "input": {
            "name": input_name,
            "size": list(image_size),
            "layout": "NCHW",
            "dtype": "float32",
            "range": [0.0, 1.0],
            "channels": "RGB",
            "dynamic_batch": bool(dynamic_batch),
        },
        "normalize": {
            "mean": [float(v) for v in norm.mean.flatten()],
            "std": [float(v) for v in norm.std.flatten()],
            "in_graph": True,
        },
        "classes": {"names": names, "label_to_cat_id": cat_ids},
    }
    if task == "detect":
        c = model.config
        # Training's eval pipeline (dense.data.det_transforms, train=False): A.Resize to image_size,
        # cv2 INTER_LINEAR on the uint8 image, then / 255; boxes scale back to the original pixels.
        meta["resize"] = {"rule": "stretch", "interpolation": "cv2.INTER_LINEAR", "on": "uint8"}
        meta["postprocess"] = {
            "score_fn": "softmax" if c.cls_loss == "softmax" else "sigmoid",
            "score_thresh": float(c.score_thresh),
            "nms_thresh": float(c.nms_thresh),
            "topk_per_class": TOPK_PER_CLASS,
            "max_detections": int(c.max_detections),
            "box_coder_weights": list(WEIGHTS),
            "background": 0,
        }
    elif task == "segment":
        # Training evaluates whole images at their size (dense.data.seg_transforms.EvalTransform);
        # other sizes are resized to the export size and the logits back (upsample_logits).
        meta["resize"] = {
            "rule": "stretch",
            "interpolation": "cv2.INTER_AREA down / cv2.INTER_LINEAR up",
            "logits": "bilinear to the original size, then argmax",
        }
        meta["palette"] = _palette(names)
    if hasattr(model, "config"):
        meta["model"] = model.config.to_dict()
    return {f"dense.{key}": json.dumps(value) for key, value in meta.items()}
