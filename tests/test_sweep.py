"""Sweeps of tools/train.py: one folder per sweep with a folder per job named by its number and
overrides; failed jobs (config errors, divergence) recorded while the sweep goes on; the summary
(summary.csv / summary.md / pareto.png) written by the Hydra callback; resume=true skips finished
jobs; fail_fast=true stops at the first failure; Optuna stores its study in the sweep folder and
continues it. The end-to-end tests run the real tool in subprocesses on tiny generated data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from lit_runs import ROOT, check, run_tool, tiny_segmentation
from omegaconf import OmegaConf

TINY = [
    *tiny_segmentation(),
    "trainer.max_epochs=1",
    "trainer.budget=null",
    "trainer.check_val_every_n_epoch=1",
    "cost.latency_runs=2",
]
# One job that trains, one with a config error, one whose loss becomes NaN.
LRS = "optim.lr=0.003,-1,1e30"


def _sweep(base: Path, *extra: str) -> list[str]:
    return [
        "tools/train.py",
        "-m",
        *TINY,
        f"data.root={base / 'shapes'}",
        f"hydra.sweep.dir={base / 'sweep'}",
        *extra,
    ]


def _rows(sweep_dir: Path) -> list[dict]:
    with (sweep_dir / "summary.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    base = tmp_path_factory.mktemp("sweep")
    proc = run_tool(_sweep(base, LRS))
    check(proc)
    return base, proc


def _job_dirs(sweep_dir: Path) -> dict[int, Path]:
    return {int(p.name.split("_")[0]): p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()}


def test_one_folder_per_sweep_and_per_job(sweep):
    base, _ = sweep
    sweep_dir = base / "sweep"
    jobs = _job_dirs(sweep_dir)
    assert sorted(jobs) == [0, 1, 2]
    # named by number and overrides (cut to a safe length with a hash), without resume / data.root
    assert all(p.name.startswith(f"{n}_backbone.width_mult=0.35,") for n, p in jobs.items())
    assert all(len(p.name) <= 130 and "data.root" not in p.name for p in jobs.values())
    assert {"summary.csv", "summary.md", "pareto.png", "multirun.yaml"} <= {
        p.name for p in sweep_dir.iterdir()
    }


def test_failed_jobs_are_recorded_and_the_sweep_goes_on(sweep):
    base, _ = sweep
    jobs = _job_dirs(base / "sweep")
    ok = json.loads((jobs[0] / "metrics.json").read_text())
    config_error = json.loads((jobs[1] / "metrics.json").read_text())
    diverged = json.loads((jobs[2] / "metrics.json").read_text())
    assert ok["status"] == "ok" and 0.0 <= ok["val/miou"] <= 1.0
    assert ok["params"] > 0 and ok["madds"] > 0 and ok["input_size"] == [64, 128]
    assert ok["latency_ms_cpu"] > 0 and ok["train_time_s"] > 0
    assert config_error["status"] == "failed"
    assert config_error["error"].startswith("ConfigError: optim.lr must be a positive number")
    assert diverged["status"] == "failed"
    assert diverged["error"].startswith("DivergenceError: diverged at step ")
    assert "loss is nan" in diverged["error"]
    for failed in (config_error, diverged):  # never looks like success
        assert not any(k.startswith("val/") for k in failed) and "checkpoint" not in failed


def test_summary_ranks_jobs_and_names_the_best(sweep):
    from dense.complexity import count_madds, count_params
    from dense.lit.checkpoint import load_segmenter_from_checkpoint

    base, _ = sweep
    sweep_dir = base / "sweep"
    rows = _rows(sweep_dir)
    assert [r["job"] for r in rows] == ["0", "1", "2"]  # the finished job first, failures by number
    assert [r["status"] for r in rows] == ["ok", "failed", "failed"]
    assert rows[0]["overrides"] == "optim.lr=0.003"  # only what tells the jobs apart
    assert "diverged at step" in rows[2]["error"]
    ok = json.loads((_job_dirs(sweep_dir)[0] / "metrics.json").read_text())
    assert float(rows[0]["val/miou"]) == pytest.approx(ok["val/miou"], abs=1e-4)
    model, _ = load_segmenter_from_checkpoint(ok["checkpoint"])
    assert float(rows[0]["params_M"]) == pytest.approx(count_params(model) / 1e6, abs=1e-3)
    assert float(rows[0]["madds_M"]) == pytest.approx(count_madds(model, (64, 128)) / 1e6, abs=0.1)
    md = (sweep_dir / "summary.md").read_text()
    assert "3 jobs, 1 ok, 2 failed." in md and "Best: job 0 (`optim.lr=0.003`)" in md
    assert "failed: ConfigError: optim.lr must be a positive number" in md
    assert (sweep_dir / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_skips_finished_jobs(sweep):
    base, _ = sweep
    jobs = _job_dirs(base / "sweep")
    before = {n: (p / "metrics.json").stat().st_mtime_ns for n, p in jobs.items()}
    check(run_tool(_sweep(base, LRS, "resume=true")))
    after = {n: (p / "metrics.json").stat().st_mtime_ns for n, p in _job_dirs(base / "sweep").items()}
    assert sorted(after) == [0, 1, 2]  # same folders: resume=true is not part of their names
    assert after[0] == before[0]  # finished: skipped
    assert after[1] != before[1] and after[2] != before[2]  # failed: run again
    assert [r["status"] for r in _rows(base / "sweep")] == ["ok", "failed", "failed"]


def test_fail_fast_stops_at_the_first_failure(tmp_path):
    proc = run_tool(_sweep(tmp_path, "optim.lr=-1,0.003", "fail_fast=true"))
    assert proc.returncode != 0
    assert "fail_fast=true" in proc.stderr + proc.stdout
    jobs = _job_dirs(tmp_path / "sweep")
    assert sorted(jobs) == [0]  # the second job never started
    assert [r["status"] for r in _rows(tmp_path / "sweep")] == ["failed"]


@pytest.mark.slow
def test_optuna_study_in_the_sweep_folder_continues(tmp_path):
    args = _sweep(tmp_path, "hparams_search=optuna", "hydra.sweeper.sampler.n_startup_trials=1")
    check(run_tool([*args, "hydra.sweeper.n_trials=2"]))
    sweep_dir = tmp_path / "sweep"
    assert (sweep_dir / "optuna.db").is_file()
    # the same command with more trials: the stored study continues (2 done, 1 to go)
    check(run_tool([*args, "hydra.sweeper.n_trials=3"]))
    import optuna

    study = optuna.load_study(study_name="dense", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    assert len(study.trials) == 3
    results = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert results.best_trial_number == study.best_trial.number
    assert results.best_value == pytest.approx(study.best_value)
    assert sorted(results.best_overrides) == sorted(f"{k}={v}" for k, v in study.best_params.items())
    assert set(study.best_params) == {"optim.lr", "optim.weight_decay"}
    assert 1e-4 <= study.best_params["optim.lr"] <= 1e-2
    rows = _rows(sweep_dir)
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows)
    assert sorted(int(r["job"]) for r in rows) == [0, 1, 2]  # trial numbers, unique across launches
    assert Path(results.best_job_dir).is_dir()


# --------------------------------------------------------------------------------------------------
# units
# --------------------------------------------------------------------------------------------------
def test_pareto_front():
    from dense.sweep.pareto import pareto_front

    pts = [(10.0, 0.5), (20.0, 0.6), (15.0, 0.4), (30.0, 0.6), (5.0, 0.3)]
    assert pareto_front(pts) == [4, 0, 1]  # (15, .4) and (30, .6) are beaten
    assert pareto_front(pts, maximize=False) == [4]


def test_job_subdir_is_one_safe_folder_name():
    from dense.sweep.dirname import job_subdir

    assert (
        job_subdir(3, "backbone=v3_small,head.output_stride=16")
        == "3_backbone=v3_small,head.output_stride=16"
    )
    assert job_subdir(0, "") == "0"
    assert job_subdir(1, "weights=/a/b.pth") == "1_weights=_a_b.pth"
    long_a, long_b = job_subdir(2, "x=" + "a" * 300), job_subdir(2, "x=" + "a" * 299 + "b")
    assert len(long_a) < 130 and long_a != long_b


def test_optuna_search_spaces_fit_their_optimizer():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        adamw = compose("train", overrides=["hparams_search=optuna"], return_hydra_config=True)
        sgd = compose("train", overrides=["hparams_search=optuna_sgd"], return_hydra_config=True)
    assert adamw.optim._target_ == "torch.optim.AdamW" and sgd.optim._target_ == "torch.optim.SGD"
    assert adamw.hydra.sweeper.params["optim.lr"] == "tag(log, interval(1.0e-4, 1.0e-2))"
    assert sgd.hydra.sweeper.params["optim.lr"] == "tag(log, interval(0.005, 0.3))"
    assert adamw.hydra.sweeper.storage.startswith("sqlite:///") and adamw.hydra.sweeper.study_name


def test_cost_input_size_per_task():
    from hydra import compose, initialize_config_dir

    from dense.sweep.cost import input_size

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        det = compose("train", overrides=["task=detect", "head.image_size=128"])
        seg = compose("train", overrides=["task=segment", "data.synthetic_options.size=[64,128]"])
        cs = compose("train", overrides=["task=segment", "data=cityscapes", "data.eval_scale=0.5"])
        fixed = compose("train", overrides=["task=segment", "cost.input_size=[32,48]"])
    assert input_size(det) == (128, 128) and input_size(seg) == (64, 128)
    assert input_size(cs) == (512, 1024) and input_size(fixed) == (32, 48)


def test_model_cost_of_a_detector_leaves_out_postprocessing():
    import dense
    from dense.complexity import count_madds, count_params
    from dense.sweep.cost import model_cost

    model = dense.build_model("detect", "v3_small", width_mult=0.35, num_classes=7, image_size=128)
    cost = model_cost(model, "detect", (128, 128), latency_runs=2)
    assert cost["madds"] == count_madds(model, 128, forward="forward")
    assert cost["params"] == count_params(model) and cost["input_size"] == [128, 128]
    assert cost["latency_ms_cpu"] > 0 and model.training  # measured on a copy
