"""Runners of exported ONNX files: any picture in, detections or a label map in its own pixels out.

Everything a runner needs is in the file's metadata (written by `dense.export.export_onnx`); the
preprocessing repeats training's evaluation pipeline (the image resized with OpenCV as
albumentations does, scaled to [0, 1]; the normalisation is inside the graph).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort

from .images import as_rgb, resize_image
from .postprocess import postprocess, scale_boxes

__all__ = ["DetectorRunner", "Runner", "SegmenterRunner", "load", "read_metadata"]


def read_metadata(session: ort.InferenceSession, path: str | os.PathLike = "") -> dict[str, Any]:
    """The ``dense.*`` metadata_props of an exported file, JSON-decoded, without the prefix."""
    props = session.get_modelmeta().custom_metadata_map
    meta = {k.removeprefix("dense."): json.loads(v) for k, v in props.items() if k.startswith("dense.")}
    if "task" not in meta:
        raise ValueError(f"{path}: no dense metadata; export the model with dense.export.export_onnx")
    return meta


class Runner:
    """An ONNX session and the metadata of its export."""

    def __init__(self, session: ort.InferenceSession, meta: dict[str, Any], path: Path) -> None:
        self.session, self.meta, self.path = session, meta, path
        self.task: str = meta["task"]
        self.input_name: str = meta["input"]["name"]
        self.input_size: tuple[int, int] = tuple(meta["input"]["size"])
        self.class_names: list[str] = list(meta["classes"]["names"])
        self.output_names: list[str] = [o.name for o in session.get_outputs()]

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """[H, W, 3] uint8 -> [1, 3, h, w] float32 in [0, 1] at the input size."""
        x = resize_image(image, self.input_size, area_down=self.task == "segment")
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255.0)

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's outputs by name for a preprocessed batch [N, 3, h, w]."""
        return dict(zip(self.output_names, self.session.run(self.output_names, {self.input_name: images})))


class DetectorRunner(Runner):
    """predict(image) -> {"boxes" [M, 4] float32 xyxy pixels of the original image, "scores" [M],
    "labels" [M] int64 (1..K-1), "names" [M]}, as `Detector.predict(..., orig_sizes=...)`."""

    def __init__(self, session: ort.InferenceSession, meta: dict[str, Any], path: Path) -> None:
        super().__init__(session, meta, path)
        self.end_to_end = meta["outputs"] == "end_to_end"
        self.postprocess: dict[str, Any] = dict(meta["postprocess"])

    def predict(self, image: str | os.PathLike | np.ndarray) -> dict[str, Any]:
        rgb = as_rgb(image)
        out = self.run(self.preprocess(rgb))
        return self.detections(out, rgb.shape[:2])

    def detections(
        self, out: dict[str, np.ndarray], orig_size: tuple[int, int], index: int = 0
    ) -> dict[str, Any]:
        """Detections of image `index` of a batch's outputs, boxes in pixels of `orig_size` (H, W)."""
        if self.end_to_end:
            det = {"boxes": out["boxes"], "scores": out["scores"], "labels": out["labels"].astype(np.int64)}
        else:
            det = postprocess(
                out["cls_logits"][index],
                out["box_deltas"][index],
                out["anchors"],
                self.input_size,
                **self.postprocess,
            )
        det["boxes"] = scale_boxes(det["boxes"].astype(np.float32), self.input_size, tuple(orig_size))
        det["names"] = [self.class_names[int(i)] for i in det["labels"]]
        return det


class SegmenterRunner(Runner):
    """predict(image) -> labels [H, W] int64 at the original size (trainIds for Cityscapes);
    logits(image) -> [K, H, W] float32. An image of another size than the export's is resized to it
    and the logits resized back bilinearly before the argmax (`upsample_logits` of the evaluation)."""

    def __init__(self, session: ort.InferenceSession, meta: dict[str, Any], path: Path) -> None:
        super().__init__(session, meta, path)
        self.palette = np.asarray(meta.get("palette", []), dtype=np.uint8)

    def logits(self, image: str | os.PathLike | np.ndarray) -> np.ndarray:
        rgb = as_rgb(image)
        logits = self.run(self.preprocess(rgb))["logits"][0]
        h, w = rgb.shape[:2]
        if logits.shape[-2:] == (h, w):
            return logits
        # cv2 resizes at most 512 channels at once; half-pixel bilinear as F.interpolate
        hwc = np.ascontiguousarray(logits.transpose(1, 2, 0))
        parts = [
            cv2.resize(hwc[..., i : i + 512], (w, h), interpolation=cv2.INTER_LINEAR)
            for i in range(0, hwc.shape[-1], 512)
        ]
        parts = [p[..., None] if p.ndim == 2 else p for p in parts]
        return np.concatenate(parts, -1).transpose(2, 0, 1)

    def predict(self, image: str | os.PathLike | np.ndarray) -> np.ndarray:
        return self.logits(image).argmax(0)


RUNNERS = {"detect": DetectorRunner, "segment": SegmenterRunner}


def load(
    path: str | os.PathLike, *, threads: int | None = None, providers: list[str] | None = None
) -> DetectorRunner | SegmenterRunner:
    """A runner for an ONNX file written by `dense.export.export_onnx` (or its int8 version).

    threads: onnxruntime's intra-op threads (None: its default, all cores).
    providers: onnxruntime execution providers (None: ["CPUExecutionProvider"]).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail / InvalidProtobuf types
        raise ValueError(f"{path}: onnxruntime cannot load it: {e}") from e
    meta = read_metadata(session, path)
    if meta["task"] not in RUNNERS:
        raise ValueError(
            f"{path}: no runner for a {meta['task']!r} export (run it with onnxruntime directly)"
        )
    return RUNNERS[meta["task"]](session, meta, path)
