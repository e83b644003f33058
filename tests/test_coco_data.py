"""COCO-format data set, collate and detection transforms, on real files written in tmp_path."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from dense.data.coco import CocoAnnotationError, CocoDetection, ImageReadError, collate_detection, load_rgb
from dense.data.det_transforms import MEAN_FILL, RandomIoUCrop, RandomZoomOut, build_detection_transform
from dense.data.shapes_coco import generate_shapes_coco


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def write_coco(
    root: Path,
    images: list[dict[str, Any]],
    annotations: list[dict[str, Any]],
    categories: list[dict[str, Any]],
    *,
    write_images: bool = True,
) -> tuple[Path, Path]:
    """Write an annotation file and (random) JPEG images of the declared sizes."""
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    if write_images:
        for im in images:
            arr = rng.integers(0, 256, size=(im["height"], im["width"], 3), dtype=np.uint8)
            Image.fromarray(arr).save(img_dir / im["file_name"])
    ann_file = root / "instances.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return img_dir, ann_file


def ann(i: int, image_id: int, cat: int, bbox: list[float], crowd: int = 0) -> dict[str, Any]:
    return {
        "id": i,
        "image_id": image_id,
        "category_id": cat,
        "bbox": bbox,
        "area": bbox[2] * bbox[3],
        "iscrowd": crowd,
        "segmentation": [] if not crowd else {"counts": [0], "size": [1, 1]},
    }


CATS = [{"id": 0, "name": "zero"}, {"id": 5, "name": "five"}, {"id": 9, "name": "nine"}]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate_shapes_coco(tmp_path_factory.mktemp("shapes"), num_train=24, num_val=10, image_size=128)


# --------------------------------------------------------------------------------------------------
# data set
# --------------------------------------------------------------------------------------------------
def test_shapes_dataset_samples(shapes: dict[str, Path]) -> None:
    raw = json.loads(shapes["train_annotations"].read_text())
    ds = CocoDetection(
        shapes["train_images"],
        shapes["train_annotations"],
        transform=build_detection_transform("ssdlite", 96, train=True),
    )
    assert len(ds) == len(raw["images"])
    cat_ids = sorted(c["id"] for c in raw["categories"])
    assert ds.cat_ids == cat_ids and ds.num_classes == len(cat_ids) + 1
    assert ds.label_to_cat_id == {i + 1: c for i, c in enumerate(cat_ids)}
    assert ds.class_names[0] == "__background__" and len(ds.class_names) == ds.num_classes
    assert ds.num_crowd == sum(a["iscrowd"] for a in raw["annotations"]) > 0
    for i in range(len(ds)):
        s = ds[i]
        img, t = s["image"], s["target"]
        assert img.shape == (3, 96, 96) and img.dtype == torch.float32
        assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0
        assert t["boxes"].dtype == torch.float32 and t["boxes"].shape[1] == 4
        assert t["labels"].dtype == torch.int64 and len(t["labels"]) == len(t["boxes"])
        assert ((t["labels"] >= 1) & (t["labels"] < ds.num_classes)).all()
        b = t["boxes"]
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= 96).all() and (b[:, 2] > b[:, 0]).all()
        assert t["orig_size"] == (128, 128) and t["image_id"] == ds.image_ids[i]
    images, targets = collate_detection([ds[0], None, ds[1]])
    assert images.shape == (2, 3, 96, 96) and len(targets) == 2


def test_eval_targets_exclude_crowd_and_keep_empty(shapes: dict[str, Path]) -> None:
    raw = json.loads(shapes["val_annotations"].read_text())
    ds = CocoDetection(
        shapes["val_images"],
        shapes["val_annotations"],
        train=False,
        transform=build_detection_transform("ssdlite", 64, train=False),
    )
    assert len(ds) == len(raw["images"])  # eval keeps every image, empty ones included
    for i in range(len(ds)):
        t = ds[i]["target"]
        gt = [a for a in raw["annotations"] if a["image_id"] == t["image_id"] and not a["iscrowd"]]
        assert len(t["boxes"]) == len(gt)
        expected = (
            torch.tensor(
                [
                    [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                    for a in gt
                ]
            ).reshape(-1, 4)
            * 0.5
        )
        assert torch.allclose(t["boxes"], expected, atol=1e-3)  # eval = resize only: exact scaling
        labels = [ds.cat_id_to_label[a["category_id"]] for a in gt]
        assert t["labels"].tolist() == labels


def test_label_mapping_non_contiguous_from_zero(tmp_path: Path) -> None:
    images = [
        {"id": 10, "file_name": "a.jpg", "width": 50, "height": 40},
        {"id": 11, "file_name": "b.jpg", "width": 50, "height": 40},
    ]
    anns = [
        ann(1, 10, 9, [1, 2, 10, 10]),
        ann(2, 10, 0, [5, 5, 20, 20]),
        ann(3, 10, 5, [0, 0, 30, 30], crowd=1),
    ]
    img_dir, f = write_coco(tmp_path, images, anns, CATS)
    ds = CocoDetection(img_dir, f)
    assert ds.cat_id_to_label == {0: 1, 5: 2, 9: 3}
    assert ds.label_to_cat_id == {1: 0, 2: 5, 3: 9}
    assert ds.class_names == ["__background__", "zero", "five", "nine"]
    t = ds[0]["target"]
    assert t["labels"].tolist() == [3, 1]  # crowd box (category 5) left out
    assert t["boxes"].tolist() == [[1, 2, 11, 12], [5, 5, 25, 25]]
    assert ds[0]["image"].shape == (3, 40, 50)
    assert len(ds) == 2  # keep_empty defaults to True
    assert len(CocoDetection(img_dir, f, keep_empty=False)) == 1
    assert len(CocoDetection(img_dir, f, keep_empty=False, train=False)) == 2  # eval keeps all


def test_unknown_image_or_category_is_a_load_error(tmp_path: Path) -> None:
    images = [{"id": 1, "file_name": "a.jpg", "width": 20, "height": 20}]
    img_dir, f = write_coco(tmp_path, images, [ann(7, 1, 5, [0, 0, 5, 5]), ann(8, 99, 5, [0, 0, 5, 5])], CATS)
    with pytest.raises(CocoAnnotationError, match=r"image id.*annotation ids \[8\]") as e:
        CocoDetection(img_dir, f)
    assert str(f) in str(e.value)
    img_dir, f = write_coco(
        tmp_path,
        images,
        [ann(7, 1, 4, [0, 0, 5, 5]), ann(8, 1, 5, [0, 0, 5, 5]), ann(12, 1, 77, [0, 0, 5, 5])],
        CATS,
    )
    with pytest.raises(CocoAnnotationError, match=r"category id.*annotation ids \[7, 12\]") as e:
        CocoDetection(img_dir, f)
    assert str(f) in str(e.value)


def test_degenerate_boxes_are_clipped_dropped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    images = [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}]
    anns = [
        ann(1, 1, 5, [-10, -10, 30, 40]),  # clipped to [0, 0, 20, 30]
        ann(2, 1, 5, [90, 70, 50, 50]),  # clipped to [90, 70, 100, 80]
        ann(3, 1, 5, [150, 10, 20, 20]),  # entirely outside -> degenerate
        ann(4, 1, 5, [10, 10, 0.5, 20]),  # too thin
        ann(5, 1, 5, [99.5, 10, 20, 20]),  # 0.5 px wide after clipping
    ]
    img_dir, f = write_coco(tmp_path, images, anns, CATS)
    with caplog.at_level(logging.WARNING, logger="dense.data.coco"):
        ds = CocoDetection(img_dir, f)
    assert ds.num_degenerate_boxes == 3 and ds.degenerate_annotation_ids == [3, 4, 5]
    assert "dropped 3 box(es)" in caplog.text and "[3, 4, 5]" in caplog.text
    assert ds[0]["target"]["boxes"].tolist() == [[0, 0, 20, 30], [90, 70, 100, 80]]


def _two_image_set(tmp_path: Path) -> tuple[Path, Path]:
    images = [
        {"id": 1, "file_name": "ok.jpg", "width": 32, "height": 32},
        {"id": 2, "file_name": "gone.jpg", "width": 32, "height": 32},
        {"id": 3, "file_name": "broken.jpg", "width": 32, "height": 32},
        {"id": 4, "file_name": "wrong_size.jpg", "width": 32, "height": 32},
    ]
    anns = [ann(i, i, 5, [2, 2, 10, 10]) for i in range(1, 5)]
    img_dir, f = write_coco(tmp_path, images, anns, CATS)
    (img_dir / "gone.jpg").unlink()
    data = (img_dir / "broken.jpg").read_bytes()
    (img_dir / "broken.jpg").write_bytes(data[: len(data) // 3])  # truncated JPEG
    Image.new("RGB", (20, 32)).save(img_dir / "wrong_size.jpg")
    return img_dir, f


def test_unreadable_images_train_skips_eval_raises(tmp_path: Path) -> None:
    img_dir, f = _two_image_set(tmp_path)
    ds = CocoDetection(img_dir, f, train=True)
    samples = [ds[i] for i in range(len(ds))]
    assert samples[0] is not None and samples[1:] == [None, None, None]
    assert ds.skipped_files() == ["broken.jpg", "gone.jpg", "wrong_size.jpg"]
    images, targets = collate_detection(samples)
    assert images.shape == (1, 3, 32, 32) and [t["image_id"] for t in targets] == [1]
    assert collate_detection([None, None]) is None
    ds.reset_skipped()
    assert ds.skipped_files() == []

    ev = CocoDetection(img_dir, f, train=False)
    with pytest.raises(ImageReadError, match="gone.jpg"):
        ev[1]
    with pytest.raises(ImageReadError, match="broken.jpg"):
        ev[2]
    with pytest.raises(ImageReadError, match="wrong_size.jpg.*20x32"):
        ev[3]


def test_skipped_files_are_collected_from_dataloader_workers(tmp_path: Path) -> None:
    img_dir, f = _two_image_set(tmp_path)
    ds = CocoDetection(img_dir, f, train=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_detection)
    batches = list(loader)
    kept = [t["image_id"] for b in batches if b is not None for t in b[1]]
    assert kept == [1]
    assert ds.skipped_files() == ["broken.jpg", "gone.jpg", "wrong_size.jpg"]


def test_image_modes_become_8bit_rgb(tmp_path: Path) -> None:
    gray = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (6, 1))  # [6, 25]
    rgb = np.stack([gray, 255 - gray, np.full_like(gray, 7)], axis=2)
    Image.fromarray(gray, "L").save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full_like(gray, 3)]), "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(tmp_path / "pal.png")
    g16 = gray.astype(np.uint16) * 257  # 16-bit range
    Image.fromarray(g16).save(tmp_path / "gray16.png")
    cv2.imwrite(str(tmp_path / "rgb16.png"), (rgb.astype(np.uint16) * 257)[..., ::-1])  # 16-bit RGB PNG
    Image.fromarray(gray > 100).save(tmp_path / "bilevel.png")

    expect_gray = np.repeat(gray[..., None], 3, axis=2)
    assert np.array_equal(load_rgb(tmp_path / "gray.png"), expect_gray)
    assert np.array_equal(load_rgb(tmp_path / "rgba.png"), rgb)  # alpha dropped, colour as stored
    assert np.array_equal(load_rgb(tmp_path / "pal.png"), rgb)  # < 256 colours: exact palette
    assert np.array_equal(load_rgb(tmp_path / "gray16.png"), expect_gray)
    assert np.array_equal(load_rgb(tmp_path / "rgb16.png"), rgb)
    assert np.array_equal(
        load_rgb(tmp_path / "bilevel.png"),
        np.repeat(((gray > 100) * 255).astype(np.uint8)[..., None], 3, axis=2),
    )
    for name in ("gray.png", "rgba.png", "pal.png", "gray16.png", "rgb16.png", "bilevel.png"):
        out = load_rgb(tmp_path / name)
        assert out.dtype == np.uint8 and out.shape == (6, 25, 3), name

    # ... and through the data set (with a 16-bit file in the annotation file)
    (tmp_path / "images").mkdir()
    for name in ("gray16.png", "rgba.png", "pal.png"):
        (tmp_path / "images" / name).write_bytes((tmp_path / name).read_bytes())
    images = [
        {"id": i, "file_name": n, "width": 25, "height": 6}
        for i, n in enumerate(["gray16.png", "rgba.png", "pal.png"])
    ]
    img_dir, f = write_coco(tmp_path, images, [], CATS, write_images=False)
    ds = CocoDetection(img_dir, f, train=False)
    assert torch.allclose(ds[0]["image"], torch.from_numpy(expect_gray).permute(2, 0, 1).float() / 255)
    assert ds[1]["image"].shape == (3, 6, 25)


def test_exif_orientation_is_not_applied(tmp_path: Path) -> None:
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(arr).save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    with Image.open(tmp_path / "rot.jpg") as im:
        assert im.getexif().get(0x0112) == 6
    out = load_rgb(tmp_path / "rot.jpg")
    assert out.shape == (20, 40, 3)  # stored grid, not the rotated 40x20 display
    assert out[:, :15].mean() > 200 and out[:, 25:].mean() < 50


# --------------------------------------------------------------------------------------------------
# transforms
# --------------------------------------------------------------------------------------------------
def _coord_image(h: int, w: int) -> np.ndarray:
    """Pixel (y, x) holds (x, y, 0): where a crop / pad came from can be read off the output."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx, yy, np.zeros_like(xx)], axis=2).astype(np.uint8)


