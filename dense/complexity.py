"""Parameter and multiply-add counts, as the papers report them."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dense.backbones.blocks import ConvBNAct, DepthwiseSeparable, InvertedResidual, SqueezeExcite

__all__ = ["count_madds", "count_params"]

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm)


def count_params(model: nn.Module, *, include_norm: bool = False) -> int:
    """Number of parameters. By default without normalisation layers' affine parameters: the papers
    count the weights of the deployed network, where BatchNorm is folded into the convolutions
    (e.g. MobileNetV2's 3.4M / TF-slim's 3.47M against torchvision's 3,504,872 with BN)."""
    skip = set()
    if not include_norm:
        skip = {id(p) for m in model.modules() if isinstance(m, _NORMS) for p in m.parameters(recurse=False)}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def _elementwise_hooks(model: nn.Module, total: list[int]) -> list:
    """Forward hooks counting one multiply-add per output element of the elementwise ops that
    TensorFlow's profiler counts and torch's counter does not: inference batch norm, the
    squeeze-excite rescale, residual additions, and the multiply of swish (x * sigmoid(x), a Mul
    op in TF; hard-swish is not counted). (Hooks, not a FlopCounterMode mapping: the mode
    decomposes batch norm into primitives that it would then count several times.)"""

    def add(_m, _i, out):
        total[0] += out.numel()

    def add_if_skip(m, _i, out):
        total[0] += out.numel() if m.use_skip else 0

    hooks = []
    # ConvBNAct folds its BatchNorm in eval mode (the norm module is not called): count it there
    folded = {id(m[1]) for m in model.modules() if isinstance(m, ConvBNAct) and m.folds_batchnorm()}
    for m in model.modules():
        if isinstance(m, ConvBNAct) and m.folds_batchnorm():
            hooks.append(m.register_forward_hook(add))
        elif isinstance(m, (*_NORMS, SqueezeExcite)) and id(m) not in folded:
            hooks.append(m.register_forward_hook(add))
        elif isinstance(m, (InvertedResidual, DepthwiseSeparable)):
            hooks.append(m.register_forward_hook(add_if_skip))
        elif isinstance(m, nn.SiLU):
            hooks.append(m.register_forward_hook(add))
    return hooks


@torch.no_grad()
def count_madds(
    model: nn.Module, input_size: int | tuple[int, int], *, forward=None, elementwise: bool = False
) -> int:
    """Multiply-adds of one forward pass on one image of `input_size` (H, W), as
    torch.utils.flop_counter counts FLOPs (convolutions and matrix products) / 2: the convention of
    the MobileNet V1 / V2 / V3 papers.

    `elementwise=True` also counts batch norm, multiplications and additions one per element, as
    TensorFlow's profiler did for the MixConv paper's "FLOPS" (see README, complexity).

    `forward` may name a method to count instead of __call__ (e.g. "forward" of a Detector, which
    leaves out post-processing). The model is put in eval mode for the count and restored after.
    """
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    was_training = model.training
    model.eval()
    hooks = []
    try:
        param = next(model.parameters())
        x = torch.rand(1, 3, h, w, device=param.device, dtype=param.dtype)
        fn = getattr(model, forward) if forward else model
        extra = [0]
        if elementwise:
            hooks = _elementwise_hooks(model, extra)
        with FlopCounterMode(display=False) as counter:
            fn(x)
        return counter.get_total_flops() // 2 + extra[0]
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
