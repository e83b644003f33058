"""Lightning / Hydra glue for detection: tools/train.py, tools/eval.py, checkpoints, configs.

The end-to-end tests run the real tools in subprocesses (as a user would) on a tiny generated
shapes data set (8 train / 4 val images at 128 px, MobileNetV3-Small x0.35): one training run is
shared by the tests of this module.
"""

from __future__ import annotations

import json
import math
import textwrap
from functools import partial
from pathlib import Path

import pytest
import torch
from lit_runs import ROOT, eval_one_and_two_processes, shared_training_run, tiny_detection
from lit_runs import check as _check
from lit_runs import run_tool as _run

CONF = ROOT / "conf"

# Shared overrides: a tiny, fast configuration of the default training.
DATA_OVERRIDES = tiny_detection()
TRAIN_OVERRIDES = [
    "task=detect",
    "backbone=v3_small",
    "backbone.width_mult=0.35",
    "trainer.max_epochs=1",
    "trainer.budget=null",
    "trainer.check_val_every_n_epoch=1",  # task=detect validates every 2 epochs by default
    "trainer.num_sanity_val_steps=0",
    "trainer.log_every_n_steps=1",
    *DATA_OVERRIDES,
]
VAL_KEYS = ("val/map", "val/map_50", "val/map_75", "val/map_small", "val/map_medium", "val/map_large")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, request):
    """One tiny training run shared by the tests: (run_dir, data_root, metrics)."""
    return shared_training_run(tmp_path_factory, request, "lit_det", TRAIN_OVERRIDES)


# --------------------------------------------------------------------------------------------------
# end to end: train -> metrics.json -> eval -> score -> reload
# --------------------------------------------------------------------------------------------------
def test_train_writes_metrics_and_checkpoints(trained):
    run_dir, _, metrics = trained
    for key in VAL_KEYS:
        assert key in metrics, f"metrics.json lacks {key}: {sorted(metrics)}"
        v = metrics[key]
        # -1 is COCOeval's "undefined" (no ground truth in that size range)
        assert v == -1 or 0.0 <= v <= 1.0, (key, v)
    assert 0.0 <= metrics["val/map"] <= 1.0
    assert Path(metrics["checkpoint"]).is_file() and Path(metrics["checkpoint"]).name == "last.ckpt"
    assert Path(metrics["best_checkpoint"]).is_file()
    assert metrics["task"] == "detect" and metrics["backbone"] == "v3_small"
    # both loggers wrote; the CSV has the training losses under their logged names
    csv = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss", "train/loss_cls", "train/loss_box", "val/map", "val/map_50"} <= set(csv)
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))


def test_validation_images_logged_to_tensorboard(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _, _ = trained
    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"images": 0})
    acc.Reload()
    tags = acc.Tags()["images"]
    assert "val/predictions_0" in tags, tags


def test_eval_reproduces_training_metrics_and_score_agrees(trained, tmp_path):
    run_dir, data_root, metrics = trained
    out = tmp_path / "eval"
    proc = _run(
        [
            "tools/eval.py",
            "task=detect",
            f"ckpt={metrics['checkpoint']}",
            "data=shapes_coco",
            f"data.root={data_root}",
            *DATA_OVERRIDES,
            f"hydra.run.dir={out}",
        ]
    )
    _check(proc)
    again = json.loads((out / "metrics.json").read_text())
    for key in (*VAL_KEYS, "val/mar_100"):
        assert again[key] == metrics[key], (key, again[key], metrics[key])

    # detections.json: COCO results with the data set's own ids
    gt = json.loads((data_root / "annotations" / "instances_val2017.json").read_text())
    dets = json.loads((out / "detections.json").read_text())
    assert isinstance(dets, list) and dets
    assert {d["image_id"] for d in dets} <= {im["id"] for im in gt["images"]}
    assert {d["category_id"] for d in dets} <= {c["id"] for c in gt["categories"]}
    assert all(len(d["bbox"]) == 4 and 0.0 <= d["score"] <= 1.0 for d in dets)

    # tools/score.py scores the saved file to the same AP
    score_out = tmp_path / "score.json"
    ann = data_root / "annotations" / "instances_val2017.json"
    proc = _run(["tools/score.py", "coco", str(ann), str(out / "detections.json"), "--out", str(score_out)])
    _check(proc)
    scored = json.loads(score_out.read_text())
    assert math.isclose(scored["AP"], metrics["val/map"], abs_tol=1e-12)
    assert math.isclose(scored["AP50"], metrics["val/map_50"], abs_tol=1e-12)


