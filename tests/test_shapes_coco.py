"""The synthetic shapes data set: real COCO format on disk, deterministic, cached, race-safe."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from dense.data.shapes_coco import CATEGORIES, ensure_shapes_coco, generate_shapes_coco

REPO = Path(__file__).resolve().parents[1]
SMALL = {"num_train": 40, "num_val": 20, "image_size": 160, "seed": 3}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate_shapes_coco(tmp_path_factory.mktemp("shapes") / "ds", **SMALL)


def test_layout_and_coco_format(shapes: dict[str, Path]) -> None:
    for split in ("train", "val"):
        ann = json.loads(shapes[f"{split}_annotations"].read_text())
        assert set(ann) >= {"images", "annotations", "categories"}
        n = SMALL[f"num_{split}"]
        assert len(ann["images"]) == n
        assert len(list(shapes[f"{split}_images"].glob("*.jpg"))) == n
        for im in ann["images"]:
            assert set(im) >= {"id", "file_name", "width", "height"}
            with Image.open(shapes[f"{split}_images"] / im["file_name"]) as f:
                assert f.size == (im["width"], im["height"]) == (160, 160)
                assert f.mode == "RGB"
        for c in ann["categories"]:
            assert set(c) == {"id", "name", "supercategory"}
        ids = [a["id"] for a in ann["annotations"]]
        assert len(ids) == len(set(ids))
        img_ids = {im["id"] for im in ann["images"]}
        cat_ids = {c["id"] for c in ann["categories"]}
        for a in ann["annotations"]:
            assert set(a) >= {"id", "image_id", "category_id", "bbox", "area", "iscrowd", "segmentation"}
            assert a["image_id"] in img_ids and a["category_id"] in cat_ids
            x, y, w, h = a["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 160 and y + h <= 160
            assert a["area"] > 0
            if a["iscrowd"]:
                assert isinstance(a["segmentation"], dict) and a["segmentation"]["size"] == [160, 160]
            else:
                assert isinstance(a["segmentation"], list) and len(a["segmentation"][0]) >= 6
        # pycocotools loads it and decodes every segmentation; the mask agrees with box and area.
        coco = COCO(str(shapes[f"{split}_annotations"]))
        for a in ann["annotations"]:
            m = coco.annToMask(a)
            ys, xs = np.nonzero(m)
            x, y, w, h = a["bbox"]
            assert xs.min() >= np.floor(x) - 1 and xs.max() <= np.ceil(x + w) + 1
            assert ys.min() >= np.floor(y) - 1 and ys.max() <= np.ceil(y + h) + 1
            assert m.sum() == pytest.approx(a["area"], rel=0.25, abs=8)
            if a["iscrowd"]:
                assert (
                    float(mask_utils.area(mask_utils.frPyObjects(a["segmentation"], 160, 160))) == a["area"]
                )


def test_content_statistics(shapes: dict[str, Path]) -> None:
    ann = json.loads(shapes["train_annotations"].read_text())
    cat_ids = sorted(c["id"] for c in ann["categories"])
    assert len(cat_ids) >= 5
    assert cat_ids != list(range(1, len(cat_ids) + 1)) and cat_ids != list(range(len(cat_ids)))  # gaps
    normal = [a for a in ann["annotations"] if not a["iscrowd"]]
    crowd = [a for a in ann["annotations"] if a["iscrowd"]]
    assert len(normal) / len(ann["images"]) >= 3.0
    assert crowd, "expected crowd regions"
    per_image = {im["id"]: 0 for im in ann["images"]}
    for a in ann["annotations"]:
        per_image[a["image_id"]] += 1
    assert 1 <= sum(v == 0 for v in per_image.values()) <= 4  # ~5% of 40 images have no object
    # Object sizes 16..160 px at 320 -> 8..80 px at 160 (longer side of the box).
    sides = np.array([max(a["bbox"][2:]) for a in normal])
    assert sides.min() >= 8 - 0.5 and sides.max() <= 80 + 0.5
    assert sides.max() > 3 * sides.min()
    assert len({a["category_id"] for a in normal}) == len(CATEGORIES)


def test_deterministic(tmp_path: Path, shapes: dict[str, Path]) -> None:
    # The fixture drew its train split with 2 processes; one process must write the same bytes.
    again = generate_shapes_coco(tmp_path / "again", **SMALL, workers=1)
    for key in ("train_annotations", "val_annotations"):
        assert again[key].read_bytes() == shapes[key].read_bytes()
    for split in ("train_images", "val_images"):
        files = sorted(shapes[split].glob("*.jpg"))
        assert files and [(again[split] / f.name).read_bytes() for f in files] == [
            f.read_bytes() for f in files
        ]
    other = generate_shapes_coco(tmp_path / "other", **{**SMALL, "seed": 4, "num_train": 0})
    assert other["val_annotations"].read_bytes() != shapes["val_annotations"].read_bytes()


def test_ensure_caches_and_regenerates(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    params = {"num_train": 6, "num_val": 3, "image_size": 96}
    paths = ensure_shapes_coco(root, **params)
    manifest = json.loads(paths["manifest"].read_text())
    assert manifest["params"]["num_train"] == 6
    stamp = paths["train_annotations"].stat().st_mtime_ns
    assert ensure_shapes_coco(root, **params) == paths
    assert paths["train_annotations"].stat().st_mtime_ns == stamp  # cached, not rewritten
    ensure_shapes_coco(root, **{**params, "num_train": 4})  # other parameters: regenerated
    assert len(json.loads(paths["train_annotations"].read_text())["images"]) == 4
    assert len(list(paths["train_images"].glob("*.jpg"))) == 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_ensure_refuses_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("x")
    with pytest.raises(FileExistsError, match="precious|manifest"):
        ensure_shapes_coco(tmp_path / "mine", num_train=2, num_val=1, image_size=96)
    assert (tmp_path / "mine" / "precious.txt").exists()


def test_ensure_concurrent_processes(tmp_path: Path) -> None:
    root = tmp_path / "race"
    code = (
        "import sys; from dense.data.shapes_coco import ensure_shapes_coco; "
        "ensure_shapes_coco(sys.argv[1], num_train=8, num_val=4, image_size=96)"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(root)], cwd=REPO) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    paths = ensure_shapes_coco(root, num_train=8, num_val=4, image_size=96)
    assert len(json.loads(paths["train_annotations"].read_text())["images"]) == 8
    assert len(list(paths["train_images"].glob("*.jpg"))) == 8
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
