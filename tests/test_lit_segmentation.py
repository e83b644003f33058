"""Lightning / Hydra glue for segmentation: SegmentationModule, CityscapesDataModule, configs,
tools/train.py and tools/eval.py with task=segment, checkpoints.

The end-to-end tests run the real tools in subprocesses (as a user would) on a tiny generated
shapes_cityscapes data set (8 train / 4 val images at 64x128, MobileNetV3-Small x0.35): one
training run is shared by the tests of this module. The rest runs in-process on tensors.
"""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from lit_runs import ROOT, eval_one_and_two_processes, shared_training_run, tiny_segmentation
from lit_runs import check as _check
from lit_runs import run_tool as _run
from PIL import Image

CONF = ROOT / "conf"

# Shared overrides: a tiny, fast configuration of the default segmentation training.
DATA_OVERRIDES = ["data=shapes_cityscapes", *tiny_segmentation()[3:]]
TRAIN_OVERRIDES = [
    "task=segment",
    "backbone=v3_small",
    "backbone.width_mult=0.35",
    "trainer.max_epochs=1",
    "trainer.budget=null",
    "trainer.check_val_every_n_epoch=1",  # task=segment validates every 4 epochs by default
    "trainer.num_sanity_val_steps=1",  # the sanity batch must not count in the score
    "trainer.log_every_n_steps=1",
    *DATA_OVERRIDES,
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, request):
    """One tiny training run shared by the tests: (run_dir, data_root, metrics)."""
    return shared_training_run(tmp_path_factory, request, "lit_seg", TRAIN_OVERRIDES)


def _val_keys() -> list[str]:
    from dense.data.cityscapes import CITYSCAPES_CLASSES
    from dense.lit.segmentation import iou_metric_name

    return ["val/miou", *(iou_metric_name(n) for n in CITYSCAPES_CLASSES)]


# --------------------------------------------------------------------------------------------------
# end to end: train -> metrics.json -> eval -> PNGs -> score -> reload
# --------------------------------------------------------------------------------------------------
def test_train_writes_metrics_checkpoints_and_logs(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _, metrics = trained
    assert 0.0 <= metrics["val/miou"] <= 1.0  # a fraction, not a percentage
    for key in _val_keys():
        assert key in metrics, f"metrics.json lacks {key}: {sorted(metrics)}"
        v = metrics[key]
        assert v is None or 0.0 <= v <= 1.0, (key, v)  # None: class absent and never predicted
    assert metrics["val/iou/wall"] is None  # shapes_cityscapes draws no wall
    assert metrics["num_val_images"] == 4  # the sanity-check batch is not counted
    assert Path(metrics["checkpoint"]).name == "last.ckpt" and Path(metrics["checkpoint"]).is_file()
    assert Path(metrics["best_checkpoint"]).is_file()
    assert metrics["task"] == "segment" and metrics["backbone"] == "v3_small"
    assert metrics["best_val/miou"] == pytest.approx(metrics["val/miou"], rel=1e-6)  # float32 in Lightning
    csv = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss", "val/loss", "val/miou", "val/iou/road", "val/iou/traffic_light"} <= set(csv)
    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"images": 0})
    acc.Reload()
    assert "val/segmentation_0" in acc.Tags()["images"], acc.Tags()["images"]
    img = acc.Images("val/segmentation_0")[0]
    assert (img.width, img.height) == (3 * 128, 64)  # image | prediction | ground truth


