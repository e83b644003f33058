"""Every tool ends a user mistake (config, paths, data, files) with one line on stderr and exit
status 2, as early as it can be detected; tools/check_data.py; both COCO engines agree on every
hostile results file (the same error or the same numbers)."""

from __future__ import annotations

import inspect
import json
import math
import subprocess
import sys
from pathlib import Path

import hostile
import numpy as np
import pytest
from PIL import Image

from dense.data.cityscapes import label_ids_to_train_ids
from dense.evaluation.cityscapes import CityscapesEvalError, score_folder
from dense.evaluation.coco import CocoResultsError, evaluate_coco
from dense.lit.config import TRAINER_KEYS, ConfigError, check_output_dir

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def assert_user_error(proc: subprocess.CompletedProcess, tool: str, pattern: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines and lines[-1].startswith(f"{tool}: error: "), proc.stderr[-3000:]
    import re

    assert re.search(pattern, lines[-1]), lines[-1]


# ------------------------------------------------------------------------------------ train.py
def test_train_config_and_data_mistakes_exit_2_fast(tmp_path: Path) -> None:
    run_dir = f"hydra.run.dir={tmp_path / 'run'}"
    proc = run("tools/train.py", "data=coco", f"data.root={tmp_path / 'no_coco'}", run_dir)
    assert_user_error(proc, "train.py", r"data root not found: data.root=.*no_coco")
    # found before Lightning, the loggers or the model were set up (seconds, not the 7-15 s of before)
    assert "Seed set" not in proc.stdout + proc.stderr and not (tmp_path / "run" / "tb").exists()
    failed = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert failed["status"] == "failed" and "data root not found" in failed["error"]

    proc = run("tools/train.py", "trainer.max_epochs=-1", "trainer.budget=null", run_dir)
    assert_user_error(proc, "train.py", r"trainer.max_epochs=-1 trains without end.*trainer.budget")
    proc = run("tools/train.py", "+trainer.max_epoch=3", run_dir)
    assert_user_error(
        proc, "train.py", r"unknown trainer key\(s\): trainer.max_epoch \(did you mean max_epochs"
    )
    # the recipe's fused AdamW with clipping under mixed precision: Lightning would refuse at step 1
    proc = run("tools/train.py", "trainer.gradient_clip_val=1.0", "trainer.precision=bf16-mixed", run_dir)
    assert_user_error(
        proc, "train.py", r"optim.fused=true cannot be combined with trainer.gradient_clip_val=1.0"
    )
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    proc = run("tools/train.py", f"output_dir={not_a_dir / 'out'}", run_dir)
    assert_user_error(proc, "train.py", r"output_dir=.*file/out is not writable")


def test_trainer_keys_are_lightnings() -> None:
    import lightning.pytorch as pl

    names = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}
    assert TRAINER_KEYS == names | {"_target_", "budget"}


def test_output_dir_checks(tmp_path: Path) -> None:
    check_output_dir(tmp_path / "a" / "b")  # created
    assert (tmp_path / "a" / "b").is_dir() and not list((tmp_path / "a" / "b").iterdir())
    with pytest.raises(ConfigError, match="only .* MiB free"):
        check_output_dir(tmp_path, min_free_mb=float("inf"))


# ------------------------------------------------------------------------------------- eval.py
def test_eval_of_a_file_that_is_not_a_checkpoint_exits_2(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a checkpoint\n")
    proc = run("tools/eval.py", f"ckpt={notes}", f"hydra.run.dir={tmp_path / 'run'}")
    assert_user_error(proc, "eval.py", r"notes.txt: is a text file \(starts with 'not a checkpoint'\)")


# -------------------------------------------------------------------------- score.py: COCO results
def _gt(tmp_path: Path) -> tuple[Path, list[dict]]:
    _, ann_file, data = hostile.coco_set(tmp_path, 4)
    dets = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": list(a["bbox"]),
            "score": 0.5 + a["id"] / 100,
        }
        for a in data["annotations"]
    ]
    dets[0]["bbox"][0] += 4  # not perfect: AP strictly between 0 and 1
    return ann_file, dets


