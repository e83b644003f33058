"""Reading and resizing pictures for the runners, with the libraries training used (Pillow to read,
OpenCV to resize, as albumentations does), so a runner sees the pixels the evaluation saw."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["as_rgb", "read_image", "resize_image"]


def read_image(path: str | os.PathLike) -> np.ndarray:
    """[H, W, 3] uint8 RGB of an image file (any mode Pillow reads, converted to RGB)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path}: not a readable image: {e}") from e


def as_rgb(image: str | os.PathLike | np.ndarray) -> np.ndarray:
    """A file path or an [H, W, 3] uint8 RGB array -> the array (checked)."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise ValueError(f"expected an [H, W, 3] uint8 RGB image, got {a.dtype} {list(a.shape)}")
    return a


def resize_image(image: np.ndarray, size: tuple[int, int], *, area_down: bool = False) -> np.ndarray:
    """Resize [H, W, C] to `size` (H, W): cv2 INTER_LINEAR (albumentations' `A.Resize`, the detection
    eval pipeline); with `area_down`, INTER_AREA when shrinking (the segmentation EvalTransform)."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    shrink = h < image.shape[0] or w < image.shape[1]
    interp = cv2.INTER_AREA if area_down and shrink else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interp)
