"""One job of `tools/train.py` as a sweep sees it: its status file (`metrics.json`, which says
`"status": "ok"` with the final metrics, or `"status": "failed"` with the error's first line), the
resume rule (a finished job is skipped) and the failure rule (in a multirun a failed job is
recorded and the sweep goes on, unless `fail_fast=true`)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dense.lit.config import json_safe
from dense.sweep.records import METRICS_FILE, read_status
from dense.sweep.report import summarize

__all__ = ["METRICS_FILE", "first_line", "in_multirun", "read_status", "run_job", "write_status"]

log = logging.getLogger("dense.sweep")


def first_line(error: BaseException) -> str:
    """`TypeName: first line of the message` (the rest of a traceback lives in the job's log)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def write_status(run_dir: str | Path, record: dict[str, Any]) -> Path:
    """Write `metrics.json` through a temporary file, so a killed job never leaves half a file."""
    path = Path(run_dir) / METRICS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".json.{os.getpid()}.tmp")  # DDP ranks may record one failure together
    tmp.write_text(json.dumps(json_safe(record), indent=2) + "\n")
    tmp.replace(path)
    return path


def in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # outside a Hydra app
        return False


def run_job(cfg: DictConfig, work: Callable[[DictConfig], float | None]) -> float | None:
    """Run `work(cfg)` (validate + train, which writes the ok `metrics.json`) as a job.

    With `resume=true` a job whose folder holds an ok `metrics.json` is skipped (its objective is
    returned again). A failure writes a failed `metrics.json`; in a multirun it returns None (the
    sweep goes on and the Optuna sweeper marks the trial failed) unless `fail_fast=true`, which
    writes the summary and ends the sweep; outside a multirun it always re-raises.
    """
    out = Path(cfg.output_dir)
    previous = read_status(out)
    if previous is not None and previous.get("status") == "ok" and cfg.get("resume", False):
        log.info("resume: %s already finished, skipped", out)
        return previous.get(cfg.optimized_metric)
    if previous is not None:
        (out / METRICS_FILE).unlink(missing_ok=True)  # a stale record must not describe this attempt
    try:
        return work(cfg)
    except Exception as e:
        error = first_line(e)
        try:
            write_status(out, {"status": "failed", "error": error, **describe(cfg)})
        except OSError as write_error:  # an unwritable output_dir is itself the error being reported
            log.warning("could not record the failure in %s: %s", out, write_error)
        if not in_multirun():
            raise
        if cfg.get("fail_fast", False):
            log.error("job failed", exc_info=True)
            stop_sweep(error)
        log.error("job failed (the sweep goes on; fail_fast=true stops it): %s", error, exc_info=True)
        return None


def stop_sweep(error: str) -> None:
    """Summarise the sweep so far and end the process: SystemExit passes through Hydra's handlers
    of job exceptions, which would otherwise record the failure and launch the next job (and
    Hydra callbacks cannot raise: their exceptions become warnings)."""
    from hydra.core.hydra_config import HydraConfig

    hydra = HydraConfig.get()
    summarize(hydra.sweep.dir)
    raise SystemExit(f"train.py: job {hydra.job.num} failed and fail_fast=true stops the sweep: {error}")


def describe(cfg: DictConfig) -> dict[str, Any]:
    """What every `metrics.json`, ok or failed, says about the job."""
    out: dict[str, Any] = {"output_dir": str(Path(cfg.output_dir).resolve())}
    for key, path in [
        ("task", "task.name"),
        ("backbone", "backbone.name"),
        ("monitor", "optimized_metric"),
        ("monitor_mode", "task.monitor_mode"),
    ]:
        try:  # a broken config must not hide the error being recorded
            out[key] = OmegaConf.select(cfg, path, throw_on_missing=False)
        except Exception:
            out[key] = None
    return out