def test_eval_reproduces_training_metrics_and_pngs_score_the_same(trained, tmp_path):
    from dense.data.cityscapes import TRAIN_ID_TO_LABEL_ID
    from dense.evaluation.cityscapes import prediction_filename, score_folder

    _, data_root, metrics = trained
    out = tmp_path / "eval"
    proc = _run(
        [
            "tools/eval.py",
            "task=segment",
            f"ckpt={metrics['checkpoint']}",
            f"data.root={data_root}",
            *DATA_OVERRIDES,
            f"hydra.run.dir={out}",
        ]
    )
    _check(proc)
    assert "mIoU" in proc.stdout  # the per-class table
    again = json.loads((out / "metrics.json").read_text())
    for key in _val_keys():
        assert again[key] == metrics[key], (key, again[key], metrics[key])
    assert again["num_images"] == 4

    # one labelIds PNG per val image, named after it, at full label resolution
    pred_dir = Path(again["predictions"])
    images = sorted((data_root / "leftImg8bit" / "val").rglob("*_leftImg8bit.png"))
    names = [p.name[: -len("_leftImg8bit.png")] for p in images]
    assert sorted(p.name for p in pred_dir.glob("*.png")) == sorted(prediction_filename(n) for n in names)
    with Image.open(pred_dir / prediction_filename(names[0])) as im:
        assert im.mode == "L" and im.size == (128, 64)
        class_label_ids = set(TRAIN_ID_TO_LABEL_ID[:19].tolist())  # argmax: always one of the 19
        assert set(np.unique(np.asarray(im)).tolist()) <= class_label_ids
    scored = score_folder(data_root / "gtFine" / "val", pred_dir)
    assert scored["num_images"] == 4
    assert math.isclose(scored["mIoU"], metrics["val/miou"], rel_tol=0, abs_tol=1e-12)
    for name, v in scored["IoU"].items():
        key = "val/iou/" + name.replace(" ", "_")
        assert (math.isnan(v) and metrics[key] is None) or math.isclose(v, metrics[key], abs_tol=1e-12), key


def test_checkpoint_reloads_as_segmenter(trained):
    from dense.data.cityscapes import CITYSCAPES_CLASSES
    from dense.lit.checkpoint import (
        load_model_from_checkpoint,
        load_segmenter_from_checkpoint,
        read_checkpoint,
    )

    _, _, metrics = trained
    model, extras = load_segmenter_from_checkpoint(metrics["checkpoint"])
    assert model.training is False and model.num_classes == 19
    assert extras["task"] == "segment" and extras["info"].class_names == tuple(CITYSCAPES_CLASSES)
    assert extras["config"]["backbone"] == "v3_small" and extras["config"]["width_mult"] == 0.35
    assert extras["config"]["head"] == "lraspp" and extras["config"]["output_stride"] == 16
    assert extras["val_metrics"]["val/miou"] == metrics["val/miou"]
    state = read_checkpoint(metrics["checkpoint"])["state_dict"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, state["model." + k]), k
    assert model.predict(torch.rand(1, 3, 64, 128)).shape == (1, 64, 128)
    with pytest.raises(ValueError, match="holds a 'segment' model"):
        load_model_from_checkpoint(metrics["checkpoint"], task="detect")


def test_datamodule_batches(trained):
    from dense.lit.cityscapes_data import CityscapesDataModule

    _, data_root, _ = trained
    dm = CityscapesDataModule(
        data_root, crop=(64, 48), batch_size=4, val_batch_size=2, num_workers=0, scan_cache=False
    )
    dm.setup("fit")
    info = dm.info()
    assert info.num_classes == 19 and info.class_names[0] == "road" and len(info.class_names) == 19
    assert info.val_label_dir == str(data_root / "gtFine" / "val")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 64, 48) and batch["mask"].shape == (4, 64, 48)
    assert batch["mask"].dtype == torch.int64
    val = next(iter(dm.val_dataloader()))
    assert val["image"].shape == (2, 3, 64, 128) and val["mask"].shape == (2, 64, 128)
    assert len(val["name"]) == 2 and val["name"][0].count("_") == 2  # <city>_<seq>_<frame>
    # eval_scale: the image is downscaled, the mask stays at full label resolution
    half = CityscapesDataModule(data_root, eval_scale=0.5, val_batch_size=2, num_workers=0, scan_cache=False)
    half.setup("validate")
    val = next(iter(half.val_dataloader()))
    assert val["image"].shape == (2, 3, 32, 64) and val["mask"].shape == (2, 64, 128)
    assert half.train_dataset is None  # validate builds the val split only


