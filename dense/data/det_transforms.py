"""Albumentations pipelines for detection (torchvision SSD / SSDLite recipes).

``build_detection_transform(preset, size, train)`` returns an ``A.Compose`` called as
``t(image=HWC uint8, bboxes=[M, 4] xyxy pixels, labels=[M])`` that returns ``image`` as a float32
tensor ``[3, size, size]`` in [0, 1] and ``bboxes`` / ``labels`` of the boxes that survive, in
pixels of the output image.

Presets (torchvision ``references/detection/presets.py``):

- ``"ssdlite"``: random IoU crop + horizontal flip, then resize to ``size x size``.
- ``"ssd"``: photometric distortion + zoom out (mean fill) + the ``"ssdlite"`` ops.
- ``"flip"``: horizontal flip only, for short runs where the crop's variety slows early learning
  more than it helps (the built-in ``shapes_coco`` default; not a paper recipe).
- eval (``train=False``, any preset): resize only, so predictions map back to the original image
  by a plain scale (`Detector.predict(images, orig_sizes=...)` does it).

Two ops are custom ``DualTransform`` s because albumentations has no equivalent:

- :class:`RandomIoUCrop`: ``A.RandomSizedBBoxSafeCrop`` / ``A.BBoxSafeRandomCrop`` keep *every*
  box inside the crop (never cut objects, never zoom in past the union of boxes) and
  ``A.AtLeastOneBBoxRandomCrop`` crops a fixed size without an overlap constraint. SSD's crop
  samples a scale/aspect, requires a minimum IoU between the crop and some box and keeps only the
  boxes whose centre is inside the crop; none of those is expressible with the stock crops.
- :class:`RandomZoomOut`: ``A.Affine(scale<1)`` keeps the canvas size (so it downsamples the
  image before the crop, losing resolution) and samples the scale, not the canvas ratio;
  ``A.PadIfNeeded`` / ``A.Pad`` pad by fixed amounts. SSD's zoom out places the image at a random
  position on a canvas ``r`` times larger, ``r ~ U(1, 4)``, filled with the mean colour.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np
from albumentations.augmentations.crops import functional as fcrops
from albumentations.augmentations.crops.transforms import BaseCrop
from albumentations.core.bbox_utils import denormalize_bboxes, normalize_bboxes
from albumentations.pytorch import ToTensorV2

__all__ = ["PRESETS", "RandomIoUCrop", "RandomZoomOut", "build_detection_transform"]

PRESETS = ("ssdlite", "ssd", "flip")

# ImageNet mean in 0..255: torchvision's RandomZoomOut fill for the SSD recipe.
MEAN_FILL = (123, 117, 104)


def _box_iou_with(boxes: np.ndarray, crop: np.ndarray) -> np.ndarray:
    """IoU of boxes [M, 4] (xyxy) with one box [4]."""
    iw = np.clip(np.minimum(boxes[:, 2], crop[2]) - np.maximum(boxes[:, 0], crop[0]), 0, None)
    ih = np.clip(np.minimum(boxes[:, 3], crop[3]) - np.maximum(boxes[:, 1], crop[1]), 0, None)
    inter = iw * ih
    area_b = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    area_c = (crop[2] - crop[0]) * (crop[3] - crop[1])
    return inter / np.maximum(area_b + area_c - inter, 1e-12)


class RandomIoUCrop(BaseCrop):
    """SSD random crop with a minimum-IoU constraint (torchvision ``RandomIoUCrop`` semantics).

    Per call: pick ``min_iou`` from ``sampler_options``; ``1.0`` (or more) means "no crop". Then up to
    ``trials`` times: sample the crop's width and height as independent fractions of the image in
    ``[min_scale, max_scale]``, reject unless ``min_aspect <= w / h <= max_aspect``, place it
    uniformly, require at least one box centre strictly inside and ``max IoU(box, crop) >=
    min_iou`` over those boxes. If no trial succeeds another ``min_iou`` is drawn (torchvision loops
    forever; here at most ``max_rounds`` rounds, then no crop). Boxes whose centre is outside the
    crop are removed, the rest are clipped to it. Images without boxes are not cropped (as in
    torchvision, where no crop can satisfy the constraint).
    """

    class InitSchema(A.core.transforms_interface.BaseTransformInitSchema):
        min_scale: float
        max_scale: float
        min_aspect_ratio: float
        max_aspect_ratio: float
        sampler_options: tuple[float, ...]
        trials: int
        max_rounds: int

    def __init__(
        self,
        min_scale: float = 0.3,
        max_scale: float = 1.0,
        min_aspect_ratio: float = 0.5,
        max_aspect_ratio: float = 2.0,
        sampler_options: tuple[float, ...] = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0),
        trials: int = 40,
        max_rounds: int = 50,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        self.min_scale = min_scale
        self.max_scale = max_scale
        self.min_aspect_ratio = min_aspect_ratio
        self.max_aspect_ratio = max_aspect_ratio
        self.sampler_options = tuple(sampler_options)
        self.trials = trials
        self.max_rounds = max_rounds

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return (
            "min_scale",
            "max_scale",
            "min_aspect_ratio",
            "max_aspect_ratio",
            "sampler_options",
            "trials",
            "max_rounds",
        )

    def _sample_crop(self, boxes: np.ndarray, h: int, w: int) -> tuple[int, int, int, int] | None:
        rand = self.py_random.random
        for _ in range(self.max_rounds):
            min_iou = self.sampler_options[int(self.py_random.randrange(len(self.sampler_options)))]
            if min_iou >= 1.0:
                return None
            for _ in range(self.trials):
                new_w = int(w * (self.min_scale + (self.max_scale - self.min_scale) * rand()))
                new_h = int(h * (self.min_scale + (self.max_scale - self.min_scale) * rand()))
                if new_w == 0 or new_h == 0:
                    continue
                aspect = new_w / new_h
                if not self.min_aspect_ratio <= aspect <= self.max_aspect_ratio:
                    continue
                left = int((w - new_w) * rand())
                top = int((h - new_h) * rand())
                right, bottom = left + new_w, top + new_h
                cx = 0.5 * (boxes[:, 0] + boxes[:, 2])
                cy = 0.5 * (boxes[:, 1] + boxes[:, 3])
                inside = (left < cx) & (cx < right) & (top < cy) & (cy < bottom)
                if not inside.any():
                    continue
                ious = _box_iou_with(boxes[inside], np.array([left, top, right, bottom], dtype=np.float64))
                if ious.max() < min_iou:
                    continue
                return left, top, right, bottom
        return None

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = params["shape"][:2]
        bboxes = data.get("bboxes")
        no_crop = (0, 0, w, h)
        if bboxes is None or len(bboxes) == 0:
            return {"crop_coords": no_crop}
        # Boxes arrive normalised (albumentations' internal format).
        boxes = denormalize_bboxes(np.asarray(bboxes, dtype=np.float64)[:, :4], (h, w))
        crop = self._sample_crop(boxes, h, w)
        return {"crop_coords": crop if crop is not None else no_crop}

    def apply_to_bboxes(
        self, bboxes: np.ndarray, crop_coords: tuple[int, int, int, int], **params: Any
    ) -> np.ndarray:
        if len(bboxes) == 0:
            return bboxes
        h, w = params["shape"][:2]
        left, top, right, bottom = crop_coords
        if (left, top, right, bottom) != (0, 0, w, h):
            # SSD keeps a box only when its centre lies inside the crop (not a visibility threshold).
            abs_boxes = denormalize_bboxes(bboxes[:, :4].astype(np.float64), (h, w))
            cx = 0.5 * (abs_boxes[:, 0] + abs_boxes[:, 2])
            cy = 0.5 * (abs_boxes[:, 1] + abs_boxes[:, 3])
            keep = (left < cx) & (cx < right) & (top < cy) & (cy < bottom)
            bboxes = bboxes[keep]
        # Shift into the crop; clipping to the crop is done by BboxParams(clip=True) afterwards.
        return fcrops.crop_bboxes_by_coords(bboxes, crop_coords, (h, w))


class RandomZoomOut(A.DualTransform):
    """Place the image on a canvas ``r ~ U(side_range)`` times larger, filled with ``fill``.

    torchvision ``RandomZoomOut`` semantics: canvas ``int(w * r) x int(h * r)``, offset
    ``int((W - w) * U(0, 1))`` (same for y), applied with probability ``p`` (0.5 in the SSD recipe).
    """

    class InitSchema(A.core.transforms_interface.BaseTransformInitSchema):
        side_range: tuple[float, float]
        fill: tuple[float, ...]

    def __init__(
        self,
        side_range: tuple[float, float] = (1.0, 4.0),
        fill: tuple[float, ...] = MEAN_FILL,
        p: float = 0.5,
    ) -> None:
        super().__init__(p=p)
        if not 1.0 <= side_range[0] <= side_range[1]:
            raise ValueError(f"side_range must satisfy 1 <= lo <= hi, got {side_range}")
        self.side_range = tuple(side_range)
        self.fill = tuple(fill)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("side_range", "fill")

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = params["shape"][:2]
        r = self.side_range[0] + (self.side_range[1] - self.side_range[0]) * self.py_random.random()
        canvas_w, canvas_h = int(w * r), int(h * r)
        left = int((canvas_w - w) * self.py_random.random())
        top = int((canvas_h - h) * self.py_random.random())
        return {
            "pad_left": left,
            "pad_top": top,
            "pad_right": canvas_w - w - left,
            "pad_bottom": canvas_h - h - top,
        }

    def apply(
        self, img: np.ndarray, pad_left: int, pad_top: int, pad_right: int, pad_bottom: int, **params: Any
    ) -> np.ndarray:
        fill = self.fill if img.ndim == 3 and img.shape[2] == len(self.fill) else self.fill[0]
        return cv2.copyMakeBorder(
            img, pad_top, pad_bottom, pad_left, pad_right, cv2.BORDER_CONSTANT, value=fill
        )

    def apply_to_bboxes(
        self, bboxes: np.ndarray, pad_left: int, pad_top: int, pad_right: int, pad_bottom: int, **params: Any
    ) -> np.ndarray:
        if len(bboxes) == 0:
            return bboxes
        h, w = params["shape"][:2]
        out = bboxes.copy()
        abs_boxes = denormalize_bboxes(bboxes[:, :4].astype(np.float64), (h, w))
        abs_boxes += np.array([pad_left, pad_top, pad_left, pad_top], dtype=np.float64)
        new_shape = (h + pad_top + pad_bottom, w + pad_left + pad_right)
        out[:, :4] = normalize_bboxes(abs_boxes, new_shape)
        return out


def _photometric_distort() -> A.BaseCompose:
    """torchvision ``RandomPhotometricDistort``: each op with probability 0.5."""
    return A.Sequential(
        [
            A.ColorJitter(brightness=(0.875, 1.125), contrast=(1, 1), saturation=(1, 1), hue=(0, 0), p=0.5),
            A.ColorJitter(brightness=(1, 1), contrast=(0.5, 1.5), saturation=(1, 1), hue=(0, 0), p=0.5),
            A.ColorJitter(brightness=(1, 1), contrast=(1, 1), saturation=(0.5, 1.5), hue=(0, 0), p=0.5),
            A.ColorJitter(brightness=(1, 1), contrast=(1, 1), saturation=(1, 1), hue=(-0.05, 0.05), p=0.5),
            A.ChannelShuffle(p=0.5),
        ]
    )


def build_detection_transform(
    preset: str = "ssdlite",
    size: int | tuple[int, int] = 320,
    train: bool = True,
    *,
    min_box_size: float = 1.0,
) -> A.Compose:
    """Build the detection pipeline.

    Args:
        preset: ``"ssdlite"``, ``"ssd"`` or ``"flip"`` (ignored when ``train`` is False).
        size: output side (or ``(h, w)``) in px.
        train: training augmentation or eval (resize only).
        min_box_size: boxes narrower or lower than this after the ops (px) are dropped.

    Returns:
        ``A.Compose``: ``t(image=uint8 [H, W, 3], bboxes=[M, 4] xyxy px, labels=[M])`` ->
        ``{"image": float32 tensor [3, h, w] in [0, 1], "bboxes": [M', 4] xyxy px, "labels": [M']}``.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown detection transform preset {preset!r}; valid: {list(PRESETS)}")
    h, w = (size, size) if isinstance(size, int) else size
    ops: list[A.BasicTransform | A.BaseCompose] = []
    if train:
        if preset == "ssd":
            ops += [_photometric_distort(), RandomZoomOut(side_range=(1.0, 4.0), fill=MEAN_FILL, p=0.5)]
        if preset != "flip":
            ops.append(RandomIoUCrop())
        ops.append(A.HorizontalFlip(p=0.5))
    ops += [
        A.Resize(h, w, interpolation=cv2.INTER_LINEAR),
        A.ToFloat(max_value=255.0),
        ToTensorV2(),
    ]
    bbox_params = A.BboxParams(
        format="pascal_voc",
        label_fields=["labels"],
        clip=True,  # boxes are clipped to the crop / image
        filter_invalid_bboxes=True,
        min_width=min_box_size,  # boxes that (nearly) leave the crop are dropped
        min_height=min_box_size,
    )
    return A.Compose(ops, bbox_params=bbox_params)