def test_random_iou_crop_semantics() -> None:
    h, w = 200, 240
    boxes = np.array(
        [[10, 10, 60, 50], [100, 80, 220, 190], [150, 20, 170, 60], [0, 150, 40, 200]], np.float32
    )
    labels = np.arange(1, 5)
    t = A.Compose(
        [RandomIoUCrop(sampler_options=(0.0, 0.3, 0.5))],
        bbox_params=A.BboxParams(
            format="pascal_voc",
            label_fields=["labels"],
            clip=True,
            filter_invalid_bboxes=True,
            min_width=1,
            min_height=1,
        ),
        seed=0,
    )
    image = _coord_image(h, w)
    cropped = 0
    for _ in range(60):
        out = t(image=image, bboxes=boxes, labels=labels)
        img = out["image"]
        ch, cw = img.shape[:2]
        left, top = int(img[0, 0, 0]), int(img[0, 0, 1])
        if (ch, cw) == (h, w):
            continue
        cropped += 1
        assert 0.3 * h - 1 <= ch <= h and 0.3 * w - 1 <= cw <= w
        assert 0.5 <= cw / ch <= 2.0
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        inside = (left < cx) & (cx < left + cw) & (top < cy) & (cy < top + ch)
        assert out["labels"].tolist() == labels[inside].tolist()  # centre rule, not visibility
        exp = np.clip(boxes[inside] - [left, top, left, top], 0, [cw, ch, cw, ch])
        np.testing.assert_allclose(out["bboxes"], exp, atol=1e-3)
    assert cropped > 30


