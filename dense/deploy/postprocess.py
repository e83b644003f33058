"""Detection post-processing of raw ONNX outputs in numpy: `dense.detection.postprocess` (what
`Detector.predict` runs) rewritten without torch, so the runner needs numpy and onnxruntime only.
Same rule: scores above the threshold, the best `topk_per_class` per class, class-wise NMS, the best
`max_detections`."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["decode", "nms", "postprocess", "scale_boxes"]

_CLIP = math.log(1000.0 / 16)  # dense.detection.box_coder


def decode(deltas: np.ndarray, anchors: np.ndarray, weights=(10.0, 10.0, 5.0, 5.0)) -> np.ndarray:
    """Boxes [A, 4] xyxy from deltas [A, 4] relative to anchors [A, 4] xyxy (SSD box coder)."""
    wx, wy, ww, wh = (np.float32(v) for v in weights)
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ax, ay = anchors[:, 0] + np.float32(0.5) * aw, anchors[:, 1] + np.float32(0.5) * ah
    cx = deltas[:, 0] / wx * aw + ax
    cy = deltas[:, 1] / wy * ah + ay
    w = np.exp(np.minimum(deltas[:, 2] / ww, np.float32(_CLIP))) * aw
    h = np.exp(np.minimum(deltas[:, 3] / wh, np.float32(_CLIP))) * ah
    half = np.float32(0.5)
    return np.stack((cx - half * w, cy - half * h, cx + half * w, cy + half * h), -1).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS (torchvision.ops.nms semantics: drop boxes with IoU > `iou` with a kept one);
    indices of the kept boxes by decreasing score. Our own loop: torchvision needs torch."""
    order = np.argsort(-scores, kind="stable")
    return order[_greedy(boxes[order], np.zeros(len(order), dtype=np.int64), iou, len(order))]


def _greedy(boxes: np.ndarray, labels: np.ndarray, iou: float, limit: int) -> np.ndarray:
    """Class-wise greedy NMS of `boxes` [N, 4] already in score order: indices of the first `limit`
    survivors. A same-label mask rather than batched_nms's per-class coordinate offsets, which lose
    float32 precision on large coordinates and change detections."""
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1) * (y2 - y1)
    alive = np.ones(len(boxes), dtype=bool)
    keep = []
    for i in range(len(boxes)):
        if not alive[i]:
            continue
        keep.append(i)
        if len(keep) == limit:
            break
        r = slice(i + 1, None)
        iw = np.clip(np.minimum(x2[i], x2[r]) - np.maximum(x1[i], x1[r]), 0, None)
        ih = np.clip(np.minimum(y2[i], y2[r]) - np.maximum(y1[i], y1[r]), 0, None)
        inter = iw * ih
        with np.errstate(divide="ignore", invalid="ignore"):
            # ~(> iou), not <= iou: a 0/0 IoU of empty boxes is NaN and keeps the box, as torchvision
            alive[r] &= (labels[r] != labels[i]) | ~(inter / (area[i] + area[r] - inter) > iou)
    return np.asarray(keep[:limit], dtype=np.int64)  # [:limit] for limit 0


def _topk_mask(scores: np.ndarray, k: int) -> np.ndarray:
    """Mask [A, C] of the best `k` scores per class (column), ties to the lower anchor index, as a
    stable descending sort; a partition instead of sorting every column."""
    if k >= scores.shape[0]:
        return np.ones(scores.shape, dtype=bool)
    kth = np.partition(scores, scores.shape[0] - k, axis=0)[scores.shape[0] - k]  # [C] k-th best
    above = scores > kth
    tied = scores == kth
    return above | (tied & (np.cumsum(tied, axis=0) <= k - above.sum(0)))


def postprocess(
    cls_logits: np.ndarray,
    box_deltas: np.ndarray,
    anchors: np.ndarray,
    image_size: tuple[int, int],
    *,
    score_fn: str = "softmax",
    score_thresh: float = 0.001,
    topk_per_class: int = 300,
    nms_thresh: float = 0.55,
    max_detections: int = 300,
    **_: object,
) -> dict[str, np.ndarray]:
    """One image: cls_logits [A, K], box_deltas [A, 4], anchors [A, 4] -> boxes [M, 4] xyxy pixels
    of the network input (clipped to `image_size` (H, W)), scores [M], labels [M] in 1..K-1."""
    logits = cls_logits.astype(np.float32)
    if score_fn == "softmax":
        e = np.exp(logits - logits.max(-1, keepdims=True))
        scores = (e / e.sum(-1, keepdims=True))[:, 1:]
    else:
        scores = 1 / (1 + np.exp(-logits[:, 1:]))
    boxes = decode(box_deltas.astype(np.float32), anchors.astype(np.float32))
    h, w = image_size
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    # candidates in (class, anchor) order, then one stable sort: (-score, class, anchor) is the
    # order of a class-wise NMS followed by a stable sort of the survivors
    mask = _topk_mask(scores, min(topk_per_class, scores.shape[0])).T & (scores.T > score_thresh)
    cls, anchor = np.nonzero(mask)
    s = scores.T[cls, anchor]
    order = np.argsort(-s, kind="stable")
    # A box is suppressed only by better ones of its class, so once NMS over the n best candidates
    # leaves max_detections survivors the rest cannot change them (dense's torch `_top_nms`).
    n = 4 * max_detections
    while True:
        cand = order[:n]
        kept = cand[_greedy(boxes[anchor[cand]], cls[cand], nms_thresh, max_detections)]
        if len(kept) >= max_detections or n >= len(order):
            break
        n *= 4
    return {"boxes": boxes[anchor[kept]], "scores": s[kept], "labels": cls[kept].astype(np.int64) + 1}


def scale_boxes(boxes: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """Boxes in pixels of `from_size` (H, W) -> pixels of `to_size`, clipped to it
    (`Detector.predict(orig_sizes=...)`)."""
    if tuple(from_size) == tuple(to_size):
        return boxes
    (ih, iw), (oh, ow) = from_size, to_size
    sx, sy = np.float32(ow / iw), np.float32(oh / ih)
    out = boxes * np.array([sx, sy, sx, sy], dtype=np.float32)
    out[:, 0::2] = out[:, 0::2].clip(0, ow)
    out[:, 1::2] = out[:, 1::2].clip(0, oh)
    return out
