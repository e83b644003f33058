"""Post-training int8 quantization of an exported file (onnxruntime.quantization, no torch).

Static quantization in the QDQ format: weights int8 per output channel (symmetric), activations
uint8 with ranges from calibration images (MinMax). The metadata of the float file is kept, so a
runner treats both alike.
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)

__all__ = ["quantize_int8"]


class _Reader(CalibrationDataReader):
    def __init__(self, input_name: str, batches: Iterable[np.ndarray]) -> None:
        self.input_name = input_name
        self._it: Iterator[np.ndarray] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._it, None)
        if x is None:
            return None
        x = np.asarray(x, dtype=np.float32)
        return {self.input_name: x[None] if x.ndim == 3 else x}


def quantize_int8(
    onnx_in: str | os.PathLike,
    onnx_out: str | os.PathLike,
    calibration: Iterable[np.ndarray],
    *,
    per_channel: bool = True,
) -> Path:
    """Write an int8 (QDQ) version of `onnx_in` to `onnx_out`; returns its path.

    calibration: preprocessed inputs, each [3, H, W] or [1, 3, H, W] float32 in [0, 1] at the
        export's input size (e.g. `runner.preprocess(image)` over a few hundred training images).
    per_channel: one weight scale per output channel (recommended for depthwise convolutions).
    """
    onnx_in, onnx_out = Path(onnx_in), Path(onnx_out)
    if not onnx_in.is_file():
        raise FileNotFoundError(f"ONNX file not found: {onnx_in}")
    model = onnx.load(str(onnx_in))
    input_name = model.graph.input[0].name
    meta = {p.key: p.value for p in model.metadata_props}
    batches = iter(calibration)
    first = next(batches, None)
    if first is None:
        raise ValueError(f"quantize_int8 of {onnx_in}: the calibration gave no image")
    reader = _Reader(input_name, itertools.chain([first], batches))
    onnx_out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(onnx_in), str(prepared), skip_symbolic_shape=True)  # fold + shape inference
        quantize_static(
            str(prepared),
            str(onnx_out),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
        )
    out = onnx.load(str(onnx_out))
    del out.metadata_props[:]
    quant = {"format": "QDQ", "weights": "int8", "activations": "uint8", "per_channel": per_channel}
    for key, value in {**meta, "dense.quantization": json.dumps(quant)}.items():
        entry = out.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(out, str(onnx_out))
    return onnx_out
