"""SSDLite (MobileNetV2 sec. 6.2, MobileNetV3 sec. 6.2) over any backbone of the family.

Feature maps: C4 (the expansion layer of the first stride-32 block, stride 16) and C5 (stride 32),
then four extra blocks (1x1 conv to out/2, 3x3 depthwise stride 2, 1x1 conv to out; BN + ReLU6
each) with out = 512, 256, 256, 128: six maps, 20/10/5/3/2/1 cells at 320x320. Heads per map:
3x3 depthwise + BN + ReLU6, then a 1x1 conv with bias. Modules are declared in torchvision's order
(backbone, extras, classification head, regression head) so its checkpoint maps on in order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dense.backbones.blocks import ConvBNAct
from dense.backbones.mobilenet import Backbone, build_backbone
from dense.constants import SSD_MEAN, SSD_STD
from dense.normalize import Normalize
from dense.weights import load_backbone_weights

from .anchors import PRESETS, AnchorGenerator
from .loss import BOX_LOSSES, LOSSES, MATCHERS, ssd_loss
from .postprocess import postprocess

__all__ = ["Detector", "DetectorConfig", "build_detector"]

EXTRA_CHANNELS = (512, 256, 256, 128)
BN_EPS, BN_MOMENTUM = 1e-3, 0.03  # TF reference / torchvision SSDLite


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else (int(v) for v in size)
    return int(h), int(w)


@dataclass(frozen=True)
class DetectorConfig:
    """Everything that defines an SSDLite detector's architecture and inference; checkpoints store it
    (`asdict()`, plain types) and `build_detector(**config)` rebuilds the model.

    num_classes counts the background (COCO: 91 as torchvision, or K + 1 for K dataset classes).
    anchors: "torchvision" (6 boxes per cell) or "tf" (the paper's TF models, 3 on the lowest map).
    anchor_scales: (smallest, largest) anchor scale as a fraction of the input side, spread linearly
        over the six maps (SSD paper, eq. 4); (0.2, 0.95) as the papers and torchvision.
    image_size: (H, W) input of the network; `predict` resizes other images to it.
    cls_loss: "softmax" (CE with 3:1 hard negative mining, torchvision), "focal" (TF, sigmoid) or
        "qfl" (sigmoid, IoU-aware targets: GFL's quality focal loss). The sigmoid losses start every
        class at probability 0.01 (RetinaNet's prior).
    box_loss: "smooth_l1" (on encoded deltas, SSD / torchvision) or "giou" (on decoded boxes).
    matcher: "iou" (SSD: IoU >= 0.5 plus each box's best anchor) or "atss" (adaptive, ATSS).
    bn_momentum: BatchNorm momentum of every layer; None = SSDLite's 0.03.
    """

    backbone: str
    num_classes: int = 91
    width_mult: float = 1.0
    reduced_tail: bool = False
    anchors: str = "torchvision"
    anchor_scales: tuple[float, float] = (0.2, 0.95)
    image_size: tuple[int, int] = (320, 320)
    cls_loss: str = "softmax"
    box_loss: str = "smooth_l1"
    matcher: str = "iou"
    score_thresh: float = 0.001
    nms_thresh: float = 0.55
    max_detections: int = 300
    bn_momentum: float | None = None

    def __post_init__(self) -> None:
        # Normalise lists (from YAML) to tuples so that configs compare and hash as values.
        object.__setattr__(self, "image_size", _pair(self.image_size))
        object.__setattr__(self, "anchor_scales", tuple(float(v) for v in self.anchor_scales))
        if self.num_classes < 2:
            raise ValueError(f"num_classes counts the background and must be >= 2, got {self.num_classes}")
        if self.cls_loss not in LOSSES:
            raise ValueError(f"unknown detection loss {self.cls_loss!r}; valid: {list(LOSSES)}")
        if self.box_loss not in BOX_LOSSES:
            raise ValueError(f"unknown box loss {self.box_loss!r}; valid: {list(BOX_LOSSES)}")
        if self.matcher not in MATCHERS:
            raise ValueError(f"unknown matcher {self.matcher!r}; valid: {list(MATCHERS)}")
        if self.anchors not in PRESETS:
            raise ValueError(f"unknown anchor preset {self.anchors!r}; valid: {list(PRESETS)}")
        lo, hi = self.anchor_scales
        if not 0 < lo < hi <= 1:
            raise ValueError(
                f"anchor_scales must be (min, max) with 0 < min < max <= 1, got {self.anchor_scales}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


CLS_PRIOR = 0.01  # initial class probability of the sigmoid losses ("focal", "qfl")


def _normal_init(module: nn.Module, std: float = 0.03) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _extra_block(cin: int, cout: int, norm) -> nn.Sequential:
    mid = cout // 2
    return nn.Sequential(
        ConvBNAct(cin, mid, 1, act="relu6", norm=norm),
        ConvBNAct(mid, mid, 3, stride=2, depthwise=True, act="relu6", norm=norm),
        ConvBNAct(mid, cout, 1, act="relu6", norm=norm),
    )


def _prediction_block(cin: int, cout: int, norm) -> nn.Sequential:
    return nn.Sequential(
        ConvBNAct(cin, cin, 3, depthwise=True, act="relu6", norm=norm),
        nn.Conv2d(cin, cout, 1),
    )


def _flatten(outs: list[Tensor], width: int) -> Tensor:
    # [N, A*width, H, W] per map -> [N, sum(H*W*A), width], cell-major then anchor
    n = outs[0].shape[0]
    return torch.cat(
        [o.view(n, -1, width, *o.shape[-2:]).permute(0, 3, 4, 1, 2).reshape(n, -1, width) for o in outs], 1
    )


class Detector(nn.Module):
    """SSDLite detector. Takes float images in [0, 1], [N, 3, H, W], and scales them to [-1, 1]
    inside (as the TF and torchvision SSDLite models).

    forward(images) -> {"cls_logits": [N, A, K], "box_deltas": [N, A, 4] (raw head outputs),
                        "anchors": [A, 4] xyxy pixels of this input size (what the deltas refer to),
                        "num_anchors_per_level": [int] * 6, how many of the A each feature map has}
    anchors(image_size) -> [A, 4] xyxy pixels
    loss(outputs, targets) -> {"loss_cls", "loss_box", "loss"}
    predict(images, orig_sizes=None) -> [{"boxes" [D, 4] xyxy pixels, "scores" [D], "labels" [D]}]
    K counts the background (label 0).
    """

    def __init__(self, backbone: Backbone, config: DetectorConfig) -> None:
        super().__init__()
        spec = backbone.output_shape()
        if list(spec) != ["c4_exp", "c5"]:
            raise ValueError(f"SSDLite needs a backbone with taps ('c4_exp', 'c5'), got {list(spec)}")
        c = config
        norm = partial(
            nn.BatchNorm2d, eps=BN_EPS, momentum=BN_MOMENTUM if c.bn_momentum is None else c.bn_momentum
        )
        self.normalize = Normalize(SSD_MEAN, SSD_STD)
        self.backbone = backbone
        depth = [max(16, int(ch * c.width_mult)) for ch in EXTRA_CHANNELS]  # torchvision's min depth 16
        chans = [spec["c4_exp"].channels, spec["c5"].channels, *depth]
        self.extra = nn.ModuleList(_extra_block(cin, cout, norm) for cin, cout in zip(chans[1:], depth))
        lo, hi = c.anchor_scales
        self.anchor_generator = AnchorGenerator(c.anchors, num_maps=len(chans), min_scale=lo, max_scale=hi)
        per_cell = self.anchor_generator.num_anchors_per_location()
        self.cls_head = nn.ModuleList(
            _prediction_block(ch, a * c.num_classes, norm) for ch, a in zip(chans, per_cell)
        )
        self.box_head = nn.ModuleList(_prediction_block(ch, a * 4, norm) for ch, a in zip(chans, per_cell))
        _normal_init(self.extra)
        _normal_init(self.cls_head)
        _normal_init(self.box_head)
        if c.cls_loss != "softmax":
            # sigmoid losses: every class starts at probability CLS_PRIOR, so that the loss of the
            # thousands of background anchors does not swamp the first updates (RetinaNet, Lin et
            # al., ICCV 2017, sec. 4.1 "Initialization"; GFL and torchvision's RetinaNet likewise)
            for block in self.cls_head:
                nn.init.constant_(block[-1].bias, -math.log((1 - CLS_PRIOR) / CLS_PRIOR))
        self.config = config
        self.num_classes = c.num_classes
        self.image_size = c.image_size
        # channels-last: oneDNN's depthwise convolutions run 5-30% faster on CPU in this layout
        # (a training step: `tools/benchmark.py --train-cost` compares the two)
        self.set_memory_format(torch.channels_last)

    def set_memory_format(self, memory_format: torch.memory_format) -> Detector:
        """Weights and inputs in `memory_format` (torch.channels_last, the default, or
        torch.contiguous_format)."""
        self.memory_format = memory_format
        return self.to(memory_format=memory_format)

    def feature_maps(self, images: Tensor) -> list[Tensor]:
        feats = self.backbone(self.normalize(images).contiguous(memory_format=self.memory_format))
        maps = [feats["c4_exp"], feats["c5"]]
        for block in self.extra:
            maps.append(block(maps[-1]))
        return maps

    def forward(self, images: Tensor) -> dict[str, Tensor | list[int]]:
        maps = self.feature_maps(images)
        per_cell = self.anchor_generator.num_anchors_per_location()
        return {
            "cls_logits": _flatten([h(m) for h, m in zip(self.cls_head, maps)], self.num_classes),
            "box_deltas": _flatten([h(m) for h, m in zip(self.box_head, maps)], 4),
            # int(): a traced export sees plain sizes, so the cached anchors become one constant
            "anchors": self.anchors(tuple(int(v) for v in images.shape[-2:]), device=images.device),
            # the ATSS matcher picks candidates per level (plain ints: no tensor work)
            "num_anchors_per_level": [int(m.shape[-2] * m.shape[-1]) * a for m, a in zip(maps, per_cell)],
        }

    def grid_sizes(self, image_size: tuple[int, int]) -> list[tuple[int, int]]:
        """Feature-map sizes for an input (H, W): every stride-2 layer (odd kernel, "same" padding)
        rounds up, so the map at stride s has ceil(H / s) x ceil(W / s) cells."""
        h, w = image_size
        return [(-(-h // s), -(-w // s)) for s in (16, 32, 64, 128, 256, 512)[: len(self.cls_head)]]

    def anchors(self, image_size: tuple[int, int] | None = None, device=None) -> Tensor:
        """Anchors [A, 4] xyxy in pixels of an input of `image_size` (H, W); default the model's."""
        size = tuple(image_size or self.image_size)
        return self.anchor_generator(size, self.grid_sizes(size), device=device)

    def loss(self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """targets: per image "boxes" [M, 4] xyxy pixels of the input and "labels" [M] in 1..K-1.
        The anchors are those of the batch's own input size (`outputs["anchors"]`)."""
        return ssd_loss(
            outputs["cls_logits"],
            outputs["box_deltas"],
            outputs["anchors"],
            targets,
            kind=self.config.cls_loss,
            box_loss=self.config.box_loss,
            matcher=self.config.matcher,
            num_anchors_per_level=outputs.get("num_anchors_per_level"),
            anchors_per_location=self.anchor_generator.num_anchors_per_location(),
        )

    @torch.inference_mode()
    def predict(
        self, images: Tensor, orig_sizes: Sequence[Sequence[int]] | None = None
    ) -> list[dict[str, Tensor]]:
        """Detections for images of any size, resized to the model's input size (bilinear, as
        torchvision's transform).

        orig_sizes: per image (H, W) of the original picture that `images` were resized from (DETR's
        `PostProcess(target_sizes)`); boxes are returned in its pixels, clipped to it. Without it,
        boxes are in pixels of `images`.
        """
        n, (h, w) = images.shape[0], images.shape[-2:]
        x = images
        if (h, w) != self.image_size:
            x = F.interpolate(images, size=self.image_size, mode="bilinear", align_corners=False)
        out = self(x)
        dets = postprocess(
            out["cls_logits"],
            out["box_deltas"],
            out["anchors"],
            self.image_size,
            score_fn="softmax" if self.config.cls_loss == "softmax" else "sigmoid",
            score_thresh=self.config.score_thresh,
            nms_thresh=self.config.nms_thresh,
            max_detections=self.config.max_detections,
        )
        sizes = [(int(h), int(w))] * n if orig_sizes is None else [_pair(s) for s in orig_sizes]
        if len(sizes) != n:
            raise ValueError(f"orig_sizes has {len(sizes)} entries for {n} images")
        for d, (oh, ow) in zip(dets, sizes):
            if (oh, ow) != self.image_size:
                sx, sy = ow / self.image_size[1], oh / self.image_size[0]
                scale = torch.tensor([sx, sy, sx, sy], device=images.device, dtype=d["boxes"].dtype)
                boxes = d["boxes"] * scale
                # float rounding of the scale must not leave the picture
                boxes[:, 0::2] = boxes[:, 0::2].clamp(0, ow)
                boxes[:, 1::2] = boxes[:, 1::2].clamp(0, oh)
                d["boxes"] = boxes
        return dets


def build_detector(backbone: str, *, weights: str | None = None, **options) -> Detector:
    """SSDLite over `backbone` ("v1", "v2", "v3_large", "v3_small", "mixnet_s/m/l").

    options: the fields of :class:`DetectorConfig` (num_classes, width_mult, reduced_tail, anchors,
    anchor_scales, image_size, cls_loss, box_loss, matcher, score_thresh, nms_thresh, max_detections,
    bn_momentum).
    weights: an ImageNet checkpoint for the backbone (see `dense.weights.load_backbone_weights`);
    without it the backbone is initialised N(0, 0.03) as torchvision's SSDLite trained from scratch.
    """
    head = options.pop("head", None)
    if head not in (None, "ssdlite"):
        raise ValueError(f"task 'detect' has the head 'ssdlite' only, got {head!r}")
    unknown = sorted(set(options) - {f.name for f in fields(DetectorConfig)})
    if unknown:
        raise TypeError(
            f"unknown detector option(s) {unknown}; valid: {[f.name for f in fields(DetectorConfig)][1:]}"
        )
    config = DetectorConfig(backbone=backbone, **options)
    bb = build_backbone(
        backbone,
        taps=("c4_exp", "c5"),
        width_mult=config.width_mult,
        reduced_tail=config.reduced_tail,
        scale_last_conv=True,
        bn_eps=BN_EPS,
        bn_momentum=BN_MOMENTUM if config.bn_momentum is None else config.bn_momentum,
    )
    if weights is None:
        _normal_init(bb)
    else:
        load_backbone_weights(bb, weights)
    return Detector(bb, config)
