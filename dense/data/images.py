"""Image files as the data sets read them: 8-bit RGB from any colour mode, and a header probe.

Both data sets (COCO, Cityscapes) read images here, so a colour mode is converted the same way
everywhere and a scan counts the same kinds of problems: pixels are used as stored (no EXIF
rotation); grayscale, RGBA, palette, CMYK and 16-bit images become 8-bit RGB.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from dense.errors import UserError

__all__ = ["EMPTY", "NOT_FOUND", "UNREADABLE", "ImageHeader", "ImageReadError", "load_rgb", "probe_image"]

# Kinds of unreadable files, as a scan report names them.
NOT_FOUND = "image files not found"
EMPTY = "empty (zero-byte) image files"
UNREADABLE = "unreadable image files"

# What PIL raises on a file it cannot decode (truncated data, not an image, bad header fields).
_DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError)


class ImageReadError(UserError, OSError):
    """An image file is missing or cannot be decoded (message names the file).

    ``problem`` is the kind (:data:`NOT_FOUND`, :data:`EMPTY`, :data:`UNREADABLE`), ``detail`` the
    decoder's own message.
    """

    def __init__(self, message: str, problem: str = UNREADABLE, detail: str = "") -> None:
        super().__init__(message)
        self.problem = problem
        self.detail = detail or message


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image as stored (no EXIF rotation) and return uint8 RGB ``[H, W, 3]``.

    Grayscale (``L``, ``1``), grayscale + alpha, RGBA (alpha dropped, colour as stored), palette,
    CMYK and 16-bit / 32-bit integer or float images are converted to 8-bit RGB; 16-bit values are
    scaled by 255 / 65535 (so the full 16-bit range maps to the full 8-bit range).

    Raises:
        ImageReadError: the file is missing or cannot be decoded (truncated, empty, not an image).
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()  # decode now, so truncated files fail here and not later
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                # 16-bit grayscale (PNG 16-bit opens as I;16 or I depending on Pillow).
                arr = np.asarray(im).astype(np.float64)
                arr = np.clip(arr, 0, 65535) * (255.0 / 65535.0)
                gray = np.rint(arr).astype(np.uint8)
                return np.repeat(gray[..., None], 3, axis=2)
            if mode == "F":
                arr = np.asarray(im, dtype=np.float64)
                if np.nanmax(arr, initial=0.0) <= 1.0:  # float images in [0, 1]
                    arr = arr * 255.0
                gray = np.rint(np.clip(np.nan_to_num(arr), 0, 255)).astype(np.uint8)
                return np.repeat(gray[..., None], 3, axis=2)
            if mode == "P" and "transparency" in im.info:
                im = im.convert("RGBA")  # Pillow wants palette transparency resolved via RGBA
            rgb = im if im.mode == "RGB" else im.convert("RGB")
            return np.asarray(rgb, dtype=np.uint8).copy()
    except FileNotFoundError as e:
        raise ImageReadError(f"image file not found: {path}", NOT_FOUND, "file not found") from e
    except _DECODE_ERRORS as e:
        problem = EMPTY if path.is_file() and path.stat().st_size == 0 else UNREADABLE
        raise ImageReadError(f"cannot read image {path}: {e}", problem, str(e)) from e


@dataclass(frozen=True)
class ImageHeader:
    """What a scan needs of a file: ``size`` (w, h), PIL ``mode``, ``format`` (by content) and the
    EXIF ``orientation`` tag (1 or None: none)."""

    size: tuple[int, int]
    mode: str
    format: str | None
    orientation: int | None


def probe_image(path: str | os.PathLike, *, decode: bool = False) -> ImageHeader:
    """Read the header of an image file (``decode``: every pixel too, which finds truncated files).

    Raises:
        ImageReadError: missing, empty or undecodable, with ``problem`` saying which.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image file not found: {path}", NOT_FOUND, "file not found")
    if path.stat().st_size == 0:
        raise ImageReadError(f"empty (zero-byte) image file: {path}", EMPTY, "empty (zero-byte) file")
    try:
        with Image.open(path) as im:
            # Pillow decodes a whole PNG to look for an eXIf chunk after the pixels: only a chunk
            # before them (already in im.info) is read, so a header scan stays cheap.
            exif = im.getexif() if im.format != "PNG" or "exif" in im.info else {}
            header = ImageHeader(im.size, im.mode, im.format, exif.get(0x0112, 1))
            if decode:
                im.load()
    except _DECODE_ERRORS as e:
        raise ImageReadError(f"cannot read image {path}: {e}", UNREADABLE, str(e)) from e
    return header