# --------------------------------------------------------------------------------------------------
# configuration: the task picks its groups; wrong combinations fail before any work
# --------------------------------------------------------------------------------------------------
def _compose(overrides: list[str], config_name: str = "train"):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def test_segment_task_defaults_compose():
    from dense.lit.config import validate_config

    cfg = _compose(["task=segment"])
    validate_config(cfg, conf_dir=CONF)
    assert cfg.head.name == "lraspp" and cfg.head.task == "segment" and cfg.data.task == "segment"
    assert cfg.data.synthetic is True and cfg.task.monitor == cfg.optimized_metric == "val/miou"
    assert cfg.optim._target_ == "torch.optim.AdamW" and cfg.sched._target_.endswith("warmup_linear")
    # the 10-minute budget of make train-segment (README, "Training results"), the schedule over it
    assert cfg.trainer.budget == "9.5min" and cfg.trainer.max_epochs == -1
    assert cfg.trainer.check_val_every_n_epoch == 4 and cfg.sched.warmup_fraction == 0.0
    assert cfg.data.num_workers == 0 and cfg.data.global_batch_size == 4 and list(cfg.data.crop) == [256, 256]
    # the command line still picks any optimizer / schedule
    cfg = _compose(["task=segment", "optim=sgd", "sched=cosine", "head=raspp", "trainer.max_epochs=13"])
    assert cfg.optim._target_ == "torch.optim.SGD" and cfg.sched._target_.endswith("warmup_cosine")
    validate_config(cfg, conf_dir=CONF)
    # detection keeps its own defaults
    det = _compose([])
    assert det.task.name == "detect" and det.head.name == "ssdlite"
    assert det.optim._target_ == "torch.optim.AdamW" and det.sched._target_.endswith("warmup_linear")
    # the paper recipe and the real data set
    exp = _compose(["experiment=lraspp_cityscapes"])
    validate_config(exp, conf_dir=CONF)
    assert exp.task.name == "segment" and exp.backbone.reduced_tail is True and exp.head.channels == 128
    assert list(exp.data.crop) == [512, 1024] and exp.optim.lr == 0.01 and exp.trainer.strategy == "ddp"
    # task=segment data=cityscapes alone gets the paper's recipe; the CPU one stays with the shapes
    real = _compose(["task=segment", "data=cityscapes"])
    validate_config(real, conf_dir=CONF)
    assert real.recipe.name == "lraspp_cityscapes" and real.optim._target_ == "torch.optim.SGD"
    assert real.optim.lr == 0.01 and real.sched.power == 0.9 and real.trainer.max_epochs == 540
    assert list(real.data.crop) == [512, 1024] and real.backbone.bn_momentum is None
    assert real.head.ohem_fraction is None and cfg.recipe.name == "shapes_cityscapes_cpu"
    ev = _compose(["task=segment", f"ckpt={CONF / 'train.yaml'}"], "eval")
    validate_config(ev, conf_dir=CONF, stage="eval")
    assert ev.save_predictions is True and ev.task.name == "segment"


@pytest.mark.parametrize("task", ["detect", "segment"])
@pytest.mark.parametrize("sched", [None, "linear", "linear_no_warmup", "cosine", "poly"])
def test_every_schedule_composes_with_the_built_in_recipes(task, sched):
    """A key that a recipe sets under `sched:` would reach whichever schedule the command line
    picks; each schedule is built from the composed config and run for a 100-step fit."""
    from hydra.utils import instantiate

    cfg = _compose([f"task={task}"] + ([f"sched={sched}"] if sched else []))
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    factory = instantiate(cfg.sched)
    steps = {"total_steps": 100, "steps_per_epoch": 10}
    if "budget" in inspect.signature(factory).parameters:
        steps["budget"] = None
    scheduler = factory(opt, **steps)
    rates = []
    for _ in range(100):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    assert max(rates) == pytest.approx(1.0, rel=0.05) and rates[-1] < 0.05
    if sched is None and task == "segment":  # the recipe's schedule starts at its peak
        assert rates[0] == 1.0


