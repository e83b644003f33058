"""DDP inside a Hydra multirun: each job starts, and ends, its own process group.

Lightning starts DDP ranks 1.. by re-running `sys.argv` plus `hydra.run.dir=<run dir>`. In a
multirun that command line is the whole sweep, which rank 1 would then run again in a sweep folder
of its own; and the next job of the sweep would find the previous job's process group and rank
variables still set.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict, read_write

from dense.sweep.job import in_multirun

__all__ = ["children_run_this_job", "job_process_group"]

_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
_SWEEP_KEYS = (
    "hydra.mode",
    "hydra.sweep",
    "hydra.sweeper",
    "hydra.launcher",
    "hydra/sweeper",
    "hydra/launcher",
    "hydra.run",
    "hydra.job.num",
    "hydra.job.id",
)


def children_run_this_job() -> None:
    """Make the command line that Lightning gives ranks 1.. this job alone, in this job's folder."""
    if not in_multirun():
        return
    hc = HydraConfig.get()
    with read_write(hc), open_dict(hc):
        hc.run.dir = hc.runtime.output_dir
    # As a single run: a sweep= or hparams_search= config among the overrides sets
    # hydra.mode=MULTIRUN, which would start a second sweep (or Optuna study) in rank 1.
    # Hydra settings such as hydra.searchpath are kept; those that launch a sweep are not.
    keep = [o for o in hc.overrides.hydra if not o.lstrip("+~").startswith(_SWEEP_KEYS)]
    sys.argv = [sys.argv[0], *keep, *hc.overrides.task, "hydra.mode=RUN"]


@contextmanager
def job_process_group() -> Iterator[None]:
    """Around one job of the launching process: afterwards close the job's process group and
    restore the rank variables Lightning set, so that the next job starts its own ranks."""
    before = {k: os.environ.get(k) for k in _DDP_ENV}
    try:
        yield
    finally:
        if before["LOCAL_RANK"] is None:  # the launching process, not a rank Lightning started
            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()
            for k, v in before.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