def test_checkpoint_reloads_without_config_or_lightning(trained):
    """The checkpoint alone rebuilds the model, with Lightning, Hydra and OmegaConf unimportable."""
    _, data_root, metrics = trained
    code = textwrap.dedent(
        f"""
        import json, sys
        for name in ("lightning", "pytorch_lightning", "hydra", "omegaconf"):
            sys.modules[name] = None  # any import of them now fails
        import torch
        from dense.lit.checkpoint import load_detector_from_checkpoint
        model, extras = load_detector_from_checkpoint({str(metrics["checkpoint"])!r})
        preds = model.predict(torch.rand(2, 3, 128, 128))
        print(json.dumps({{
            "training": model.training,
            "num_classes": model.num_classes,
            "image_size": list(model.image_size),
            "config": extras["config"],
            "label_to_cat_id": {{str(k): v for k, v in extras["info"].label_to_cat_id.items()}},
            "epoch": extras["epoch"],
            "pred_keys": sorted(preds[0]),
        }}))
        """
    )
    proc = _run(["-c", code])
    _check(proc)
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["training"] is False
    assert info["num_classes"] == 7  # 6 shapes + background
    assert info["image_size"] == [128, 128]
    assert info["config"]["backbone"] == "v3_small" and info["config"]["width_mult"] == 0.35
    gt = json.loads((data_root / "annotations" / "instances_val2017.json").read_text())
    assert sorted(int(v) for v in info["label_to_cat_id"].values()) == sorted(
        c["id"] for c in gt["categories"]
    )
    assert info["pred_keys"] == ["boxes", "labels", "scores"]


def test_checkpoint_weights_match(trained):
    from dense.lit.checkpoint import load_detector_from_checkpoint, read_checkpoint

    _, _, metrics = trained
    model, extras = load_detector_from_checkpoint(metrics["checkpoint"])
    state = read_checkpoint(metrics["checkpoint"])["state_dict"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, state["model." + k]), k
    assert extras["val_metrics"]["val/map"] == metrics["val/map"]


@pytest.mark.slow
def test_ddp_validation_matches_single_process(trained, tmp_path):
    """trainer=ddp_cpu (2 processes, gloo): results gathered from both ranks, the sampler's padded
    duplicate removed, scored once; the numbers equal a single-process evaluation. 5 val images, so
    the DistributedSampler pads one; batch 1 keeps the numerics identical. Rank 0 alone writes the
    outputs (rank 1 only its log)."""
    _, _, metrics = trained
    one, two = eval_one_and_two_processes(metrics["checkpoint"], tmp_path, DATA_OVERRIDES)
    assert one["num_images"] == two["num_images"] == 5
    assert one["num_detections"] == two["num_detections"]
    for key in (*VAL_KEYS, "val/mar_100", "per_category_AP"):
        assert one[key] == two[key], key
    dets = [json.loads((tmp_path / d / "detections.json").read_text()) for d in ("one", "two")]
    assert sorted(dets[0], key=json.dumps) == sorted(dets[1], key=json.dumps)
    outputs = [sorted(p.name for p in (tmp_path / d).iterdir()) for d in ("one", "two")]
    assert outputs[1] == sorted([*outputs[0], "train_ddp_process_1.log"]), outputs


