"""The Hydra callback of `tools/train.py` sweeps (`hydra.callbacks` in conf/train.yaml): at the
end of every multirun, whatever the sweeper or launcher, it writes `summary.csv`, `summary.md`
and `pareto.png` into the sweep folder (and the best trial's number into Optuna's
`optimization_results.yaml`). (With `fail_fast=true` the failed job itself writes the summary
and stops the sweep: see `dense.sweep.job`.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from dense.sweep import dirname  # noqa: F401  (registers the dense_subdir resolver in every process)
from dense.sweep.report import summarize
from dense.sweep.study import continue_study

__all__ = ["SweepSummary"]


def _optuna_settings(config: DictConfig) -> dict[str, Any] | None:
    sweeper = config.hydra.sweeper
    if "storage" not in sweeper or "study_name" not in sweeper:
        return None
    return {"storage": sweeper.storage, "study_name": sweeper.study_name}


def _best_params(sweep_dir: Path) -> list[str]:
    path = sweep_dir / "optimization_results.yaml"
    if not path.is_file():
        return []
    params = OmegaConf.load(path).get("best_params") or {}
    return [f"{k}={v}" for k, v in params.items()]


class SweepSummary(Callback):
    """Prepares the sweep folder (and a stored Optuna study) and writes the summary at the end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Optuna opens its SQLite file in the sweep folder before the first job makes it.
        Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)
        if _optuna_settings(config) is not None:
            continue_study(config.hydra.sweeper)  # the sweeper is built from this config next

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        optuna = _optuna_settings(config)
        if optuna is not None:
            optuna["best_overrides"] = _best_params(sweep_dir)
        summarize(sweep_dir, optuna)
