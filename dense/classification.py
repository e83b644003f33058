"""ImageNet classifiers of the backbones (each paper's last stage), for pretraining and for
checking the architectures against the papers and the peers."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dense.backbones.blocks import make_divisible
from dense.backbones.mobilenet import Backbone, build_backbone
from dense.constants import IMAGENET_MEAN, IMAGENET_STD
from dense.normalize import Normalize

__all__ = ["Classifier", "ClassifierHead", "build_classifier"]


class ClassifierHead(nn.Module):
    """Global average pool then either fc ("linear": V1, V2, MixNet) or fc-hswish-dropout-fc
    ("v3": MobileNetV3 sec. 5.4, the 1280 / 1024-wide layer without BN). [N, C, h, w] -> [N, K]."""

    def __init__(self, in_channels: int, num_classes: int, *, kind: str, hidden: int | None, dropout: float):
        super().__init__()
        self.kind = kind
        if kind == "v3":
            self.fc1 = nn.Linear(in_channels, hidden)
            self.act = nn.Hardswish(inplace=True)
            self.dropout = nn.Dropout(dropout)
            self.fc2 = nn.Linear(hidden, num_classes)
        else:
            self.dropout = nn.Dropout(dropout)
            self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.flatten(x.mean((2, 3)), 1)
        if self.kind == "v3":
            return self.fc2(self.dropout(self.act(self.fc1(x))))
        return self.fc(self.dropout(x))


class Classifier(nn.Module):
    """images [N, 3, H, W] float in [0, 1] -> logits [N, num_classes]. Normalises inside with
    ImageNet mean / std (what torchvision's and timm's weights expect), so no outside preprocessing."""

    def __init__(self, backbone: Backbone, num_classes: int = 1000, *, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        if "c5" not in backbone.output_shape():
            raise ValueError("a classifier needs a backbone built with the 'c5' tap")
        fam = backbone.family
        hidden = None
        if fam.classifier == "v3":
            base = fam.classifier_hidden // (2 if backbone.reduced_tail else 1)
            hidden = make_divisible(base * backbone.width_mult * fam.width)  # as torchvision
        self.normalize = Normalize(mean, std)
        self.backbone = backbone
        self.head = ClassifierHead(
            backbone.output_shape()["c5"].channels,
            num_classes,
            kind=fam.classifier,
            hidden=hidden,
            dropout=fam.dropout,
        )
        self.num_classes = num_classes
        # channels-last: oneDNN's depthwise convolutions run 5-30% faster on CPU in this layout
        self.to(memory_format=torch.channels_last)

    def forward_features(self, images: Tensor) -> Tensor:
        """images in [0, 1] -> C5 features [N, C, H / 32, W / 32]."""
        x = self.normalize(images).contiguous(memory_format=torch.channels_last)
        return self.backbone(x)["c5"]

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.forward_features(images))


def build_classifier(
    backbone: str,
    *,
    num_classes: int = 1000,
    width_mult: float = 1.0,
    reduced_tail: bool = False,
    output_stride: int = 32,
    split: str = "equal",
) -> Classifier:
    """The ImageNet classifier of `backbone` (randomly initialised; `dense.from_torchvision` /
    `dense.from_timm` give one with a peer's weights)."""
    bb = build_backbone(
        backbone,
        taps=("c5",),
        width_mult=width_mult,
        reduced_tail=reduced_tail,
        output_stride=output_stride,
        split=split,
    )
    return Classifier(bb, num_classes)