def _broken(dets: list[dict], case: str):
    d = [dict(x, bbox=list(x["bbox"])) for x in dets]
    if case == "nan_score":
        d[1]["score"] = math.nan
    elif case == "inf_score":
        d[2]["score"] = math.inf
    elif case == "negative_size":
        d[0]["bbox"][2] = -10.0
        d[3]["bbox"][3] = -1.0
    elif case == "unknown_image":
        d[0]["image_id"] = 999
    elif case == "unknown_category":
        d[0]["category_id"] = 1  # a contiguous label instead of the data set's id 3
    elif case == "duplicate":
        d.append(dict(d[0]))
    elif case == "string_in_bbox":
        d[0]["bbox"][1] = "7"
    elif case == "dict_not_list":
        return {"annotations": d}
    elif case == "list_of_lists":
        return [[1, 3, 0, 0, 5, 5, 0.9]]
    elif case == "missing_score":
        del d[0]["score"]
    return d


RESULT_ERRORS = {
    "nan_score": r"score is not a finite number: result indices \[1\]",
    "inf_score": r"score is not a finite number: result indices \[2\]",
    "negative_size": r"2 results with a negative box width or height: result indices \[0, 3\]",
    "unknown_image": r"image ids not in .*\[999\]",
    "unknown_category": r"category ids not in .*\[1\] \(valid: \[3, 7\]\)",
    "duplicate": r"1 exact duplicate results .*\[8\]",
    "string_in_bbox": r"non-number, NaN or infinity: result indices \[0\]",
    "dict_not_list": r"must be a JSON list of objects, got dict",
    "list_of_lists": r"results are not JSON objects: result indices \[0\]",
    "missing_score": r"lack \['score'\]: result indices \[0\]",
}


@pytest.mark.parametrize("case", list(RESULT_ERRORS))
def test_both_engines_give_the_same_error_on_bad_results(tmp_path: Path, case: str) -> None:
    gt, dets = _gt(tmp_path)
    bad = _broken(dets, case)
    messages = []
    for engine in ("faster_coco_eval", "pycocotools"):
        with pytest.raises(CocoResultsError, match=RESULT_ERRORS[case]) as e:
            evaluate_coco(gt, bad, engine=engine)
        messages.append(str(e.value))
    assert messages[0] == messages[1]


@pytest.mark.parametrize("case", ["zero_width", "outside_image", "float_ids_order", "empty"])
def test_both_engines_give_the_same_numbers_on_odd_but_valid_results(tmp_path: Path, case: str) -> None:
    gt, dets = _gt(tmp_path)
    if case == "zero_width":
        dets[1]["bbox"][2] = 0.0  # a zero-area box: a false positive for both
    elif case == "outside_image":
        dets[2]["bbox"] = [500.0, 500.0, 10.0, 10.0]
    elif case == "float_ids_order":
        dets = dets[::-1]
    else:
        dets = []
    fast = evaluate_coco(gt, dets, engine="faster_coco_eval")
    ref = evaluate_coco(gt, dets, engine="pycocotools")
    assert fast.stats == pytest.approx(ref.stats, abs=1e-9)
    assert fast.per_category_ap == pytest.approx(ref.per_category_ap, abs=1e-9)


def test_score_py_exits_2_with_one_line_on_bad_results(tmp_path: Path) -> None:
    gt, dets = _gt(tmp_path)
    bad = tmp_path / "dets.json"
    bad.write_text(json.dumps(_broken(dets, "negative_size")))
    for engine in ("faster_coco_eval", "pycocotools"):
        proc = run("tools/score.py", "coco", str(gt), str(bad), "--engine", engine)
        assert_user_error(proc, "score.py coco", "negative box width or height")
    proc = run("tools/score.py", "coco", str(gt), str(tmp_path / "missing.json"))
    assert_user_error(proc, "score.py coco", "COCO results file not found")
    # a broken ground-truth file gets the data set's checks
    data = json.loads(gt.read_text())
    hostile.duplicate_annotation_ids(data)
    hostile.write_json(gt, data)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(dets))
    proc = run("tools/score.py", "coco", str(gt), str(good))
    assert_user_error(proc, "score.py coco", r"duplicate annotation ids: \[1\]")


