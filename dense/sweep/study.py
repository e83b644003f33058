"""Optuna pieces of a sweep: the stored study continued (`n_trials` counts the trials already in
it, so re-running an interrupted search with the same `hydra.sweep.dir` finishes it instead of
starting `n_trials` more), and the best trial's number for `optimization_results.yaml`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

__all__ = ["add_best_trial", "continue_study", "number_by_trial"]

log = logging.getLogger("dense.sweep")
_DONE = ("COMPLETE", "FAIL", "PRUNED")


def _load_study(storage: Any, name: str | None):
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage)
    except Exception:  # no such study yet
        return None


def _sqlite_dir(storage: Any) -> Path | None:
    text = str(storage or "")
    return Path(text[len("sqlite:///") :]).parent if text.startswith("sqlite:///") else None


def continue_study(sweeper: DictConfig) -> None:
    """Before the Optuna sweeper starts: create the SQLite file's folder, and lower
    `sweeper.n_trials` by the trials the stored study already finished (failed ones included), so
    `n_trials` is the study's total and re-running an interrupted search finishes it."""
    folder = _sqlite_dir(sweeper.get("storage"))
    if folder is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    study = _load_study(sweeper.storage, sweeper.get("study_name"))
    if study is None:
        return
    done = sum(t.state.name in _DONE for t in study.trials)
    with read_write(sweeper), open_dict(sweeper):
        sweeper.n_trials = max(0, int(sweeper.n_trials) - done)
    log.info("study %s has %d finished trials: %d to go", study.study_name, done, sweeper.n_trials)


def add_best_trial(sweep_dir: Path, storage: Any, study_name: str | None, job_dir: str | None) -> None:
    """Add the best trial's number, value and overrides (and its job folder) to the sweeper's
    `optimization_results.yaml` (which holds best_params / best_value only)."""
    path = Path(sweep_dir) / "optimization_results.yaml"
    study = _load_study(storage, study_name) if storage else None
    if not path.is_file() or study is None:
        return
    try:
        best = study.best_trial
    except ValueError:  # no finished trial
        return
    results = OmegaConf.to_container(OmegaConf.load(path))
    results.update(
        best_trial_number=best.number,
        best_value=best.value,
        best_overrides=[f"{k}={v}" for k, v in best.params.items()],
        best_job_dir=job_dir,
    )
    OmegaConf.save(OmegaConf.create(results), path)


def number_by_trial(records: list, storage: Any, study_name: str | None) -> None:
    """Number each job by its Optuna trial (the sweeper numbers the jobs of every launch from 0,
    so a continued study would repeat job numbers): the trial whose params are the job's
    overrides, as the sweeper writes them."""
    study = _load_study(storage, study_name) if storage else None
    if study is None:
        return
    trials = {frozenset(f"{k}={v}" for k, v in t.params.items()): t.number for t in study.trials}
    for r in records:
        wanted = [key for key in trials if key and key <= set(r.overrides)]
        if len(wanted) == 1:
            r.num = trials[wanted[0]]
