"""SSDLite (MobileNetV2 sec. 6.2, MobileNetV3 sec. 6.2) over any backbone of the family.

Feature maps: C4 (the expansion layer of the first stride-32 block, stride 16) and C5 (stride 32),
then four extra blocks (1x1 conv to out/2, 3x3 depthwise stride 2, 1x1 conv to out; BN + ReLU6
each) with out = 512, 256, 256, 128: six maps, 20/10/5/3/2/1 cells at 320x320. Heads per map:
3x3 depthwise + BN + ReLU6, then a 1x1 conv with bias. Modules are declared in torchvision's order
(backbone, extras, classification head, regression head) so its checkpoint maps on in order.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dense.backbones.blocks import ConvBNAct
from dense.backbones.mobilenet import Backbone, build_backbone

from .anchors import AnchorGenerator
from .loss import ssd_loss
from .postprocess import postprocess

__all__ = ["Detector", "build_detector"]

EXTRA_CHANNELS = (512, 256, 256, 128)
BN = dict(eps=1e-3, momentum=0.03)  # TF reference / torchvision SSDLite


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


class Detector(nn.Module):
    """SSDLite detector. Takes float images in [0, 1], [N, 3, H, W], and scales them to [-1, 1]
    inside (as the TF and torchvision SSDLite models).

    forward(images) -> {"cls_logits": [N, A, K], "box_deltas": [N, A, 4]} (raw head outputs)
    anchors(image_size) -> [A, 4] xyxy pixels
    loss(outputs, targets) -> {"loss_cls", "loss_box", "loss"}
    predict(images) -> [{"boxes" [D, 4] xyxy pixels of the input, "scores" [D], "labels" [D]}]
    K counts the background (label 0).
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        *,
        anchors: str = "torchvision",
        anchor_scales: tuple[float, float] = (0.2, 0.95),
        image_size: int | tuple[int, int] = 320,
        width_mult: float = 1.0,
        loss: str = "softmax",
        score_thresh: float = 0.001,
        nms_thresh: float = 0.55,
        max_detections: int = 300,
        config: dict | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
        if loss not in ("softmax", "focal"):
            raise ValueError(f"unknown detection loss {loss!r}; valid: 'softmax', 'focal'")
        spec = backbone.output_shape()
        if list(spec) != ["c4_exp", "c5"]:
            raise ValueError(f"SSDLite needs a backbone with taps ('c4_exp', 'c5'), got {list(spec)}")
        norm = partial(nn.BatchNorm2d, **BN)
        self.backbone = backbone
        depth = [max(16, int(c * width_mult)) for c in EXTRA_CHANNELS]  # torchvision's min depth 16
        chans = [spec["c4_exp"].channels, spec["c5"].channels, *depth]
        self.extra = nn.ModuleList(_extra_block(cin, cout, norm) for cin, cout in zip(chans[1:], depth))
        lo, hi = (float(v) for v in anchor_scales)
        if not 0 < lo < hi <= 1:
            raise ValueError(f"anchor_scales must be (min, max) with 0 < min < max <= 1, got {anchor_scales}")
        self.anchor_generator = AnchorGenerator(anchors, num_maps=len(chans), min_scale=lo, max_scale=hi)
        per_cell = self.anchor_generator.num_anchors_per_location()
        self.cls_head = nn.ModuleList(
            _prediction_block(c, a * num_classes, norm) for c, a in zip(chans, per_cell)
        )
        self.box_head = nn.ModuleList(_prediction_block(c, a * 4, norm) for c, a in zip(chans, per_cell))
        _normal_init(self.extra)
        _normal_init(self.cls_head)
        _normal_init(self.box_head)
        self.num_classes = num_classes
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.loss_kind = loss
        self.score_thresh, self.nms_thresh, self.max_detections = score_thresh, nms_thresh, max_detections
        self.config = dict(config or {})
        # channels-last: oneDNN's depthwise convolutions run 5-30% faster on CPU in this layout
        self.to(memory_format=torch.channels_last)

    def feature_maps(self, images: Tensor) -> list[Tensor]:
        feats = self.backbone((images * 2.0 - 1.0).contiguous(memory_format=torch.channels_last))
        maps = [feats["c4_exp"], feats["c5"]]
        for block in self.extra:
            maps.append(block(maps[-1]))
        return maps

    @staticmethod
    def _flatten(outs: list[Tensor], width: int) -> Tensor:
        # [N, A*width, H, W] per map -> [N, sum(H*W*A), width], cell-major then anchor
        n = outs[0].shape[0]
        return torch.cat(
            [o.view(n, -1, width, *o.shape[-2:]).permute(0, 3, 4, 1, 2).reshape(n, -1, width) for o in outs],
            1,
        )

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        maps = self.feature_maps(images)
        return {
            "cls_logits": self._flatten([h(m) for h, m in zip(self.cls_head, maps)], self.num_classes),
            "box_deltas": self._flatten([h(m) for h, m in zip(self.box_head, maps)], 4),
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

    def loss(self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]], image_size=None) -> dict:
        """targets: per image "boxes" [M, 4] xyxy pixels of the input and "labels" [M] in 1..K-1."""
        anchors = self.anchors(image_size, device=outputs["cls_logits"].device)
        return ssd_loss(outputs["cls_logits"], outputs["box_deltas"], anchors, targets, kind=self.loss_kind)

    @torch.inference_mode()
    def predict(self, images: Tensor) -> list[dict[str, Tensor]]:
        """Detections for images of any size: resized to the model's input size (bilinear, as
        torchvision's transform), boxes mapped back to pixels of the given images."""
        h, w = images.shape[-2:]
        x = images
        if (h, w) != self.image_size:
            x = F.interpolate(images, size=self.image_size, mode="bilinear", align_corners=False)
        out = self(x)
        dets = postprocess(
            out["cls_logits"],
            out["box_deltas"],
            self.anchors(self.image_size, device=images.device),
            self.image_size,
            score_fn="softmax" if self.loss_kind == "softmax" else "sigmoid",
            score_thresh=self.score_thresh,
            nms_thresh=self.nms_thresh,
            max_detections=self.max_detections,
        )
        if (h, w) != self.image_size:
            scale = torch.tensor(
                [w / self.image_size[1], h / self.image_size[0]] * 2, device=images.device, dtype=images.dtype
            )
            for d in dets:
                d["boxes"] = d["boxes"] * scale
        return dets


