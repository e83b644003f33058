"""Backbone contracts: declared shapes, taps, truncation, widths, dilation, MDConv splits."""

import math

import pytest
import torch

from dense.backbones import TAPS, build_backbone
from dense.backbones.blocks import InvertedResidual, MixConv, split_channels
from dense.backbones.specs import FAMILIES

VARIANTS = list(FAMILIES)
WIDTHS = (1.0, 0.75, 0.5, 0.35)


@pytest.mark.parametrize("output_stride", (32, 16))
@pytest.mark.parametrize("reduced_tail", (False, True))
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", VARIANTS)
def test_declared_shapes_match_outputs(name, width, reduced_tail, output_stride):
    x = torch.rand(1, 3, 96, 64)
    bb = build_backbone(
        name, taps=TAPS, width_mult=width, reduced_tail=reduced_tail, output_stride=output_stride
    )
    bb.eval()
    with torch.no_grad():
        out = bb(x)
    spec = bb.output_shape()
    assert list(out) == list(TAPS) == list(spec)
    for tap in TAPS:
        c, s = spec[tap]
        assert out[tap].shape == (1, c, math.ceil(96 / s), math.ceil(64 / s)), tap
    assert spec["c5"].stride == output_stride
    # each tap alone: same declared shape, and the layers after it are not built
    for tap in TAPS:
        single = build_backbone(
            name, taps=(tap,), width_mult=width, reduced_tail=reduced_tail, output_stride=output_stride
        )
        assert single.output_shape() == {tap: spec[tap]}
        n_single = sum(p.numel() for p in single.parameters())
        n_all = sum(p.numel() for p in bb.parameters())
        assert n_single < n_all or tap == "c5"


@pytest.mark.parametrize(
    "name, c3, c4, c4_exp, c5",
    [
        ("v1", 256, 512, 512, 1024),
        ("v2", 32, 96, 576, 1280),
        ("v3_large", 40, 112, 672, 960),
        ("v3_small", 24, 48, 288, 576),
        ("mixnet_s", 40, 120, 720, 1536),
        ("mixnet_m", 40, 120, 720, 1536),
    ],
)
def test_tap_channels_follow_the_papers(name, c3, c4, c4_exp, c5):
    spec = build_backbone(name, taps=TAPS).output_shape()
    del spec["c3_first"]
    assert {t: s.channels for t, s in spec.items()} == dict(c3=c3, c4=c4, c4_exp=c4_exp, c5=c5)
    assert {t: s.stride for t, s in spec.items()} == dict(c3=8, c4=16, c4_exp=16, c5=32)


@pytest.mark.parametrize(
    "name, c4_exp, c5", [("v3_large", 672, 480), ("v3_small", 288, 288), ("v2", 576, 640), ("v1", 512, 512)]
)
def test_reduced_tail_halves_layers_between_c4_and_c5(name, c4_exp, c5):
    spec = build_backbone(name, taps=("c4_exp", "c5"), reduced_tail=True).output_shape()
    assert (spec["c4_exp"].channels, spec["c5"].channels) == (c4_exp, c5)


def test_unknown_tap_lists_valid_ones():
    valid = r"'c3', 'c3_first', 'c4', 'c4_exp', 'c5'"
    with pytest.raises(ValueError, match=r"unknown tap.*c6.*valid taps.*" + valid):
        build_backbone("v3_large", taps=("c6",))
    with pytest.raises(ValueError, match="unknown backbone 'v4'"):
        build_backbone("v4")
    with pytest.raises(ValueError, match="output_stride"):
        build_backbone("v2", output_stride=8)


def test_expansion_tap_does_not_build_the_rest_of_its_block():
    bb = build_backbone("v3_large", taps=("c4_exp",))
    last = bb.blocks[-1]
    assert len(bb.blocks) == 13 and isinstance(last, InvertedResidual)
    assert last.dw is None and last.project is None and bb.last_conv is None
    full = build_backbone("v3_large", taps=("c4_exp", "c5"))
    x = torch.rand(1, 3, 64, 64)
    bb.load_state_dict(full.state_dict(), strict=False)
    full.eval(), bb.eval()
    with torch.no_grad():
        torch.testing.assert_close(bb(x)["c4_exp"], full(x)["c4_exp"])


