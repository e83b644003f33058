"""Semantic segmentation model: a backbone at output stride 16 (or 32) and an R-ASPP / LR-ASPP head."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dense.backbones.mobilenet import Backbone, build_backbone
from dense.constants import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD
from dense.normalize import Normalize
from dense.weights import load_backbone_weights

from .heads import LRASPPHead, RASPPHead

__all__ = ["HEADS", "Segmenter", "SegmenterConfig", "build_segmenter", "segmentation_loss"]

HEADS = ("lraspp", "raspp")


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


@dataclass(frozen=True)
class SegmenterConfig:
    """Everything that defines a segmentation model; checkpoints store it (`asdict()`, plain types)
    and `build_segmenter(**config)` rebuilds the model.

    head: "lraspp" (F = head_channels, default 128) or "raspp" (default 256).
    output_stride: 16 dilates the last stage (atrous, the papers' setting); 32 keeps it strided.
    pooling: LR-ASPP branch-B pooling, "paper" (49x49, stride (16, 20)) or "global".
    low_tap: LR-ASPP's stride-8 features, "c3" (last stride-8 block) or "c3_first" (torchvision).
    ohem_fraction: train on the hardest fraction of labelled pixels only (None: all of them).
    class_weights: per-class cross-entropy weights (one per class), or None.
    bn_momentum: BatchNorm running-statistics momentum of every layer; None keeps the backbone
        family's (MobileNetV3: 0.01, right for 100k-iteration recipes). Short runs from scratch need
        ~0.1: with 0.01 the eval-mode statistics still lag the weights after a few hundred steps.
    """

    backbone: str
    head: str = "lraspp"
    num_classes: int = 19
    width_mult: float = 1.0
    reduced_tail: bool = False
    output_stride: int = 16
    head_channels: int | None = None
    pooling: str = "paper"
    low_tap: str = "c3"
    ohem_fraction: float | None = None
    class_weights: tuple[float, ...] | None = None
    bn_momentum: float | None = None

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"task 'segment' has heads {list(HEADS)}, got {self.head!r}")
        if self.low_tap not in ("c3", "c3_first"):
            raise ValueError(f"low_tap must be 'c3' or 'c3_first', got {self.low_tap!r}")
        if self.class_weights is not None:
            object.__setattr__(self, "class_weights", tuple(float(v) for v in self.class_weights))
            if len(self.class_weights) != self.num_classes:
                raise ValueError(f"{len(self.class_weights)} class_weights for {self.num_classes} classes")
        if self.ohem_fraction is not None and not 0 < self.ohem_fraction <= 1:
            raise ValueError(f"ohem_fraction must be in (0, 1], got {self.ohem_fraction}")

    def to_dict(self) -> dict:
        return asdict(self)


class Segmenter(nn.Module):
    """images [N, 3, H, W] float in [0, 1] (normalised inside with ImageNet mean / std).

    forward(images) -> logits [N, K, H, W] at the input size
    loss(logits, masks [N, H, W] with 255 = ignore) -> scalar
    predict(images) -> labels [N, H, W]
    """

    def __init__(self, backbone: Backbone, config: SegmenterConfig) -> None:
        super().__init__()
        spec = backbone.output_shape()
        c = config
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.backbone = backbone
        if c.head == "lraspp":
            self.low_tap = next(t for t in spec if t.startswith("c3"))
            self.head = LRASPPHead(
                spec[self.low_tap].channels,
                spec["c5"].channels,
                c.num_classes,
                channels=c.head_channels or 128,
                pooling=c.pooling,
            )
        else:
            self.low_tap = None
            self.head = RASPPHead(spec["c5"].channels, c.num_classes, channels=c.head_channels or 256)
        self.config = config
        self.num_classes = c.num_classes
        self.register_buffer(
            "class_weights", torch.tensor(c.class_weights, dtype=torch.float32) if c.class_weights else None
        )
        # channels-last: oneDNN's depthwise convolutions run 5-30% faster on CPU in this layout
        self.to(memory_format=torch.channels_last)

    def forward(self, images: Tensor) -> Tensor:
        feats = self.backbone(self.normalize(images).contiguous(memory_format=torch.channels_last))
        if self.low_tap is not None:
            out = self.head(feats[self.low_tap], feats["c5"])
        else:
            out = self.head(feats["c5"])
        return F.interpolate(out, size=images.shape[-2:], mode="bilinear", align_corners=False)

    def loss(self, logits: Tensor, masks: Tensor) -> Tensor:
        return segmentation_loss(
            logits, masks, ohem_fraction=self.config.ohem_fraction, class_weights=self.class_weights
        )

    @torch.inference_mode()
    def predict(self, images: Tensor) -> Tensor:
        return self(images).argmax(1)


def build_segmenter(backbone: str, *, weights: str | None = None, **options) -> Segmenter:
    """R-ASPP / LR-ASPP over `backbone` ("v1", "v2", "v3_large", "v3_small", "mixnet_s/m/l").

    options: the fields of :class:`SegmenterConfig` (head, num_classes, width_mult, reduced_tail,
    output_stride, head_channels, pooling, low_tap, ohem_fraction, class_weights, bn_momentum).
    weights: an ImageNet checkpoint for the backbone (see `dense.weights.load_backbone_weights`).
    """
    if options.get("head", "lraspp") is None:
        options["head"] = "lraspp"
    valid = [f.name for f in fields(SegmenterConfig)]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(f"unknown segmenter option(s) {unknown}; valid: {valid[1:]}")
    config = SegmenterConfig(backbone=backbone, **options)
    taps = (config.low_tap, "c5") if config.head == "lraspp" else ("c5",)
    bb = build_backbone(
        backbone,
        taps=taps,
        width_mult=config.width_mult,
        reduced_tail=config.reduced_tail,
        output_stride=config.output_stride,
    )
    if weights is not None:
        load_backbone_weights(bb, weights)
    model = Segmenter(bb, config)
    if config.bn_momentum is not None:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = float(config.bn_momentum)
    return model
