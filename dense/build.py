"""The public builders: `build_model` for every task and `build_backbone` with ImageNet weights.

This is the composition layer: it knows every task (classification, detection, segmentation)
and the weights loader, while none of those know each other.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from dense.backbones.mobilenet import Backbone
from dense.backbones.mobilenet import build_backbone as _build_backbone
from dense.classification import build_classifier
from dense.detection import build_detector
from dense.segmentation import build_segmenter
from dense.weights import load_backbone_weights

__all__ = ["TASKS", "build_backbone", "build_model"]

TASKS = ("classify", "detect", "segment")


def build_model(task: str, backbone: str, head: str | None = None, **options) -> nn.Module:
    """Build a plain-torch model for `task`.

    Args:
        task: "classify" (ImageNet classifier of the backbone), "detect" (SSDLite) or "segment"
            (R-ASPP / LR-ASPP).
        backbone: "v1", "v2", "v3_large", "v3_small", "mixnet_s", "mixnet_m", "mixnet_l".
        head: the task's head, where it has a choice ("segment": "lraspp" or "raspp").
        options: keyword options of the task's builder: `build_classifier`, or the fields of
            `DetectorConfig` / `SegmenterConfig` plus `weights` (an ImageNet checkpoint for the
            backbone).

    Every model takes float images in [0, 1], [N, 3, H, W], and normalises inside.
    """
    if task == "classify":
        if head not in (None, "linear"):
            raise ValueError(f"task 'classify' has no head {head!r}")
        return build_classifier(backbone, **options)
    if task == "detect":
        return build_detector(backbone, head=head, **options)
    if task == "segment":
        return build_segmenter(backbone, head=head, **options)
    raise ValueError(f"unknown task {task!r}; valid: {list(TASKS)}")


def build_backbone(name: str, *, taps: Sequence[str] = ("c4_exp", "c5"), weights=None, **options) -> Backbone:
    """`dense.backbones.build_backbone` (same options), plus `weights`: a path or state dict of an
    ImageNet checkpoint (torchvision's for V2 / V3, timm's for V1 / MixNet, or one saved by dense)
    loaded into the built layers."""
    backbone = _build_backbone(name, taps=taps, **options)
    if weights is not None:
        load_backbone_weights(backbone, weights)
    return backbone
