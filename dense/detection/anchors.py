"""SSD default boxes ("anchors") for a pyramid of feature maps.

Two presets, both with scales linear from 0.2 to 0.95 over the maps:
  "torchvision": 6 boxes per cell everywhere: s, sqrt(s * s_next) at ratio 1, then s at ratios
      2, 1/2, 3, 1/3 (torchvision's DefaultBoxGenerator order).
  "tf": as the TF Object Detection API's SSDLite configs (reduce_boxes_in_lowest_layer): the lowest
      map has 3 boxes, scale 0.1 at ratio 1 and 0.2 at ratios 2 and 1/2; the other maps have
      s at ratios 1, 2, 1/2, 3, 1/3 and sqrt(s * s_next) at ratio 1.
Widths and heights are clipped to the image (torchvision's clip=True) while boxes are in
(cx, cy, w, h); anchors come out as xyxy pixels.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["PRESETS", "AnchorGenerator"]

PRESETS = ("torchvision", "tf")


class AnchorGenerator:
    def __init__(
        self, preset: str = "torchvision", num_maps: int = 6, min_scale: float = 0.2, max_scale: float = 0.95
    ):
        if preset not in PRESETS:
            raise ValueError(f"unknown anchor preset {preset!r}; valid: {list(PRESETS)}")
        self.preset = preset
        scales = [min_scale + (max_scale - min_scale) * k / (num_maps - 1) for k in range(num_maps)] + [1.0]
        self.wh: list[Tensor] = []  # per map: [B, 2] (w, h) relative to the image
        for k in range(num_maps):
            s, s_next = scales[k], scales[k + 1]
            if preset == "torchvision":
                pairs = [(s, s), (math.sqrt(s * s_next),) * 2]
                for ar in (2, 3):
                    r = math.sqrt(ar)
                    pairs += [(s * r, s / r), (s / r, s * r)]
            elif k == 0:
                r = math.sqrt(2)
                pairs = [(0.1, 0.1), (s * r, s / r), (s / r, s * r)]
            else:
                pairs = [(s * math.sqrt(ar), s / math.sqrt(ar)) for ar in (1.0, 2.0, 0.5, 3.0, 1 / 3)]
                pairs.append((math.sqrt(s * s_next),) * 2)
            self.wh.append(torch.tensor(pairs, dtype=torch.float32).clamp(0, 1))
        self._cache: dict[tuple, Tensor] = {}

    def num_anchors_per_location(self) -> list[int]:
        return [len(wh) for wh in self.wh]

    def __call__(self, image_size: tuple[int, int], grid_sizes: list[tuple[int, int]], device=None) -> Tensor:
        """Anchors [A, 4] xyxy in pixels of an image of `image_size` (H, W), cell-major per map."""
        key = (tuple(image_size), tuple(map(tuple, grid_sizes)), str(device))
        if key not in self._cache:
            h_img, w_img = image_size
            out = []
            for (fh, fw), wh in zip(grid_sizes, self.wh):
                cy, cx = torch.meshgrid(
                    (torch.arange(fh, dtype=torch.float32) + 0.5) / fh,
                    (torch.arange(fw, dtype=torch.float32) + 0.5) / fw,
                    indexing="ij",
                )
                ctr = torch.stack((cx.reshape(-1), cy.reshape(-1)), -1)  # [cells, 2]
                ctr = ctr[:, None, :].expand(-1, len(wh), 2)
                half = wh[None].expand(ctr.shape[0], -1, -1) / 2
                boxes = torch.cat((ctr - half, ctr + half), -1).reshape(-1, 4)
                out.append(boxes * torch.tensor([w_img, h_img, w_img, h_img], dtype=torch.float32))
            self._cache[key] = torch.cat(out).to(device)
        return self._cache[key]
