"""`export_onnx`: a dense Detector, Segmenter or Classifier as an ONNX file a runner can use alone."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import onnx
import onnx.numpy_helper
import torch
from torch import Tensor, nn

from dense.data.info import DatasetInfo
from dense.detection import Detector

from .end_to_end import EndToEndDetector
from .fold import count_batchnorms, fold_batchnorm
from .metadata import TOPK_PER_CLASS, model_task, onnx_metadata

__all__ = ["DEFAULT_OPSET", "export_onnx"]

# HardSwish needs opset 14; 17 is the newest the TorchScript exporter and onnxruntime >= 1.14 share.
DEFAULT_OPSET = 17
INPUT = "images"


class _Raw(nn.Module):
    """The model's raw outputs as a tuple (an exporter needs tensors, not a dict)."""

    def __init__(self, model: nn.Module, task: str) -> None:
        super().__init__()
        self.model, self.task = model, task

    def forward(self, images: Tensor):
        out = self.model(images)
        if self.task == "detect":
            return out["cls_logits"], out["box_deltas"]
        return out


OUTPUTS = {
    ("detect", False): ["cls_logits", "box_deltas"],  # + "anchors", a Constant node added after
    ("detect", True): ["boxes", "scores", "labels"],
    ("segment", False): ["logits"],
    ("classify", False): ["logits"],
}


def _add_anchors(proto: onnx.ModelProto, anchors) -> None:
    """The anchors as a graph output of a Constant node: a tracer drops outputs that do not
    depend on the input."""
    proto.graph.node.append(
        onnx.helper.make_node("Constant", [], ["anchors"], value=onnx.numpy_helper.from_array(anchors))
    )
    proto.graph.output.append(
        onnx.helper.make_tensor_value_info("anchors", onnx.TensorProto.FLOAT, list(anchors.shape))
    )


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else (int(v) for v in size)
    return int(h), int(w)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    image_size: int | Sequence[int] | None = None,
    end_to_end: bool = False,
    dynamic_batch: bool = False,
    opset: int | None = None,
    info: DatasetInfo | None = None,
) -> Path:
    """Write `model` (BatchNorm folded, eval mode) as an ONNX file and check it; returns the path.

    Input ``images`` float32 [N, 3, H, W] RGB in [0, 1] (normalised inside the graph), N = 1 unless
    `dynamic_batch`. Outputs:
      detect, raw: ``cls_logits`` [N, A, K] (K counts the background), ``box_deltas`` [N, A, 4],
          ``anchors`` [A, 4] xyxy pixels of the input (a constant of this input size);
      detect, `end_to_end`: ``boxes`` [M, 4] xyxy input pixels, ``scores`` [M], ``labels`` [M]
          int64 (batch 1: `Detector.predict`'s post-processing inside the graph);
      segment: ``logits`` [N, K, H, W] at the input size; classify: ``logits`` [N, K].
    image_size: (H, W) or one side; detection defaults to the model's `config.image_size` (the
        anchors are laid out for it), segmentation and classification need it.
    info: the training data's `DatasetInfo` (class names, category ids) for the metadata.
    The metadata_props (``dense.*`` keys, JSON) say everything a runner needs: see
    `dense.export.metadata`.
    """
    task = model_task(model)
    if image_size is None:
        if not isinstance(model, Detector):
            raise ValueError(f"export of a {task} model needs image_size=(H, W)")
        image_size = model.config.image_size
    size = _pair(image_size)
    if end_to_end and task != "detect":
        raise ValueError("end_to_end applies to detection models only")
    if end_to_end and dynamic_batch:
        raise ValueError("an end_to_end export takes one image at a time (dynamic_batch=False)")
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if opset < 14:
        raise ValueError(f"opset {opset} has no HardSwish; use 14 or newer")
    deploy = fold_batchnorm(model).float().cpu()
    net = EndToEndDetector(deploy, topk_per_class=TOPK_PER_CLASS) if end_to_end else _Raw(deploy, task)
    names = OUTPUTS[(task, end_to_end)]
    axes = None
    if dynamic_batch:
        axes = {INPUT: {0: "batch"}, **{n: {0: "batch"} for n in names if n != "anchors"}}
    elif end_to_end:
        axes = {n: {0: "detections"} for n in names}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings: the sizes are constants of this export
        torch.onnx.export(
            net.eval(),
            (torch.rand(1, 3, *size),),
            str(path),
            dynamo=False,  # the TorchScript exporter: custom symbolics, no onnxscript dependency
            opset_version=opset,
            input_names=[INPUT],
            output_names=names,
            dynamic_axes=axes,
            do_constant_folding=True,
        )
    proto = onnx.load(str(path))
    if task == "detect" and not end_to_end:
        _add_anchors(proto, deploy.anchors(size).numpy())
    meta = onnx_metadata(
        deploy,
        image_size=size,
        end_to_end=end_to_end,
        dynamic_batch=dynamic_batch,
        info=info,
        input_name=INPUT,
    )
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "dense"
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    left = count_batchnorms(deploy) + sum(n.op_type == "BatchNormalization" for n in proto.graph.node)
    if left:
        raise RuntimeError(f"{path}: {left} BatchNorm layers were not folded")
    return path
