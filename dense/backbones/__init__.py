"""MobileNet-family backbones with named feature taps."""

from .blocks import ConvBNAct, DepthwiseSeparable, InvertedResidual, MixConv, SqueezeExcite
from .mobilenet import TAPS, Backbone, FeatureSpec, build_backbone
from .specs import FAMILIES

BACKBONES = tuple(FAMILIES)

__all__ = [
    "BACKBONES",
    "TAPS",
    "Backbone",
    "ConvBNAct",
    "DepthwiseSeparable",
    "FeatureSpec",
    "InvertedResidual",
    "MixConv",
    "SqueezeExcite",
    "build_backbone",
]
