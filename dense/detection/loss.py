"""SSD matching and losses.

Matching (SSD / torchvision's SSDMatcher): an anchor is positive for the ground truth it overlaps
most if IoU >= 0.5, and every ground truth is also forced onto its best anchor.
Losses, both divided by the number of positives in the batch:
  "softmax": cross-entropy with 3:1 hard negative mining + smooth L1 on positives (torchvision).
  "focal": sigmoid focal loss (alpha 0.75, gamma 2) over all anchors, no mining (TF SSDLite configs);
      the background column of the logits is unused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_iou, sigmoid_focal_loss

from .box_coder import encode

__all__ = ["LOSSES", "match", "ssd_loss"]

LOSSES = ("softmax", "focal")


def match(gt_boxes: Tensor, anchors: Tensor, iou_threshold: float = 0.5) -> Tensor:
    """Index of the matched ground truth for each anchor, -1 for background. [A]"""
    if gt_boxes.numel() == 0:
        return torch.full((anchors.shape[0],), -1, dtype=torch.int64, device=anchors.device)
    iou = box_iou(gt_boxes, anchors)  # [M, A]
    best_iou, matches = iou.max(dim=0)
    matches[best_iou < iou_threshold] = -1
    # every ground truth keeps its best anchor, even below the threshold
    matches[iou.argmax(dim=1)] = torch.arange(gt_boxes.shape[0], device=anchors.device)
    return matches


def ssd_loss(
    cls_logits: Tensor,
    box_deltas: Tensor,
    anchors: Tensor,
    targets: list[dict[str, Tensor]],
    *,
    kind: str = "softmax",
    neg_to_pos: int = 3,
    focal_alpha: float = 0.75,
    focal_gamma: float = 2.0,
) -> dict[str, Tensor]:
    """cls_logits [N, A, K], box_deltas [N, A, 4], anchors [A, 4] xyxy pixels; targets: per image
    "boxes" [M, 4] xyxy pixels and "labels" [M] in 1..K-1. Returns loss_cls, loss_box, loss."""
    n, a, k = cls_logits.shape
    cls_t = torch.zeros((n, a), dtype=torch.int64, device=cls_logits.device)
    box_loss = cls_logits.new_zeros(())
    num_pos = 0
    for i, t in enumerate(targets):
        m = match(t["boxes"], anchors)
        pos = torch.nonzero(m >= 0).squeeze(1)
        num_pos += pos.numel()
        if pos.numel():
            gt = t["boxes"][m[pos]]
            box_loss = box_loss + F.smooth_l1_loss(
                box_deltas[i, pos], encode(gt, anchors[pos]), reduction="sum"
            )
            cls_t[i, pos] = t["labels"][m[pos]]
    denom = max(1, num_pos)
    if kind == "softmax":
        ce = F.cross_entropy(cls_logits.reshape(-1, k), cls_t.reshape(-1), reduction="none").view(n, a)
        fg = cls_t > 0
        # hard negative mining: the 3 x num_pos background anchors with the highest loss, per image
        neg_loss = ce.masked_fill(fg, float("-inf"))
        rank = neg_loss.argsort(1, descending=True).argsort(1)
        bg = rank < neg_to_pos * fg.sum(1, keepdim=True)
        cls_loss = (ce[fg].sum() + ce[bg].sum()) / denom
    elif kind == "focal":
        onehot = F.one_hot(cls_t, k)[..., 1:].to(cls_logits.dtype)
        cls_loss = (
            sigmoid_focal_loss(
                cls_logits[..., 1:], onehot, alpha=focal_alpha, gamma=focal_gamma, reduction="sum"
            )
            / denom
        )
    else:
        raise ValueError(f"unknown detection loss {kind!r}; valid: {list(LOSSES)}")
    box_loss = box_loss / denom
    return {"loss_cls": cls_loss, "loss_box": box_loss, "loss": cls_loss + box_loss}
