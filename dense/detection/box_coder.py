"""Box encoding relative to anchors, (10, 10, 5, 5) weights as SSD / torchvision.

Our own ten lines rather than torchvision.models.detection._utils.BoxCoder, a private module;
tests check both give the same numbers.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["decode", "encode"]

WEIGHTS = (10.0, 10.0, 5.0, 5.0)
_CLIP = math.log(1000.0 / 16)  # no box grows more than this in log-scale (torchvision)


def _cxcywh(b: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    w, h = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
    return b[..., 0] + 0.5 * w, b[..., 1] + 0.5 * h, w, h


def encode(boxes: Tensor, anchors: Tensor, weights=WEIGHTS) -> Tensor:
    """Targets [..., 4] that move `anchors` (xyxy) onto `boxes` (xyxy)."""
    wx, wy, ww, wh = weights
    ax, ay, aw, ah = _cxcywh(anchors)
    gx, gy, gw, gh = _cxcywh(boxes)
    return torch.stack(
        (wx * (gx - ax) / aw, wy * (gy - ay) / ah, ww * torch.log(gw / aw), wh * torch.log(gh / ah)), -1
    )


def decode(deltas: Tensor, anchors: Tensor, weights=WEIGHTS) -> Tensor:
    """Boxes [..., 4] xyxy from `deltas` [..., 4] relative to `anchors` [..., 4] (broadcast)."""
    wx, wy, ww, wh = weights
    ax, ay, aw, ah = _cxcywh(anchors)
    cx = deltas[..., 0] / wx * aw + ax
    cy = deltas[..., 1] / wy * ah + ay
    w = torch.exp((deltas[..., 2] / ww).clamp(max=_CLIP)) * aw
    h = torch.exp((deltas[..., 3] / wh).clamp(max=_CLIP)) * ah
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), -1)