WRONG_COMBINATIONS = [
    (["task=detect", "head=lraspp"], r"head=lraspp is a 'segment' head and cannot be used with task=detect"),
    (["task=detect", "head=raspp"], r"heads for task=detect: \['ssdlite'\]"),
    (["task=segment", "head=ssdlite"], r"heads for task=segment: \['lraspp', 'raspp'\]"),
    (["task=segment", "data=shapes_coco"], r"cannot be used with task=segment.*shapes_cityscapes"),
    (["task=detect", "data=cityscapes"], r"'segment' data set and cannot be used with task=detect"),
    (["task=segment", "head.output_stride=8"], r"head.output_stride=8"),
]


def test_wrong_combinations_are_config_errors():
    from hydra import compose, initialize_config_dir

    from dense.lit.config import ConfigError, validate_config

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):  # once: ~0.5 s each
        for overrides, message in WRONG_COMBINATIONS:
            with pytest.raises(ConfigError, match=message):
                validate_config(compose(config_name="train", overrides=overrides), conf_dir=CONF)


def test_train_tool_rejects_coco_data_for_segment_before_work(tmp_path):
    data_root = tmp_path / "shapes"
    proc = _run(
        [
            "tools/train.py",
            "task=segment",
            "data=shapes_coco",
            f"data.root={data_root}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "data=shapes_coco" in proc.stderr and "task=segment" in proc.stderr
    assert "shapes_cityscapes" in proc.stderr  # names the valid choices
    assert not data_root.exists(), "data generation started before the config was checked"


@pytest.mark.parametrize("head", ["lraspp", "raspp"])
def test_model_config_follows_head_and_backbone_groups(head):
    from hydra.utils import instantiate

    cfg = _compose(
        ["task=segment", f"head={head}", "backbone=v3_small", "backbone.width_mult=0.35"]
        + ["backbone.reduced_tail=true", "head.output_stride=32"]
    )
    model = instantiate(cfg.task.model, num_classes=19)
    c = model.config
    assert c.head == head and c.reduced_tail is True and c.output_stride == 32
    assert c.head_channels == (128 if head == "lraspp" else 256) and c.num_classes == 19
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 19, 64, 64)  # batch 2: R-ASPP's pooled BN


# --------------------------------------------------------------------------------------------------
# pieces
# --------------------------------------------------------------------------------------------------
class _OracleSegmenter(torch.nn.Module):
    """Logits that encode the class stored in channel 0 of the image (class = round(255 * x))."""

    def __init__(self, num_classes: int = 19) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.config = {"num_classes": num_classes}
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        labels = (images[:, 0] * 255).round().long()
        return torch.nn.functional.one_hot(labels, self.num_classes).permute(0, 3, 1, 2).float() * 10

    def loss(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(logits, masks, ignore_index=255) + self.dummy * 0

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self(images).argmax(1)


def _info(num_classes: int = 19):
    from dense.data.cityscapes import CITYSCAPES_CLASSES
    from dense.data.info import DatasetInfo

    names = CITYSCAPES_CLASSES if num_classes == 19 else [str(i) for i in range(num_classes)]
    return DatasetInfo(num_classes=num_classes, class_names=names)


def _blocks(labels: torch.Tensor, factor: int) -> torch.Tensor:
    return labels.repeat_interleave(factor, -2).repeat_interleave(factor, -1)


def _trainer(**kwargs):
    from lightning.pytorch import Trainer

    return Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def test_validation_upsamples_downscaled_logits_to_the_masks(tmp_path):
    """Images at half resolution, masks at full: the logits are upsampled before the argmax, the
    metric is a fraction, and pred_dir gets labelIds PNGs named after the images."""
    from torch.utils.data import DataLoader

    from dense.data.cityscapes import TRAIN_ID_TO_LABEL_ID
    from dense.evaluation.cityscapes import prediction_filename
    from dense.lit.cityscapes_data import collate_segmentation
    from dense.lit.segmentation import SegmentationModule

    g = torch.Generator().manual_seed(0)
    samples = []
    for i in range(3):
        small = torch.randint(0, 5, (4, 6), generator=g)  # classes 0..4 only
        mask = _blocks(small, 2)  # 8x12, each low-resolution pixel a 2x2 block
        mask[0, 0] = 255  # ignored pixels never count
        image = torch.zeros(3, 4, 6)
        image[0] = small.float() / 255
        samples.append({"image": image, "mask": mask, "name": f"city_{i:06d}_000019", "path": f"x{i}.png"})
    loader = DataLoader(samples, batch_size=2, collate_fn=collate_segmentation)
    module = SegmentationModule(_OracleSegmenter(), _info(), pred_dir=tmp_path / "preds", num_log_images=0)
    _trainer().validate(module, loader, verbose=False)
    m = module.last_metrics
    assert m["val/miou"] == 1.0  # a fraction; nearest-block upsampling of one-hot logits is exact
    assert m["val/iou/road"] == 1.0 and math.isnan(m["val/iou/bicycle"])  # never present, never predicted
    assert module.last_num_images == 3
    png = tmp_path / "preds" / prediction_filename("city_000001_000019")
    with Image.open(png) as im:
        saved = np.asarray(im)
    expected = TRAIN_ID_TO_LABEL_ID[_blocks(samples[1]["image"][0].mul(255).round().long(), 2).numpy()]
    assert saved.shape == (8, 12) and (saved == expected).all()


def _tiny_fit(sched, num_samples: int):
    """A SegmentationModule (V3-Small 0.35, SGD lr 0.1, `sched`) and a loader of `num_samples`
    random 32x32 samples in batches of 2."""
    from functools import partial

    from torch.utils.data import DataLoader

    from dense import build_model
    from dense.lit.cityscapes_data import collate_segmentation
    from dense.lit.segmentation import SegmentationModule

    g = torch.Generator().manual_seed(0)
    samples = [
        {
            "image": torch.rand(3, 32, 32, generator=g),
            "mask": torch.randint(0, 19, (32, 32), generator=g),
            "name": f"c_{i:06d}_000019",
            "path": "",
        }
        for i in range(num_samples)
    ]
    loader = DataLoader(samples, batch_size=2, collate_fn=collate_segmentation)
    model = build_model("segment", backbone="v3_small", head="lraspp", num_classes=19, width_mult=0.35)
    module = SegmentationModule(model, _info(), partial(torch.optim.SGD, lr=0.1), sched, num_log_images=0)
    return module, loader


def test_training_steps_log_loss_and_follow_the_schedule():
    from functools import partial

    from dense.lit.schedulers import warmup_poly

    module, loader = _tiny_fit(partial(warmup_poly, power=1.0), num_samples=4)
    trainer = _trainer(max_epochs=1, num_sanity_val_steps=0)
    trainer.fit(module, loader, loader)
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))
    assert 0.0 <= float(trainer.callback_metrics["val/miou"]) <= 1.0
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0)  # poly reached its end


