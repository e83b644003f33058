"""Detection with its post-processing inside the ONNX graph: decode, scores, per-class top-k,
class-wise NMS (the standard ``NonMaxSuppression`` op), the best `max_detections`.

The same rule as `dense.detection.postprocess.postprocess` (what `Detector.predict` runs), for
batch 1, boxes in pixels of the network input. Class-wise NMS is one ``NonMaxSuppression`` whose
batch axis holds the classes: each class has its own top-k boxes, and the op suppresses within a
(batch, class) pair only. torchvision's `nms` exports a single-class op, and its `batched_nms`
shifts boxes per class (rounding the coordinates), hence this small op of our own.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import clip_boxes_to_image, nms

from dense.detection import Detector
from dense.detection.box_coder import decode

__all__ = ["EndToEndDetector"]


class _PerClassNMS(torch.autograd.Function):
    """boxes [C, k, 4], scores [C, 1, k] -> selected [M, 3] int64 (class, 0, box), per class in
    decreasing score; boxes of score <= score_thresh are dropped (ONNX NonMaxSuppression)."""

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, iou: float, score_thresh: float) -> Tensor:
        out = []
        for c in range(boxes.shape[0]):
            s = scores[c, 0]
            idx = torch.nonzero(s > score_thresh).flatten()
            kept = idx[nms(boxes[c, idx], s[idx], iou)]
            out.append(torch.stack((torch.full_like(kept, c), torch.zeros_like(kept), kept), 1))
        return torch.cat(out) if out else torch.zeros(0, 3, dtype=torch.int64)

    @staticmethod
    def symbolic(g, boxes, scores, iou: float, score_thresh: float):
        k = g.op("Constant", value_t=torch.tensor([2**31 - 1], dtype=torch.int64))
        iou_t = g.op("Constant", value_t=torch.tensor([iou], dtype=torch.float32))
        thr_t = g.op("Constant", value_t=torch.tensor([score_thresh], dtype=torch.float32))
        return g.op("NonMaxSuppression", boxes, scores, k, iou_t, thr_t, center_point_box_i=0)


class EndToEndDetector(nn.Module):
    """images [1, 3, H, W] in [0, 1] at the detector's input size -> boxes [M, 4] xyxy pixels of
    the input, scores [M], labels [M] int64 in 1..K-1 (what `Detector.predict(images)[0]` returns)."""

    def __init__(self, detector: Detector, *, topk_per_class: int = 300) -> None:
        super().__init__()
        self.detector = detector
        c = detector.config
        self.softmax = c.cls_loss == "softmax"
        self.score_thresh, self.nms_thresh = float(c.score_thresh), float(c.nms_thresh)
        self.max_detections, self.topk = int(c.max_detections), int(topk_per_class)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.detector(images)
        logits = out["cls_logits"][0]
        scores = logits.softmax(-1)[:, 1:] if self.softmax else logits[:, 1:].sigmoid()  # [A, C]
        size = (int(images.shape[-2]), int(images.shape[-1]))
        boxes = clip_boxes_to_image(decode(out["box_deltas"][0], out["anchors"]), size)  # [A, 4]
        top, idx = scores.topk(min(self.topk, scores.shape[0]), dim=0)  # [k, C]
        top, idx = top.t(), idx.t()  # [C, k]
        k = top.shape[1]
        cand = boxes[idx.reshape(-1)].reshape(idx.shape[0], k, 4)  # [C, k, 4]
        sel = _PerClassNMS.apply(cand, top[:, None, :], self.nms_thresh, self.score_thresh)
        flat = sel[:, 0] * k + sel[:, 2]
        s = top.reshape(-1)[flat]
        order = s.argsort(descending=True)[: self.max_detections]
        flat = flat[order]
        return cand.reshape(-1, 4)[flat], s[order], sel[:, 0][order] + 1
