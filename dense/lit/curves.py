"""`curves.png` of a run: the losses and the task metric by step, from Lightning's CSV log.

CSVLogger writes one sparse row per logging call (``<output_dir>/csv/metrics.csv``: ``step``,
``train/loss``, ``val/loss``, ``val/map_50`` or ``val/miou``, ...); each curve keeps the rows where
its column has a value. Drawn with matplotlib's Agg canvas (no pyplot, no global backend change).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["METRICS", "plot_curves", "read_curves"]

LOSSES = ("train/loss", "val/loss")
METRICS = ("val/map_50", "val/map", "val/miou")  # what each task reports (detect: map_50, map)


def read_curves(csv_path: str | os.PathLike) -> dict[str, tuple[list[int], list[float]]]:
    """{column: (steps, values)} for every numeric column of a CSVLogger file that has values."""
    path = Path(csv_path)
    if not path.is_file():
        raise FileNotFoundError(f"no CSV log at {path}")
    curves: dict[str, tuple[list[int], list[float]]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if not row.get("step"):
                continue
            step = int(float(row["step"]))
            for key, value in row.items():
                if key in ("step", "epoch") or value in ("", None):
                    continue
                try:
                    v = float(value)
                except ValueError:
                    continue
                steps, values = curves.setdefault(key, ([], []))
                steps.append(step)
                values.append(v)
    return curves


def plot_curves(
    csv_path: str | os.PathLike, out_path: str | os.PathLike, *, title: str | None = None
) -> Path:
    """Write `out_path` (PNG): losses (left) and the task metric(s) (right) by optimizer step."""
    curves = read_curves(csv_path)
    losses = [k for k in LOSSES if k in curves]
    metrics = [k for k in METRICS if k in curves]
    if not losses and not metrics:
        raise ValueError(f"{csv_path}: none of {list(LOSSES + METRICS)} was logged")
    fig = Figure(figsize=(10, 3.8), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_metric = fig.subplots(1, 2)
    for key in losses:
        steps, values = curves[key]
        style = {"marker": "o"} if key.startswith("val/") else {"alpha": 0.8}
        ax_loss.plot(steps, values, label=key, **style)
    ax_loss.set(xlabel="step", ylabel="loss", title="loss")
    for key in metrics:
        steps, values = curves[key]
        ax_metric.plot(steps, values, marker="o", label=key)
    ax_metric.set(xlabel="step", ylabel="fraction", title=" / ".join(metrics) or "no validation")
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
