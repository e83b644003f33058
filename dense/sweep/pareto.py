"""The accuracy / cost trade-off of a sweep, as the MobileNet papers plot theirs: the task metric
against MAdds and against the measured CPU latency, with the Pareto front drawn and every point
labelled by its overrides (`pareto.png`, matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

from dense.sweep.records import JobRecord

__all__ = ["pareto_front", "plot_pareto"]


def pareto_front(points: list[tuple[float, float]], maximize: bool = True) -> list[int]:
    """Indices of the points no other point beats: cost (x) no higher and metric (y) no worse,
    one of them strictly. Ordered by cost."""
    sign = 1.0 if maximize else -1.0
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (x2 <= x and sign * y2 >= sign * y) and (x2 < x or sign * y2 > sign * y)
            for j, (x2, y2) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i])


def _panel(ax, records: list[JobRecord], key: str, scale: float, xlabel: str, metric: str) -> None:
    jobs = [r for r in records if r.objective is not None and isinstance(r.get(key), (int, float))]
    if not jobs:
        ax.text(0.5, 0.5, f"no finished job records {key}", ha="center", transform=ax.transAxes)
        return
    pts = [(float(r.get(key)) / scale, r.objective) for r in jobs]
    front = pareto_front(pts, maximize=jobs[0].maximize)
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], color="tab:blue", zorder=3)
    ax.plot(
        [pts[i][0] for i in front],
        [pts[i][1] for i in front],
        "-o",
        color="tab:red",
        zorder=2,
        label="Pareto front",
    )
    for r, (x, y) in zip(jobs, pts):  # the number here, its overrides in the key below the panels
        ax.annotate(str(r.num), (x, y), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)


def plot_pareto(records: list[JobRecord], path: str | Path, metric: str = "metric") -> Path:
    """Two panels (metric vs MAdds, metric vs CPU latency at batch 1) into `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    _panel(axes[0], records, "madds", 1e6, "MAdds (M)", metric)
    _panel(axes[1], records, "latency_ms_cpu", 1.0, "CPU latency, batch 1 (ms)", metric)
    fig.suptitle(f"{metric} against cost, {sum(r.objective is not None for r in records)} jobs")
    key = "\n".join(f"{r.num}: {r.label}" for r in records if r.objective is not None)
    fig.text(0.01, -0.02, key, fontsize=8, va="top", family="monospace")
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return Path(path)