# --------------------------------------------------------------------- score.py: Cityscapes
def test_cityscapes_predictions_as_train_ids_are_detected(tmp_path: Path) -> None:
    root = hostile.cityscapes_set(tmp_path / "cs", split="val")
    pred = tmp_path / "pred"
    pred.mkdir()
    for k, stem in enumerate(hostile.CS_STEMS):
        train_ids = label_ids_to_train_ids(hostile.cs_label(k))
        train_ids[train_ids == 255] = 0
        Image.fromarray(train_ids, "L").save(pred / f"{stem}_leftImg8bit.png")
    with pytest.raises(CityscapesEvalError, match="predictions look like trainIds, not labelIds"):
        score_folder(root / "gtFine" / "val", pred)
    proc = run("tools/score.py", "cityscapes", str(root / "gtFine" / "val"), str(pred))
    assert_user_error(proc, "score.py cityscapes", "look like trainIds")
    # the same predictions written as labelIds score 100%
    for k, stem in enumerate(hostile.CS_STEMS):
        Image.fromarray(hostile.cs_label(k), "L").save(pred / f"{stem}_leftImg8bit.png")
    assert score_folder(root / "gtFine" / "val", pred)["mIoU"] == pytest.approx(1.0)


def test_cityscapes_every_missing_prediction_is_named(tmp_path: Path) -> None:
    root = hostile.cityscapes_set(tmp_path / "cs", split="val")
    pred = tmp_path / "pred"
    pred.mkdir()
    with pytest.raises(
        CityscapesEvalError, match=r"no prediction found.*4 ground-truth files without a prediction"
    ):
        score_folder(root / "gtFine" / "val", pred)


# ------------------------------------------------------------------------------ check_data.py
def test_check_data_reports_and_exits_by_whether_training_would_start(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    hostile.hostile_images(
        root, [hostile.truncated_jpeg, hostile.grayscale, hostile.missing], split="train2017"
    )
    hostile.coco_set(root, 3, split="val2017")
    for s in ("train2017", "val2017"):
        (root / "annotations" / f"{s}.json").rename(root / "annotations" / f"instances_{s}.json")
    out = tmp_path / "report.json"
    args = ["tools/check_data.py", "data=coco", f"data.root={root}", f"out={out}"]
    proc = run(*args)
    # 2 of 4 training images unreadable: more than max_skipped_fraction=0.1
    assert_user_error(proc, "check_data.py", "training would not start")
    assert "0001.jpg" in proc.stdout and "L images converted to 8-bit RGB" in proc.stdout
    report = json.loads(out.read_text())
    assert not report[0]["ok"] and report[1]["ok"]
    proc = run(*args[:-1], "max_skipped_fraction=0.6")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "training would start" in proc.stdout
    assert "image files not found (skipped in training)" in proc.stdout
    # val images are never skipped: a missing one is an error
    (root / "val2017" / "0002.jpg").unlink()
    proc = run(*args[:-1], "max_skipped_fraction=0.6")
    assert proc.returncode == 2 and "image files not found: [0002.jpg]" in proc.stdout


def test_check_data_cityscapes(tmp_path: Path) -> None:
    root = tmp_path / "cs"
    hostile.cityscapes_set(root, "train")
    hostile.cityscapes_set(root, "val")
    args = ["tools/check_data.py", "data=cityscapes", f"data.root={root}", "+data.scan_cache=false"]
    proc = run(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    img = hostile.cs_paths(root, hostile.CS_STEMS[0], "val")[0]
    img.write_bytes(img.read_bytes()[:200])  # truncated pixel data
    lab = hostile.cs_paths(root, hostile.CS_STEMS[1], "train")[1]
    Image.fromarray(np.full((hostile.CS_H, hostile.CS_W), 40, np.uint8), "L").save(lab)
    proc = run(*args)
    assert_user_error(proc, "check_data.py", "training would not start")
    assert lab.name in proc.stdout and img.name in proc.stdout


def test_check_data_cityscapes_counts_conversions_and_training_skips(tmp_path: Path) -> None:
    root = tmp_path / "cs"
    hostile.cs_hostile_set(root, [hostile.cs_truncated, hostile.cs_grayscale], n=4)
    hostile.cityscapes_set(root, "val")
    args = ["tools/check_data.py", "data=cityscapes", f"data.root={root}", "+data.scan_cache=false"]
    proc = run(*args, "max_skipped_fraction=0.3")  # 1 of 4 unreadable: training would start
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1  L images converted to 8-bit RGB: [aachen/aachen_000001_000019_leftImg8bit.png]" in proc.stdout
    assert "unreadable image files (skipped in training): [aachen/aachen_000000_000019" in proc.stdout
    proc = run(*args)  # more than the default max_skipped_fraction=0.1
    assert_user_error(proc, "check_data.py", "training would not start")
    assert "of 4 training images are unreadable" in proc.stdout
