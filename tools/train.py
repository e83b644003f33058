"""Train a model (Hydra entry point; the logic lives in ``dense`` and ``dense.lit``).

    python tools/train.py task=detect backbone=v3_large            # built-in shapes data, CPU recipe
    python tools/train.py task=segment backbone=v3_large           # LR-ASPP, built-in shapes_cityscapes
    python tools/train.py task=detect data=coco data.root=/coco trainer=ddp  # torchvision's COCO recipe
    python tools/train.py task=segment data=cityscapes data.root=/cs trainer=ddp  # the V3 paper's recipe
    python tools/train.py -m hparams_search=optuna                 # Optuna sweep over lr / wd
    python tools/train.py -m sweep=mnv3_lraspp                     # `make sweep` (docs/sweeps.md)
    python tools/train.py <same overrides> ckpt=<run>/checkpoints/last.ckpt   # resume a killed run

Writes to the run directory (``output_dir``): ``checkpoints/`` (best by ``task.monitor`` and
``last.ckpt``), TensorBoard (``tb/``) and CSV (``csv/``) logs, and ``metrics.json``: the final
validation metrics under their logged names as fractions (detect: ``val/map``, ``val/map_50``, ...
plus ``per_category_AP``; segment: ``val/miou``, ``val/iou/<class>``, ``val/loss``), the
checkpoint paths, ``"status": "ok"``, params, MAdds and CPU latency at the task's input size and
the train time (``"status": "failed"`` and the error instead when the job fails: see
``dense.sweep.job``). Returns ``optimized_metric`` (the Optuna objective).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path
from typing import Any

try:
    import dense  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hydra
from omegaconf import DictConfig, OmegaConf

from dense.errors import UserError, exit_user_error, restore_sigchld, worker_deaths
from dense.lit.config import (
    ConfigError,
    check_data_root,
    check_output_dir,
    datamodule_kwargs,
    tidy_logging,
    trainer_config,
    validate_config,
)
from dense.sweep import dirname  # noqa: F401  (the dense_subdir resolver of hydra.sweep.subdir)
from dense.sweep.cost import input_size, model_cost
from dense.sweep.ddp import children_run_this_job, job_process_group
from dense.sweep.job import describe, run_job, write_status

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
log = logging.getLogger("dense.train")


def _task_extras(module: Any) -> dict[str, Any]:
    """What metrics.json adds to the logged metrics, by task."""
    if module.task == "detect":
        return {"per_category_AP": dict(module.last_coco.per_category_ap) if module.last_coco else {}}
    return {"num_val_images": int(module.last_num_images)}


def train(cfg: DictConfig, job_start: float | None = None) -> float | None:
    """Build everything from the (validated) config, fit, write metrics.json; returns the objective.
    job_start: `time.monotonic()` at the job's start, from which trainer.budget counts."""
    import lightning.pytorch as pl
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import LearningRateMonitor, RichProgressBar
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from dense.lit.budget import TrainingBudget, parse_budget
    from dense.lit.callbacks import (
        AtomicCheckpointIO,
        DataHealth,
        DivergenceCheck,
        RngState,
        checkpoint_callbacks,
    )
    from dense.lit.checkpoint import check_checkpoint, read_checkpoint
    from dense.lit.ema import WeightEMA

    tidy_logging()
    pl.seed_everything(cfg.seed, workers=True)
    out = Path(cfg.output_dir)

    # Data first: the model's class count comes from the data set's categories.
    datamodule = instantiate(cfg.task.datamodule, **datamodule_kwargs(cfg))
    info = datamodule.info()
    model = instantiate(cfg.task.model, num_classes=info.num_classes)
    # A partial, then called: instantiate() would turn the DatasetInfo dataclass into a DictConfig.
    module = instantiate(cfg.task.module, _partial_=True)(
        model=model, info=info, optimizer=instantiate(cfg.optim), scheduler=instantiate(cfg.sched)
    )

    monitor, mode = cfg.task.monitor, cfg.task.monitor_mode
    checkpoints = checkpoint_callbacks(out / "checkpoints", monitor, mode, **cfg.checkpoint)
    checkpoint = checkpoints[0]  # the best by the monitor
    callbacks: list[Any] = [*checkpoints, LearningRateMonitor(logging_interval="step")]
    faults = cfg.get("faults") or {}  # the bad-data / divergence limits (README: bad data)
    data_health = DataHealth(faults.get("max_skipped_fraction", 0.1))
    callbacks += [DivergenceCheck(faults.get("max_nonfinite_steps", 0)), RngState(), data_health]
    ema = cfg.get("ema") or {}
    if ema.get("decay") is not None:  # the weights' moving average: validated and saved (dense.lit.ema)
        callbacks.append(
            WeightEMA(ema.decay, update_every=ema.get("update_every", 1), start_step=ema.get("start_step"))
        )
    budget_s = parse_budget(cfg.trainer.get("budget"))  # the whole job's wall-clock time
    if budget_s is not None:  # Lightning's Timer, sized when training starts
        callbacks.append(TrainingBudget(budget_s, job_start=job_start or time.monotonic()))
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(RichProgressBar())
    loggers = [TensorBoardLogger(out, name="tb", version=""), CSVLogger(out, name="csv", version="")]
    plugins = [AtomicCheckpointIO()]  # temp file + rename: a kill while saving keeps the last good file
    trainer = instantiate(
        trainer_config(cfg), callbacks=callbacks, logger=loggers, default_root_dir=str(out), plugins=plugins
    )
    children_run_this_job()  # DDP ranks 1.. of a multirun job run that job only
    if faults.get("check_memory", True):  # a batch / input that cannot fit: an error now, not an OOM kill
        from dense.lit.memory import check_training_memory

        optimizer = instantiate(cfg.optim)
        check_training_memory(model, cfg.task.name, datamodule, trainer, optimizer, info.num_classes)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    if cfg.ckpt:  # a file that is not this task's checkpoint: say what it is before Lightning fails on it
        resumed = read_checkpoint(cfg.ckpt)
        check_checkpoint(resumed, cfg.ckpt, cfg.task.name)
        if "current_model_state" in resumed and ema.get("decay") is None:
            # its state_dict is the average; without the EMA callback Lightning would go on training
            # the average with the live weights' optimizer moments
            raise ConfigError(
                f"{cfg.ckpt} was written by a run with a moving average of the weights: resume it "
                "with the same ema.decay (its metrics.json says ema_decay)"
            )
    last = out / "checkpoints" / "last.ckpt"

    def loader_guard() -> Any:  # a killed loader worker (the OOM killer): one clear line, exit 2
        if datamodule.num_workers == 0:
            return contextlib.nullcontext()
        return worker_deaths("lower data.num_workers or data.batch_size", checkpoint=last)

    started = time.perf_counter()
    # weights_only whatever torch's default: our checkpoints hold plain types only.
    with loader_guard():
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt, weights_only=True)
    train_time = time.perf_counter() - started

    if module.last_val_global_step != trainer.global_step:
        # The final weights were not validated (check_val_every_n_epoch, or a resumed finished run):
        # score them now so metrics.json and last.ckpt describe the same model.
        with loader_guard():
            trainer.validate(module, datamodule=datamodule, verbose=False)
        # a full, resumable checkpoint; saying so also keeps Lightning from logging that
        # "`weights_only` was not set", which reads like an unsafe load
        trainer.save_checkpoint(last, weights_only=False)
    if not trainer.is_global_zero:
        return module.last_metrics.get(cfg.optimized_metric)

    best_score = checkpoint.best_model_score
    metrics = {
        "status": "ok",
        **module.last_metrics,
        **_task_extras(module),
        "checkpoint": str(last.resolve()) if last.is_file() else None,
        "best_checkpoint": str(Path(checkpoint.best_model_path).resolve())
        if checkpoint.best_model_path
        else None,
        f"best_{monitor}": float(best_score) if best_score is not None else None,
        "epoch": int(trainer.current_epoch),
        "global_step": int(trainer.global_step),
        "interrupted": bool(trainer.interrupted),
        "train_time_s": train_time,
        "budget_s": budget_s,
        "ema_decay": ema.get("decay"),  # not null: the metrics and checkpoints are the average's
        **data_health.summary(),
        **model_cost(module.model, cfg.task.name, input_size(cfg), cfg.cost.latency_runs),
        **describe(cfg),
    }
    path = write_status(out, metrics)
    log.info("metrics written to %s (%s = %s)", path, cfg.optimized_metric, metrics.get(cfg.optimized_metric))
    try:  # a picture of the run; failing to draw it must not fail a finished run
        from dense.lit.curves import plot_curves

        plot_curves(out / "csv" / "metrics.csv", out / "curves.png", title=out.name)
    except Exception as e:  # noqa: BLE001
        log.warning("curves.png not written: %s", e)
    return module.last_metrics.get(cfg.optimized_metric)


def validate_and_train(cfg: DictConfig) -> float | None:
    job_start = time.monotonic()  # trainer.budget counts from here, data preparation included
    validate_config(cfg, conf_dir=CONF_DIR, stage="train")  # before any data or model work
    check_data_root(cfg)
    check_output_dir(cfg.output_dir)
    with job_process_group():
        return train(cfg, job_start)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        # A multirun records a failed job (metrics.json) and goes on; see dense.sweep.job.
        return run_job(cfg, validate_and_train)
    except UserError as e:  # single runs only: a multirun records it
        exit_user_error("train.py", e)
    finally:
        restore_sigchld()  # after a dead loader worker: the next job of a sweep gets torch's check back


if __name__ == "__main__":
    main()
