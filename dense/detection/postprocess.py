"""From raw SSD outputs to detections (torchvision's SSD postprocess, vectorised over classes)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import clip_boxes_to_image, nms

from .box_coder import decode

__all__ = ["postprocess"]


def postprocess(
    cls_logits: Tensor,
    box_deltas: Tensor,
    anchors: Tensor,
    image_size: tuple[int, int],
    *,
    score_fn: str = "softmax",
    score_thresh: float = 0.001,
    topk_per_class: int = 300,
    nms_thresh: float = 0.55,
    max_detections: int = 300,
) -> list[dict[str, Tensor]]:
    """Per image: scores above `score_thresh`, the best `topk_per_class` per class, class-wise NMS,
    the best `max_detections` (torchvision's SSD postprocess, same detections).
    Boxes are xyxy pixels clipped to `image_size` (H, W); labels 1..K-1."""
    if score_fn == "softmax":
        scores_all = cls_logits.softmax(-1)[..., 1:]
    else:
        scores_all = cls_logits[..., 1:].sigmoid()
    boxes_all = clip_boxes_to_image(decode(box_deltas, anchors[None]), image_size)
    results = []
    num_fg = scores_all.shape[-1]
    for scores, boxes in zip(scores_all, boxes_all):
        # top-k per class in one call instead of torchvision's loop over classes
        k = min(topk_per_class, scores.shape[0])
        top, idx = scores.topk(k, dim=0)  # [k, C]
        keep = top > score_thresh
        labels = torch.arange(1, num_fg + 1, device=scores.device).expand(k, -1)[keep]
        s, b = top[keep], boxes[idx[keep]]
        kept = _top_nms(b, s, labels, nms_thresh, max_detections)
        results.append({"boxes": b[kept], "scores": s[kept], "labels": labels[kept]})
    return results


def _top_nms(boxes: Tensor, scores: Tensor, labels: Tensor, iou: float, keep: int) -> Tensor:
    """The best `keep` survivors of class-wise NMS, without running NMS on every candidate.

    A box is suppressed only by higher-scoring boxes of its class, so once NMS over the N best
    candidates leaves `keep` survivors, the rest cannot change them: the result equals NMS over all
    (torchvision's postprocess, which runs it on up to 300 x classes boxes: its slowest part).
    """
    order = scores.argsort(descending=True)
    n = 4 * keep
    while True:
        cand = order[:n]
        b = boxes[cand]
        # Class-wise NMS as one call: each class shifted to its own region (the coordinate trick
        # of torchvision's batched_nms, which switches to a per-class loop above 1000 boxes on
        # CPU: 90 small calls cost more than one over a few thousand boxes).
        shifted = b + (labels[cand].to(b) * (b.max() + 1))[:, None]
        kept = cand[nms(shifted, scores[cand], iou)]
        if len(kept) >= keep or n >= len(order):
            return kept[:keep]
        n *= 4
