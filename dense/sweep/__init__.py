"""Sweeps of `tools/train.py`: what a job records (status, cost), how a sweep's jobs are collected,
summarised and plotted, and the Hydra pieces that tie it together.

One concept per module: `cost` (params, MAdds, CPU latency of a job's model), `job` (a job's
metrics.json, resume and failure handling), `records` (reading a sweep's job folders), `summary`
(summary.csv / summary.md), `pareto` (the Pareto front and its plot), `report` (all of a sweep's
report files), `dirname` (job folder names), `study` (continuing a stored Optuna study, the best
trial's number), `callback` (the Hydra callback of conf/train.yaml).
"""