def test_random_iou_crop_min_iou_and_no_crop_option() -> None:
    boxes = np.array([[50, 50, 150, 150], [0, 0, 20, 20]], np.float64)
    crop_t = RandomIoUCrop(sampler_options=(0.7,))
    crop_t.set_random_seed(1)
    for _ in range(50):
        left, top, right, bottom = crop_t._sample_crop(boxes, 200, 200)
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        inside = (left < cx) & (cx < right) & (top < cy) & (cy < bottom)
        b = boxes[inside]
        iw = np.clip(np.minimum(b[:, 2], right) - np.maximum(b[:, 0], left), 0, None)
        ih = np.clip(np.minimum(b[:, 3], bottom) - np.maximum(b[:, 1], top), 0, None)
        union = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) + (right - left) * (bottom - top) - iw * ih
        assert (iw * ih / union).max() >= 0.7
    assert RandomIoUCrop(sampler_options=(1.0,))._sample_crop(boxes, 200, 200) is None


def test_random_zoom_out_semantics() -> None:
    h, w = 50, 60
    boxes = np.array([[5, 5, 25, 30], [30, 10, 60, 50]], np.float32)
    t = A.Compose(
        [RandomZoomOut(p=1.0)], bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"]), seed=0
    )
    image = _coord_image(h, w) + 1  # so the fill can be told from the image
    ratios = []
    for _ in range(30):
        out = t(image=image, bboxes=boxes, labels=[1, 2])
        img = out["image"]
        ch, cw = img.shape[:2]
        ratios.append(cw / w)
        assert int(w * 1.0) <= cw <= int(w * 4.0) and int(h * 1.0) <= ch <= int(h * 4.0)
        ys, xs = np.nonzero((img != MEAN_FILL).any(axis=2))
        top, left = ys.min(), xs.min()
        assert (img[top, left] == [1, 1, 1]).all() and img[ys.max(), xs.max()].tolist() == [w, h, 1]
        np.testing.assert_allclose(out["bboxes"], boxes + [left, top, left, top], atol=1e-3)
    assert min(ratios) < 2 and max(ratios) > 3


