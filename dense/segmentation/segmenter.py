"""Semantic segmentation model: a backbone at output stride 16 (or 32) and an R-ASPP / LR-ASPP head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dense.backbones.mobilenet import Backbone, build_backbone
from dense.classification import IMAGENET_MEAN, IMAGENET_STD

from .heads import LRASPPHead, RASPPHead

__all__ = ["HEADS", "Segmenter", "build_segmenter", "segmentation_loss"]

HEADS = ("lraspp", "raspp")
IGNORE_INDEX = 255


def segmentation_loss(
    logits: Tensor,
    masks: Tensor,
    *,
    ohem_fraction: float | None = None,
    class_weights: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Cross-entropy over labelled pixels. logits [N, K, H, W], masks [N, H, W] (255 = ignore).

    ohem_fraction: keep only the hardest fraction of the labelled pixels (online hard example
    mining), e.g. 0.25. class_weights [K]: per-class weights of the cross-entropy.
    """
    ce = F.cross_entropy(logits, masks, weight=class_weights, ignore_index=ignore_index, reduction="none")
    valid = masks != ignore_index
    if not valid.any():
        return logits.sum() * 0.0  # a crop with only void pixels: no signal, but keep the graph
    losses = ce[valid]
    if ohem_fraction is not None:
        k = max(1, int(ohem_fraction * losses.numel()))
        losses = losses.topk(k).values
    if class_weights is not None and ohem_fraction is None:
        # weighted mean, as F.cross_entropy(reduction="mean") does
        return losses.sum() / class_weights[masks[valid]].sum()
    return losses.mean()


class Segmenter(nn.Module):
    """images [N, 3, H, W] float in [0, 1] (normalised inside with ImageNet mean / std).

    forward(images) -> logits [N, K, H, W] at the input size
    loss(logits, masks [N, H, W] with 255 = ignore) -> scalar
    predict(images) -> labels [N, H, W]
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        *,
        head: str = "lraspp",
        head_channels: int | None = None,
        pooling: str = "paper",
        ohem_fraction: float | None = None,
        class_weights: list[float] | None = None,
        config: dict | None = None,
    ) -> None:
        super().__init__()
        spec = backbone.output_shape()
        self.backbone = backbone
        self.head_name = head
        if head == "lraspp":
            low = next(t for t in spec if t.startswith("c3"))
            self.low_tap = low
            self.head = LRASPPHead(
                spec[low].channels,
                spec["c5"].channels,
                num_classes,
                channels=head_channels or 128,
                pooling=pooling,
            )
        elif head == "raspp":
            self.low_tap = None
            self.head = RASPPHead(spec["c5"].channels, num_classes, channels=head_channels or 256)
        else:
            raise ValueError(f"unknown segmentation head {head!r}; valid: {list(HEADS)}")
        self.num_classes = num_classes
        self.ohem_fraction = ohem_fraction
        self.register_buffer(
            "class_weights", torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        )
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.config = dict(config or {})
        # channels-last: oneDNN's depthwise convolutions run 5-30% faster on CPU in this layout
        self.to(memory_format=torch.channels_last)

    def forward(self, images: Tensor) -> Tensor:
        x = ((images - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        feats = self.backbone(x)
        if self.low_tap is not None:
            out = self.head(feats[self.low_tap], feats["c5"])
        else:
            out = self.head(feats["c5"])
        return F.interpolate(out, size=images.shape[-2:], mode="bilinear", align_corners=False)

    def loss(self, logits: Tensor, masks: Tensor) -> Tensor:
        return segmentation_loss(
            logits, masks, ohem_fraction=self.ohem_fraction, class_weights=self.class_weights
        )

    @torch.inference_mode()
    def predict(self, images: Tensor) -> Tensor:
        return self(images).argmax(1)


def build_segmenter(
    backbone: str,
    *,
    head: str | None = "lraspp",
    num_classes: int = 19,
    width_mult: float = 1.0,
    reduced_tail: bool = False,
    output_stride: int = 16,
    head_channels: int | None = None,
    pooling: str = "paper",
    low_tap: str = "c3",
    weights: str | None = None,
    ohem_fraction: float | None = None,
    class_weights: list[float] | None = None,
    bn_momentum: float | None = None,
) -> Segmenter:
    """R-ASPP / LR-ASPP over `backbone` ("v1", "v2", "v3_large", "v3_small", "mixnet_s/m/l").

    head: "lraspp" (F = head_channels, default 128) or "raspp" (default 256).
    output_stride: 16 dilates the last stage (atrous, the papers' setting); 32 keeps it strided.
    low_tap: LR-ASPP's stride-8 features, "c3" (last stride-8 block) or "c3_first" (torchvision).
    pooling: LR-ASPP branch-B pooling, "paper" (49x49, stride (16, 20)) or "global".
    weights: an ImageNet checkpoint for the backbone (see `build_backbone`).
    bn_momentum: BatchNorm running-statistics momentum of every layer; None keeps the backbone
        family's (MobileNetV3: 0.01, right for 100k-iteration recipes). Short runs from scratch need
        ~0.1: with 0.01 the eval-mode statistics still lag the weights after a few hundred steps.
    """
    head = head or "lraspp"
    if head not in HEADS:
        raise ValueError(f"task 'segment' has heads {list(HEADS)}, got {head!r}")
    if low_tap not in ("c3", "c3_first"):
        raise ValueError(f"low_tap must be 'c3' or 'c3_first', got {low_tap!r}")
    config = dict(
        backbone=backbone,
        head=head,
        num_classes=num_classes,
        width_mult=width_mult,
        reduced_tail=reduced_tail,
        output_stride=output_stride,
        head_channels=head_channels,
        pooling=pooling,
        low_tap=low_tap,
        ohem_fraction=ohem_fraction,
        class_weights=class_weights,
        bn_momentum=bn_momentum,
    )
    taps = (low_tap, "c5") if head == "lraspp" else ("c5",)
    bb = build_backbone(
        backbone,
        taps=taps,
        width_mult=width_mult,
        reduced_tail=reduced_tail,
        output_stride=output_stride,
        weights=weights,
    )
    model = Segmenter(
        bb,
        num_classes,
        head=head,
        head_channels=head_channels,
        pooling=pooling,
        ohem_fraction=ohem_fraction,
        class_weights=class_weights,
        config=config,
    )
    if bn_momentum is not None:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = float(bn_momentum)
    return model
