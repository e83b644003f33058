"""`summary.csv` and `summary.md` of a sweep: one row per job (number, overrides, status, the task
metric and the other final metrics, params, MAdds, CPU latency, train time, folder), best first."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from dense.sweep.records import JobRecord

__all__ = ["ranked", "summary_rows", "write_summary"]

# The short table shows these besides the task metric; summary.csv has every val/ metric.
MD_EXTRA = ("val/map_50", "val/map_75", "val/mar_100", "val/loss")


def ranked(records: list[JobRecord]) -> list[JobRecord]:
    """Finished jobs by their task metric (best first, per each job's monitor mode), then the
    rest by job number."""

    def key(r: JobRecord) -> tuple:
        value = r.objective
        if value is None or math.isnan(value):
            return (1, 0.0, r.num)
        return (0, -value if r.maximize else value, r.num)

    return sorted(records, key=key)


def _metric_name(records: list[JobRecord]) -> str:
    names = {r.monitor for r in records if r.monitor}
    return names.pop() if len(names) == 1 else "objective"


def _num(value: Any, scale: float = 1.0, digits: int = 4) -> Any:
    return round(float(value) / scale, digits) if isinstance(value, (int, float)) else ""


def summary_rows(records: list[JobRecord]) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns and rows (ranked) of summary.csv."""
    metric = _metric_name(records)
    others = sorted({k for r in records for k in (r.metrics or {}) if k.startswith("val/") and k != metric})
    columns = ["job", "overrides", "status", "error", metric, *others]
    columns += ["params_M", "madds_M", "latency_ms_cpu", "train_time_s", "path"]
    rows = []
    for r in ranked(records):
        row: dict[str, Any] = {"job": r.num, "overrides": r.varying, "status": r.status, "error": r.error}
        row[metric] = _num(r.objective)
        row.update({k: _num(r.get(k)) for k in others})
        row["params_M"] = _num(r.get("params"), 1e6, 3)
        row["madds_M"] = _num(r.get("madds"), 1e6, 1)
        row["latency_ms_cpu"] = _num(r.get("latency_ms_cpu"), 1.0, 1)
        row["train_time_s"] = _num(r.get("train_time_s"), 1.0, 1)
        row["path"] = str(r.path)
        rows.append(row)
    return columns, rows


def _markdown(records: list[JobRecord], sweep_dir: Path) -> str:
    columns, rows = summary_rows(records)
    metric = columns[4]
    extra = [c for c in MD_EXTRA if c in columns]
    shown = ["job", "overrides", "status", metric, *extra, "params_M", "madds_M", "latency_ms_cpu"]
    shown += ["train_time_s", "path"]
    heads = {"params_M": "params M", "madds_M": "MAdds M", "latency_ms_cpu": "CPU ms (batch 1)"}
    heads["train_time_s"] = "train s"
    lines = ["| " + " | ".join(heads.get(c, c) for c in shown) + " |", "|" + "---|" * len(shown)]
    labels = {str(r.path): r.label for r in records}
    for row in rows:
        cells = dict(row)
        cells["overrides"] = labels[row["path"]]
        if row["status"] != "ok":
            cells["status"] = f"failed: {row['error']}"
        cells["path"] = _relative(row["path"], sweep_dir)
        cells["overrides"] = f"`{cells['overrides']}`"
        lines.append("| " + " | ".join(str(cells[c]).replace("|", "\\|") for c in shown) + " |")
    best = ranked(records)[0] if records else None
    ok = sum(r.status == "ok" for r in records)
    head = [f"# Sweep {sweep_dir}", "", f"{len(records)} jobs, {ok} ok, {len(records) - ok} failed."]
    if best is not None and best.objective is not None:
        head.append(
            f"Best: job {best.num} (`{best.label}`), {metric} = {best.objective:.4f}, "
            f"in {_relative(str(best.path), sweep_dir)}."
        )
    else:
        head.append("No job finished.")
    return "\n".join([*head, "", *lines, ""])


def _relative(path: str, base: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(base.resolve()))
    except ValueError:
        return path


def write_summary(records: list[JobRecord], sweep_dir: str | Path) -> tuple[Path, Path]:
    """Write `summary.csv` and `summary.md` into `sweep_dir`; returns both paths."""
    sweep_dir = Path(sweep_dir)
    columns, rows = summary_rows(records)
    csv_path, md_path = sweep_dir / "summary.csv", sweep_dir / "summary.md"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    md_path.write_text(_markdown(records, sweep_dir))
    return csv_path, md_path
