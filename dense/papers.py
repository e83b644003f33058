"""Reference figures from the papers (MobileNet V1 / V2 / V3, MixConv), shared by the tests and the
benchmark."""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "CLASSIFIERS",
    "SEGMENTATION",
    "SSDLITE",
    "SegmentationRow",
    "TORCHVISION_SSDLITE_PARAMS",
    "DetectionRow",
    "PaperRow",
]


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


class DetectionRow(NamedTuple):
    backbone: str
    width_mult: float
    reduced_tail: bool
    params_m: float
    madds_b: float  # billions of multiply-adds at 320x320
    coco_map: float
    source: str


# SSDLite on COCO, 320x320, 91 classes, "tf" anchors (MobileNetV3 Table 6).
SSDLITE = (
    DetectionRow("v3_large", 1.0, True, 3.22, 0.51, 22.0, "MobileNetV3 Table 6"),
    DetectionRow("v3_large", 1.0, False, 4.97, 0.62, 22.0, "MobileNetV3 Table 6"),
    DetectionRow("v3_small", 1.0, True, 1.77, 0.16, 16.1, "MobileNetV3 Table 6"),
    DetectionRow("v3_small", 1.0, False, 2.49, 0.21, 16.0, "MobileNetV3 Table 6"),
    DetectionRow("v2", 1.0, False, 4.3, 0.80, 22.1, "MobileNetV3 Table 6"),
    DetectionRow("v1", 1.0, False, 5.1, 1.3, 22.2, "MobileNetV3 Table 6"),
    DetectionRow("v2", 0.5, False, 1.54, 0.27, 16.6, "MobileNetV3 Table 6"),
    DetectionRow("v2", 0.35, False, 0.93, 0.16, 13.7, "MobileNetV3 Table 6"),
)
TORCHVISION_SSDLITE_PARAMS = 3_440_060  # ssdlite320_mobilenet_v3_large, "torchvision" anchors, reduced tail


class SegmentationRow(NamedTuple):
    backbone: str
    head: str
    head_channels: int
    reduced_tail: bool
    output_stride: int
    size: tuple[int, int]
    madds_b: float
    params_m: float | None
    source: str


# Cityscapes, 19 classes (MobileNetV3 Tables 7 and 8).
SEGMENTATION = (
    SegmentationRow("v3_large", "lraspp", 128, True, 16, (512, 1024), 2.48, 1.51, "MobileNetV3 Table 7"),
    SegmentationRow("v3_small", "lraspp", 128, True, 16, (512, 1024), 0.74, 0.47, "MobileNetV3 Table 7"),
    SegmentationRow("v3_large", "lraspp", 128, True, 32, (512, 1024), 1.98, None, "MobileNetV3 Table 7"),
    SegmentationRow("v3_small", "lraspp", 128, True, 32, (512, 1024), 0.53, None, "MobileNetV3 Table 7"),
    SegmentationRow("v3_large", "raspp", 256, False, 16, (1024, 2048), 18.43, 3.60, "MobileNetV3 Table 7"),
)
