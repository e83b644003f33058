"""shapes_cityscapes: synthetic street scenes in the exact Cityscapes layout, deterministic, cached."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cityscapesscripts.helpers.labels import id2label, name2label
from PIL import Image

import dense.data.shapes_cityscapes as sc
from dense.data.cityscapes import CityscapesSegmentation
from dense.data.shapes_cityscapes import (
    MANIFEST,
    TRAIN_CITIES,
    VAL_CITIES,
    ensure_shapes_cityscapes,
    generate_shapes_cityscapes,
)

REPO = Path(__file__).resolve().parents[1]
# 16 images: enough for generate_shapes_cityscapes to really use 2 processes (one per 8 images)
SMALL = {"num_train": 12, "num_val": 4, "size": (128, 256), "seed": 0}
REQUIRED = ("road", "sidewalk", "building", "vegetation", "sky", "pole", "traffic sign", "person", "car")
VOID = {name2label[n].id for n in ("unlabeled", "ego vehicle", "rectification border", "out of roi")}
NAME_RE = re.compile(r"^([a-z]+)_(\d{6})_(\d{6})_(leftImg8bit|gtFine_labelIds|gtFine_color)\.png$")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_shapes_cityscapes(tmp_path_factory.mktemp("scs") / "ds", workers=1, **SMALL)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_exact_cityscapes_layout(root: Path) -> None:
    for split, cities, n in (("train", TRAIN_CITIES, 12), ("val", VAL_CITIES, 4)):
        images = sorted((root / "leftImg8bit" / split).glob("*/*"))
        labels = sorted((root / "gtFine" / split).glob("*/*_gtFine_labelIds.png"))
        assert len(images) == len(labels) == n
        assert len(list((root / "gtFine" / split).glob("*/*_gtFine_color.png"))) == n
        assert {p.parent.name for p in images} == set(cities[:n])
        for img in images:
            m = NAME_RE.match(img.name)
            assert m and m.group(4) == "leftImg8bit", img.name
            assert m.group(1) == img.parent.name and m.group(3) == "000019"
            stem = img.name[: -len("_leftImg8bit.png")]
            lab = root / "gtFine" / split / img.parent.name / f"{stem}_gtFine_labelIds.png"
            with Image.open(img) as a, Image.open(lab) as b:
                assert a.mode == "RGB" and b.mode == "L"
                assert a.size == b.size == (256, 128)
                assert a.format == b.format == "PNG"
        ds = CityscapesSegmentation(root, split, cache_dir=False)  # validates every file and value
        assert len(ds) == n
        s = ds[0]
        assert s["image"].shape == (3, 128, 256) and s["mask"].shape == (128, 256)
    assert not (root / "leftImg8bit" / "test").exists()
    manifest = json.loads((root / MANIFEST).read_text())
    assert manifest["num_train"] == 12 and manifest["size"] == [128, 256] and manifest["seed"] == 0
    # the colour previews use the official palette
    lab_path = next((root / "gtFine" / "train").glob("*/*_labelIds.png"))
    lab = np.asarray(Image.open(lab_path))
    colour = np.asarray(Image.open(str(lab_path).replace("_labelIds.png", "_color.png")))
    for v in np.unique(lab):
        assert (colour[lab == v] == id2label[int(v)].color).all()


def test_classes_and_void_frequency(root: Path) -> None:
    labels = sorted(root.glob("gtFine/*/*/*_gtFine_labelIds.png"))
    n = len(labels)
    present: dict[int, int] = {}
    pixels: dict[int, int] = {}
    total = 0
    void_images = 0
    for p in labels:
        lab = np.asarray(Image.open(p))
        values, counts = np.unique(lab, return_counts=True)
        for v, c in zip(values.tolist(), counts.tolist()):
            present[v] = present.get(v, 0) + 1
            pixels[v] = pixels.get(v, 0) + c
        total += lab.size
        void_images += bool(set(values.tolist()) & VOID)
    table = "\n".join(
        f"  {id2label[v].name:22s} id {v:2d}: in {present[v]:2d}/{n} images, "
        f"{pixels[v] / total:7.2%} of pixels"
        for v in sorted(present)
    )
    msg = f"per-class frequency over {n} images:\n{table}\n  void (ids 0-3) in {void_images}/{n} images"

    # every image: the scene's layout classes; most images: cars and trees; often: the small things
    minimum = {"road": 1.0, "sidewalk": 1.0, "building": 1.0, "sky": 1.0, "vegetation": 0.6, "car": 0.6}
    minimum.update({"pole": 0.3, "traffic sign": 0.25, "person": 0.3})
    assert set(minimum) == set(REQUIRED)
    for name, frac in minimum.items():
        lid = name2label[name].id
        assert present.get(lid, 0) >= frac * n, f"{name}: too rare\n{msg}"
    assert void_images >= 0.4 * n, f"too few void pixels\n{msg}"
    assert set(present) <= set(range(34)), msg
    # no single class swamps the data
    assert max(pixels.values()) / total < 0.6, msg


def test_void_pixels_are_ignored_by_the_dataset(root: Path) -> None:
    ds = CityscapesSegmentation(root, "train", cache_dir=False)
    for i in range(len(ds)):
        lab = np.asarray(Image.open(ds.samples[i].label))
        mask = ds[i]["mask"].numpy()
        assert (mask[np.isin(lab, list(VOID))] == 255).all()
        assert (mask[lab == name2label["road"].id] == 0).all()


def test_deterministic_and_independent_of_workers(root: Path, tmp_path: Path) -> None:
    other = generate_shapes_cityscapes(tmp_path / "w2", workers=2, **SMALL)
    a, b = _files(root), _files(other)
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []  # byte-identical PNGs and manifest
    # another seed draws other scenes (same names)
    c = generate_shapes_cityscapes(
        tmp_path / "s1", workers=1, **{**SMALL, "num_train": 2, "num_val": 0, "seed": 1}
    )
    name = next(k for k in _files(c) if k.endswith("_leftImg8bit.png"))
    assert _files(c)[name] != a[name]


def test_ensure_is_cached(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}

    def boom(*args, **kwargs):
        raise AssertionError("regenerated although the manifest matches")

    monkeypatch.setattr(sc, "generate_shapes_cityscapes", boom)
    assert ensure_shapes_cityscapes(root, workers=2, **SMALL) == root  # workers: not a parameter
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


def test_changed_parameters_regenerate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict] = []
    real = sc.generate_shapes_cityscapes
    monkeypatch.setattr(sc, "generate_shapes_cityscapes", lambda r, **kw: calls.append(kw) or real(r, **kw))
    root = tmp_path / "ds"
    params = {"num_train": 3, "num_val": 1, "size": (64, 128), "seed": 0, "workers": 1}
    ensure_shapes_cityscapes(root, **params)
    assert calls[-1]["workers"] == 1  # passed on
    assert len(list(root.glob("leftImg8bit/train/*/*.png"))) == 3
    ensure_shapes_cityscapes(root, **{**params, "num_train": 5})
    assert len(list(root.glob("leftImg8bit/train/*/*.png"))) == 5
    assert json.loads((root / MANIFEST).read_text())["num_train"] == 5
    ensure_shapes_cityscapes(root, **{**params, "num_train": 5, "size": (64, 96)})
    with Image.open(next(root.glob("leftImg8bit/train/*/*.png"))) as im:
        assert im.size == (96, 64)
    ensure_shapes_cityscapes(root, **{**params, "num_train": 5, "size": (64, 96), "write_color": False})
    assert not list(root.glob("gtFine/*/*/*_color.png"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temporary folders left


def test_refuses_to_overwrite_foreign_data(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="refusing"):
        ensure_shapes_cityscapes(mine, num_train=2, num_val=1, size=(64, 128))
    assert (mine / "thesis.txt").read_text() == "precious"
    # a manifest of the same name written by something else does not make it ours
    (mine / MANIFEST).write_text(json.dumps({"generator": "someone else"}))
    with pytest.raises(FileExistsError, match="refusing"):
        ensure_shapes_cityscapes(mine, num_train=2, num_val=1, size=(64, 128))
    assert (mine / "thesis.txt").exists()
    # a file where the folder should be
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError):
        ensure_shapes_cityscapes(tmp_path / "file", num_train=2, num_val=1, size=(64, 128))
    # an empty folder is fine
    (tmp_path / "empty").mkdir()
    ensure_shapes_cityscapes(tmp_path / "empty", num_train=2, num_val=1, size=(64, 128), workers=1)
    assert len(list((tmp_path / "empty").glob("leftImg8bit/*/*/*.png"))) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file", "mine"]


def test_cli(tmp_path: Path) -> None:
    root = tmp_path / "cli"
    args = [str(root), "--num-train", "2", "--num-val", "1", "--size", "64", "128", "--no-color"]
    r = subprocess.run(
        [sys.executable, "-m", "dense.data.shapes_cityscapes", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(root)
    assert len(list(root.glob("leftImg8bit/train/*/*_leftImg8bit.png"))) == 2
    assert len(list(root.glob("gtFine/val/*/*_gtFine_labelIds.png"))) == 1
    assert not list(root.glob("gtFine/*/*/*_color.png"))
    manifest = json.loads((root / MANIFEST).read_text())
    assert manifest["size"] == [64, 128] and manifest["write_color"] is False
    # same call again: cached, same answer
    sc.main(args)
    assert json.loads((root / MANIFEST).read_text()) == manifest


def test_rejects_tiny_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="32x32"):
        generate_shapes_cityscapes(tmp_path / "x", num_train=1, num_val=0, size=(16, 16))
