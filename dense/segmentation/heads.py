"""Segmentation heads of the MobileNet papers.

R-ASPP (MobileNetV2 sec. 6.3, "reduced" DeepLabv3 ASPP): on the stride-16 features a 1x1 conv
branch and an image-pooling branch (global average, 1x1 conv), both BN + ReLU, concatenated,
projected by a 1x1 conv (BN + ReLU), then classified.

LR-ASPP (MobileNetV3 sec. 6.4, Fig. 10): branch A a 1x1 conv (F, BN, ReLU); branch B average
pooling, 1x1 conv and sigmoid; A * B, upsampled to stride 8 and classified, plus a classifier on
the stride-8 features; the sum is upsampled to the input by the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LRASPPHead", "RASPPHead"]


class LRASPPHead(nn.Module):
    """high [N, C_high, H/16, W/16] (or /32), low [N, C_low, H/8, W/8] -> logits [N, K, H/8, W/8].

    pooling "paper": 49x49 average pooling with stride (16, 20) (the paper's setting for
    1024x2048-scale inputs), upsampled back; it falls back to global pooling where the map is smaller
    than the kernel. "global": global average pooling (torchvision).
    Modules are declared in torchvision's order so its LR-ASPP checkpoint maps on in order.
    """

    def __init__(
        self,
        low_channels: int,
        high_channels: int,
        num_classes: int,
        *,
        channels: int = 128,
        pooling: str = "paper",
        norm=nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if pooling not in ("paper", "global"):
            raise ValueError(f"unknown LR-ASPP pooling {pooling!r}; valid: 'paper', 'global'")
        self.cbr = nn.Sequential(
            nn.Conv2d(high_channels, channels, 1, bias=False), norm(channels), nn.ReLU(inplace=True)
        )
        self.scale = nn.Conv2d(high_channels, channels, 1, bias=False)
        self.low_classifier = nn.Conv2d(low_channels, num_classes, 1)
        self.high_classifier = nn.Conv2d(channels, num_classes, 1)
        self.pooling = pooling

    def _pool(self, high: Tensor) -> Tensor:
        h, w = high.shape[-2:]
        if self.pooling == "paper" and h >= 49 and w >= 49:
            return F.avg_pool2d(high, kernel_size=49, stride=(16, 20))
        return high.mean((2, 3), keepdim=True)

    def forward(self, low: Tensor, high: Tensor) -> Tensor:
        x = self.cbr(high)
        s = torch.sigmoid(self.scale(self._pool(high)))
        if s.shape[-2:] != (1, 1):
            s = F.interpolate(s, size=x.shape[-2:], mode="bilinear", align_corners=False)
        x = F.interpolate(x * s, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.low_classifier(low) + self.high_classifier(x)


class RASPPHead(nn.Module):
    """high [N, C_high, H/16, W/16] -> logits [N, K, H/16, W/16] (no low-level skip)."""

    def __init__(self, high_channels: int, num_classes: int, *, channels: int = 256, norm=nn.BatchNorm2d):
        super().__init__()

        def cbr(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), norm(cout), nn.ReLU(inplace=True))

        self.conv = cbr(high_channels, channels)
        self.pool = cbr(high_channels, channels)
        self.project = cbr(2 * channels, channels)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, high: Tensor) -> Tensor:
        pooled = self.pool(high.mean((2, 3), keepdim=True)).expand(-1, -1, *high.shape[-2:])
        return self.classifier(self.project(torch.cat([self.conv(high), pooled], 1)))
