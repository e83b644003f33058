"""Soak test: train for many steps with a checkpoint every few steps and loader worker processes,
sampling resident memory throughout; prints RSS after warm-up, at the end and at the peak
(the sampling: dense/benchmark/soak.py; Linux, reads /proc).

    python tools/soak.py                                  # 2000 steps, a checkpoint every 100
    python tools/soak.py steps=500 every=50 backbone=v3_small data.num_workers=2

steps / every / interval (seconds between samples) / out (folder; default outputs/soak/<date_time>)
are the tool's own; everything else goes to tools/train.py (default: task=detect backbone=v3_small,
2 loader workers, no time budget, no final cost measurement).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

try:
    import dense  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dense.benchmark.soak import run_soak, summarise
from dense.errors import UserError, run_tool

ROOT = Path(__file__).resolve().parents[1]
OWN_KEYS = ("steps", "every", "interval", "out")
DEFAULTS = {
    "task": "detect",
    "backbone": "v3_small",
    "data.num_workers": "2",
    "trainer.budget": "null",
    "trainer.max_epochs": "-1",
    "trainer.check_val_every_n_epoch": "1000",
    "cost.latency_runs": "0",
    "checkpoint.every_n_epochs": "null",
}


def main(argv: list[str]) -> int:
    own = {k: v for k, _, v in (a.partition("=") for a in argv) if k in OWN_KEYS}
    rest = [a for a in argv if a.partition("=")[0] not in OWN_KEYS]
    try:
        steps, every, interval = (
            int(own.get("steps", 2000)),
            int(own.get("every", 100)),
            float(own.get("interval", 5)),
        )
    except ValueError as e:
        raise UserError(f"steps / every must be integers and interval a number: {e}") from e
    if steps < 1 or every < 1 or interval <= 0:
        raise UserError("steps and every must be >= 1, interval > 0")
    out = Path(own.get("out", ROOT / "outputs" / "soak" / time.strftime("%Y-%m-%d_%H-%M-%S")))
    given = {a.partition("=")[0].lstrip("+") for a in rest}
    overrides = [f"{k}={v}" for k, v in DEFAULTS.items() if k not in given] + rest
    # max_steps is not a key of conf/trainer/*.yaml, so it is added (+); the run dir is ours
    overrides += [
        f"+trainer.max_steps={steps}",
        f"checkpoint.every_n_train_steps={every}",
        f"hydra.run.dir={out / 'run'}",
    ]
    command = [sys.executable, str(ROOT / "tools" / "train.py"), *overrides]
    print("soak:", " ".join(command[1:]), flush=True)
    status, samples = run_soak(command, out / "rss.csv", interval_s=interval, log_path=out / "train.log")
    if status != 0:
        print(f"soak: training exited with status {status}; see {out / 'train.log'}", file=sys.stderr)
        return status
    summary = summarise(samples)
    metrics_file = out / "run" / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    summary["global_step"] = metrics.get("global_step", -1)
    summary["checkpoints_every"] = every
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"soak: {summary['global_step']} steps, a checkpoint every {every}: main process RSS "
        f"{summary['main_start_mib']:.0f} MiB after warm-up -> {summary['main_end_mib']:.0f} MiB at the end "
        f"(peak {summary['main_peak_mib']:.0f}, growth {summary['main_growth_mib']:+.0f}); loader workers "
        f"{summary['workers_start_mib']:.0f} -> {summary['workers_end_mib']:.0f} MiB "
        f"(peak {summary['workers_peak_mib']:.0f}); samples: {out / 'rss.csv'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_tool("soak", main, sys.argv[1:]))