@pytest.mark.parametrize("max_epochs", [-1, 12], ids=["open-ended", "epochs-after-steps"])
def test_warmup_epochs_count_the_loaders_batches_when_max_steps_ends_the_run(max_epochs):
    """warmup_epochs=1 with 3 batches an epoch is 3 steps, whether max_steps=10 ends the run with
    max_epochs=-1 or before max_epochs=12 (the epoch was once total / max_epochs: the whole run,
    or 0 steps); then cosine to 0 at step 10."""
    from functools import partial

    from lightning.pytorch.callbacks import Callback

    from dense.lit.schedulers import warmup_cosine

    class Rates(Callback):
        def __init__(self):
            self.seen = []

        def on_train_batch_start(self, trainer, *args):
            self.seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    module, loader = _tiny_fit(partial(warmup_cosine, warmup_epochs=1, warmup_factor=0.001), num_samples=6)
    rates = Rates()
    trainer = _trainer(max_epochs=max_epochs, max_steps=10, callbacks=[rates], limit_val_batches=0)
    trainer.fit(module, loader)
    warm = [0.1 * (0.001 + (1 - 0.001) * s / 3) for s in range(3)]
    cos = [0.05 * (1 + math.cos(math.pi * (s - 3) / 7)) for s in range(3, 10)]
    assert rates.seen == pytest.approx(warm + cos, abs=1e-9), rates.seen
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_module_checks_classes():
    from dense.data.info import DatasetInfo
    from dense.lit.segmentation import SegmentationModule

    with pytest.raises(TypeError, match="needs a model with .loss"):
        SegmentationModule(torch.nn.Linear(2, 2), _info())
    with pytest.raises(ValueError, match="predicts 19 classes but the data set has 2"):
        SegmentationModule(_OracleSegmenter(19), _info(2))
    with pytest.raises(ValueError, match="2 class names for 19 classes"):
        DatasetInfo(num_classes=19, class_names=["a", "b"])


