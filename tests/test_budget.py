"""The wall-clock training budget (trainer.budget): parsing, the schedule that follows it, and a real
run of tools/train.py that ends by the budget with its learning rate decayed to zero."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from lit_runs import ROOT, check, run_tool, tiny_segmentation

from dense.lit.budget import TrainingBudget, parse_budget
from dense.lit.schedulers import warmup_linear


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10min", 600), ("90s", 90), ("1h30min", 5400), ("1.5h", 5400), ("00:09:30", 570), (9.5, 570)],
)
def test_parse_budget(text, seconds):
    assert parse_budget(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["ten minutes", "10 parsecs", "-5min", "0s", "min"])
def test_parse_budget_rejects_what_is_not_a_duration(text):
    with pytest.raises(ValueError, match="trainer.budget"):
        parse_budget(text)


def test_parse_budget_none():
    assert parse_budget(None) is None and parse_budget("null") is None


def _lrs(sched, opt, progress, budget=None):
    out = []
    for p in progress:
        if budget is not None:
            budget.progress = p
        opt.step()
        sched.step()
        out.append(opt.param_groups[0]["lr"])
    return out


def test_warmup_linear_follows_the_budget_spent():
    """Linear warmup over 10% then linear decay to zero, as a function of the budget fraction spent
    (whatever the step count): Li et al. 2020's linear schedule."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    budget = TrainingBudget(60.0, job_start=0.0)
    sched = warmup_linear(opt, budget=budget, warmup_fraction=0.1, warmup_factor=0.0)
    assert opt.param_groups[0]["lr"] == 0.0  # progress 0: the warmup's first factor
    progress = [0.05, 0.1, 0.2, 0.55, 0.9, 1.0, 1.3]
    expected = [1.0, 2.0, 2.0 * 8 / 9, 1.0, 2.0 * 1 / 9, 0.0, 0.0]
    assert _lrs(sched, opt, progress, budget) == pytest.approx(expected, abs=1e-12)


def test_warmup_linear_ends_with_whichever_limit_comes_first():
    """With both max_epochs (total_steps) and a budget, the larger fraction drives the schedule."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    budget = TrainingBudget(60.0, job_start=0.0)
    sched = warmup_linear(opt, total_steps=10, budget=budget, warmup_fraction=0.0, final_ratio=0.1)
    # steps 1..4 with the budget behind (0.0) then ahead (0.8) of the step fraction
    lrs = _lrs(sched, opt, [0.0, 0.0, 0.8, 0.8], budget)
    assert lrs == pytest.approx([1 - 0.9 * 0.1, 1 - 0.9 * 0.2, 1 - 0.9 * 0.8, 1 - 0.9 * 0.8])
    with pytest.raises(ValueError, match="total_steps or a time budget"):
        warmup_linear(opt)


@pytest.mark.slow
def test_training_ends_by_its_budget_with_the_learning_rate_decayed(tmp_path):
    """A real run with max_epochs=-1: the budget ends training, the final weights are validated and
    the schedule reached ~0 at the end; the budget's state is in the checkpoint (for resume)."""
    run_dir = tmp_path / "run"
    overrides = [o for o in tiny_segmentation() if o != "trainer.budget=null"]
    proc = run_tool(
        [
            "tools/train.py",
            *overrides,
            "trainer.budget=30s",
            "trainer.max_epochs=-1",
            "sched=linear",
            "trainer.log_every_n_steps=1",
            "trainer.check_val_every_n_epoch=1000",
            "cost.latency_runs=0",
            f"data.root={tmp_path / 'shapes'}",
            f"hydra.run.dir={run_dir}",
        ]
    )
    check(proc)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["budget_s"] == 30.0
    assert metrics["global_step"] >= 4 and metrics["epoch"] >= 1, metrics  # several epochs, then the budget
    assert metrics["train_time_s"] < 30.0 and not math.isnan(metrics["val/miou"])
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    column = next(k for k in rows[0] if k.startswith("lr-"))  # LearningRateMonitor's name of group 1
    lr = [float(r[column]) for r in rows if r.get(column)]
    assert max(lr) > 1e-3 and lr[-1] < 0.2 * max(lr), lr  # warmed up, then decayed with the budget
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    saved = next(v for k, v in state.items() if k.startswith("TrainingBudget"))
    assert 0 < saved["duration_s"] < 30 and 0.5 < saved["progress"] <= 1.0


@pytest.mark.slow
def test_side_by_side_trains_both_models_for_the_same_budget(tmp_path):
    """tools/side_by_side.py: dense and torchvision's SSDLite on the same batches, each for its own
    `budget` seconds, both scored by the same COCO evaluation into one JSON."""
    out = tmp_path / "sbs.json"
    proc = run_tool(
        [
            "tools/side_by_side.py",
            "budget=4s",
            f"out={out}",
            f"data.root={tmp_path / 'shapes'}",
            "data.synthetic_options.num_train=16",
            "data.synthetic_options.num_val=4",
        ]
    )
    check(proc)
    record = json.loads(out.read_text())
    assert record["budget_s"] == 4.0 and [r["model"] for r in record["results"]] == ["dense", "torchvision"]
    for r in record["results"]:
        assert r["steps"] >= 1 and r["train_s"] >= 4.0 and 0.0 <= r["map_50"] <= 1.0, r
    assert "mAP@0.5" in proc.stdout and "torchvision" in proc.stdout


def test_side_by_side_rejects_unknown_models(tmp_path):
    proc = run_tool(["tools/side_by_side.py", "models=dense,yolo", f"data.root={tmp_path / 'shapes'}"])
    assert proc.returncode == 2 and "side_by_side.py: error: models='dense,yolo'" in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.budget=ten"], "trainer.budget='ten' is not a duration"),
        (["sched=cosine"], "sched=warmup_cosine needs the run's length in steps.*use sched=linear"),
        (["trainer.budget=null"], r"trainer.max_epochs=-1 trains without end.*trainer.budget"),
    ],
)
def test_budget_mistakes_are_config_errors(overrides, message):
    """Caught when the config is checked (before any data or model work), not in the scheduler."""
    from hydra import compose, initialize_config_dir

    from dense.lit.config import ConfigError, validate_config

    conf = str(ROOT / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg, conf_dir=conf, stage="train")
