"""Augmentation presets for semantic segmentation (albumentations).

Every transform is called as ``t(image=HxWx3 uint8, mask=HxW uint8 trainIds)`` and returns a dict
with ``image`` and ``mask`` numpy arrays; :class:`dense.data.cityscapes.CityscapesSegmentation`
turns them into tensors. Masks are only ever resampled with nearest neighbour, and padding uses
the ignore index so padded pixels never count in the loss or the metric.

Training (the Cityscapes recipe of the MobileNetV3 / DeepLab papers and mmsegmentation): random
scale in [0.5, 2.0], pad to the crop size with ignore, random crop (512x1024 or 769x769),
horizontal flip, optional photometric distortion.

Evaluation: the metric is defined at full label resolution, so the mask is never resized. With
``eval_scale < 1`` only the image is downscaled (faster inference); the model's logits are then
brought back to the mask size with :func:`upsample_logits` before the argmax.
"""

from __future__ import annotations

import os

# albumentations >= 1.4 checks PyPI for a newer version on import; training must not touch the
# network (air-gapped nodes hang on it). Respect an explicit user setting.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from collections.abc import Sequence  # noqa: E402
from typing import Any  # noqa: E402

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from dense.constants import IGNORE_INDEX  # noqa: E402

__all__ = ["EvalTransform", "build_segmentation_transform", "upsample_logits"]


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


class EvalTransform:
    """Evaluation transform: optionally downscale the image; the mask stays at full resolution.

    Args:
        scale: image scale factor (1.0 = unchanged). Output image is
            ``[round(H * scale), round(W * scale), 3]``; the mask stays ``[H, W]``.
    """

    def __init__(self, scale: float = 1.0) -> None:
        if scale <= 0:
            raise ValueError(f"eval_scale must be > 0, got {scale}")
        self.scale = float(scale)

    def __call__(self, *, image: np.ndarray, mask: np.ndarray | None = None, **extra: Any) -> dict[str, Any]:
        if self.scale != 1.0:
            h, w = image.shape[:2]
            size = (max(1, round(w * self.scale)), max(1, round(h * self.scale)))
            # INTER_AREA anti-aliases a downscale; linear for the (unusual) upscale.
            interp = cv2.INTER_AREA if self.scale < 1.0 else cv2.INTER_LINEAR
            image = cv2.resize(image, size, interpolation=interp)
        out = {"image": image, **extra}
        if mask is not None:
            out["mask"] = mask
        return out

    def __repr__(self) -> str:
        return f"EvalTransform(scale={self.scale})"


def build_segmentation_transform(
    train: bool = True,
    crop: int | Sequence[int] = (512, 1024),
    scale: Sequence[float] = (0.5, 2.0),
    photometric: bool = False,
    eval_scale: float = 1.0,
    *,
    hflip: float = 0.5,
    ignore_index: int = IGNORE_INDEX,
    seed: int | None = None,
) -> A.Compose | EvalTransform:
    """Build the segmentation pipeline.

    Args:
        train: training augmentation (True) or evaluation transform (False).
        crop: training crop, ``(H, W)`` or one int for a square crop. Output is exactly this size.
        scale: ``(min, max)`` random rescale factor, sampled uniformly; ``(1, 1)`` disables it.
        photometric: add colour jitter (brightness / contrast / saturation / hue) with p = 0.8.
        eval_scale: evaluation only: image scale factor (mask stays full resolution).
        hflip: probability of a horizontal flip.
        ignore_index: mask value for padded pixels.
        seed: albumentations' own RNG seed (the dataset reseeds per DataLoader worker anyway).

    Returns:
        A callable ``t(image=uint8 [H, W, 3], mask=uint8 [H, W]) -> {"image", "mask"}``.
    """
    if not train:
        return EvalTransform(eval_scale)
    ch, cw = _pair(crop)
    lo, hi = float(scale[0]), float(scale[1])
    if not 0 < lo <= hi:
        raise ValueError(f"scale must be (min, max) with 0 < min <= max, got {scale}")
    ops: list[Any] = []
    if (lo, hi) != (1.0, 1.0):
        # RandomScale samples uniformly from (1 + low, 1 + high).
        ops.append(
            A.RandomScale(
                scale_limit=(lo - 1.0, hi - 1.0),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                p=1.0,
            )
        )
    ops += [
        A.PadIfNeeded(
            min_height=ch,
            min_width=cw,
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=ignore_index,
        ),
        A.RandomCrop(height=ch, width=cw),
    ]
    if hflip > 0:
        ops.append(A.HorizontalFlip(p=hflip))
    if photometric:
        ops.append(A.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.25, hue=0.05, p=0.8))
    return A.Compose(ops, seed=seed)


def upsample_logits(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinearly resize logits [N, K, h, w] to [N, K, H, W] for ``size = (H, W)``.

    Used when the image was evaluated downscaled: the official metric is at full label
    resolution, so logits (not labels) are interpolated and the argmax taken afterwards.
    """
    size = (int(size[-2]), int(size[-1]))
    if tuple(logits.shape[-2:]) == size:
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
