"""Export: the deploy form of a model (BatchNorm folded) and ONNX files that carry everything a
runner needs (``dense.deploy`` runs them without torch)."""

from .end_to_end import EndToEndDetector
from .fold import count_batchnorms, fold_batchnorm
from .metadata import model_task, onnx_metadata
from .onnx_export import DEFAULT_OPSET, export_onnx

__all__ = [
    "DEFAULT_OPSET",
    "EndToEndDetector",
    "count_batchnorms",
    "export_onnx",
    "fold_batchnorm",
    "model_task",
    "onnx_metadata",
]
