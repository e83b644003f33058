"""Reference figures from the papers (DESIGN.md sec. 4), shared by the tests and tools/benchmark.py."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["CLASSIFIERS", "PaperRow"]


class PaperRow(NamedTuple):
    backbone: str
    width_mult: float
    resolution: int
    params_m: float | None  # millions, as printed in the paper
    madds_m: float  # millions of multiply-adds
    source: str


# ImageNet classifiers, 1000 classes.
CLASSIFIERS = (
    PaperRow("v1", 1.0, 224, 4.2, 569, "MobileNetV1 Table 6/7"),
    PaperRow("v1", 0.75, 224, 2.6, 325, "MobileNetV1 Table 6"),
    PaperRow("v1", 0.5, 224, 1.3, 149, "MobileNetV1 Table 6"),
    PaperRow("v1", 0.25, 224, 0.5, 41, "MobileNetV1 Table 6"),
    PaperRow("v1", 1.0, 192, 4.2, 418, "MobileNetV1 Table 7"),
    PaperRow("v1", 1.0, 160, 4.2, 290, "MobileNetV1 Table 7"),
    PaperRow("v1", 1.0, 128, 4.2, 186, "MobileNetV1 Table 7"),
    PaperRow("v2", 1.0, 224, 3.4, 300, "MobileNetV2 Table 4"),
    PaperRow("v3_large", 1.0, 224, 5.4, 219, "MobileNetV3 Table 3"),
    PaperRow("v3_small", 1.0, 224, 2.5, 56, "MobileNetV3 Table 3"),
    PaperRow("mixnet_s", 1.0, 224, 4.1, 256, "MixConv Table 2"),
    PaperRow("mixnet_m", 1.0, 224, 5.0, 360, "MixConv Table 2"),
    PaperRow("mixnet_l", 1.0, 224, 7.3, 565, "MixConv Table 2"),
)
