"""A sweep's report, written from its folder alone: summary.csv / summary.md, pareto.png and (for
Optuna) the best trial's number in optimization_results.yaml. Called by the Hydra callback at the
end of a multirun, and by a job that stops the sweep (fail_fast=true)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from dense.sweep.pareto import plot_pareto
from dense.sweep.records import collect
from dense.sweep.study import add_best_trial, number_by_trial
from dense.sweep.summary import summary_rows, write_summary

__all__ = ["summarize"]

log = logging.getLogger("dense.sweep")


def summarize(sweep_dir: str | Path, optuna: dict[str, Any] | None = None) -> Path:
    """Collect the jobs under `sweep_dir` and write the summary and the plot; returns summary.md.
    `optuna`: the sweeper's storage / study_name (jobs numbered by trial, best trial recorded)."""
    sweep_dir = Path(sweep_dir)
    records = collect(sweep_dir)
    storage = (optuna or {}).get("storage")
    if storage:
        number_by_trial(records, storage, optuna.get("study_name"))
    _, md = write_summary(records, sweep_dir)
    metric = summary_rows(records)[0][4]
    plot_pareto(records, sweep_dir / "pareto.png", metric=metric)
    if storage:
        wanted = set(optuna.get("best_overrides") or [])
        match = next((r for r in records if wanted and wanted <= set(r.overrides)), None)
        add_best_trial(sweep_dir, storage, optuna.get("study_name"), str(match.path) if match else None)
    log.info("sweep summary: %s (%d jobs)", md, len(records))
    return md
