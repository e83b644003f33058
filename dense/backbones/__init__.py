"""MobileNet-family backbones with named feature taps."""

from dense.features import TAPS, FeatureSpec

from .blocks import ConvBNAct, DepthwiseSeparable, InvertedResidual, MixConv, SqueezeExcite
from .mobilenet import Backbone, build_backbone
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
