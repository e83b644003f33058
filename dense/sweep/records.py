"""The jobs of a sweep, read back from its folder: one record per job folder (Hydra writes
`.hydra/overrides.yaml` into each when the job starts), with the job's `metrics.json` when it
wrote one. A folder without one is a job that was killed or is still running."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

__all__ = ["METRICS_FILE", "JobRecord", "collect", "pretty_overrides", "read_status"]

METRICS_FILE = "metrics.json"  # written by tools/train.py (dense.sweep.job.write_status)

# Keys that never distinguish jobs (paths, switches of the sweep itself).
QUIET_KEYS = ("resume", "fail_fast", "sweep", "hparams_search", "data.root", "ckpt")


@dataclass
class JobRecord:
    """One job: number, folder, overrides (as given), and its metrics.json (None: none written)."""

    num: int
    path: Path
    overrides: list[str]
    metrics: dict[str, Any] | None = field(default=None)
    shared: frozenset[str] = field(default=frozenset())  # overrides every job of the sweep has

    @property
    def status(self) -> str:
        if self.metrics is None:
            return "failed"
        return "ok" if self.metrics.get("status") == "ok" else "failed"

    @property
    def error(self) -> str:
        if self.metrics is None:
            return "no metrics.json (killed, or still running)"
        return self.metrics.get("error", "") if self.status == "failed" else ""

    @property
    def monitor(self) -> str | None:
        return (self.metrics or {}).get("monitor")

    @property
    def maximize(self) -> bool:
        return (self.metrics or {}).get("monitor_mode", "max") != "min"

    @property
    def objective(self) -> float | None:
        value = (self.metrics or {}).get(self.monitor or "") if self.status == "ok" else None
        return float(value) if isinstance(value, (int, float)) else None

    def get(self, key: str) -> Any:
        return (self.metrics or {}).get(key)

    @property
    def varying(self) -> str:
        """The overrides that tell this job from the others of its sweep."""
        return pretty_overrides([o for o in self.overrides if o not in self.shared]) or f"job {self.num}"

    @property
    def label(self) -> str:
        """`varying` with numbers to 3 significant digits (tables, plots)."""
        return " ".join(_short(o) for o in self.varying.split(" "))


def pretty_overrides(overrides: list[str]) -> str:
    """`key=value` pairs that tell jobs apart, space-separated."""
    kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in QUIET_KEYS]
    return " ".join(kept)


def read_status(run_dir: str | Path) -> dict[str, Any] | None:
    """The job's `metrics.json`, or None when there is none (not started, running or killed)."""
    path = Path(run_dir) / METRICS_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _short(override: str) -> str:
    key, sep, value = override.partition("=")
    try:
        number = float(value)
    except ValueError:
        return override
    return f"{key}{sep}{number:.3g}" if "." in value or "e" in value.lower() else override


def _job_num(folder: Path) -> int:
    hydra = folder / ".hydra" / "hydra.yaml"
    try:
        return int(OmegaConf.load(hydra).hydra.job.num)
    except Exception:
        m = re.match(r"(\d+)", folder.name)
        return int(m.group(1)) if m else -1


def collect(sweep_dir: str | Path) -> list[JobRecord]:
    """Every job folder under `sweep_dir` (any depth), ordered by job number then folder."""
    records = []
    for overrides_file in sorted(Path(sweep_dir).glob("**/.hydra/overrides.yaml")):
        folder = overrides_file.parent.parent
        if folder == Path(sweep_dir):
            continue  # the multirun's own config, not a job
        overrides = [str(o) for o in OmegaConf.load(overrides_file)]
        records.append(JobRecord(_job_num(folder), folder, overrides, read_status(folder)))
    if len(records) > 1:
        shared = frozenset.intersection(*(frozenset(r.overrides) for r in records))
        for r in records:
            r.shared = shared
    return sorted(records, key=lambda r: (r.num, str(r.path)))