def build_detector(
    backbone: str,
    *,
    head: str | None = "ssdlite",
    num_classes: int = 91,
    width_mult: float = 1.0,
    reduced_tail: bool = False,
    anchors: str = "torchvision",
    anchor_scales: tuple[float, float] = (0.2, 0.95),
    image_size: int | tuple[int, int] = 320,
    loss: str = "softmax",
    weights: str | None = None,
    score_thresh: float = 0.001,
    nms_thresh: float = 0.55,
    max_detections: int = 300,
) -> Detector:
    """SSDLite over `backbone` ("v1", "v2", "v3_large", "v3_small", "mixnet_s/m/l").

    num_classes counts the background (COCO: 91 as torchvision, or K + 1 for K dataset classes).
    weights: an ImageNet checkpoint for the backbone (see `build_backbone`); without it the backbone
    is initialised N(0, 0.03) as torchvision's SSDLite trained from scratch.
    anchor_scales: (smallest, largest) anchor scale as a fraction of the input side, spread
    linearly over the six maps (SSD paper, eq. 4); (0.2, 0.95) as the papers and torchvision. A data
    set of smaller objects needs a smaller minimum (the smallest anchor is min x image_size).
    """
    if head not in (None, "ssdlite"):
        raise ValueError(f"task 'detect' has the head 'ssdlite' only, got {head!r}")
    config = dict(
        backbone=backbone,
        num_classes=num_classes,
        width_mult=width_mult,
        reduced_tail=reduced_tail,
        anchors=anchors,
        anchor_scales=tuple(float(v) for v in anchor_scales),
        image_size=image_size,
        loss=loss,
        score_thresh=score_thresh,
        nms_thresh=nms_thresh,
        max_detections=max_detections,
    )
    bb = build_backbone(
        backbone,
        taps=("c4_exp", "c5"),
        width_mult=width_mult,
        reduced_tail=reduced_tail,
        scale_last_conv=True,
        **{f"bn_{k}": v for k, v in BN.items()},
    )
    if weights is None:
        _normal_init(bb)
    else:
        from dense.weights import load_backbone_weights

        load_backbone_weights(bb, backbone, weights)
    return Detector(
        bb,
        num_classes,
        anchors=anchors,
        anchor_scales=anchor_scales,
        image_size=image_size,
        width_mult=width_mult,
        loss=loss,
        score_thresh=score_thresh,
        nms_thresh=nms_thresh,
        max_detections=max_detections,
        config=config,
    )