@pytest.mark.parametrize("preset", ["ssdlite", "ssd", "flip"])
def test_presets_output(preset: str) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 40, 50], [60, 20, 110, 80], [0, 0, 120, 90]], np.float32)
    t = build_detection_transform(preset, 64, train=True)
    for _ in range(20):
        out = t(image=image, bboxes=boxes, labels=np.array([1, 2, 3]))
        assert out["image"].shape == (3, 64, 64) and out["image"].dtype == torch.float32
        assert 0 <= float(out["image"].min()) and float(out["image"].max()) <= 1
        b = np.asarray(out["bboxes"]).reshape(-1, 4)
        assert len(b) == len(out["labels"]) and (b >= 0).all() and (b <= 64).all()
        assert ((b[:, 2] - b[:, 0]) >= 1).all() and ((b[:, 3] - b[:, 1]) >= 1).all()
    empty = t(image=image, bboxes=np.zeros((0, 4), np.float32), labels=np.zeros(0, np.int64))
    assert empty["image"].shape == (3, 64, 64) and len(empty["bboxes"]) == 0
    with pytest.raises(ValueError, match="unknown detection transform preset"):
        build_detection_transform("yolo")


def test_flip_preset_only_mirrors() -> None:
    # "flip": every box survives, scaled to the output, either in place or mirrored; both happen
    image = np.zeros((90, 120, 3), np.uint8)
    image[10:50, 10:40] = 255
    boxes = np.array([[10, 10, 40, 50], [60, 20, 110, 80]], np.float32)
    scale = np.array([60 / 120, 45 / 90] * 2, np.float32)
    plain, mirrored = boxes * scale, (boxes[:, [2, 1, 0, 3]] * [-1, 1, -1, 1] + [120, 0, 120, 0]) * scale
    t = build_detection_transform("flip", (45, 60), train=True)
    seen = set()
    for _ in range(30):
        out = t(image=image, bboxes=boxes, labels=np.array([1, 2]))
        b = np.asarray(out["bboxes"], np.float32)
        assert out["image"].shape == (3, 45, 60) and list(out["labels"]) == [1, 2]
        flipped = bool(np.allclose(b, mirrored, atol=1e-3))
        assert flipped or np.allclose(b, plain, atol=1e-3)
        # the white patch moves with its box
        x0, y0, x1, y1 = b[0].round().astype(int)
        assert float(out["image"][0, y0 + 2 : y1 - 2, x0 + 2 : x1 - 2].min()) > 0.9
        seen.add(flipped)
    assert seen == {True, False}
