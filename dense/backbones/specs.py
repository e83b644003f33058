"""The backbones as readable tables: one row per block (or run of identical blocks).

Facts come from the papers (MobileNetV1 Table 1, MobileNetV2 Table 2, MobileNetV3 Tables 1-2,
MixConv Fig. 8) and, where the papers leave details open, from the peers the weights are imported
from: timm (`mobilenetv1_100`, `mixnet_s/m/l`) and torchvision (`mobilenet_v2`, `mobilenet_v3_*`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FAMILIES", "Family", "Row", "get_family"]


@dataclass(frozen=True)
class Row:
    """One block, or `repeat` identical ones (only the first strides). Each field has one unit.

    kind: "ds" (depthwise separable) or "ir" (inverted residual).
    kernel: depthwise kernel size, or a tuple of sizes for an MDConv (MixNet).
    out: output channels before the width multiplier.
    exp_ratio: expansion as a multiple of the block input (V2's t, MixNet); "ir" rows only.
    exp_channels: expansion width in channels before the width multiplier (V3 lists it so).
        An "ir" row sets exactly one of exp_ratio / exp_channels.
    se_ratio: squeeze-excite width as a fraction of the family's `se_base` (0 = no SE).
    groups: (expand, project) groups of the pointwise convs (MixNet's grouped 1x1 convs).
    """

    kind: str
    kernel: int | tuple[int, ...]
    out: int
    act: str
    stride: int
    repeat: int = 1
    exp_ratio: float | None = None
    exp_channels: int | None = None
    se_ratio: float = 0.0
    groups: tuple[int, int] = (1, 1)


@dataclass(frozen=True)
class Family:
    name: str
    paper: str
    stem: int
    stem_act: str
    rows: tuple[Row, ...]
    # SE width = se_ratio x base: "expanded" (V3: of the expanded width, made divisible by 8) or
    # "input" (MixNet / timm: of the block input, rounded)
    se_base: str
    se_act: str  # activation inside SE ("block" = the block's own)
    se_gate: str
    last_conv: int | None  # the 1x1 conv before pooling (C5); None for V1
    last_conv_rule: str  # "fixed", "v2": scaled only when width > 1, "v3": 6 x last block width
    last_act: str
    # ImageNet classifier: "linear" (pool, dropout, fc) or "v3" (pool, fc-hswish, dropout, fc; V3 sec. 5.4)
    classifier: str
    classifier_hidden: int | None
    bn_eps: float
    bn_momentum: float
    ds_pw_act: bool = True  # V1: ReLU after the pointwise conv; MixNet's "ds" block is linear there
    ds_skip: bool = False
    width: float = 1.0  # built-in width (MixNet-L = MixNet-M x 1.3)
    dropout: float = 0.2


def _ds(kernel, out, act, stride, repeat=1) -> Row:
    return Row("ds", kernel, out, act, stride, repeat)


def _ir(kernel, t, out, se, act, stride, repeat=1, groups=(1, 1)) -> Row:
    """A row with its expansion as a ratio t of the block input (V2, MixNet)."""
    return Row("ir", kernel, out, act, stride, repeat, exp_ratio=t, se_ratio=se, groups=groups)


def _v3(kernel, exp, out, se, act, stride, repeat=1) -> Row:
    """A MobileNetV3 bneck row as its paper's tables print it: expansion in channels, SE on / off."""
    return Row("ir", kernel, out, act, stride, repeat, exp_channels=exp, se_ratio=0.25 if se else 0.0)


# MobileNetV1 (Howard et al. 2017, Table 1). ReLU6 as TF-slim and timm build it (the paper writes ReLU).
V1 = Family(
    name="v1",
    paper="MobileNetV1",
    stem=32,
    stem_act="relu6",
    # kernel, out, act, stride, repeat
    rows=(
        _ds(3, 64, "relu6", 1),
        _ds(3, 128, "relu6", 2),
        _ds(3, 128, "relu6", 1),
        _ds(3, 256, "relu6", 2),
        _ds(3, 256, "relu6", 1),
        _ds(3, 512, "relu6", 2),
        _ds(3, 512, "relu6", 1, 5),
        _ds(3, 1024, "relu6", 2),
        _ds(3, 1024, "relu6", 1),
    ),
    se_base="expanded",
    se_act="relu",
    se_gate="sigmoid",
    last_conv=None,
    last_conv_rule="fixed",
    last_act="relu6",
    classifier="linear",
    classifier_hidden=None,
    bn_eps=1e-5,
    bn_momentum=0.1,
)

# MobileNetV2 (Sandler et al. 2018, Table 2): (t, c, n, s) rows.
V2 = Family(
    name="v2",
    paper="MobileNetV2",
    stem=32,
    stem_act="relu6",
    # kernel, t, out, se, act, stride, repeat
    rows=(
        _ir(3, 1, 16, 0, "relu6", 1),
        _ir(3, 6, 24, 0, "relu6", 2, 2),
        _ir(3, 6, 32, 0, "relu6", 2, 3),
        _ir(3, 6, 64, 0, "relu6", 2, 4),
        _ir(3, 6, 96, 0, "relu6", 1, 3),
        _ir(3, 6, 160, 0, "relu6", 2, 3),
        _ir(3, 6, 320, 0, "relu6", 1, 1),
    ),
    se_base="expanded",
    se_act="relu",
    se_gate="hsigmoid",
    last_conv=1280,
    last_conv_rule="v2",
    last_act="relu6",
    classifier="linear",
    classifier_hidden=None,
    bn_eps=1e-5,
    bn_momentum=0.1,
)

# MobileNetV3 (Howard et al. 2019, Tables 1 and 2): SE of a quarter of the expansion with a
# hard-sigmoid gate (sec. 5.3); BN eps 1e-3 as the TF reference and torchvision.
_V3 = dict(
    stem=16,
    stem_act="hswish",
    se_base="expanded",
    se_act="relu",
    se_gate="hsigmoid",
    last_conv_rule="v3",
    last_act="hswish",
    classifier="v3",
    bn_eps=1e-3,
    bn_momentum=0.01,
)

V3_LARGE = Family(
    name="v3_large",
    paper="MobileNetV3-Large",
    # kernel, exp, out, SE, act, stride, repeat
    rows=(
        _v3(3, 16, 16, 0, "relu", 1),
        _v3(3, 64, 24, 0, "relu", 2),
        _v3(3, 72, 24, 0, "relu", 1),
        _v3(5, 72, 40, 1, "relu", 2),
        _v3(5, 120, 40, 1, "relu", 1, 2),
        _v3(3, 240, 80, 0, "hswish", 2),
        _v3(3, 200, 80, 0, "hswish", 1),
        _v3(3, 184, 80, 0, "hswish", 1, 2),
        _v3(3, 480, 112, 1, "hswish", 1),
        _v3(3, 672, 112, 1, "hswish", 1),
        _v3(5, 672, 160, 1, "hswish", 2),  # bneck 13: its expansion is SSDLite's C4
        _v3(5, 960, 160, 1, "hswish", 1, 2),
    ),
    last_conv=960,
    classifier_hidden=1280,
    **_V3,
)

V3_SMALL = Family(
    name="v3_small",
    paper="MobileNetV3-Small",
    rows=(
        _v3(3, 16, 16, 1, "relu", 2),
        _v3(3, 72, 24, 0, "relu", 2),
        _v3(3, 88, 24, 0, "relu", 1),
        _v3(5, 96, 40, 1, "hswish", 2),
        _v3(5, 240, 40, 1, "hswish", 1, 2),
        _v3(5, 120, 48, 1, "hswish", 1),
        _v3(5, 144, 48, 1, "hswish", 1),
        _v3(5, 288, 96, 1, "hswish", 2),  # bneck 9: its expansion is SSDLite's C4
        _v3(5, 576, 96, 1, "hswish", 1, 2),
    ),
    last_conv=576,
    classifier_hidden=1024,
    **_V3,
)

# MixNet (Tan & Le 2019, Fig. 8), as timm's `mixnet_s` / `mixnet_m` arch strings spell it out:
# kernel tuples are MDConvs, groups=(2, 2) are the grouped pointwise convs ("a1.1", "p1.1"),
# SE widths a fraction of the block input.
_MIX = dict(
    se_base="input",
    se_act="block",
    se_gate="sigmoid",
    last_conv=1536,
    last_conv_rule="fixed",
    last_act="relu",
    classifier="linear",
    classifier_hidden=None,
    bn_eps=1e-5,
    bn_momentum=0.1,
    ds_pw_act=False,
    ds_skip=True,
    stem_act="relu",
)
G2 = (2, 2)

MIXNET_S = Family(
    name="mixnet_s",
    paper="MixNet-S",
    stem=16,
    # kernel(s), t, out, se, act, stride, repeat, groups
    rows=(
        _ds(3, 16, "relu", 1),
        _ir(3, 6, 24, 0, "relu", 2, groups=G2),
        _ir(3, 3, 24, 0, "relu", 1, groups=G2),
        _ir((3, 5, 7), 6, 40, 0.5, "swish", 2),
        _ir((3, 5), 6, 40, 0.5, "swish", 1, 3, G2),
        _ir((3, 5, 7), 6, 80, 0.25, "swish", 2, groups=(1, 2)),
        _ir((3, 5), 6, 80, 0.25, "swish", 1, 2, (1, 2)),
        _ir((3, 5, 7), 6, 120, 0.5, "swish", 1, groups=G2),
        _ir((3, 5, 7, 9), 3, 120, 0.5, "swish", 1, 2, G2),
        _ir((3, 5, 7, 9, 11), 6, 200, 0.5, "swish", 2),
        _ir((3, 5, 7, 9), 6, 200, 0.5, "swish", 1, 2, (1, 2)),
    ),
    **_MIX,
)

_MIXNET_M_ROWS = (
    _ds(3, 24, "relu", 1),
    _ir((3, 5, 7), 6, 32, 0, "relu", 2, groups=G2),
    _ir(3, 3, 32, 0, "relu", 1, groups=G2),
    _ir((3, 5, 7, 9), 6, 40, 0.5, "swish", 2),
    _ir((3, 5), 6, 40, 0.5, "swish", 1, 3, G2),
    _ir((3, 5, 7), 6, 80, 0.25, "swish", 2),
    _ir((3, 5, 7, 9), 6, 80, 0.25, "swish", 1, 3, G2),
    _ir(3, 6, 120, 0.5, "swish", 1),
    _ir((3, 5, 7, 9), 3, 120, 0.5, "swish", 1, 3, G2),
    _ir((3, 5, 7, 9), 6, 200, 0.5, "swish", 2),
    _ir((3, 5, 7, 9), 6, 200, 0.5, "swish", 1, 3, (1, 2)),
)

MIXNET_M = Family(name="mixnet_m", paper="MixNet-M", stem=24, rows=_MIXNET_M_ROWS, **_MIX)
MIXNET_L = Family(name="mixnet_l", paper="MixNet-L", stem=24, rows=_MIXNET_M_ROWS, width=1.3, **_MIX)

FAMILIES: dict[str, Family] = {f.name: f for f in (V1, V2, V3_LARGE, V3_SMALL, MIXNET_S, MIXNET_M, MIXNET_L)}


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; valid: {sorted(FAMILIES)}") from None
