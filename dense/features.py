"""The feature-tap vocabulary shared by backbones and the heads that consume them (a leaf module).

Taps:
  c3        last block output at stride 8
  c3_first  output of the first block at stride 8 (torchvision's LR-ASPP low-level features)
  c4        last block output at stride 16
  c4_exp    expansion output of the first block of the stride-32 stage (SSDLite's C4 in the
            MobileNetV3 paper, sec. 6.2); for V1, which has no expansion, the same as c4
  c5        the layer just before global pooling
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["TAPS", "FeatureSpec"]

TAPS = ("c3", "c3_first", "c4", "c4_exp", "c5")


class FeatureSpec(NamedTuple):
    """What a backbone declares for one tap (detectron2's ShapeSpec): channels and stride."""

    channels: int
    stride: int
