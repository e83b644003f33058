"""One builder for every MobileNet-family backbone, with named feature taps (see `dense.features`).

A backbone knows nothing of tasks or weight files: `dense.build.build_backbone` adds ImageNet
weights on top of `build_backbone` here.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import NamedTuple

from torch import Tensor, nn

from dense.features import TAPS, FeatureSpec

from .blocks import ConvBNAct, DepthwiseSeparable, InvertedResidual, make_divisible
from .specs import Family, Row, get_family

__all__ = ["TAPS", "Backbone", "FeatureSpec", "build_backbone"]


class _BlockPlan(NamedTuple):
    kind: str
    in_ch: int
    exp: int
    out: int
    kernel: int | tuple[int, ...]
    stride: int
    dilation: int
    act: str
    se: int
    groups: tuple[int, int]
    out_stride: int  # nominal stride after the block (before dilation)
    plain_stride: int  # the block's own stride in the undilated network


def _last_stage_start(rows: list[tuple[Row, bool]]) -> int:
    """Index of the block that strides to 32: the stride-32 stage runs from there to the end."""
    stride, start = 2, None
    for idx, (row, first) in enumerate(rows):
        s = row.stride if first else 1
        if s == 2 and stride * 2 == 32:
            start = idx
        stride *= s
    assert start is not None
    return start


def _expansion(fam: Family, row: Row, in_ch: int, w: float, div: int, keep_full: bool) -> int:
    if row.kind == "ds":
        return in_ch
    if row.exp_channels is not None:
        # reduced_tail halves the expansions of the tail, except the first block's (that is C4 itself)
        return make_divisible((row.exp_channels if keep_full else row.exp_channels // div) * w)
    return make_divisible(in_ch * row.exp_ratio) if row.exp_ratio != 1 else in_ch


def _se_width(fam: Family, row: Row, in_ch: int, exp: int) -> int:
    if not row.se_ratio:
        return 0
    if fam.se_base == "expanded":  # MobileNetV3 / torchvision: _make_divisible(exp // 4, 8)
        return make_divisible(exp * row.se_ratio)
    return round(in_ch * row.se_ratio)  # MixNet / timm: a fraction of the block input


def _plan(fam: Family, width_mult: float, reduced_tail: bool, output_stride: int):
    """Expand the family's rows into per-block channel / stride settings."""
    w = width_mult * fam.width
    rows = [(row, i == 0) for row in fam.rows for i in range(row.repeat)]
    last_stage_start = _last_stage_start(rows)
    stem = make_divisible(fam.stem * w)
    plans, in_ch, stride = [], stem, 2
    for idx, (row, first) in enumerate(rows):
        tail = idx >= last_stage_start
        # reduced_tail (MobileNetV3 sec. 6.3, torchvision's `reduced_tail`): halve the layers between
        # C4 and C5. The first tail block keeps its expansion (that is C4 itself); only its output halves.
        div = 2 if reduced_tail and tail else 1
        out = make_divisible(row.out // div * w)
        exp = _expansion(fam, row, in_ch, w, div, keep_full=idx == last_stage_start)
        s = plain = row.stride if first else 1
        nominal = stride * s
        dilation = 1
        if output_stride == 16 and tail:
            # Atrous last stage (DeepLab; torchvision `dilated=True`): no stride, dilation 2 throughout.
            s, dilation = 1, 2
        se = _se_width(fam, row, in_ch, exp)
        plans.append(
            _BlockPlan(
                row.kind, in_ch, exp, out, row.kernel, s, dilation, row.act, se, row.groups, nominal, plain
            )
        )
        in_ch, stride = out, nominal
    return stem, plans, last_stage_start


def _make_block(p: _BlockPlan, family: Family, norm, split: str) -> nn.Module:
    common = dict(stride=p.stride, dilation=p.dilation, act=p.act, norm=norm)
    if p.kind == "ds":
        return DepthwiseSeparable(
            p.in_ch, p.out, p.kernel, pw_act=family.ds_pw_act, skip=family.ds_skip, **common
        )
    return InvertedResidual(
        p.in_ch, p.exp, p.out, p.kernel, se_channels=p.se,
        se_act=p.act if family.se_act == "block" else family.se_act, se_gate=family.se_gate,
        expand_groups=p.groups[0], project_groups=p.groups[1], split=split,
        residual=p.plain_stride == 1, **common,
    )  # fmt: skip


def _last_conv_channels(
    family: Family, plans: list[_BlockPlan], width_mult: float, reduced_tail: bool, scale_last_conv: bool
) -> int:
    base = family.last_conv // (2 if reduced_tail else 1)
    if scale_last_conv:  # TF detection API: the width multiplier reaches the last conv too
        return make_divisible(base * width_mult * family.width)
    if family.last_conv_rule == "v2":  # torchvision / V2 paper: only widened, never narrowed
        return make_divisible(base * max(1.0, width_mult * family.width))
    if family.last_conv_rule == "v3":  # torchvision: 6 x the last block's width
        return 6 * plans[-1].out
    return base


class Backbone(nn.Module):
    """A MobileNet-family feature extractor.

    forward(images [N, 3, H, W]) -> {tap: [N, C, H / stride, W / stride]} for the requested taps
    (spatial sizes round up for odd inputs, as a stride-2 conv with "same" padding does).
    `output_shape()` declares {tap: FeatureSpec(channels, stride)} at construction.
    Layers after the last requested tap are not built.
    """

    def __init__(
        self,
        family: Family,
        *,
        taps: Sequence[str] = ("c4_exp", "c5"),
        width_mult: float = 1.0,
        reduced_tail: bool = False,
        output_stride: int = 32,
        split: str = "equal",
        bn_eps: float | None = None,
        bn_momentum: float | None = None,
        scale_last_conv: bool = False,
    ) -> None:
        super().__init__()
        taps = tuple(taps)
        bad = [t for t in taps if t not in TAPS]
        if bad or not taps:
            raise ValueError(f"unknown tap(s) {bad or taps!r} for {family.name}; valid taps: {list(TAPS)}")
        if output_stride not in (16, 32):
            raise ValueError(f"output_stride must be 16 or 32, got {output_stride}")
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        self.family = family
        self.taps = taps
        self.width_mult = width_mult
        self.reduced_tail = reduced_tail
        self.output_stride = output_stride

        norm = partial(
            nn.BatchNorm2d,
            eps=family.bn_eps if bn_eps is None else bn_eps,
            momentum=family.bn_momentum if bn_momentum is None else bn_momentum,
        )
        stem, plans, tail_start = _plan(family, width_mult, reduced_tail, output_stride)
        specs, needed = self._locate_taps(plans, tail_start)
        self.stem = ConvBNAct(3, stem, 3, stride=2, act=family.stem_act, norm=norm)
        self.blocks = nn.ModuleList(self._build_blocks(plans[: needed + 1], tail_start, norm, split))
        self.last_conv = None
        if "c5" in taps:
            specs["c5"] = self._build_c5(plans, norm, scale_last_conv)
        self._specs = {t: specs[t] for t in taps}

    def _locate_taps(self, plans: list[_BlockPlan], tail_start: int) -> tuple[dict[str, FeatureSpec], int]:
        """Where each tap comes from (a block's output, or the expansion of block `tail_start`);
        returns the specs found so far and the index of the last block that must be built."""
        c3 = max(i for i, p in enumerate(plans) if p.out_stride == 8)
        c3_first = min(i for i, p in enumerate(plans) if p.out_stride == 8)
        c4 = max(i for i, p in enumerate(plans) if p.out_stride == 16)
        has_exp = plans[tail_start].kind == "ir"
        self._out_taps: dict[int, list[str]] = {}
        self._exp_block = tail_start if has_exp else -1
        specs: dict[str, FeatureSpec] = {}
        needed = -1
        for tap in self.taps:
            if tap in ("c3", "c3_first"):
                idx = c3 if tap == "c3" else c3_first
                self._out_taps.setdefault(idx, []).append(tap)
                specs[tap] = FeatureSpec(plans[idx].out, 8)
                needed = max(needed, idx)
            elif tap == "c4" or (tap == "c4_exp" and not has_exp):
                self._out_taps.setdefault(c4, []).append(tap)
                specs[tap] = FeatureSpec(plans[c4].out, 16)
                needed = max(needed, c4)
            elif tap == "c4_exp":
                specs[tap] = FeatureSpec(plans[tail_start].exp, 16)
                needed = max(needed, tail_start)
            else:  # c5
                needed = len(plans) - 1
        self._expansion_only = "c5" not in self.taps and needed == tail_start and has_exp
        return specs, needed

    def _build_blocks(self, plans: list[_BlockPlan], tail_start: int, norm, split: str) -> list[nn.Module]:
        blocks = []
        for i, p in enumerate(plans):
            blk = _make_block(p, self.family, norm, split)
            if i == tail_start and self._expansion_only:
                # Only the expansion of this block is needed: drop the rest so it is not built.
                blk.dw = blk.se = blk.project = None
            blocks.append(blk)
        return blocks

    def _build_c5(self, plans: list[_BlockPlan], norm, scale_last_conv: bool) -> FeatureSpec:
        stride = min(32, self.output_stride)
        fam = self.family
        if fam.last_conv is None:  # V1: C5 is the last block's output
            return FeatureSpec(plans[-1].out, stride)
        ch = _last_conv_channels(fam, plans, self.width_mult, self.reduced_tail, scale_last_conv)
        self.last_conv = ConvBNAct(plans[-1].out, ch, 1, act=fam.last_act, norm=norm)
        return FeatureSpec(ch, stride)

    def output_shape(self) -> dict[str, FeatureSpec]:
        """{tap: FeatureSpec(channels, stride)} in the order the taps were requested."""
        return dict(self._specs)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        feats: dict[str, Tensor] = {}
        x = self.stem(x)
        for i, blk in enumerate(self.blocks):
            if i == self._exp_block:
                e = blk.forward_expansion(x)
                if "c4_exp" in self._specs:
                    feats["c4_exp"] = e
                if self._expansion_only:
                    break
                x = blk.forward_rest(x, e)
            else:
                x = blk(x)
            for tap in self._out_taps.get(i, ()):
                feats[tap] = x
        if "c5" in self._specs:
            feats["c5"] = self.last_conv(x) if self.last_conv is not None else x
        return {t: feats[t] for t in self.taps}


def build_backbone(name: str, **options) -> Backbone:
    """Build a backbone by name: "v1", "v2", "v3_large", "v3_small", "mixnet_s", "mixnet_m", "mixnet_l".

    Options (keyword-only, as `Backbone`):
        taps: feature taps to return, any of "c3", "c3_first", "c4", "c4_exp", "c5"
            (default ("c4_exp", "c5")).
        width_mult: the width multiplier alpha (MobileNetV1 sec. 3.3), applied to every layer.
        reduced_tail: halve the channels between C4 and C5 (MobileNetV3 sec. 6.3, "RF2").
        output_stride: 32, or 16 to dilate the last stage instead of striding it.
        split: MDConv channel split, "equal" or "exponential" (MixNet only).
        bn_eps, bn_momentum: override the family's BatchNorm settings (SSDLite uses 1e-3 / 0.03).
        scale_last_conv: apply width_mult to the conv before pooling as well. The V2 paper keeps it at
            1280 for widths < 1 (classification); the TF detection models scale it (SSDLite V2 0.5 /
            0.35 in MobileNetV3 Table 6). MixNet's 1536 is fixed unless this is set.

    Randomly initialised (PyTorch's defaults); `dense.build_backbone(..., weights=PATH)` loads
    ImageNet weights into it.
    """
    return Backbone(get_family(name), **options)
