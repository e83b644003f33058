"""SSD matching and losses, batched over the images of a batch.

Matching ("iou", SSD / torchvision's SSDMatcher): an anchor is positive for the ground truth it
overlaps most if IoU >= 0.5, and every ground truth is also forced onto its best anchor.
Matching ("atss", Zhang et al., CVPR 2020, sec. 3.2, Algorithm 1): per ground truth and feature
level the anchors whose centres are closest to its centre are candidates; those with IoU >= mean +
std of the candidates' IoUs and the centre inside the box are positive; an anchor positive for
several ground truths takes the one it overlaps most.
Losses, all divided by the number of positives in the batch:
  "softmax": cross-entropy with 3:1 hard negative mining (torchvision).
  "focal": sigmoid focal loss (alpha 0.75, gamma 2) over all anchors, no mining (TF SSDLite configs);
      the background column of the logits is unused.
  "qfl": IoU-aware classification, quality focal loss (Li et al., "Generalized Focal Loss",
      NeurIPS 2020, sec. 3.2, beta 2): a positive anchor's target for its class is the IoU of its
      predicted box with its ground truth instead of 1, so that the score ranks boxes by quality.
  box "smooth_l1": on the encoded deltas of positives (SSD / torchvision).
  box "giou": GIoU loss (Rezatofighi et al., CVPR 2019) of the decoded boxes of positives.
Ground truths are padded to the batch's largest count with a validity mask, so that one IoU
matrix [N, M, A] serves the whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torchvision.ops import box_iou, generalized_box_iou_loss, sigmoid_focal_loss

from .box_coder import decode, encode

__all__ = ["BOX_LOSSES", "LOSSES", "MATCHERS", "atss_match", "match", "match_batch", "ssd_loss"]

LOSSES = ("softmax", "focal", "qfl")
BOX_LOSSES = ("smooth_l1", "giou")
MATCHERS = ("iou", "atss")

# GIoU loss weight, to put the box loss on smooth L1's scale (the classification loss was balanced
# against it): mmdetection replaces L1 on deltas scaled as ours, stds (0.1, 0.1, 0.2, 0.2), by
# GIoULoss with loss_weight=10.0 (configs/faster_rcnn/faster-rcnn_r50_fpn_giou_1x_coco.py); its
# ATSS / GFL configs use 2.0 beside a focal loss, not smooth L1. On SSDLite's anchors and random
# boxes at initialisation, smooth L1 is 3-5 and GIoU 0.46-0.64 per positive: 10x lands near.
GIOU_WEIGHT = 10.0
ATSS_TOPK = 9  # candidates per level and anchor shape (the paper's k, sec. 3.2 and 4)
QFL_BETA = 2.0  # the GFL paper's beta (sec. 3.2, Table 1: best of 0, 1, 2, 2.5)


def _paired_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of a[i] with b[i] (xyxy): torchvision.ops.box_iou would build the whole [P, P] matrix."""
    lt = torch.max(a[:, :2], b[:, :2])
    rb = torch.min(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(1) + (b[:, 2:] - b[:, :2]).clamp(min=0).prod(1)
    return inter / (area - inter).clamp(min=1e-6)


def _padded(targets: list[dict[str, Tensor]], device) -> tuple[Tensor, Tensor, Tensor]:
    """Per-image boxes / labels padded to the batch's largest count M:
    boxes [N, M, 4], labels [N, M], valid [N, M] bool."""
    counts = torch.tensor([len(t["boxes"]) for t in targets], device=device)
    boxes = pad_sequence([t["boxes"].reshape(-1, 4) for t in targets], batch_first=True)
    labels = pad_sequence([t["labels"].reshape(-1) for t in targets], batch_first=True)
    valid = torch.arange(boxes.shape[1], device=device) < counts[:, None]
    return boxes.to(device), labels.to(device), valid


def _ious(gt_boxes: Tensor, valid: Tensor, anchors: Tensor) -> Tensor:
    """IoU [N, M, A] of every ground truth with every anchor; -1 for padding rows."""
    n, m = valid.shape
    iou = torch.full((n, m, anchors.shape[0]), -1.0, dtype=anchors.dtype, device=anchors.device)
    iou[valid] = box_iou(gt_boxes[valid], anchors)  # real boxes only: padding costs a fill
    return iou


def match_batch(gt_boxes: Tensor, valid: Tensor, anchors: Tensor, iou_threshold: float = 0.5) -> Tensor:
    """SSD matching. gt_boxes [N, M, 4] xyxy, valid [N, M], anchors [A, 4] -> index of the matched
    ground truth per anchor, -1 for background, [N, A]."""
    n, m = valid.shape
    if m == 0:
        return torch.full((n, anchors.shape[0]), -1, dtype=torch.int64, device=anchors.device)
    iou = _ious(gt_boxes, valid, anchors)
    best_iou, matches = iou.max(dim=1)  # ties: the first ground truth, as per image
    matches = matches.masked_fill(best_iou < iou_threshold, -1)
    # every ground truth keeps its best anchor, even below the threshold; where several share one
    # best anchor the last one wins, as the per-image `matches[iou.argmax(1)] = arange(M)` writes
    gt_idx = torch.arange(m, device=anchors.device).expand(n, m).masked_fill(~valid, -1)
    forced = torch.full_like(matches, -1).scatter_reduce_(1, iou.argmax(dim=2), gt_idx, reduce="amax")
    return torch.where(forced >= 0, forced, matches)


def match(gt_boxes: Tensor, anchors: Tensor, iou_threshold: float = 0.5) -> Tensor:
    """SSD matching of one image: gt_boxes [M, 4] -> matched ground truth per anchor or -1, [A]."""
    valid = torch.ones((1, gt_boxes.shape[0]), dtype=torch.bool, device=anchors.device)
    return match_batch(gt_boxes[None], valid, anchors, iou_threshold)[0]


def atss_match(
    gt_boxes: Tensor,
    valid: Tensor,
    anchors: Tensor,
    num_anchors_per_level: Sequence[int],
    anchors_per_location: Sequence[int],
    topk: int = ATSS_TOPK,
) -> Tensor:
    """ATSS matching (sec. 3.2, Algorithm 1). gt_boxes [N, M, 4] xyxy, valid [N, M], anchors [A, 4]
    ordered level by level (`num_anchors_per_level` of them each, `anchors_per_location` per cell)
    -> index of the matched ground truth per anchor, -1 for background, [N, A].

    With several anchors per location the candidates are the topk closest locations (topk x anchors
    per location anchors, as the authors' code), since the anchors of one cell share their centre.
    """
    n, m = valid.shape
    a = anchors.shape[0]
    if m == 0:
        return torch.full((n, a), -1, dtype=torch.int64, device=anchors.device)
    if sum(num_anchors_per_level) != a:
        raise ValueError(f"num_anchors_per_level {list(num_anchors_per_level)} does not sum to {a} anchors")
    iou = _ious(gt_boxes, valid, anchors)
    a_ctr = (anchors[:, :2] + anchors[:, 2:]) / 2  # [A, 2]
    g_ctr = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2  # [N, M, 2]
    dist = (g_ctr[:, :, None, :] - a_ctr).pow(2).sum(-1)  # [N, M, A], squared: same order
    cands, start = [], 0
    for count, per_loc in zip(num_anchors_per_level, anchors_per_location):
        k = min(topk * per_loc, count)
        cands.append(dist[..., start : start + count].topk(k, dim=2, largest=False).indices + start)
        start += count
    cand = torch.cat(cands, 2)  # [N, M, C], distinct anchors
    cand_iou = iou.gather(2, cand)
    # unbiased std as the authors' code; a single candidate has none (nan) and gets threshold = IoU
    thr = cand_iou.mean(2, keepdim=True) + cand_iou.std(2, keepdim=True).nan_to_num(0.0)
    c = a_ctr[cand]  # [N, M, C, 2]
    g = gt_boxes[:, :, None, :]
    # centre strictly inside the box (the authors' code: every side's distance > 0.01)
    inside = torch.cat((c - g[..., :2], g[..., 2:] - c), -1).amin(-1) > 0.01
    pos = (cand_iou >= thr) & inside & valid[..., None]
    score = torch.full_like(iou, -1.0).scatter_(2, cand, torch.where(pos, cand_iou, -1.0))
    best, matches = score.max(dim=1)  # the ground truth of highest IoU among those it is positive for
    return matches.masked_fill(best < 0, -1)


def ssd_loss(
    cls_logits: Tensor,
    box_deltas: Tensor,
    anchors: Tensor,
    targets: list[dict[str, Tensor]],
    *,
    kind: str = "softmax",
    box_loss: str = "smooth_l1",
    matcher: str = "iou",
    num_anchors_per_level: Sequence[int] | None = None,
    anchors_per_location: Sequence[int] | None = None,
    neg_to_pos: int = 3,
    giou_weight: float = GIOU_WEIGHT,
    focal_alpha: float = 0.75,
    focal_gamma: float = 2.0,
) -> dict[str, Tensor]:
    """cls_logits [N, A, K], box_deltas [N, A, 4], anchors [A, 4] xyxy pixels; targets: per image
    "boxes" [M, 4] xyxy pixels and "labels" [M] in 1..K-1. matcher "atss" needs the anchors' levels:
    num_anchors_per_level and anchors_per_location (one int per level each).
    Returns loss_cls, loss_box, loss."""
    n, a, k = cls_logits.shape
    device = cls_logits.device
    boxes, labels, valid = _padded(targets, device)
    if matcher == "iou":
        matches = match_batch(boxes, valid, anchors)
    elif matcher == "atss":
        if num_anchors_per_level is None or anchors_per_location is None:
            raise ValueError("matcher 'atss' needs num_anchors_per_level and anchors_per_location")
        matches = atss_match(boxes, valid, anchors, num_anchors_per_level, anchors_per_location)
    else:
        raise ValueError(f"unknown matcher {matcher!r}; valid: {list(MATCHERS)}")
    img, anc = torch.nonzero(matches >= 0, as_tuple=True)  # positives, image-major as a per-image loop
    gt_idx = matches[img, anc]
    cls_t = torch.zeros((n, a), dtype=torch.int64, device=device)
    cls_t[img, anc] = labels[img, gt_idx]
    denom = max(1, img.numel())

    gt = boxes[img, gt_idx]
    if box_loss == "smooth_l1":
        loss_box = F.smooth_l1_loss(box_deltas[img, anc], encode(gt, anchors[anc]), reduction="sum")
    elif box_loss == "giou":
        pred = decode(box_deltas[img, anc], anchors[anc])
        loss_box = giou_weight * generalized_box_iou_loss(pred, gt, reduction="sum")
    else:
        raise ValueError(f"unknown box loss {box_loss!r}; valid: {list(BOX_LOSSES)}")

    if kind == "softmax":
        ce = F.cross_entropy(cls_logits.reshape(-1, k), cls_t.reshape(-1), reduction="none").view(n, a)
        fg = cls_t > 0
        # hard negative mining: the 3 x num_pos background anchors with the highest loss, per image
        neg_loss = ce.masked_fill(fg, float("-inf"))
        order = neg_loss.argsort(1, descending=True)
        # rank = the inverse permutation of `order` (= order.argsort(1)), by a scatter, not a second sort
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(a, device=device).expand(n, a))
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
    elif kind == "qfl":
        quality = torch.zeros((n, a, k - 1), dtype=cls_logits.dtype, device=device)
        with torch.no_grad():  # the target follows the box branch; no gradient flows through it
            iou = _paired_iou(decode(box_deltas[img, anc], anchors[anc]), gt)
        quality[img, anc, cls_t[img, anc] - 1] = iou.to(quality.dtype)
        logits = cls_logits[..., 1:]
        bce = F.binary_cross_entropy_with_logits(logits, quality, reduction="none")
        cls_loss = (bce * (quality - logits.sigmoid()).abs().pow(QFL_BETA)).sum() / denom
    else:
        raise ValueError(f"unknown detection loss {kind!r}; valid: {list(LOSSES)}")
    loss_box = loss_box / denom
    return {"loss_cls": cls_loss, "loss_box": loss_box, "loss": cls_loss + loss_box}