# --------------------------------------------------------------------------------------------------
# configuration checks: wrong combinations fail before any work
# --------------------------------------------------------------------------------------------------
def test_wrong_head_for_task_fails_before_work(tmp_path):
    extra = tmp_path / "conf"
    (extra / "head").mkdir(parents=True)
    (extra / "head" / "lraspp.yaml").write_text("task: segment\nname: lraspp\nimage_size: 512\n")
    data_root = tmp_path / "shapes"
    proc = _run(
        [
            "tools/train.py",
            f"hydra.searchpath=[file://{extra}]",
            "task=detect",
            "head=lraspp",
            f"data.root={data_root}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "head=lraspp" in proc.stderr and "task=detect" in proc.stderr and "ssdlite" in proc.stderr
    assert not data_root.exists(), "data generation started before the config was checked"
    assert not (tmp_path / "run" / "checkpoints").exists()


def _compose(overrides: list[str], config_name: str = "train"):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def test_validate_config_rejects_mismatches(tmp_path):
    from dense.lit.config import ConfigError, validate_config

    cfg = _compose([])
    validate_config(cfg, conf_dir=CONF)  # the defaults are consistent
    assert cfg.task.name == "detect" and cfg.head.name == "ssdlite" and cfg.data.task == "detect"
    # short-run defaults on the built-in data; real COCO keeps the paper recipe's augmentation
    assert cfg.backbone.reduced_tail is True and cfg.data.augment == "flip"
    # a 10-minute wall-clock budget with the schedule over it; the papers' anchors (docs/experiments.md)
    assert cfg.trainer.budget == "9.5min" and cfg.trainer.max_epochs == -1
    assert cfg.sched._target_.endswith("warmup_linear") and list(cfg.head.anchor_scales) == [0.2, 0.95]
    assert (
        cfg.data.global_batch_size == 4
        and cfg.data.batch_size is None
        and cfg.trainer.check_val_every_n_epoch == 2
    )
    assert _compose(["data=coco"]).data.augment == "ssdlite"

    # one home for the input geometry: the head group (the data pipeline follows it)
    assert "image_size" not in cfg.data and cfg.task.datamodule.image_size == cfg.head.image_size == 320
    with pytest.raises(ConfigError, match="optim.lr must be a positive"):
        validate_config(_compose(["optim.lr=0"]), conf_dir=CONF)
    with pytest.raises(ConfigError, match="no such checkpoint"):
        validate_config(_compose([f"ckpt={tmp_path / 'nope.ckpt'}"]), conf_dir=CONF)
    with pytest.raises(ConfigError, match="eval needs a checkpoint"):
        validate_config(_compose([], "eval"), conf_dir=CONF, stage="eval")
    seg_data = _compose([])
    seg_data.data.task = "segment"
    with pytest.raises(ConfigError, match="cannot be used with task=detect"):
        validate_config(seg_data, conf_dir=CONF)


@pytest.mark.parametrize("backbone", ["v1", "v2", "v3_large", "v3_small", "mixnet_s", "mixnet_m", "mixnet_l"])
def test_every_backbone_config_composes(backbone):
    from dense.lit.config import validate_config

    cfg = _compose([f"backbone={backbone}"])
    validate_config(cfg, conf_dir=CONF)
    assert cfg.task.model.backbone == backbone


def test_recipes_belong_to_the_data_sets():
    """The built-in data's CPU recipe is the default; data=coco gets torchvision's published recipe;
    an explicit override beats the recipe's value."""
    shapes = _compose([])
    assert shapes.recipe.name == "shapes_coco_cpu" and shapes.head.anchor_scales == [0.2, 0.95]
    assert shapes.optim._target_ == "torch.optim.AdamW" and shapes.optim.lr == 3e-3 and shapes.optim.fused
    assert shapes.head.matcher == "atss" and shapes.task.model.matcher == "atss"
    coco = _compose(["data=coco", "data.root=/somewhere"])
    assert coco.recipe.name == "ssdlite_coco" and coco.recipe.global_batch == 192
    assert coco.optim._target_ == "torch.optim.SGD" and coco.optim.lr == 0.15
    assert coco.optim.weight_decay == 4e-5 and coco.sched._target_.endswith("warmup_cosine")
    assert (
        coco.trainer.max_epochs == 660
        and coco.data.augment == "ssdlite"
        and coco.data.global_batch_size == 192
    )
    assert coco.head.anchor_scales == [0.2, 0.95] and coco.backbone.reduced_tail is True
    assert coco.head.matcher == "iou" and coco.head.box_loss == "smooth_l1"  # torchvision's SSDLite
    mine = _compose(["head.anchor_scales=[0.1,0.9]", "optim=sgd", "trainer.max_epochs=2"])
    assert mine.head.anchor_scales == [0.1, 0.9] and mine.task.model.anchor_scales == [0.1, 0.9]
    assert mine.optim._target_ == "torch.optim.SGD" and mine.trainer.max_epochs == 2
    assert "fused" not in mine.optim  # the recipe's fused AdamW goes with its optimizer


def test_experiment_and_search_configs_compose():
    from dense.lit.config import validate_config

    cfg = _compose(["experiment=ssdlite_coco"])
    validate_config(cfg, conf_dir=CONF)
    assert cfg.optim.lr == 0.15 and cfg.data.global_batch_size == 192 and cfg.trainer.devices == 8
    assert cfg.backbone.reduced_tail is True and cfg.trainer.strategy == "ddp"
    assert cfg.data.augment == "ssdlite" and cfg.trainer.max_epochs == 660
    for overrides in (["trainer=gpu", "optim=adamw", "sched=poly", "trainer.max_epochs=4"], ["data=coco"]):
        validate_config(_compose(overrides), conf_dir=CONF)


# --------------------------------------------------------------------------------------------------
# pieces
# --------------------------------------------------------------------------------------------------
def test_datamodule_errors_name_the_path(tmp_path):
    from dense.lit.coco_data import CocoDataModule

    missing = tmp_path / "no_coco_here"
    dm = CocoDataModule(missing)
    with pytest.raises(FileNotFoundError, match="no_coco_here") as e:
        dm.setup("fit")
    assert "instances_train2017.json" in str(e.value)  # says which layout is expected
    (missing / "train2017").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"train_ann=.*instances_train2017.json \(file\)"):
        dm.setup("fit")
    with pytest.raises(ValueError, match="augment preset"):
        CocoDataModule(tmp_path, augment="yolo")


def test_datamodule_exposes_classes(trained):
    from dense.lit.coco_data import CocoDataModule

    _, data_root, _ = trained
    dm = CocoDataModule(data_root, image_size=128, batch_size=4, num_workers=0)
    info = dm.info()  # sets the data module up
    assert info.num_classes == 7 and len(info.class_names) == 7
    assert sorted(info.label_to_cat_id) == list(range(1, 7))
    assert info.class_names[0] == "__background__"
    assert info.val_ann_file == str(data_root / "annotations" / "instances_val2017.json")
    images, targets = next(iter(dm.val_dataloader()))
    assert images.shape[1:] == (3, 128, 128) and "orig_size" in targets[0]


def test_schedulers_warmup_then_decay():
    from dense.lit.schedulers import warmup_cosine, warmup_poly

    def lrs(make, steps=20):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = make(opt)
        out = []
        for _ in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    cos = lrs(partial(warmup_cosine, total_steps=20, steps_per_epoch=5, warmup_epochs=1, warmup_factor=0.1))
    assert cos[0] == pytest.approx(0.1) and cos[5] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(cos[5:], cos[6:])) and cos[-1] < 0.05
    poly = lrs(partial(warmup_poly, total_steps=20, steps_per_epoch=5, power=0.9))
    assert poly[0] == pytest.approx(1.0) and all(a > b for a, b in zip(poly, poly[1:]))
    with pytest.raises(ValueError, match="total_steps"):
        lrs(partial(warmup_cosine, total_steps=0, steps_per_epoch=1))


