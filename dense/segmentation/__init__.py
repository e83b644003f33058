"""Semantic segmentation: R-ASPP and LR-ASPP heads, the Segmenter."""

from .heads import LRASPPHead, RASPPHead
from .segmenter import HEADS, Segmenter, SegmenterConfig, build_segmenter, segmentation_loss

__all__ = [
    "HEADS",
    "LRASPPHead",
    "RASPPHead",
    "Segmenter",
    "SegmenterConfig",
    "build_segmenter",
    "segmentation_loss",
]
