"""Deploy form of a model: every convolution followed by a BatchNorm folded into one convolution."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from dense.backbones.blocks import fuse_batchnorm

__all__ = ["count_batchnorms", "fold_batchnorm"]


def count_batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of `model` in eval mode with every Conv2d + BatchNorm2d pair folded (torch's
    `fuse_conv_bn_eval`); the model itself is left unchanged.

    The blocks of the backbones and heads (`ConvBNAct`, MixConv included) go through
    `dense.backbones.blocks.fuse_batchnorm`; the remaining `nn.Sequential(Conv2d, BatchNorm2d, ...)`
    (the R-ASPP / LR-ASPP heads) are folded here. Outputs are unchanged up to float rounding.
    """
    folded = fuse_batchnorm(copy.deepcopy(model).eval())
    for seq in folded.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.track_running_stats:
                cl = conv.weight.is_contiguous(memory_format=torch.channels_last)
                fused = fuse_conv_bn_eval(conv, bn)
                seq[i] = fused.to(memory_format=torch.channels_last) if cl else fused
                seq[i + 1] = nn.Identity()
    return folded
