"""One block family for every backbone: ConvBNAct, MixConv (MDConv), SqueezeExcite,
DepthwiseSeparable and InvertedResidual.

Submodules are declared in the order the peers (torchvision, timm) declare theirs
(expand, depthwise, squeeze-excite, project), so a checkpoint maps onto ours tensor by tensor
(see dense/weights/mapping.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import Tensor, nn

__all__ = [
    "ACTIVATIONS",
    "ConvBNAct",
    "DepthwiseSeparable",
    "InvertedResidual",
    "MixConv",
    "SqueezeExcite",
    "fuse_batchnorm",
    "make_activation",
    "make_divisible",
    "set_bn_folding",
    "split_channels",
]

ACTIVATIONS = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hswish": nn.Hardswish,  # x * ReLU6(x + 3) / 6 (MobileNetV3 sec. 5.2)
    "hsigmoid": nn.Hardsigmoid,  # ReLU6(x + 3) / 6
    "swish": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    "none": nn.Identity,
}


def make_activation(name: str) -> nn.Module:
    try:
        cls = ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; valid: {sorted(ACTIVATIONS)}") from None
    return cls() if cls in (nn.Identity, nn.Sigmoid, nn.Hardsigmoid) else cls(inplace=True)


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of `divisor`, never going more than 10% below `value`.

    The TF reference rule that torchvision (`_make_divisible`) and timm (`make_divisible`) share.
    """
    min_value = min_value or divisor
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def split_channels(channels: int, groups: int, mode: str = "equal") -> list[int]:
    """Channel split of an MDConv (MixConv paper sec. 3.1).

    "equal": same size per group, remainder to the first group (as timm / the TF reference).
    "exponential": group i gets 2^-(i+1) of the channels, the last group the rest
    (the paper's exponential partition, e.g. 1/2, 1/4, 1/8, 1/8 for four groups).
    """
    if groups < 1 or groups > channels:
        raise ValueError(f"cannot split {channels} channels into {groups} groups")
    if mode == "equal":
        split = [channels // groups] * groups
        split[0] += channels - sum(split)
    elif mode == "exponential":
        split = [max(1, channels // 2 ** (i + 1)) for i in range(groups - 1)]
        split.append(channels - sum(split))
        if split[-1] < 1:
            raise ValueError(f"exponential split of {channels} channels into {groups} groups is empty")
    else:
        raise ValueError(f"unknown channel split {mode!r}; valid: 'equal', 'exponential'")
    return split


def _conv2d(cin: int, cout: int, k: int, stride: int, dilation: int, depthwise: bool) -> nn.Conv2d:
    """A bias-free conv with "same" padding (the BatchNorm after it has the bias)."""
    return nn.Conv2d(
        cin, cout, k, stride=stride, padding=(k - 1) // 2 * dilation, dilation=dilation,
        groups=cin if depthwise else 1, bias=False,
    )  # fmt: skip


class MixConv(nn.Module):
    """Mixed depthwise (or grouped pointwise) convolution: channel groups, one kernel size each.

    [N, C_in, H, W] -> [N, C_out, H', W']. With one kernel it is never built: `make_conv` returns a
    plain nn.Conv2d then, as timm does, so checkpoints line up.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_sizes: Sequence[int],
        *,
        stride: int = 1,
        dilation: int = 1,
        depthwise: bool = False,
        split: str = "equal",
    ) -> None:
        super().__init__()
        self.in_splits = split_channels(in_channels, len(kernel_sizes), split)
        out_splits = self.in_splits if depthwise else split_channels(out_channels, len(kernel_sizes), split)
        self.convs = nn.ModuleList(
            _conv2d(cin, cout, k, stride, dilation, depthwise)
            for cin, cout, k in zip(self.in_splits, out_splits, kernel_sizes)
        )

    def forward(self, x: Tensor) -> Tensor:
        parts = torch.split(x, self.in_splits, dim=1)
        return torch.cat([conv(p) for conv, p in zip(self.convs, parts)], dim=1)


def make_conv(
    in_channels: int,
    out_channels: int,
    kernel: int | Sequence[int],
    *,
    stride: int = 1,
    dilation: int = 1,
    depthwise: bool = False,
    split: str = "equal",
) -> nn.Module:
    kernels = [kernel] if isinstance(kernel, int) else list(kernel)
    if len(kernels) > 1:
        return MixConv(
            in_channels,
            out_channels,
            kernels,
            stride=stride,
            dilation=dilation,
            depthwise=depthwise,
            split=split,
        )
    return _conv2d(in_channels, out_channels, kernels[0], stride, dilation, depthwise)


class ConvBNAct(nn.Sequential):
    """conv (no bias) + BatchNorm + activation; `kernel` may be a list (MixConv)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int | Sequence[int] = 1,
        *,
        stride: int = 1,
        dilation: int = 1,
        depthwise: bool = False,
        act: str = "relu",
        norm: partial | type[nn.Module] = nn.BatchNorm2d,
        split: str = "equal",
    ) -> None:
        super().__init__(
            make_conv(
                in_channels,
                out_channels,
                kernel,
                stride=stride,
                dilation=dilation,
                depthwise=depthwise,
                split=split,
            ),
            norm(out_channels),
            make_activation(act),
        )
        self.out_channels = out_channels
        self.fold_bn = True  # see set_bn_folding

    def folds_batchnorm(self) -> bool:
        """True where forward folds the BatchNorm into the convolution (eval mode, plain conv)."""
        conv, bn = self[0], self[1]
        return (
            getattr(self, "fold_bn", True)
            and not self.training
            and type(conv) is nn.Conv2d
            and type(bn) is nn.BatchNorm2d
            and bn.affine
            and bn.running_var is not None
        )

    def forward(self, x: Tensor) -> Tensor:
        if not self.folds_batchnorm():
            return super().forward(x)
        # Inference: fold the BatchNorm statistics into the conv weights on the fly (a few small
        # ops on the weights) instead of a separate pass over the feature map; same function,
        # float rounding aside, and differentiable, so frozen-BN fine-tuning still works. Saves
        # ~10-20% of CPU inference time. Forward hooks on the inner conv / BN do not fire here.
        conv, bn, act = self[0], self[1], self[2]
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        weight = conv.weight * scale.reshape(-1, 1, 1, 1)
        bias = bn.bias - bn.running_mean * scale
        return act(conv._conv_forward(x, weight, bias))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: global pool, 1x1 conv down, act, 1x1 conv up, gate, rescale.

    MobileNetV3 uses ReLU inside and a hard-sigmoid gate (sec. 5.3); MixNet the block's
    activation (swish) and a sigmoid gate.
    """

    def __init__(self, channels: int, squeeze: int, *, act: str = "relu", gate: str = "hsigmoid") -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.act = make_activation(act)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.gate = make_activation(gate)

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class DepthwiseSeparable(nn.Module):
    """MobileNetV1 block: depthwise kxk + BN + act, pointwise 1x1 + BN (+ act).

    With `pw_act=False` and a skip it is MixNet's first block (timm's "ds").
    """

    has_expansion = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int | Sequence[int] = 3,
        *,
        act: str = "relu",
        pw_act: bool = True,
        skip: bool = False,
        norm: partial | type[nn.Module] = nn.BatchNorm2d,
        **dw: int,
    ) -> None:
        """`dw`: `stride` and `dilation` of the depthwise conv (default 1)."""
        super().__init__()
        self.dw = ConvBNAct(in_channels, in_channels, kernel, depthwise=True, act=act, norm=norm, **dw)
        self.pw = ConvBNAct(in_channels, out_channels, 1, act=act if pw_act else "none", norm=norm)
        self.use_skip = skip and dw.get("stride", 1) == 1 and in_channels == out_channels
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        y = self.pw(self.dw(x))
        return x + y if self.use_skip else y


class InvertedResidual(nn.Module):
    """MobileNetV2/V3 and MixNet block: 1x1 expand (+BN+act), kxk depthwise (+BN+act),
    optional squeeze-excite, 1x1 linear projection (+BN); residual when stride 1 and in == out.

    `kernel` may be a list: the depthwise conv becomes an MDConv. `expand_groups` /
    `project_groups` > 1 make the pointwise convs grouped (MixNet's "a1.1" / "p1.1").
    `residual=None` adds the skip when stride is 1 and in == out.
    The expansion output is reachable through `forward_expansion` + `forward_rest`, which is how a
    backbone taps it (SSDLite's C4) without hooks.
    """

    def __init__(
        self,
        in_channels: int,
        expanded: int,
        out_channels: int,
        kernel: int | Sequence[int] = 3,
        *,
        stride: int = 1,
        dilation: int = 1,
        act: str = "relu6",
        se_channels: int = 0,
        se_act: str = "relu",
        se_gate: str = "hsigmoid",
        expand_groups: int = 1,
        project_groups: int = 1,
        norm: partial | type[nn.Module] = nn.BatchNorm2d,
        split: str = "equal",
        residual: bool | None = None,
    ) -> None:
        super().__init__()
        self.has_expansion = expanded != in_channels
        self.expand = (
            ConvBNAct(in_channels, expanded, [1] * expand_groups, act=act, norm=norm)
            if self.has_expansion
            else None
        )
        dw = dict(stride=stride, dilation=dilation, act=act, norm=norm, split=split)
        self.dw = ConvBNAct(expanded, expanded, kernel, depthwise=True, **dw)
        self.se = SqueezeExcite(expanded, se_channels, act=se_act, gate=se_gate) if se_channels else None
        self.project = ConvBNAct(expanded, out_channels, [1] * project_groups, act="none", norm=norm)
        # `residual` is decided by the caller for dilated stages: a block that strides in the plain
        # network gets no residual when dilated either (torchvision does the same).
        if residual is None:
            residual = stride == 1
        self.use_skip = residual and in_channels == out_channels
        self.out_channels = out_channels

    def forward_expansion(self, x: Tensor) -> Tensor:
        return self.expand(x) if self.expand is not None else x

    def forward_rest(self, x: Tensor, e: Tensor) -> Tensor:
        """The block after its expansion: `x` is the block input (for the residual), `e` the expansion."""
        y = self.dw(e)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.use_skip else y

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_rest(x, self.forward_expansion(x))


def set_bn_folding(model: nn.Module, enabled: bool) -> nn.Module:
    """Turn the eval-mode on-the-fly BatchNorm folding of every ConvBNAct on or off. Returns `model`.

    Off: conv then BatchNorm as separate ops, the peers' exact arithmetic. Folding changes outputs
    by float rounding only (~1e-6 relative on trained weights), but a randomly initialised deep
    network can amplify that to ~5e-4; bit-level comparisons with torchvision / timm turn it off.
    """
    for m in model.modules():
        if isinstance(m, ConvBNAct):
            m.fold_bn = bool(enabled)
    return model


@torch.no_grad()
def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm of a ConvBNAct into its convolution, in place, for inference.

    The outputs stay the same up to float rounding (eval mode only: the batch statistics of training
    are gone), and each fused layer saves one pass over its feature map. Returns `model`.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if model.training:
        raise RuntimeError("fuse_batchnorm needs a model in eval mode (call model.eval() first)")
    for m in model.modules():
        if not (isinstance(m, ConvBNAct) and isinstance(m[1], nn.BatchNorm2d)):
            continue
        conv, bn = m[0], m[1]
        w = next(conv.parameters())  # keep the layout the model was built in (channels-last or not)
        cl = w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
        layout = torch.channels_last if cl else torch.contiguous_format
        if isinstance(conv, nn.Conv2d):
            m[0] = fuse_conv_bn_eval(conv, bn).to(memory_format=layout)
        else:  # MixConv: fold the slice of the BN that belongs to each group's conv
            start = 0
            for i, c in enumerate(conv.convs):
                end = start + c.out_channels
                part = nn.BatchNorm2d(c.out_channels, eps=bn.eps).eval()
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(part, name).copy_(getattr(bn, name)[start:end])
                conv.convs[i] = fuse_conv_bn_eval(c, part).to(memory_format=layout)
                start = end
        m[1] = nn.Identity()
    return model