def test_datamodule_errors_surface_in_setup(tmp_path):
    from dense.data.cityscapes import CityscapesDataError
    from dense.lit.cityscapes_data import CityscapesDataModule

    missing = tmp_path / "no_cityscapes_here"
    with pytest.raises(FileNotFoundError, match="no_cityscapes_here") as e:
        CityscapesDataModule(missing).setup("fit")
    assert "gtFine_labelIds.png" in str(e.value) and "shapes_cityscapes" in str(e.value)

    # an image without its label: the data set's scan names it, in setup (before any step)
    city = tmp_path / "cs" / "leftImg8bit" / "val" / "ulm"
    city.mkdir(parents=True)
    (tmp_path / "cs" / "gtFine" / "val" / "ulm").mkdir(parents=True)
    Image.new("RGB", (64, 32)).save(city / "ulm_000000_000019_leftImg8bit.png")
    dm = CityscapesDataModule(tmp_path / "cs", scan_cache=False)
    with pytest.raises(CityscapesDataError, match="ulm_000000_000019_leftImg8bit.png: image has no label"):
        dm.setup("validate")

    # bad arguments fail at construction
    for kwargs, message in [
        ({"crop": 0}, "crop"),
        ({"scale": (2.0, 1.0)}, "scale"),
        ({"flip": 2.0}, "flip"),
        ({"eval_scale": 0}, "eval_scale"),
        ({"batch_size": 0}, "batch sizes"),
    ]:
        with pytest.raises(ValueError, match=message):
            CityscapesDataModule(tmp_path, **kwargs)


def test_collate_rejects_mixed_sizes():
    from dense.lit.cityscapes_data import collate_segmentation

    a = {"image": torch.zeros(3, 4, 4), "mask": torch.zeros(4, 4, dtype=torch.long), "name": "a", "path": ""}
    b = {"image": torch.zeros(3, 4, 6), "mask": torch.zeros(4, 6, dtype=torch.long), "name": "b", "path": ""}
    assert collate_segmentation([a, a])["image"].shape == (2, 3, 4, 4)
    with pytest.raises(ValueError, match="val_batch_size=1"):
        collate_segmentation([a, b])


