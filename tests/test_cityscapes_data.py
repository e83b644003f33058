"""Cityscapes data: label table vs cityscapesscripts, the validating dataset, augmentation presets."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from cityscapesscripts.helpers.labels import id2label, labels, name2label, trainId2label
from PIL import Image

import dense.data.cityscapes as cs
from dense.constants import IGNORE_INDEX
from dense.data.cityscapes import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_PALETTE,
    NUM_CLASSES,
    VALID_LABEL_IDS,
    CityscapesDataError,
    CityscapesSegmentation,
    colorize_train_ids,
    label_ids_to_train_ids,
    train_ids_to_label_ids,
)
from dense.data.seg_transforms import EvalTransform, build_segmentation_transform, upsample_logits

H, W = 16, 32


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the default scan cache lives in $XDG_CACHE_HOME: keep tests out of the real home
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


# ----------------------------------------------------------------------------- helpers
def _paths(root: Path, split: str, stem: str) -> tuple[Path, Path]:
    city = stem.split("_")[0]
    return (
        root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
        root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png",
    )


def write_image(root: Path, split: str, stem: str, arr: np.ndarray) -> Path:
    path = _paths(root, split, stem)[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def write_label(root: Path, split: str, stem: str, arr: np.ndarray) -> Path:
    path = _paths(root, split, stem)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


STEMS = ("aachen_000000_000019", "aachen_000001_000019", "bochum_000000_000019")


def make_dataset(root: Path, split: str = "train", labels_too: bool = True) -> dict[str, tuple]:
    """Three image / label pairs in two cities; labels use every labelId 0..33."""
    rng = np.random.default_rng(0)
    out = {}
    for k, stem in enumerate(STEMS):
        img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        lab = ((np.arange(H * W).reshape(H, W) + 7 * k) % 34).astype(np.uint8)
        write_image(root, split, stem, img)
        if labels_too:
            write_label(root, split, stem, lab)
        out[stem] = (img, lab)
    return out


# ----------------------------------------------------------------------------- label table
# The official table (cityscapesscripts/helpers/labels.py), written out so that a change on
# either side shows up: labelId -> trainId, 255 = not evaluated.
OFFICIAL = {i: 255 for i in range(34)}
OFFICIAL.update({7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10})
OFFICIAL.update({24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18})


def test_label_ids_to_train_ids_matches_cityscapesscripts() -> None:
    got = label_ids_to_train_ids(np.arange(256, dtype=np.uint8))
    for i in range(256):
        lb = id2label.get(i)
        want = lb.trainId if lb is not None and 0 <= lb.trainId < 19 else 255
        assert got[i] == want, f"labelId {i} ({lb.name if lb else 'not a label'}): {got[i]} != {want}"
        assert got[i] == OFFICIAL.get(i, 255), i
    assert got.dtype == np.uint8
    # void labels, explicitly: unlabeled .. ground, parking, rail track, guard rail, bridge, tunnel,
    # polegroup, caravan, trailer
    for name in ("unlabeled", "ego vehicle", "rectification border", "out of roi", "static", "dynamic"):
        assert got[name2label[name].id] == 255, name
    for name in ("ground", "parking", "rail track", "guard rail", "bridge", "tunnel", "polegroup"):
        assert got[name2label[name].id] == 255, name
    for name in ("caravan", "trailer"):
        assert got[name2label[name].id] == 255, name
    assert [name2label[n].id for n in ("unlabeled", "ego vehicle", "static", "dynamic")] == [0, 1, 4, 5]
    assert got[name2label["road"].id] == 0 and got[name2label["bicycle"].id] == 18
    # license plate has id -1: never in a labelIds PNG, so not a valid value
    assert name2label["license plate"].id == -1
    assert VALID_LABEL_IDS == frozenset(range(34)) == frozenset(lb.id for lb in labels if lb.id >= 0)


def test_label_ids_to_train_ids_shapes_and_wide_ints() -> None:
    a = np.array([[[7, 26], [0, 33]]], dtype=np.uint8)
    np.testing.assert_array_equal(label_ids_to_train_ids(a), [[[0, 13], [255, 18]]])
    # wider ints: out-of-range values are ignored, not wrapped (263 % 256 == 7 would be road)
    wide = np.array([7, 263, -1, 256, 26, 1000], dtype=np.int64)
    np.testing.assert_array_equal(label_ids_to_train_ids(wide), [0, 255, 255, 255, 13, 255])


def test_classes_palette_and_inverse_map() -> None:
    assert NUM_CLASSES == 19 and IGNORE_INDEX == 255
    assert CITYSCAPES_CLASSES == tuple(trainId2label[t].name for t in range(19))
    assert CITYSCAPES_CLASSES[0] == "road" and CITYSCAPES_CLASSES[-1] == "bicycle"
    np.testing.assert_array_equal(CITYSCAPES_PALETTE, [trainId2label[t].color for t in range(19)])
    assert CITYSCAPES_PALETTE.dtype == np.uint8 and CITYSCAPES_PALETTE.shape == (19, 3)

    t = np.arange(19)
    np.testing.assert_array_equal(train_ids_to_label_ids(t), [trainId2label[i].id for i in range(19)])
    np.testing.assert_array_equal(label_ids_to_train_ids(train_ids_to_label_ids(t)), t)
    # ignore and anything out of range -> 'unlabeled' (0)
    np.testing.assert_array_equal(train_ids_to_label_ids(np.array([255, -1, 19, 300])), [0, 0, 0, 0])
    assert train_ids_to_label_ids(np.array([[13]], dtype=np.int64)).dtype == np.uint8

    rgb = colorize_train_ids(np.array([[0, 255], [18, -3]]))
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0, 0], trainId2label[0].color)
    np.testing.assert_array_equal(rgb[1, 0], trainId2label[18].color)
    np.testing.assert_array_equal(rgb[0, 1], [0, 0, 0])
    np.testing.assert_array_equal(rgb[1, 1], [0, 0, 0])


# ----------------------------------------------------------------------------- dataset
def test_dataset_samples(tmp_path: Path) -> None:
    data = make_dataset(tmp_path)
    ds = CityscapesSegmentation(tmp_path, "train", cache_dir=tmp_path / "cache")
    assert len(ds) == 3 and ds.num_classes == 19 and ds.ignore_index == 255
    assert [s.name for s in ds.samples] == sorted(STEMS)
    for i, stem in enumerate(sorted(STEMS)):
        img, lab = data[stem]
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # e.g. torch's "NumPy array is not writable"
            s = ds[i]
        assert set(s) == {"image", "mask", "name", "path"}
        assert s["name"] == stem
        assert s["path"] == str(_paths(tmp_path, "train", stem)[0])
        assert s["image"].dtype == torch.float32 and s["image"].shape == (3, H, W)
        assert s["mask"].dtype == torch.int64 and s["mask"].shape == (H, W)
        torch.testing.assert_close(s["image"], torch.from_numpy(img).permute(2, 0, 1).float() / 255)
        want = np.array([OFFICIAL[v] for v in lab.ravel()]).reshape(H, W)
        np.testing.assert_array_equal(s["mask"].numpy(), want)
        assert set(np.unique(want)) == set(range(19)) | {255}


def test_loaded_arrays_are_writable(tmp_path: Path) -> None:
    # torch.from_numpy on PIL's read-only buffer warns (once per process, so a warnings check
    # alone can miss it): the arrays handed on must own writable memory.
    make_dataset(tmp_path)
    ds = CityscapesSegmentation(tmp_path, "train", cache_dir=False)
    image, mask = ds.load(0)
    assert image.flags.writeable and mask.flags.writeable
    assert image.dtype == np.uint8 and image.shape == (H, W, 3) and mask.dtype == np.uint8
    for t in (None, EvalTransform(1.0)):
        ds.transform = t
        s = ds[0]
        s["image"].mul_(2)  # no undefined behaviour: the tensor owns its memory
        s["mask"].add_(1)


def test_split_and_require_labels(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="split"):
        CityscapesSegmentation(tmp_path, "training")

    # test split: no gtFine at all, labels optional by default -> all-ignore masks
    data = make_dataset(tmp_path, "test", labels_too=False)
    ds = CityscapesSegmentation(tmp_path, "test")
    assert ds.require_labels is False and len(ds) == 3
    for i in range(3):
        s = ds[i]
        assert s["mask"].shape == (H, W) and bool((s["mask"] == 255).all())
        img = data[s["name"]][0]  # the image as written, label or not
        torch.testing.assert_close(s["image"], torch.from_numpy(img).permute(2, 0, 1).float() / 255)
    with pytest.raises(CityscapesDataError, match="label folder not found"):
        CityscapesSegmentation(tmp_path, "test", require_labels=True)

    # val with one label missing: an error by default, an all-255 mask when labels are optional
    make_dataset(tmp_path, "val")
    missing = _paths(tmp_path, "val", STEMS[1])[1]
    missing.unlink()
    with pytest.raises(CityscapesDataError, match="image has no label"):
        CityscapesSegmentation(tmp_path, "val")
    ds = CityscapesSegmentation(tmp_path, "val", require_labels=False)
    masks = {ds[i]["name"]: ds[i]["mask"] for i in range(3)}
    assert bool((masks[STEMS[1]] == 255).all())
    assert int((masks[STEMS[0]] != 255).sum()) > 0


def _value_out_of_table(root: Path) -> tuple[Path, str]:
    lab = np.full((H, W), 7, np.uint8)
    lab[0, 0], lab[3, 4] = 34, 255
    return write_label(root, "train", STEMS[1], lab), r"label values \[34, 255\] are not Cityscapes labelIds"


def _size_mismatch(root: Path) -> tuple[Path, str]:
    path = write_label(root, "train", STEMS[2], np.full((H, W - 1), 7, np.uint8))
    return path, f"label size {W - 1}x{H} differs from image size {W}x{H}"


def _image_without_label(root: Path) -> tuple[Path, str]:
    img, lab = _paths(root, "train", STEMS[0])
    lab.unlink()
    return img, "image has no label; expected .*" + lab.name


def _label_without_image(root: Path) -> tuple[Path, str]:
    img, lab = _paths(root, "train", STEMS[2])
    img.unlink()
    return lab, "label has no image; expected .*" + img.name


def _rgb_colour_label(root: Path) -> tuple[Path, str]:
    colour = CITYSCAPES_PALETTE[np.zeros((H, W), np.int64)]
    return write_label(root, "train", STEMS[0], colour), "label mode is RGB.*_gtFine_color"


def _not_a_png(root: Path) -> tuple[Path, str]:
    path = _paths(root, "train", STEMS[1])[1]
    path.write_bytes(b"this is not a png")
    return path, "cannot read label PNG"


def _truncated_label(root: Path) -> tuple[Path, str]:
    path = _paths(root, "train", STEMS[1])[1]
    rng = np.random.default_rng(1)  # noisy: no compression, so truncation cuts the pixel data
    Image.fromarray(rng.integers(0, 34, (H * 8, W * 8), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    # its image must have the same size, or the header check fires first
    write_image(root, "train", STEMS[1], np.zeros((H * 8, W * 8, 3), np.uint8))
    return path, "cannot decode label PNG"


def _missing_image_folder(root: Path) -> tuple[Path, str]:
    shutil.rmtree(root / "leftImg8bit")
    return root / "leftImg8bit" / "train", "image folder not found"


def _missing_label_folder(root: Path) -> tuple[Path, str]:
    shutil.rmtree(root / "gtFine")
    return root / "gtFine" / "train", "label folder not found"


def _empty_folder(root: Path) -> tuple[Path, str]:
    for city in (root / "leftImg8bit" / "train").iterdir():
        shutil.rmtree(city)
    return root / "leftImg8bit" / "train", "no <city>/\\*_leftImg8bit.png files found"


def _flat_layout(root: Path) -> tuple[Path, str]:
    img_dir = root / "leftImg8bit" / "train"
    for p in list(img_dir.glob("*/*.png")):
        p.rename(img_dir / p.name)
    return img_dir, "per-city folders"


BREAKERS = [
    _value_out_of_table,
    _size_mismatch,
    _image_without_label,
    _label_without_image,
    _rgb_colour_label,
    _not_a_png,
    _truncated_label,
    _missing_image_folder,
    _missing_label_folder,
    _empty_folder,
    _flat_layout,
]


@pytest.mark.parametrize("breaker", BREAKERS, ids=lambda f: f.__name__.strip("_"))
def test_bad_input_fails_at_construction(tmp_path: Path, breaker) -> None:
    make_dataset(tmp_path)
    CityscapesSegmentation(tmp_path, "train", cache_dir=False)  # valid before the damage
    path, problem = breaker(tmp_path)
    # evaluation mode: training skips an image of another size than its label (test_hostile_data.py)
    with pytest.raises(CityscapesDataError, match=problem) as info:
        CityscapesSegmentation(tmp_path, "train", train=False, cache_dir=False)
    assert str(info.value).startswith(str(path)), str(info.value)  # names the file first


def test_bad_values_pass_only_without_value_check(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    _value_out_of_table(tmp_path)
    ds = CityscapesSegmentation(tmp_path, "train", check_values=False)  # the check is opt-out
    assert int((ds[1]["mask"] == 255).sum()) > 0


def test_value_scan_cache_rereads_edited_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_dataset(tmp_path)
    cache = tmp_path / "cache"
    reads: list[Path] = []
    real = cs._label_values
    monkeypatch.setattr(cs, "_label_values", lambda p: reads.append(p) or real(p))

    CityscapesSegmentation(tmp_path, "train", cache_dir=cache)
    assert len(reads) == 3 and len(list(cache.glob("train-*.json"))) == 1
    reads.clear()
    CityscapesSegmentation(tmp_path, "train", cache_dir=cache)
    assert reads == []  # every label answered from the cache

    # same bytes, new mtime: re-read (only that one)
    lab = _paths(tmp_path, "train", STEMS[1])[1]
    st = lab.stat()
    os.utime(lab, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    CityscapesSegmentation(tmp_path, "train", cache_dir=cache)
    assert reads == [lab]

    # edited to hold a bad value: re-read and caught, though the cache said it was fine
    reads.clear()
    st = lab.stat()
    bad = np.full((H, W), 26, np.uint8)
    bad[5, 5] = 40
    write_label(tmp_path, "train", STEMS[1], bad)
    if (lab.stat().st_size, lab.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns):
        os.utime(lab, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # coarse clock, same size
    with pytest.raises(CityscapesDataError, match=r"label values \[40\]"):
        CityscapesSegmentation(tmp_path, "train", cache_dir=cache)
    assert reads == [lab]
    # still caught next time (a bad file is never cached as good), and with the default cache
    with pytest.raises(CityscapesDataError, match=r"label values \[40\]"):
        CityscapesSegmentation(tmp_path, "train", cache_dir=cache)
    with pytest.raises(CityscapesDataError, match=r"label values \[40\]"):
        CityscapesSegmentation(tmp_path, "train")
    assert list((tmp_path / "xdg" / "dense" / "cityscapes-scan").glob("train-*.json"))

    # a corrupt cache file is only a lost speed-up
    for f in cache.glob("*.json"):
        f.write_text("{not json")
    write_label(tmp_path, "train", STEMS[1], np.full((H, W), 26, np.uint8))
    CityscapesSegmentation(tmp_path, "train", cache_dir=cache)


# ----------------------------------------------------------------------------- augmentation
def _coded(h: int, w: int, block: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A mask of square blocks whose class changes along x and y, and an image whose colour is the
    class's palette colour: any misalignment between image and mask breaks colour == class."""
    y, x = np.mgrid[:h, :w]
    mask = ((x // block) + 5 * (y // block)) % NUM_CLASSES
    return CITYSCAPES_PALETTE[mask], mask.astype(np.uint8)


def _nearest_class(image: np.ndarray) -> np.ndarray:
    d = ((image[..., None, :].astype(np.int32) - CITYSCAPES_PALETTE.astype(np.int32)) ** 2).sum(-1)
    return d.argmin(-1)


@pytest.mark.parametrize("crop", [(32, 48), 24, (64, 128)])
def test_train_output_is_exactly_the_crop(crop) -> None:
    ch, cw = (crop, crop) if isinstance(crop, int) else crop
    t = build_segmentation_transform(train=True, crop=crop, photometric=True, seed=0)
    for h, w in ((10, 20), (40, 80), (100, 50), (64, 128)):
        image, mask = _coded(h, w)
        for _ in range(5):
            out = t(image=image, mask=mask)
            assert out["image"].shape == (ch, cw, 3) and out["image"].dtype == np.uint8
            assert out["mask"].shape == (ch, cw) and out["mask"].dtype == np.uint8


def test_padding_is_ignore_in_the_mask() -> None:
    image = np.full((10, 20, 3), 200, np.uint8)
    mask = np.full((10, 20), 3, np.uint8)
    t = build_segmentation_transform(train=True, crop=(30, 40), scale=(1.0, 1.0), hflip=0.0, seed=0)
    out = t(image=image, mask=mask)
    m, im = out["mask"], out["image"]
    assert set(np.unique(m)) == {3, IGNORE_INDEX}
    assert int((m == 3).sum()) == 10 * 20  # the image itself, unscaled
    assert (im[m == 255] == 0).all() and (im[m == 3] == 200).all()
    # padded pixels are ignored by the loss: they are no class
    loss = torch.nn.functional.cross_entropy(
        torch.zeros(1, NUM_CLASSES, 30, 40), torch.from_numpy(m).long()[None], ignore_index=255
    )
    assert torch.isfinite(loss)


def test_flip_keeps_image_and_mask_aligned() -> None:
    image, mask = _coded(48, 96)
    # exact: no scaling, full-size crop, always flip
    t = build_segmentation_transform(train=True, crop=(48, 96), scale=(1.0, 1.0), hflip=1.0, seed=0)
    out = t(image=image, mask=mask)
    np.testing.assert_array_equal(out["mask"], mask[:, ::-1])
    np.testing.assert_array_equal(out["image"], CITYSCAPES_PALETTE[out["mask"]])

    # the full preset (random scale, crop, flip): colour still encodes the class almost everywhere
    # (bilinear image resampling blends colours only along block edges)
    image, mask = _coded(64, 128, block=16)
    assert (_nearest_class(image[:, ::-1]) == mask).mean() < 0.2  # what a lone image flip gives
    t = build_segmentation_transform(train=True, crop=(40, 64), seed=1)
    flipped = 0
    for _ in range(30):
        out = t(image=image, mask=mask)
        valid = out["mask"] != 255
        agree = (_nearest_class(out["image"]) == out["mask"])[valid].mean()
        assert agree > 0.85, agree
        # a flipped crop shows the class order reversed along x
        m = out["mask"].astype(int)
        row = m[valid.any(1)][0]
        row = row[row != 255]
        flipped += bool(len(row) > 1 and ((np.diff(row) % NUM_CLASSES) == NUM_CLASSES - 1).any())
    assert 5 <= flipped <= 25, flipped  # p = 0.5 over 30 draws


def _observed_scales(t, n: int = 150) -> np.ndarray:
    h, w = 40, 60
    image = np.full((h, w, 3), 128, np.uint8)
    mask = np.ones((h, w), np.uint8)
    out = []
    for _ in range(n):
        m = t(image=image, mask=mask)["mask"] != 255  # crop > 2x the image: nothing cut away
        out.append((m.any(1).sum() / h + m.any(0).sum() / w) / 2)
    return np.array(out)


def test_random_scale_range() -> None:
    t = build_segmentation_transform(train=True, crop=(82, 122), hflip=0.0, seed=0)
    s = _observed_scales(t)
    assert s.min() >= 0.5 - 0.02 and s.max() <= 2.0 + 0.02, (s.min(), s.max())
    assert s.min() < 0.6 and s.max() > 1.9, (s.min(), s.max())  # uniform: both ends are reached
    assert 1.1 < s.mean() < 1.4, s.mean()  # mean of U(0.5, 2) = 1.25
    t = build_segmentation_transform(train=True, crop=(82, 122), scale=(0.75, 1.25), hflip=0.0, seed=0)
    s = _observed_scales(t)
    assert s.min() >= 0.75 - 0.02 and s.max() <= 1.25 + 0.02, (s.min(), s.max())
    t = build_segmentation_transform(train=True, crop=(82, 122), scale=(1.0, 1.0), hflip=0.0, seed=0)
    np.testing.assert_array_equal(_observed_scales(t, 5), 1.0)
    with pytest.raises(ValueError, match="scale"):
        build_segmentation_transform(train=True, scale=(2.0, 0.5))
    with pytest.raises(ValueError, match="scale"):
        build_segmentation_transform(train=True, scale=(0.0, 1.0))


def test_eval_transform_keeps_the_mask_full_resolution(tmp_path: Path) -> None:
    image, mask = _coded(64, 128)
    t = build_segmentation_transform(train=False, eval_scale=0.5)
    assert isinstance(t, EvalTransform)
    out = t(image=image, mask=mask)
    assert out["image"].shape == (32, 64, 3)
    assert out["mask"] is mask
    out = build_segmentation_transform(train=False)(image=image, mask=mask)
    assert out["image"] is image and out["mask"] is mask
    with pytest.raises(ValueError):
        EvalTransform(0.0)

    make_dataset(tmp_path, "val")
    ds = CityscapesSegmentation(tmp_path, "val", transform=EvalTransform(0.5), cache_dir=False)
    s = ds[0]
    assert s["image"].shape == (3, H // 2, W // 2) and s["mask"].shape == (H, W)
    logits = torch.randn(2, NUM_CLASSES, H // 2, W // 2)
    up = upsample_logits(logits, s["mask"].shape)
    assert up.shape == (2, NUM_CLASSES, H, W)
    assert upsample_logits(logits, (H // 2, W // 2)) is logits
    # bilinear: a constant map stays constant
    torch.testing.assert_close(upsample_logits(torch.ones(1, 3, 4, 5), (9, 11)), torch.ones(1, 3, 9, 11))


def _same_image_dataset(root: Path, n: int = 4) -> None:
    image, mask = _coded(48, 96)
    label = train_ids_to_label_ids(mask)
    for i in range(n):
        stem = f"aachen_{i:06d}_000019"
        write_image(root, "train", stem, image)
        write_label(root, "train", stem, label)


def test_dataloader_workers_draw_different_augmentations(tmp_path: Path) -> None:
    _same_image_dataset(tmp_path)

    def run() -> list[torch.Tensor]:
        t = build_segmentation_transform(train=True, crop=(32, 48), photometric=True)
        ds = CityscapesSegmentation(tmp_path, "train", transform=t, cache_dir=False)
        dl = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2, shuffle=False)
        return [b["image"][0] for b in dl]

    torch.manual_seed(0)
    first = run()
    # samples 0 and 1 are the first draw of worker 0 and worker 1: without a per-worker reseed
    # both forked copies of the albumentations RNG would produce the same crop
    assert not torch.equal(first[0], first[1])
    assert not torch.equal(first[2], first[3])
    torch.manual_seed(0)
    again = run()  # reproducible under torch.manual_seed
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_reseed_in_the_main_process(tmp_path: Path) -> None:
    _same_image_dataset(tmp_path, n=2)

    def draw(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        t = build_segmentation_transform(train=True, crop=(32, 48), photometric=True)
        ds = CityscapesSegmentation(tmp_path, "train", transform=t, cache_dir=False)
        return [ds[0]["image"], ds[1]["image"], ds[0]["image"]]

    a, b, c = draw(1), draw(1), draw(2)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], c[0])
    assert not torch.equal(a[0], a[2])  # the stream goes on: not reseeded at every item
