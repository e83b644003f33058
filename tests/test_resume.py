"""Resuming a killed run: `tools/train.py <same overrides> ckpt=<run>/checkpoints/last.ckpt`
continues epoch, step, optimizer, scheduler and RNG state, so with deterministic settings the
resumed run ends with the same metrics as an uninterrupted one. Checkpoints load with
`weights_only=True`, and are written by epochs, by steps and by wall time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from lit_runs import PY, ROOT, check, run_tool, tiny_segmentation

TINY = [
    *tiny_segmentation(num_train=16),
    "trainer.check_val_every_n_epoch=1",
    "trainer.log_every_n_steps=1",
    "trainer.deterministic=true",
    "cost.latency_runs=0",
]


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def _start(overrides: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "1"}
    env.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
    return subprocess.Popen(
        [PY, "tools/train.py", *overrides],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _kill_after_first_checkpoint(proc: subprocess.Popen, last: Path, timeout: float = 240) -> None:
    """SIGKILL once last.ckpt exists and has stopped growing (a whole file)."""
    deadline, size = time.monotonic() + timeout, -1
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be killed: make it longer"
        if last.is_file() and last.stat().st_size == size > 0:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        size = last.stat().st_size if last.is_file() else -1
        time.sleep(0.05)
    proc.kill()
    pytest.fail("no last.ckpt in time")


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_metrics(tmp_path):
    common = [*TINY, f"data.root={tmp_path / 'shapes'}", "trainer.max_epochs=6"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    check(run_tool(["tools/train.py", *common, f"hydra.run.dir={straight}"]))

    last = killed / "checkpoints" / "last.ckpt"
    proc = _start([*common, f"hydra.run.dir={killed}"])
    _kill_after_first_checkpoint(proc, last)
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "metrics.json").exists()  # it really stopped mid-way
    state = torch.load(last, weights_only=True)
    assert 4 <= state["global_step"] < 24, state["global_step"]  # 4 steps an epoch, 6 epochs

    # the documented command: the same overrides plus ckpt=<run>/checkpoints/last.ckpt
    check(run_tool(["tools/train.py", *common, f"ckpt={last}", f"hydra.run.dir={killed}"]))
    a, b = _metrics(straight), _metrics(killed)
    assert (b["epoch"], b["global_step"]) == (a["epoch"], a["global_step"]) == (6, 24)
    for key in [k for k in a if k.startswith("val/")]:
        assert a[key] == b[key], (key, a[key], b[key])


def test_checkpoints_by_steps_load_weights_only_and_hold_the_rng(tmp_path):
    run = tmp_path / "run"
    overrides = [*TINY, f"data.root={tmp_path / 'shapes'}", "trainer.max_epochs=1"]
    overrides += ["checkpoint.every_n_epochs=null", "checkpoint.every_n_train_steps=3"]
    check(run_tool(["tools/train.py", *overrides, f"hydra.run.dir={run}"]))
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["last.ckpt"], ckpts  # no best without epoch checkpoints, no last-v1
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    rng = next(v for k, v in state["callbacks"].items() if k.startswith("RngState"))
    assert {"torch", "numpy", "python", "transforms"} <= set(rng) and rng["transforms"]
    assert state["optimizer_states"] and state["lr_schedulers"]

    # resuming a finished run loads weights_only and leaves the numbers as they were
    first = _metrics(run)
    check(
        run_tool(
            [
                "tools/train.py",
                *overrides,
                f"ckpt={run / 'checkpoints' / 'last.ckpt'}",
                f"hydra.run.dir={tmp_path / 'again'}",
            ]
        )
    )
    again = _metrics(tmp_path / "again")
    assert again["global_step"] == first["global_step"] == 4
    assert again["val/miou"] == pytest.approx(first["val/miou"], abs=1e-6)


def test_checkpoint_triggers_by_epochs_steps_and_time():
    from dense.lit.callbacks import checkpoint_callbacks

    cbs = checkpoint_callbacks(
        "/tmp/x", "val/miou", "max", every_n_epochs=2, every_n_train_steps=5, train_time_interval_min=0.5
    )
    assert [c._every_n_epochs for c in cbs] == [2, 0, 0]
    assert cbs[1]._every_n_train_steps == 5 and cbs[2]._train_time_interval.total_seconds() == 30
    assert all(c.save_last and not c._enable_version_counter for c in cbs)