def test_schedulers_equal_the_closed_forms():
    """torch's chained LinearLR + CosineAnnealingLR / PolynomialLR give the textbook factors."""
    import math

    from dense.lit.schedulers import warmup_cosine, warmup_poly

    def lrs(make, steps):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
        sched, out = make(opt), []
        for _ in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    t, w = 400, 100
    cos = lrs(partial(warmup_cosine, total_steps=t, steps_per_epoch=w, warmup_factor=0.001), t)
    ref = [
        0.5 * (0.001 * (1 - s / w) + s / w) if s < w else 0.25 * (1 + math.cos(math.pi * (s - w) / (t - w)))
        for s in range(t)
    ]
    assert max(abs(a - b) for a, b in zip(cos, ref)) < 1e-12
    floor = lrs(
        partial(warmup_cosine, total_steps=t, steps_per_epoch=w, warmup_epochs=0, min_lr_ratio=0.1), t + 5
    )
    assert floor[-1] == pytest.approx(0.05) and floor[0] == pytest.approx(0.5)
    poly = lrs(partial(warmup_poly, total_steps=t, steps_per_epoch=w, power=0.9), t)
    assert max(abs(a - 0.5 * (1 - s / t) ** 0.9) for s, a in enumerate(poly)) < 1e-12


@pytest.fixture
def tiny_module():
    from dense import build_model
    from dense.data.info import DatasetInfo
    from dense.lit.detection import DetectionModule

    model = build_model("detect", backbone="v3_small", num_classes=4, width_mult=0.35, image_size=128)
    info = DatasetInfo(
        num_classes=4,
        class_names=["__background__", "a", "b", "c"],
        label_to_cat_id={1: 10, 2: 20, 3: 30},
        val_ann_file="unused.json",
    )
    return DetectionModule(model, info, partial(torch.optim.SGD, lr=0.01, weight_decay=1e-4))


