"""Hostile data sets (tests/hostile.py writes the real broken files): each case gets the outcome of
the policy in README "What happens with bad data": an error naming every offending file / id
before work starts, a skipped and counted training sample, or a conversion counted in the scan."""

from __future__ import annotations

import json
import re
from pathlib import Path

import hostile
import numpy as np
import pytest
import torch
from lit_runs import run_tool
from PIL import Image

from dense.data.cityscapes import CityscapesDataError, CityscapesSegmentation
from dense.data.coco import CocoAnnotationError, CocoDetection, ImageReadError, load_rgb
from dense.evaluation.coco import evaluate_coco
from dense.lit.cityscapes_data import collate_segmentation
from dense.lit.coco_data import CocoDataModule

# ------------------------------------------------------------------------------------------ images


@pytest.fixture(scope="module")
def hostile_set(tmp_path_factory: pytest.TempPathFactory):
    """One COCO set holding every hostile image (shared: the huge one costs ~1 s to write)."""
    return hostile.hostile_images(tmp_path_factory.mktemp("hostile_images"))


def test_hostile_images_in_training_are_converted_or_skipped(hostile_set) -> None:
    img_dir, ann_file, expected = hostile_set
    ds = CocoDetection(img_dir, ann_file, train=True)
    index = {image_id: i for i, image_id in enumerate(ds.image_ids)}
    for name, (image_id, want) in expected.items():
        sample = ds[index[image_id]]
        if name in hostile.UNREADABLE:
            assert sample is None, name  # skipped, not fatal
            continue
        assert sample is not None, name
        # converted to 8-bit RGB exactly as PIL / the 16-bit rule give it, pixels as stored
        got = load_rgb(ds.image_path(index[image_id]))
        assert got.dtype == np.uint8 and got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)
        assert sample["image"].shape == (3, *want.shape[:2]), name
    skipped = ds.skipped_files()
    names = {n: ds._records[index[i]]["file_name"] for n, (i, _) in expected.items()}
    assert skipped == sorted(names[n] for n in hostile.UNREADABLE)  # counted, by file


def test_exif_rotation_is_ignored_boxes_refer_to_stored_pixels(hostile_set) -> None:
    img_dir, ann_file, expected = hostile_set
    image_id, want = expected["exif_rotated"]
    ds = CocoDetection(img_dir, ann_file, train=False)
    i = ds.image_ids.index(image_id)
    sample = ds[i]
    assert sample["image"].shape == (3, hostile.H, hostile.W)  # not turned to W x H
    # the boxes are those of the file, on the stored grid
    assert sample["target"]["boxes"].tolist() == [[4.0, 6.0, 24.0, 22.0], [30.0, 20.0, 54.0, 40.0]]


def test_tiny_image_boxes_are_clipped_and_counted(hostile_set) -> None:
    img_dir, ann_file, expected = hostile_set
    ds = CocoDetection(img_dir, ann_file, train=False)
    image_id, _ = expected["tiny"]
    target = ds[ds.image_ids.index(image_id)]["target"]
    assert target["boxes"].tolist() == [[4.0, 6.0, 8.0, 8.0]]  # the second box lies outside 8 x 8
    assert ds.num_degenerate_boxes == 1
    notes = ds.report.notes
    assert any("clipped" in k for k in notes) and any("degenerate" in k for k in notes)


def test_image_scan_counts_every_case(hostile_set) -> None:
    img_dir, ann_file, expected = hostile_set
    train = CocoDetection(img_dir, ann_file, train=True).scan_images(decode=True)
    assert train.ok  # in training the unreadable ones are only skipped ...
    notes = {k: v for k, v in train.notes.items()}

    def files(key: str) -> list[str]:
        return [v for k, vs in notes.items() if key in k for v in vs]

    # ... and counted, every kind, with the file named
    assert len(files("not found")) == 1 and len(files("zero-byte")) == 1
    assert any("0001.jpg" in f for f in files("unreadable"))  # truncated, found by decoding
    assert len(files("disagrees")) == 1
    assert files("PNG files named .jpg") == ["0004.jpg"]
    for mode in ("L images", "RGBA images", "I;16 images", "CMYK images"):
        assert len(files(mode)) == 1, (mode, notes.keys())
    assert files("EXIF rotation") == ["0009.jpg"]
    assert len(files("huge")) == 1 and len(files("tiny")) == 1

    # in evaluation the same files are errors, every one named
    val = CocoDetection(img_dir, ann_file, train=False).scan_images(decode=True)
    assert not val.ok
    text = val.error_text()
    for name in ("0001.jpg", "0002.jpg", "0003.jpg", "0012.jpg"):
        assert name in text


