"""Job folder names of a sweep: `<job number>_<overrides>` (Hydra's `hydra.job.override_dirname`),
made safe as one folder name: path separators replaced, long names cut and given a short hash so
that they stay unique and under the file system's limit. Registered as the OmegaConf resolver
`dense_subdir` (used by `hydra.sweep.subdir` in conf/train.yaml) when this module is imported."""

from __future__ import annotations

import hashlib
import re

from omegaconf import OmegaConf

__all__ = ["job_subdir", "register"]

MAX_LEN = 120


def job_subdir(num: int | str, override_dirname: str = "") -> str:
    name = re.sub(r"[/\\\s'\"]+", "_", str(override_dirname)).strip("_")
    if len(name) > MAX_LEN:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[: MAX_LEN - 9]}-{digest}"
    return f"{num}_{name}" if name else str(num)


def register() -> None:
    if not OmegaConf.has_resolver("dense_subdir"):
        OmegaConf.register_new_resolver("dense_subdir", job_subdir)


register()