def test_dilation_keeps_resolution_and_weights():
    a = build_backbone("v3_large", taps=("c5",), output_stride=32).eval()
    b = build_backbone("v3_large", taps=("c5",), output_stride=16).eval()
    b.load_state_dict(a.state_dict())  # same parameters: dilation has none of its own
    x = torch.rand(1, 3, 128, 128)
    assert a(x)["c5"].shape[-1] == 4 and b(x)["c5"].shape[-1] == 8
    dws = [m for m in b.blocks[-3:].modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert dws and all(m.dilation == (2, 2) and m.stride == (1, 1) for m in dws)


def test_mdconv_channel_splits():
    assert split_channels(32, 4) == [8, 8, 8, 8]
    assert split_channels(30, 4) == [9, 7, 7, 7]  # remainder to the first group, as timm
    assert split_channels(32, 4, "exponential") == [16, 8, 4, 4]  # MixConv sec. 3.1
    with pytest.raises(ValueError, match="exponential"):
        split_channels(32, 2, "random")
    bb = build_backbone("mixnet_s", taps=("c5",), split="exponential").eval()
    mix = [m for m in bb.modules() if isinstance(m, MixConv) and len(m.convs) == 4]
    assert mix and mix[0].in_splits[0] == sum(mix[0].in_splits) // 2
    # each group has its own kernel size, 3, 5, 7, 9
    assert [c.kernel_size[0] for c in mix[0].convs] == [3, 5, 7, 9]
    assert bb(torch.rand(1, 3, 64, 64))["c5"].shape == (1, 1536, 2, 2)


def test_width_multiplier_scales_every_layer():
    full = build_backbone("v1", taps=("c5",)).output_shape()["c5"].channels
    quarter = build_backbone("v1", taps=("c5",), width_mult=0.25).output_shape()["c5"].channels
    assert (full, quarter) == (1024, 256)
    # MixNet-L is MixNet-M at width 1.3
    m = build_backbone("mixnet_m", taps=("c4",), width_mult=1.3).state_dict()
    lg = build_backbone("mixnet_l", taps=("c4",)).state_dict()
    assert {k: v.shape for k, v in m.items()} == {k: v.shape for k, v in lg.items()}


@pytest.mark.parametrize("name", ["mixnet_s", "v3_small", "v1"])
def test_fuse_batchnorm_keeps_outputs(name):
    from dense.backbones.blocks import fuse_batchnorm
    from dense.classification import build_classifier
    from tests.conftest import randomize_bn

    model = randomize_bn(build_classifier(name))
    with pytest.raises(RuntimeError, match="eval mode"):
        fuse_batchnorm(model)
    model.eval()
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        before = model(x)
    fuse_batchnorm(model)  # outside no_grad, as dense.benchmark.speed calls it
    with torch.no_grad():
        after = model(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert ((before - after).abs().max() / before.abs().max()) < 1e-5


def test_eval_mode_folds_batchnorm_on_the_fly():
    """ConvBNAct in eval mode folds BN into the conv weights: same outputs and gradients as
    conv -> BN -> act run module by module; train mode still uses batch statistics."""
    from dense.backbones.blocks import ConvBNAct
    from tests.conftest import randomize_bn

    torch.manual_seed(0)
    layer = randomize_bn(ConvBNAct(8, 16, 3, act="hswish")).eval()
    assert layer.folds_batchnorm()
    x = torch.randn(2, 8, 12, 12, requires_grad=True)
    ref = layer[2](layer[1](layer[0](x)))  # the unfolded path, module by module
    out = layer(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    g_ref = torch.autograd.grad(ref.sum(), [x, layer[1].weight])
    g_out = torch.autograd.grad(out.sum(), [x, layer[1].weight])
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    layer.train()
    assert not layer.folds_batchnorm()
    before = layer[1].running_mean.clone()
    layer(x)
    assert not torch.equal(before, layer[1].running_mean)  # batch statistics were used and tracked
