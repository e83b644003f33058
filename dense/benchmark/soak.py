"""Soak test: a long training run with frequent checkpoints, its resident memory sampled throughout.

A leak in the loaders, the logging or the checkpointing shows as resident memory that keeps
growing with the steps. `run_soak` starts `tools/train.py` as a child process and samples the
resident set size (RSS) of it and of each of its descendants (DataLoader workers) from ``/proc``
(Linux only; psutil is not a dependency of dense). `summarise` compares the first sample after
warm-up with the last one.
"""

from __future__ import annotations

import csv
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Sample", "process_tree_rss", "run_soak", "summarise"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class Sample:
    """One reading: seconds since start, RSS in bytes of the main process and of its descendants."""

    t: float
    main: int
    children: int
    num_children: int


def _rss(pid: int) -> int:
    # /proc/<pid>/statm field 2: resident pages (the same figure as ps's RSS)
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def _children(pid: int) -> list[int]:
    out: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    for task in task_dir.iterdir() if task_dir.exists() else []:
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def process_tree_rss(pid: int) -> tuple[int, int, int]:
    """(main RSS, summed RSS of all descendants, number of descendants) in bytes; raises
    ProcessLookupError when ``pid`` is gone."""
    try:
        main = _rss(pid)
    except OSError as e:
        raise ProcessLookupError(pid) from e
    if main == 0:  # a zombie: exited, not yet reaped
        raise ProcessLookupError(pid)
    todo, total, n = _children(pid), 0, 0
    while todo:
        c = todo.pop()
        try:
            total += _rss(c)
            n += 1
            todo += _children(c)
        except OSError:
            continue  # exited between the listing and the read
    return main, total, n


def run_soak(
    command: list[str], csv_path: Path, *, interval_s: float = 5.0, log_path: Path | None = None
) -> tuple[int, list[Sample]]:
    """Run ``command``, sampling its process tree's RSS every ``interval_s`` into ``csv_path``.

    Returns (exit status, samples). The child's output goes to ``log_path`` (or is inherited).
    """
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "w") if log_path is not None else None
    start = time.monotonic()
    samples: list[Sample] = []
    try:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT if log else None)
        with open(csv_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["t_s", "main_rss_mib", "workers_rss_mib", "num_workers"])
            while proc.poll() is None:
                try:
                    main, kids, n = process_tree_rss(proc.pid)
                except ProcessLookupError:
                    break
                s = Sample(time.monotonic() - start, main, kids, n)
                samples.append(s)
                w.writerow([f"{s.t:.1f}", f"{main / 2**20:.1f}", f"{kids / 2**20:.1f}", n])
                f.flush()
                time.sleep(interval_s)
        return proc.wait(), samples
    finally:
        if log is not None:
            log.close()


def summarise(samples: list[Sample], *, warmup_fraction: float = 0.1) -> dict[str, float]:
    """Main-process RSS (MiB) after warm-up and at the end, its peak, and the growth in between;
    the same for the workers' summed RSS. Warm-up (model build, first batches, allocator growth)
    is the first ``warmup_fraction`` of the samples; the end is the last sample with loader workers
    alive, if any."""
    if len(samples) < 2:
        raise ValueError("fewer than 2 samples: the run ended too soon to say anything")
    first = samples[min(len(samples) - 1, int(len(samples) * warmup_fraction))]
    # the end of training: the last sample with loader workers alive (when there were any), not
    # the final validation or the shutdown after it
    with_workers = [s for s in samples if s.num_children > 0]
    last = with_workers[-1] if with_workers and with_workers[-1].t > first.t else samples[-1]
    mib = 2.0**20
    return {
        "samples": float(len(samples)),
        "main_start_mib": first.main / mib,
        "main_end_mib": last.main / mib,
        "main_peak_mib": max(s.main for s in samples) / mib,
        "main_growth_mib": (last.main - first.main) / mib,
        "workers_start_mib": first.children / mib,
        "workers_end_mib": last.children / mib,
        "workers_peak_mib": max(s.children for s in samples) / mib,
        "start_s": first.t,
        "end_s": last.t,
    }