def test_all_skipped_batch_is_skipped(tiny_module):
    assert tiny_module.training_step(None, 0) is None


def test_norm_parameters_get_their_own_weight_decay(tiny_module):
    groups = tiny_module._param_groups()
    assert len(groups) == 2 and groups[1]["weight_decay"] == 0.0
    n_params = sum(1 for p in tiny_module.model.parameters() if p.requires_grad)
    assert sum(len(g["params"]) for g in groups) == n_params


def test_checkpoint_entry_round_trip(tiny_module, tmp_path):
    """on_save_checkpoint + a plain torch.save -> load_detector_from_checkpoint (no Trainer)."""
    from dense.lit.checkpoint import load_detector_from_checkpoint, load_model_from_checkpoint

    ckpt = {"state_dict": tiny_module.state_dict(), "epoch": 3, "global_step": 42}
    tiny_module.on_save_checkpoint(ckpt)
    path = tmp_path / "x.ckpt"
    torch.save(ckpt, path)
    model, extras = load_detector_from_checkpoint(path)
    assert extras["info"].label_to_cat_id == {1: 10, 2: 20, 3: 30} and extras["epoch"] == 3
    x = torch.rand(1, 3, 128, 128)
    tiny_module.model.eval()
    assert torch.equal(model(x)["cls_logits"], tiny_module.model(x)["cls_logits"])
    with pytest.raises(ValueError, match="holds a 'detect' model"):
        load_model_from_checkpoint(path, task="segment")
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(ValueError, match="not written by dense"):
        load_detector_from_checkpoint(tmp_path / "foreign.ckpt")
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_detector_from_checkpoint(tmp_path / "missing.ckpt")


def test_checkpoint_of_the_previous_format_still_loads(tiny_module, tmp_path):
    """Checkpoints written before DatasetInfo and `cls_loss`: `loss` and the separate label map."""
    from dense.lit.checkpoint import load_detector_from_checkpoint

    ckpt = {"state_dict": tiny_module.state_dict(), "epoch": 1, "global_step": 2}
    tiny_module.on_save_checkpoint(ckpt)
    meta = ckpt["dense_model"]
    meta["config"]["loss"] = meta["config"].pop("cls_loss")
    info = meta.pop("info")
    meta.update(label_to_cat_id=info["label_to_cat_id"], class_names=info["class_names"])
    torch.save(ckpt, tmp_path / "old.ckpt")
    model, extras = load_detector_from_checkpoint(tmp_path / "old.ckpt")
    assert model.config.cls_loss == "softmax"
    old = extras["info"]  # the old format kept no val annotation file
    assert (old.num_classes, old.class_names) == (tiny_module.info.num_classes, tiny_module.info.class_names)
    assert old.label_to_cat_id == tiny_module.info.label_to_cat_id == {1: 10, 2: 20, 3: 30}
    meta["config"]["unknown_option"] = 1
    torch.save(ckpt, tmp_path / "odd.ckpt")
    with pytest.raises(ValueError, match="does not fit this version"):
        load_detector_from_checkpoint(tmp_path / "odd.ckpt")