def test_unreadable_evaluation_image_is_an_error_naming_it(hostile_set) -> None:
    img_dir, ann_file, expected = hostile_set
    ds = CocoDetection(img_dir, ann_file, train=False)
    with pytest.raises(ImageReadError, match="0001.jpg"):
        ds[ds.image_ids.index(expected["truncated_jpeg"][0])]
    with pytest.raises(ImageReadError, match="0002.jpg"):
        ds[ds.image_ids.index(expected["zero_byte"][0])]


# ------------------------------------------------------------------------------ annotation files
ERRORS = {
    hostile.unknown_image_id: r"1 annotation\(s\) name an image id .*unknown image ids \[999\].*"
    r"annotation ids \[1\]",
    hostile.unknown_category_id: r"2 annotation\(s\) name a category id .*unknown category ids \[42\].*"
    r"annotation ids \[2, 4\]",
    hostile.negative_size: r"negative width or height: ids \[1\]",
    hostile.nan_in_bbox: r"non-number, NaN or infinity: ids \[1\]",
    hostile.string_in_bbox: r"non-number, NaN or infinity: ids \[3\]",
    hostile.duplicate_annotation_ids: r"duplicate annotation ids: \[1\]",
    hostile.duplicate_image_ids: r"duplicate image ids .*\[1\]",
    hostile.no_categories: r"missing top-level key\(s\) \['categories'\]",
}


@pytest.mark.parametrize("breaker", list(ERRORS), ids=lambda f: f.__name__)
def test_broken_annotation_file_is_an_error_naming_the_ids(tmp_path: Path, breaker) -> None:
    img_dir, ann_file, data = hostile.coco_set(tmp_path, 3)
    breaker(data)
    hostile.write_json(ann_file, data)
    with pytest.raises(CocoAnnotationError, match=ERRORS[breaker]) as e:
        CocoDetection(img_dir, ann_file)
    assert str(ann_file) in str(e.value)


def test_every_problem_of_a_file_is_named_at_once(tmp_path: Path) -> None:
    img_dir, ann_file, data = hostile.coco_set(tmp_path, 30)
    for a in data["annotations"][:25]:
        a["category_id"] = 99
    hostile.negative_size(data)
    hostile.duplicate_annotation_ids(data)
    hostile.write_json(ann_file, data)
    with pytest.raises(CocoAnnotationError) as e:
        CocoDetection(img_dir, ann_file)
    text = str(e.value)
    assert "25 annotation(s) name a category id" in text and "(25 in all)" in text  # capped list + count
    assert "negative width or height" in text and "duplicate annotation ids" in text


def test_not_json_is_an_error(tmp_path: Path) -> None:
    img_dir, ann_file, _ = hostile.coco_set(tmp_path, 1)
    ann_file.write_text("images: [1, 2]\n")
    with pytest.raises(CocoAnnotationError, match="not valid JSON"):
        CocoDetection(img_dir, ann_file)


def test_zero_size_and_outside_boxes_are_dropped_or_clipped_and_counted(tmp_path: Path) -> None:
    img_dir, ann_file, data = hostile.coco_set(tmp_path, 2)
    hostile.outside_image(data)
    data["annotations"][2]["bbox"] = [10.0, 10.0, 0.0, 8.0]  # zero width
    hostile.write_json(ann_file, data)
    ds = CocoDetection(img_dir, ann_file)
    assert ds.degenerate_annotation_ids == [1, 3]
    assert ds.annotation(0)["boxes"].tolist() == [[hostile.W - 10, hostile.H - 10, hostile.W, hostile.H]]
    assert ds.report.notes["boxes clipped to the image"] == ["2"]


def test_size_disagreeing_with_the_file_is_skipped_in_training_and_an_error_in_evaluation(
    tmp_path: Path,
) -> None:
    img_dir, ann_file, data = hostile.coco_set(tmp_path, 2)
    hostile.size_disagrees(data)
    hostile.write_json(ann_file, data)
    assert CocoDetection(img_dir, ann_file, train=True)[0] is None
    with pytest.raises(ImageReadError, match=r"0001.jpg is 64x48 .* says 80x48"):
        CocoDetection(img_dir, ann_file, train=False)[0]


