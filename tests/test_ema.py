"""The weights' moving average (`ema.decay`, dense.lit.ema.WeightEMA on Lightning's
EMAWeightAveraging): the average after real optimizer steps equals the closed form, validation sees
it and training does not, resume restores it, and tools/train.py validates, saves and evaluates it
(also when the time budget ends the run)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lit_runs import check, run_tool, tiny_segmentation
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dense.lit.ema import WeightEMA

STEPS_PER_EPOCH = 4


class Tiny(pl.LightningModule):
    """Linear -> BatchNorm -> Linear on fixed data; records the weights each validation sees."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))
        self.validated: list[dict[str, torch.Tensor]] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        if batch_idx == 0 and not self.trainer.sanity_checking:
            self.validated.append(_floats(self))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


class Trajectory(pl.Callback):
    """The live weights after every optimizer step."""

    def __init__(self) -> None:
        self.live: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.live.append(_floats(pl_module))


def _floats(module: nn.Module) -> dict[str, torch.Tensor]:
    """Float parameters and buffers (BatchNorm's num_batches_tracked is an integer count)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items() if v.is_floating_point()}


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4 * STEPS_PER_EPOCH, 4, generator=g)
    y = x.sum(1, keepdim=True) + 0.1 * torch.randn(len(x), 1, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=4, shuffle=False)


def _fit(epochs: int, callbacks: list, root: Path, ckpt: Path | None = None) -> tuple[Tiny, pl.Trainer]:
    pl.seed_everything(0)
    module = Tiny()
    trainer = pl.Trainer(
        max_epochs=epochs,
        callbacks=callbacks,
        default_root_dir=root,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=1,
    )
    trainer.fit(module, _loader(), _loader(), ckpt_path=ckpt, weights_only=True)
    return module, trainer


def _closed_form(live: list[dict[str, torch.Tensor]], decay: float, steps: list[int]) -> dict:
    """sum_j w_j * x_{s_j} over the updating steps s_1..s_n: weight decay^(n-1) on the first (its
    update copies), (1 - decay) * decay^(n-j) on the others."""
    n = len(steps)
    weights = [decay ** (n - 1)] + [(1 - decay) * decay ** (n - j) for j in range(2, n + 1)]
    assert sum(weights) == pytest.approx(1.0)
    return {k: sum(w * live[s][k] for w, s in zip(weights, steps)) for k in live[0]}


def _assert_close(a: dict, b: dict) -> None:
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.parametrize(
    ("decay", "every", "start", "updating"),
    [(0.7, 1, None, [0, 1, 2, 3, 4, 5, 6, 7]), (0.6, 2, 3, [4, 6])],  # 0-based optimizer steps
)
def test_average_is_the_closed_form_ema_and_validation_sees_it(tmp_path, decay, every, start, updating):
    ema, live = WeightEMA(decay, update_every=every, start_step=start), Trajectory()
    module, _ = _fit(2, [ema, live], tmp_path)
    assert len(live.live) == 2 * STEPS_PER_EPOCH
    expected = _closed_form(live.live, decay, updating)
    # every validation (one per epoch) saw the average of the steps so far, BatchNorm statistics too
    first = [s for s in updating if s < STEPS_PER_EPOCH]
    before = _closed_form(live.live, decay, first) if first else live.live[STEPS_PER_EPOCH - 1]
    _assert_close(module.validated[0], before)  # nothing averaged yet: the live weights
    _assert_close(module.validated[1], expected)
    # the model holds the average after training; the average is not the last live weights
    _assert_close(_floats(module), expected)
    assert not torch.allclose(expected["net.0.weight"], live.live[-1]["net.0.weight"], atol=1e-4)
    assert not torch.allclose(expected["net.1.running_mean"], live.live[-1]["net.1.running_mean"], atol=1e-4)

    # training itself is not disturbed: the live weights follow the run without an average
    plain = Trajectory()
    _fit(2, [plain], tmp_path / "plain")
    for a, b in zip(plain.live, live.live):
        _assert_close(a, b)


def test_before_its_first_update_the_live_weights_stand_in(tmp_path):
    """start_step beyond the run: validation, the final model and the checkpoint are the live ones
    (Lightning alone would use the copy of the untrained module it made at setup)."""
    live = Trajectory()
    module, trainer = _fit(1, [WeightEMA(0.5, start_step=100), live], tmp_path)
    _assert_close(module.validated[0], live.live[-1])
    _assert_close(_floats(module), live.live[-1])
    trainer.save_checkpoint(tmp_path / "end.ckpt")
    ckpt = torch.load(tmp_path / "end.ckpt", weights_only=True)
    _assert_close({k: ckpt["state_dict"][k] for k in live.live[-1]}, live.live[-1])
    assert int(ckpt["averaging_state"]["n_averaged"]) == 0


def test_checkpoints_hold_the_average_and_resume_continues_it(tmp_path):
    """state_dict: the average (what load_model_from_checkpoint reads); current_model_state: the
    live weights, also in a checkpoint written after training ended (as tools/train.py's final
    one); resuming from it gives the uninterrupted run's average and live weights."""
    straight, live = Trajectory(), Trajectory()
    module, _ = _fit(2, [WeightEMA(0.7), straight], tmp_path / "straight")

    half, trainer = _fit(1, [WeightEMA(0.7), live], tmp_path / "half")
    trainer.save_checkpoint(tmp_path / "end.ckpt")  # after training: the model holds the average
    ckpt = torch.load(tmp_path / "end.ckpt", weights_only=True)
    _assert_close({k: ckpt["state_dict"][k] for k in live.live[-1]}, _floats(half))
    _assert_close({k: ckpt["current_model_state"][k] for k in live.live[-1]}, live.live[-1])
    assert int(ckpt["averaging_state"]["n_averaged"]) == STEPS_PER_EPOCH

    resumed_live = Trajectory()
    resumed, _ = _fit(2, [WeightEMA(0.7), resumed_live], tmp_path / "resumed", ckpt=tmp_path / "end.ckpt")
    assert len(resumed_live.live) == STEPS_PER_EPOCH  # the second epoch only
    _assert_close(resumed_live.live[-1], straight.live[-1])
    _assert_close(_floats(resumed), _floats(module))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("ema.decay=1.0", r"ema.decay=1.0 must be a number between 0 and 1"),
        ("ema.decay=0", r"ema.decay=0 must be a number between 0 and 1"),
        ("ema.decay=fast", r"ema.decay='fast' must be"),
        ("ema.update_every=0", r"ema.update_every=0 must be a whole number"),
    ],
)
def test_ema_mistakes_are_config_errors(override, message):
    from hydra import compose, initialize_config_dir
    from lit_runs import ROOT

    from dense.lit.config import ConfigError, validate_config

    conf = str(ROOT / "conf")
    overrides = [override] if override.startswith("ema.decay") else ["ema.decay=0.9", override]
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg, conf_dir=conf, stage="train")