# --------------------------------------------------------------------------------------------------
# deploy: curves.png, tools/export.py, the ONNX runner and tools/predict.py on the run's checkpoint
# --------------------------------------------------------------------------------------------------
def test_train_draws_curves_from_its_csv_log(trained, tmp_path):
    import csv

    from PIL import Image

    from dense.lit.curves import plot_curves, read_curves

    run_dir, _, _ = trained
    with Image.open(run_dir / "curves.png") as im:  # written by tools/train.py at the end
        assert im.format == "PNG" and im.width > 500
    log = run_dir / "csv" / "metrics.csv"
    curves = read_curves(log)
    with log.open() as f:
        rows = list(csv.DictReader(f))
    for key in ("train/loss", "val/map_50"):
        expected = [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]
        assert expected and list(zip(*curves[key])) == expected
    assert plot_curves(log, tmp_path / "c.png").stat().st_size > 10_000


def test_export_tool_runner_scores_as_training_and_int8(trained, tmp_path):
    """tools/export.py on the run's checkpoint: the float file scored by the runner over the val set
    gives training's own metrics; the int8 file loads and scores too."""
    from dense.export.evaluate import COCO_METRIC_NAMES
    from dense.lit.detection import METRIC_NAMES

    assert COCO_METRIC_NAMES == METRIC_NAMES
    run_dir, data_root, metrics = trained
    out = tmp_path / "det.onnx"
    args = [f"ckpt={metrics['checkpoint']}", f"out={out}", "int8=true", "calib_images=4"]
    proc = _run(["tools/export.py", *args, f"eval_root={data_root}", "threads=1"])
    _check(proc)
    assert out.is_file() and out.with_suffix(".int8.onnx").is_file()
    scores = json.loads(out.with_suffix(".metrics.json").read_text())
    ours = scores[str(out)]
    for key in ("val/map", "val/map_50"):
        assert ours[key] == pytest.approx(metrics[key], abs=2e-3), key
    int8 = scores[str(out.with_suffix(".int8.onnx"))]
    assert 0.0 <= int8["val/map_50"] <= 1.0 and int8["num_images"] == ours["num_images"] == 4


def test_export_and_predict_tools_reject_mistakes(tmp_path):
    bad = tmp_path / "notes.ckpt"
    bad.write_text("hello")
    for args in (
        ["tools/export.py", f"ckpt={tmp_path / 'missing.ckpt'}"],
        ["tools/export.py", f"ckpt={bad}"],
        ["tools/export.py", f"ckpt={bad}", "format=tflite"],
        ["tools/export.py", "colour=red"],
        ["tools/predict.py", f"ckpt={bad}", f"input={tmp_path}", f"output={tmp_path / 'o'}"],
    ):
        proc = _run(args)
        assert proc.returncode == 2, (args, proc.stderr[-2000:])
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in proc.stderr, proc.stderr


def test_predict_tool_draws_every_picture_with_both_backends(trained, tmp_path):
    from PIL import Image

    _, data_root, metrics = trained
    pictures = sorted((data_root / "val2017").glob("*.jpg"))
    for backend in ("torch", "onnx"):
        out = tmp_path / backend
        _check(
            _run(
                [
                    "tools/predict.py",
                    f"ckpt={metrics['checkpoint']}",
                    f"input={data_root / 'val2017'}",
                    f"output={out}",
                    f"backend={backend}",
                    "score_threshold=0",
                ]
            )
        )
        for p in pictures:
            with Image.open(p) as src, Image.open(out / f"{p.stem}.png") as drawn:
                assert drawn.size == src.size
                assert drawn.convert("RGB").tobytes() != src.convert("RGB").tobytes()  # boxes drawn