@pytest.mark.parametrize("case", [hostile.category_zero, hostile.crowd_rle], ids=lambda f: f.__name__)
def test_category_zero_and_crowd_rle_are_used_and_both_engines_agree(tmp_path: Path, case) -> None:
    img_dir, ann_file, data = hostile.coco_set(tmp_path, 3)
    case(data)
    hostile.write_json(ann_file, data)
    ds = CocoDetection(img_dir, ann_file, train=True)
    if case is hostile.category_zero:
        assert ds.cat_ids == [0, 7] and ds.cat_id_to_label == {0: 1, 7: 2}
    else:
        assert ds.num_crowd == 1 and ds[0]["target"]["labels"].tolist() == [2]  # crowd left out
    # predictions = the ground truth boxes (one off by a few pixels), scored by both engines
    dets = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": 0.9}
        for a in data["annotations"]
        if not a["iscrowd"]
    ]
    dets[0]["bbox"][0] += 3
    fast = evaluate_coco(ann_file, dets, engine="faster_coco_eval")
    ref = evaluate_coco(ann_file, dets, engine="pycocotools")
    assert fast.stats == pytest.approx(ref.stats, abs=1e-9)
    assert 0.5 < ref["AP"] < 1.0


def test_empty_annotation_list_is_counted_and_refused_for_training(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    img_dir, ann_file, data = hostile.coco_set(root, 2, split="train2017")
    hostile.empty_annotations(data)
    hostile.write_json(root / "annotations" / "instances_train2017.json", data)
    hostile.coco_set(root, 2, split="val2017")
    (root / "annotations" / "val2017.json").rename(root / "annotations" / "instances_val2017.json")
    ds = CocoDetection(img_dir, root / "annotations" / "instances_train2017.json")
    assert len(ds) == 2 and any("no annotations" in k for k in ds.report.notes)
    dm = CocoDataModule(root, image_size=64, batch_size=2, num_workers=0)
    with pytest.raises(ValueError, match="not a single usable box"):
        dm.setup("fit")


def test_datamodule_errors_before_work_on_missing_val_images_and_all_missing_train_images(
    tmp_path: Path,
) -> None:
    root = tmp_path / "coco"
    hostile.coco_set(root, 4, split="train2017")
    hostile.coco_set(root, 3, split="val2017")
    for s in ("train2017", "val2017"):
        (root / "annotations" / f"{s}.json").rename(root / "annotations" / f"instances_{s}.json")
    for p in (root / "val2017").glob("000[12].jpg"):
        p.unlink()
    dm = CocoDataModule(root, image_size=64, batch_size=2, num_workers=0)
    with pytest.raises(ValueError, match=r"2 evaluation image\(s\) .* not found \[0001.jpg, 0002.jpg\]"):
        dm.setup("fit")
    hostile.coco_set(root, 3, split="val2017")
    (root / "annotations" / "val2017.json").replace(root / "annotations" / "instances_val2017.json")
    for p in (root / "train2017").glob("*.jpg"):
        p.unlink()
    dm = CocoDataModule(root, image_size=64, batch_size=2, num_workers=0)
    with pytest.raises(ValueError, match="none of the 4 training images"):
        dm.setup("fit")


# ------------------------------------------------------------------------------------- Cityscapes
@pytest.fixture
def cs_root(tmp_path: Path) -> Path:
    return hostile.cityscapes_set(tmp_path / "cs")


def _ds(root: Path) -> CityscapesSegmentation:
    return CityscapesSegmentation(root, "train", cache_dir=False)


def test_cityscapes_set_is_valid(cs_root: Path) -> None:
    assert len(_ds(cs_root)) == len(hostile.CS_STEMS)


def test_cityscapes_every_bad_label_is_named(cs_root: Path) -> None:
    from PIL import Image

    bad = [hostile.cs_paths(cs_root, s)[1] for s in hostile.CS_STEMS[:3]]
    for k, p in enumerate(bad):
        lab = hostile.cs_label(k)
        lab[0, 0] = 40 + k  # outside the label table
        Image.fromarray(lab, "L").save(p)
    with pytest.raises(CityscapesDataError) as e:
        _ds(cs_root)
    text = str(e.value)
    assert text.startswith(str(bad[0])) and "label values [40]" in text
    assert "3 problems in all" in text and all(p.name in text for p in bad)


def test_cityscapes_wrong_size_missing_and_rgb_labels_in_one_message(cs_root: Path) -> None:
    """In evaluation a label whose size differs from its image is an error (training skips it)."""
    from PIL import Image

    s0, s1, s2 = hostile.CS_STEMS[:3]
    Image.fromarray(np.zeros((hostile.CS_H, hostile.CS_W - 2), np.uint8), "L").save(
        hostile.cs_paths(cs_root, s0)[1]
    )
    hostile.cs_paths(cs_root, s1)[1].unlink()
    Image.fromarray(np.zeros((hostile.CS_H, hostile.CS_W, 3), np.uint8)).save(
        hostile.cs_paths(cs_root, s2)[1]
    )
    with pytest.raises(CityscapesDataError) as e:
        CityscapesSegmentation(cs_root, "train", train=False, cache_dir=False)
    text = str(e.value)
    assert text.startswith(str(hostile.cs_paths(cs_root, s0)[1])) and "differs from image size" in text
    for kind in ("label size differs from image", "image without label", "label not single-channel"):
        assert f"1 x {kind}" in text, kind
    assert "3 problems in all" in text


def test_cityscapes_train_ids_instead_of_label_ids_is_detected(cs_root: Path) -> None:
    from PIL import Image

    for k, stem in enumerate(hostile.CS_STEMS):
        Image.fromarray(hostile.cs_train_ids(hostile.cs_label(k)), "L").save(
            hostile.cs_paths(cs_root, stem)[1]
        )
    with pytest.raises(CityscapesDataError, match="look like trainIds, not labelIds"):
        _ds(cs_root)


def test_loader_batches_stay_finite_with_hostile_images(hostile_set) -> None:
    """The training pipeline (resize to 64) on the hostile set: every kept image is finite in [0, 1]."""
    from dense.data.coco import collate_detection
    from dense.data.det_transforms import build_detection_transform

    img_dir, ann_file, _ = hostile_set
    ds = CocoDetection(
        img_dir, ann_file, train=True, transform=build_detection_transform("flip", 64, train=True)
    )
    batch = collate_detection([ds[i] for i in range(len(ds))])
    images, targets = batch
    assert images.shape == (len(ds) - len(hostile.UNREADABLE), 3, 64, 64)
    assert torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
    json.dumps([t["image_id"] for t in targets])


# ----------------------------------------------------------------- Cityscapes images (bad samples)
def test_cityscapes_bad_training_images_are_skipped_and_counted_others_converted(tmp_path: Path) -> None:
    root = tmp_path / "cs"
    expected = hostile.cs_hostile_set(root)
    ds = _ds(root)
    assert len(ds) == len(expected) + 2  # unreadable images stay samples: DataHealth counts them
    index = {str(s.image): i for i, s in enumerate(ds.samples)}
    samples = [ds[i] for i in range(len(ds))]
    for name, (path, want) in expected.items():
        sample = samples[index[str(path)]]
        if name in hostile.CS_UNREADABLE:
            assert sample is None, name  # skipped, not fatal
            continue
        assert sample is not None, name
        # 8-bit RGB exactly as PIL's convert (16-bit: scaled by 255 / 65535)
        got = (sample["image"] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(got, want, err_msg=name)
    rel = {n: p.relative_to(root / "leftImg8bit" / "train").as_posix() for n, (p, _) in expected.items()}
    unreadable = sorted(rel[n] for n in hostile.CS_UNREADABLE)
    assert ds.skipped_files() == unreadable  # counted, by file

    batch = collate_segmentation(samples)
    assert batch["image"].shape == (len(ds) - 3, 3, hostile.CS_H, hostile.CS_W)
    assert batch["num_skipped"] == 3 and len(batch["name"]) == len(ds) - 3
    assert collate_segmentation([None, None]) is None
    ds.reset_skipped()
    assert ds.skipped_files() == []

    # the scan report counts every conversion and, with decode, every image training will skip
    notes = ds.scan_images(decode=True).notes
    assert ds.report.ok

    def files(key: str) -> list[str]:
        return [v for k, vs in notes.items() if key in k for v in vs]

    assert files("L images converted") == [rel["cs_grayscale"]]
    assert files("RGBA images") == [rel["cs_rgba"]] and files("I;16 images") == [rel["cs_png16"]]
    assert files("CMYK images") == [rel["cs_cmyk"]]
    skipped = sorted(f.split(" ")[0] for f in files("skipped in training"))
    assert skipped == unreadable


def test_cityscapes_skips_are_collected_from_dataloader_workers(tmp_path: Path) -> None:
    root = tmp_path / "cs"
    hostile.cs_hostile_set(root, [hostile.cs_truncated, hostile.cs_zero_byte], n=4)
    ds = _ds(root)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_segmentation)
    batches = list(loader)
    assert batches[0] is None and batches[1]["image"].shape[0] == 2  # the first two are the broken ones
    assert ds.skipped_files() == [
        "aachen/aachen_000000_000019_leftImg8bit.png",
        "aachen/aachen_000001_000019_leftImg8bit.png",
    ]


def test_cityscapes_bad_evaluation_image_is_an_error_naming_it(tmp_path: Path) -> None:
    root = tmp_path / "cs"
    expected = hostile.cs_hostile_set(root, split="val")
    with pytest.raises(CityscapesDataError) as e:  # header problems: before any work
        CityscapesSegmentation(root, "val", cache_dir=False)
    text = str(e.value)
    zero, wrong = expected["cs_zero_byte"][0], expected["cs_wrong_size"][0]
    assert text.startswith(str(zero)) and "2 problems in all" in text
    assert "1 x label size differs from image" in text and wrong.name[:20] in text
    # with those two fixed, the truncated one (its header is fine) fails when it is read
    for path in (zero, wrong):
        Image.fromarray(np.zeros((hostile.CS_H, hostile.CS_W, 3), np.uint8)).save(path)
    ds = CityscapesSegmentation(root, "val", cache_dir=False)
    truncated = expected["cs_truncated"][0]
    i = [s.image for s in ds.samples].index(truncated)
    with pytest.raises(CityscapesDataError, match=f"^{re.escape(str(truncated))}: cannot read image"):
        ds[i]
    assert ds[[s.image for s in ds.samples].index(expected["cs_grayscale"][0])] is not None  # converted


def _cs_train(root: Path, run_dir: Path, *extra: str):
    return run_tool(
        [
            "tools/train.py",
            "task=segment",
            "data=cityscapes",
            f"data.root={root}",
            "+data.scan_cache=false",
            "backbone=v3_small",
            "backbone.width_mult=0.35",
            "data.crop=[32,32]",
            "data.batch_size=4",
            "data.val_batch_size=2",
            "data.num_workers=0",
            "trainer.max_epochs=1",
            "trainer.budget=null",
            "trainer.check_val_every_n_epoch=1",
            "trainer.num_sanity_val_steps=0",
            "trainer.enable_progress_bar=false",
            "cost.latency_runs=0",
            f"hydra.run.dir={run_dir}",
            *extra,
        ],
        timeout=900,  # ~40 s alone; more when the machine is busy
    )


@pytest.mark.slow
def test_cityscapes_training_skips_bad_images_and_stops_when_too_many(tmp_path: Path) -> None:
    """tools/train.py on a Cityscapes folder with a truncated, an empty and a grayscale image of 8."""
    root = tmp_path / "cs"
    expected = hostile.cs_hostile_set(
        root, [hostile.cs_truncated, hostile.cs_zero_byte, hostile.cs_grayscale], n=8
    )
    hostile.cityscapes_set(root, "val")
    proc = _cs_train(root, tmp_path / "ok", "faults.max_skipped_fraction=0.5")
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = json.loads((tmp_path / "ok" / "metrics.json").read_text())
    rel = sorted(
        expected[n][0].relative_to(root / "leftImg8bit" / "train").as_posix()
        for n in ("cs_truncated", "cs_zero_byte")
    )
    assert metrics["status"] == "ok" and metrics["global_step"] >= 1
    assert metrics["skipped_files"] == rel and metrics["skipped_samples_per_epoch"] == [2]
    assert "skipped 2 unreadable training sample(s) of 8" in proc.stdout + proc.stderr

    # 2 of 8 is more than the default faults.max_skipped_fraction=0.1: a data error, exit status 2
    proc = _cs_train(root, tmp_path / "stop")
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-4000:]
    assert last.startswith("train.py: error: epoch 0: 2 of 8 training samples (25.0%)"), last
    assert rel[0] in last
    failed = json.loads((tmp_path / "stop" / "metrics.json").read_text())
    assert failed["status"] == "failed" and "max_skipped_fraction" in failed["error"]


def test_segmentation_step_skips_a_batch_that_skipping_emptied_or_cut_to_one() -> None:
    from dense import build_model
    from dense.data.cityscapes import CITYSCAPES_CLASSES
    from dense.data.info import DatasetInfo
    from dense.lit.segmentation import SegmentationModule

    model = build_model("segment", backbone="v3_small", head="raspp", num_classes=19, width_mult=0.35)
    module = SegmentationModule(model, DatasetInfo(num_classes=19, class_names=CITYSCAPES_CLASSES))
    sample = {
        "image": torch.rand(3, 32, 32),
        "mask": torch.zeros(32, 32, dtype=torch.long),
        "name": "a",
        "path": "",
    }
    assert module.training_step(collate_segmentation([None, None]), 0) is None
    # one sample left: R-ASPP's BatchNorm on the pooled 1x1 map cannot train on it
    assert module.training_step(collate_segmentation([sample, None]), 0) is None
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        module.model.loss(module.model(sample["image"][None]), sample["mask"][None])
