"""`Normalize`: the one input normalisation of every model (images in [0, 1] -> (x - mean) / std).

Models normalise inside so that an exported network needs no outside preprocessing. SSD's [-1, 1]
scaling is mean = std = 0.5 (``dense.constants.SSD_MEAN``); classifiers and segmenters use the
ImageNet statistics their weights were trained with.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["Normalize"]


class Normalize(nn.Module):
    """[N, 3, H, W] float in [0, 1] -> (images - mean) / std, same shape.

    The statistics are non-persistent buffers: they follow ``.to(device)`` but are not part of the
    state dict, so checkpoints and the peers' weight files map onto a model unchanged.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or min(std) <= 0:
            raise ValueError(f"mean and std need one value per channel and std > 0, got {mean} / {std}")
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )

    def forward(self, images: Tensor) -> Tensor:
        return (images - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"
