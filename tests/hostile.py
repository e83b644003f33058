"""Generators of broken data sets for the reliability tests: real files written to a folder.

Each image breaker writes one hostile image file into a small, otherwise valid COCO-format set;
each annotation breaker edits the instances dict; the Cityscapes breakers damage one file of a
small Cityscapes-layout set. Everything is small (tens of pixels) except the one huge image.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dense.data.cityscapes import label_ids_to_train_ids, train_ids_to_label_ids

H, W = 48, 64  # every regular image
CATEGORIES = [{"id": 3, "name": "square"}, {"id": 7, "name": "disc"}]


def _rgb(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def coco_set(root: Path, n: int = 6, *, split: str = "train") -> tuple[Path, Path, dict[str, Any]]:
    """A valid COCO set: `n` JPEGs of W x H with two boxes each. Returns (image dir, ann file, dict)."""
    img_dir = root / split
    img_dir.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(1, n + 1):
        name = f"{i:04d}.jpg"
        Image.fromarray(_rgb(i)).save(img_dir / name, quality=95)
        images.append({"id": i, "file_name": name, "width": W, "height": H})
        anns.append(_ann(2 * i - 1, i, 3, [4.0, 6.0, 20.0, 16.0]))
        anns.append(_ann(2 * i, i, 7, [30.0, 20.0, 24.0, 20.0]))
    data = {"images": images, "annotations": anns, "categories": [dict(c) for c in CATEGORIES]}
    ann_file = write_json(root / "annotations" / f"{split}.json", data)
    return img_dir, ann_file, data


def _ann(i: int, image_id: int, cat: int, bbox: list[float], crowd: int = 0) -> dict[str, Any]:
    return {
        "id": i,
        "image_id": image_id,
        "category_id": cat,
        "bbox": bbox,
        "area": bbox[2] * bbox[3] if all(isinstance(v, (int, float)) for v in bbox) else 0.0,
        "iscrowd": crowd,
        "segmentation": [],
    }


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))  # allow_nan: NaN is written as the (non-standard) NaN literal
    return path


# ------------------------------------------------------------------------------------ image files
# Each: (image dir, entry of the image in the annotation dict) -> what the loader should return,
# as HWC uint8 RGB (None: the image is unreadable). They rewrite the file named by the entry, and
# may rename it (the entry's file_name is updated).


def truncated_jpeg(d: Path, im: dict[str, Any]) -> None:
    path = d / im["file_name"]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def zero_byte(d: Path, im: dict[str, Any]) -> None:
    (d / im["file_name"]).write_bytes(b"")


def missing(d: Path, im: dict[str, Any]) -> None:
    (d / im["file_name"]).unlink()


def png_named_jpg(d: Path, im: dict[str, Any]) -> np.ndarray:
    arr = _rgb(101)
    Image.fromarray(arr).save(d / im["file_name"], format="PNG")
    return arr


def grayscale(d: Path, im: dict[str, Any]) -> np.ndarray:
    gray = _rgb(102)[..., 0]
    im["file_name"] = im["file_name"].replace(".jpg", "_gray.png")
    Image.fromarray(gray, "L").save(d / im["file_name"])
    return np.repeat(gray[..., None], 3, axis=2)


def rgba(d: Path, im: dict[str, Any]) -> np.ndarray:
    arr = np.concatenate([_rgb(103), np.full((H, W, 1), 7, np.uint8)], axis=2)  # nearly transparent
    im["file_name"] = im["file_name"].replace(".jpg", "_rgba.png")
    Image.fromarray(arr, "RGBA").save(d / im["file_name"])
    return arr[..., :3]  # colour as stored, alpha dropped


def png16(d: Path, im: dict[str, Any]) -> np.ndarray:
    arr = np.random.default_rng(104).integers(0, 65536, (H, W), dtype=np.uint16)
    im["file_name"] = im["file_name"].replace(".jpg", "_16bit.png")
    Image.fromarray(arr).save(d / im["file_name"])
    gray = np.rint(arr.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def cmyk_jpeg(d: Path, im: dict[str, Any]) -> np.ndarray:
    Image.fromarray(_rgb(105)).convert("CMYK").save(d / im["file_name"], quality=95)
    with Image.open(d / im["file_name"]) as f:  # the reference: PIL's own CMYK -> RGB
        return np.asarray(f.convert("RGB"))


EXIF_ROTATE_90 = 6  # EXIF Orientation 6: the viewer turns the stored pixels 90 degrees clockwise


def exif_rotated(d: Path, im: dict[str, Any]) -> np.ndarray:
    """Stored W x H with an orientation tag; the boxes of the entry refer to the stored pixels."""
    arr = _rgb(106)
    exif = Image.Exif()
    exif[0x0112] = EXIF_ROTATE_90
    Image.fromarray(arr).save(d / im["file_name"], exif=exif, quality=100, subsampling=0)
    with Image.open(d / im["file_name"]) as f:
        return np.asarray(f.convert("RGB"))  # as stored, not transposed


def huge(d: Path, im: dict[str, Any]) -> np.ndarray:
    arr = np.zeros((6000, 8000, 3), np.uint8)
    arr[..., 1] = 200  # flat colour: fast to encode, exact after JPEG
    Image.fromarray(arr).save(d / im["file_name"], quality=95)
    im.update(width=8000, height=6000)
    with Image.open(d / im["file_name"]) as f:
        return np.asarray(f.convert("RGB"))


def tiny(d: Path, im: dict[str, Any]) -> np.ndarray:
    arr = _rgb(107, 8, 8)
    im["file_name"] = im["file_name"].replace(".jpg", "_tiny.png")
    Image.fromarray(arr).save(d / im["file_name"])
    im.update(width=8, height=8)  # its boxes are clipped to the 8 x 8 image
    return arr


def wrong_size(d: Path, im: dict[str, Any]) -> None:
    Image.fromarray(_rgb(108, H, W + 10)).save(d / im["file_name"])


IMAGE_BREAKERS: list[Callable[[Path, dict[str, Any]], np.ndarray | None]] = [
    truncated_jpeg,
    zero_byte,
    missing,
    png_named_jpg,
    grayscale,
    rgba,
    png16,
    cmyk_jpeg,
    exif_rotated,
    huge,
    tiny,
    wrong_size,
]
UNREADABLE = {"truncated_jpeg", "zero_byte", "missing", "wrong_size"}


def hostile_images(root: Path, breakers=IMAGE_BREAKERS, *, split: str = "train") -> tuple[Path, Path, dict]:
    """A COCO set with one image per breaker (in order, image ids 1..) and one intact image last.
    Returns (image dir, ann file, {breaker name: (image id, expected RGB array or None)})."""
    img_dir, _, data = coco_set(root, len(breakers) + 1, split=split)
    expected = {}
    for brk, im in zip(breakers, data["images"]):
        expected[brk.__name__] = (im["id"], brk(img_dir, im))
    ann_file = write_json(root / "annotations" / f"{split}.json", data)
    return img_dir, ann_file, expected


# ------------------------------------------------------------------------------ annotation files
# Each edits the dict of `coco_set` in place.


def unknown_image_id(d: dict) -> None:
    d["annotations"][0]["image_id"] = 999


def unknown_category_id(d: dict) -> None:
    d["annotations"][1]["category_id"] = 42
    d["annotations"][3]["category_id"] = 42


def negative_size(d: dict) -> None:
    d["annotations"][0]["bbox"] = [10.0, 10.0, -5.0, 8.0]


def zero_size(d: dict) -> None:
    d["annotations"][0]["bbox"] = [10.0, 10.0, 0.0, 8.0]


def outside_image(d: dict) -> None:
    d["annotations"][0]["bbox"] = [W + 5.0, 2.0, 10.0, 10.0]  # entirely outside
    d["annotations"][1]["bbox"] = [W - 10.0, H - 10.0, 30.0, 30.0]  # partly outside: clipped


def nan_in_bbox(d: dict) -> None:
    d["annotations"][0]["bbox"] = [math.nan, 1.0, 5.0, 5.0]


def string_in_bbox(d: dict) -> None:
    d["annotations"][2]["bbox"] = ["10", 1.0, 5.0, 5.0]


def duplicate_annotation_ids(d: dict) -> None:
    d["annotations"][1]["id"] = d["annotations"][0]["id"]


def duplicate_image_ids(d: dict) -> None:
    d["images"][1]["id"] = d["images"][0]["id"]


def size_disagrees(d: dict) -> None:
    d["images"][0]["width"] = W + 16


def no_categories(d: dict) -> None:
    del d["categories"]


def category_zero(d: dict) -> None:
    for c in d["categories"]:
        if c["id"] == 3:
            c["id"] = 0
    for a in d["annotations"]:
        if a["category_id"] == 3:
            a["category_id"] = 0


def crowd_rle(d: dict) -> None:
    """An iscrowd region with an uncompressed RLE mask over the whole first image."""
    a = d["annotations"][0]
    a.update(iscrowd=1, bbox=[0.0, 0.0, float(W), float(H)], area=float(W * H))
    a["segmentation"] = {"counts": [0, W * H], "size": [H, W]}


def empty_annotations(d: dict) -> None:
    d["annotations"] = []


# ------------------------------------------------------------------------------------- Cityscapes
CS_H, CS_W = 16, 32
CS_STEMS = ("aachen_000000_000019", "aachen_000001_000019", "bochum_000000_000019", "bochum_000001_000019")


def cs_paths(root: Path, stem: str, split: str = "train") -> tuple[Path, Path]:
    city = stem.split("_")[0]
    return (
        root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
        root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png",
    )


def cs_label(k: int) -> np.ndarray:
    """labelIds like a street: road 7, sidewalk 8, building 11, vegetation 21, sky 23, car 26."""
    lab = np.full((CS_H, CS_W), 7, np.uint8)
    lab[: CS_H // 4] = 23
    lab[CS_H // 4 : CS_H // 2, : CS_W // 2] = 11
    lab[CS_H // 4 : CS_H // 2, CS_W // 2 :] = 21
    lab[CS_H // 2 :, : 4 + k] = 8
    lab[-4:, 10:20] = 26
    return lab


def cs_stems(n: int = len(CS_STEMS)) -> list[str]:
    """`CS_STEMS`, then `cologne_<k>_000019` up to `n` stems."""
    return [*CS_STEMS, *(f"cologne_{k:06d}_000019" for k in range(max(0, n - len(CS_STEMS))))][:n]


def cityscapes_set(root: Path, split: str = "train", n: int = len(CS_STEMS)) -> Path:
    """A valid Cityscapes-layout split of `n` (>= 4) image / labelIds pairs of CS_W x CS_H."""
    for k, stem in enumerate(cs_stems(n)):
        img, lab = cs_paths(root, stem, split)
        img.parent.mkdir(parents=True, exist_ok=True)
        lab.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_rgb(k, CS_H, CS_W)).save(img)
        Image.fromarray(cs_label(k), "L").save(lab)
    return root


def cs_train_ids(lab: np.ndarray) -> np.ndarray:
    """The trainIds image of labelIds `lab` (what cityscapesscripts' createTrainIdLabelImgs writes)."""
    return label_ids_to_train_ids(lab)


def cs_label_ids(train_ids: np.ndarray) -> np.ndarray:
    return train_ids_to_label_ids(train_ids)


# Cityscapes image breakers: each rewrites one *_leftImg8bit.png and returns what the loader should
# give (HWC uint8 RGB), or None for an image that training skips and evaluation refuses.
def cs_truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # header intact, pixels cut


def cs_zero_byte(path: Path) -> None:
    path.write_bytes(b"")


def cs_wrong_size(path: Path) -> None:
    Image.fromarray(_rgb(201, CS_H, CS_W + 8)).save(path)  # its label stays CS_W x CS_H


def _pil_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as f:  # the reference: PIL's own conversion
        return np.asarray(f.convert("RGB"))


def cs_grayscale(path: Path) -> np.ndarray:
    Image.fromarray(_rgb(202, CS_H, CS_W)[..., 0], "L").save(path)
    return _pil_rgb(path)


def cs_rgba(path: Path) -> np.ndarray:
    Image.fromarray(np.dstack([_rgb(203, CS_H, CS_W), np.full((CS_H, CS_W), 9, np.uint8)]), "RGBA").save(path)
    return _pil_rgb(path)  # colour as stored, alpha dropped


def cs_png16(path: Path) -> np.ndarray:
    arr = np.random.default_rng(204).integers(0, 65536, (CS_H, CS_W), dtype=np.uint16)
    Image.fromarray(arr).save(path)
    gray = np.rint(arr.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)  # full range kept
    return np.repeat(gray[..., None], 3, axis=2)


def cs_cmyk(path: Path) -> np.ndarray:
    Image.fromarray(_rgb(205, CS_H, CS_W)).convert("CMYK").save(path, format="JPEG", quality=95)
    return _pil_rgb(path)  # a CMYK JPEG named .png: read by content


CS_IMAGE_BREAKERS = [cs_truncated, cs_zero_byte, cs_wrong_size, cs_grayscale, cs_rgba, cs_png16, cs_cmyk]
CS_UNREADABLE = {"cs_truncated", "cs_zero_byte", "cs_wrong_size"}


def cs_hostile_set(
    root: Path, breakers=CS_IMAGE_BREAKERS, *, split: str = "train", n: int | None = None
) -> dict[str, tuple[Path, np.ndarray | None]]:
    """A Cityscapes split of `n` pairs (default: one per breaker and two intact ones) whose first
    images are broken, one per breaker. Returns {breaker name: (image path, expected RGB or None)}."""
    stems = cs_stems(n or len(breakers) + 2)
    cityscapes_set(root, split, len(stems))
    return {
        b.__name__: (cs_paths(root, st, split)[0], b(cs_paths(root, st, split)[0]))
        for b, st in zip(breakers, stems)
    }