# --------------------------------------------------------------------------------------------------
# slow: learning, DDP
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ddp_validation_matches_single_process(trained, tmp_path):
    """trainer=ddp_cpu (2 processes, gloo): each val image goes to exactly one rank (no padded
    duplicates in the confusion matrix), the matrices are summed; the numbers equal a
    single-process evaluation. 5 val images: a padding sampler would repeat one. Each rank writes
    the label PNGs of its own images: the same 5 files, byte for byte."""
    _, _, metrics = trained
    overrides = ["task=segment", *DATA_OVERRIDES]
    one, two = eval_one_and_two_processes(metrics["checkpoint"], tmp_path, overrides)
    assert one["num_images"] == two["num_images"] == 5
    for key in _val_keys():
        assert one[key] == two[key], key
    pngs = [sorted((tmp_path / d / "predictions").rglob("*.png")) for d in ("one", "two")]
    assert len(pngs[0]) == 5 and [p.name for p in pngs[0]] == [p.name for p in pngs[1]]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(*pngs))
    outputs = [sorted(p.name for p in (tmp_path / d).iterdir()) for d in ("one", "two")]
    assert outputs[1] == sorted([*outputs[0], "train_ddp_process_1.log"]), outputs


@pytest.mark.slow
def test_training_learns_shapes_cityscapes(tmp_path):
    """60 optimizer steps on 32 small scenes lift val mIoU from chance (~0.03) to about 0.3
    (0.27-0.31 measured). MobileNetV2 x0.5: its BatchNorm momentum 0.1 settles the running statistics
    within such a short run (V3's 0.01 needs a few hundred steps before eval mode is meaningful)."""
    run_dir = tmp_path / "run"
    proc = _run(
        [
            "tools/train.py",
            "task=segment",
            "backbone=v2",
            "backbone.width_mult=0.5",
            "trainer.max_epochs=15",
            "trainer.budget=null",
            "sched=poly",
            "trainer.check_val_every_n_epoch=15",
            "trainer.num_sanity_val_steps=0",
            "trainer.log_every_n_steps=5",
            "trainer.enable_progress_bar=false",
            f"data.root={tmp_path / 'shapes'}",
            "data.synthetic_options.num_train=32",
            "data.synthetic_options.num_val=8",
            "data.synthetic_options.size=[64,128]",
            "data.crop=[64,128]",
            "data.scale=[0.75,1.25]",
            "data.batch_size=8",
            "data.val_batch_size=8",
            "data.num_workers=0",
            f"hydra.run.dir={run_dir}",
        ],
        timeout=900,
    )
    _check(proc)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 60
    assert metrics["val/miou"] > 0.2, metrics["val/miou"]
    for name in ("road", "building", "sky"):  # the large classes are found
        assert metrics[f"val/iou/{name}"] > 0.3, (name, metrics[f"val/iou/{name}"])
    losses = [
        float(row.split(",")[header.index("train/loss")])
        for header in [(run_dir / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")]
        for row in (run_dir / "csv" / "metrics.csv").read_text().splitlines()[1:]
        if row.split(",")[header.index("train/loss")]
    ]
    assert losses[-1] < 0.7 * losses[0], losses


# --------------------------------------------------------------------------------------------------
# deploy: tools/export.py and the ONNX runner on the run's checkpoint
# --------------------------------------------------------------------------------------------------
def test_export_tool_runner_scores_as_training(trained, tmp_path):
    """Exported at the val pictures' size (64x128 here), the runner over the val set gives
    training's mIoU; curves.png shows the mIoU."""
    run_dir, data_root, metrics = trained
    assert (run_dir / "curves.png").is_file()
    out = tmp_path / "seg.onnx"
    args = [f"ckpt={metrics['checkpoint']}", f"out={out}", "image_size=64,128", f"eval_root={data_root}"]
    _check(_run(["tools/export.py", *args]))
    ours = json.loads(out.with_suffix(".metrics.json").read_text())[str(out)]
    assert ours["num_images"] == 4
    assert ours["val/miou"] == pytest.approx(metrics["val/miou"], abs=1e-4)
    proc = _run(["tools/export.py", f"ckpt={metrics['checkpoint']}", f"out={out}"])
    assert proc.returncode == 2 and "image_size" in proc.stderr  # segmentation needs its input size