def test_train_py_exits_2_on_a_decay_out_of_range(tmp_path):
    proc = run_tool(["tools/train.py", "ema.decay=1.5", f"hydra.run.dir={tmp_path / 'run'}"])
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines[-1].startswith("train.py: error: ema.decay=1.5 must be a number between 0 and 1"), lines[-1]


@pytest.mark.slow
def test_budget_run_validates_saves_and_evaluates_the_average(tmp_path):
    """A real tools/train.py run ended by its time budget (its final validation comes after
    training): metrics.json is the average's, last.ckpt's state_dict is the average (not the live
    weights), and tools/eval.py on last.ckpt gives the same numbers."""
    run_dir, data_root = tmp_path / "run", tmp_path / "shapes"
    overrides = [o for o in tiny_segmentation() if o != "trainer.budget=null"]
    check(
        run_tool(
            [
                "tools/train.py",
                *overrides,
                "trainer.budget=90s",  # a few steps even on a busy machine (data set-up counts)
                "trainer.max_epochs=-1",
                "sched=linear",
                "trainer.check_val_every_n_epoch=1000",  # only the final validation
                "cost.latency_runs=0",
                "ema.decay=0.8",
                f"data.root={data_root}",
                f"hydra.run.dir={run_dir}",
            ],
            timeout=900,
        )
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["ema_decay"] == 0.8 and metrics["global_step"] >= 2, metrics
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert int(ckpt["averaging_state"]["n_averaged"]) == metrics["global_step"]
    avg, cur = ckpt["state_dict"], ckpt["current_model_state"]
    assert max((avg[k] - cur[k]).abs().max().item() for k in avg if avg[k].is_floating_point()) > 1e-4

    out = tmp_path / "eval"
    check(
        run_tool(
            [
                "tools/eval.py",
                "task=segment",
                f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}",
                f"data.root={data_root}",
                "data=shapes_cityscapes",
                *tiny_segmentation()[3:],
                f"hydra.run.dir={out}",
            ],
            timeout=900,
        )
    )
    again = json.loads((out / "metrics.json").read_text())
    for key in [k for k in metrics if k.startswith("val/") and k in again]:
        assert again[key] == metrics[key], (key, again[key], metrics[key])

    # resuming it without the average would train the average with the live weights' optimizer
    # moments: an error before any work, naming the key
    proc = run_tool(
        [
            "tools/train.py",
            *overrides,
            "trainer.max_epochs=2",
            f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}",
            f"data.root={data_root}",
            f"hydra.run.dir={tmp_path / 'resumed'}",
        ],
        timeout=900,
    )
    assert proc.returncode == 2 and "resume it with the same ema.decay" in proc.stderr, proc.stderr[-2000:]
