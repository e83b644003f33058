"""Helpers of the end-to-end tests of tools/train.py and tools/eval.py: the real tools run in
subprocesses, as a user runs them, and one tiny training run is shared by the tests of a module
(and by the pytest-xdist workers, through a lock file in the session's temp dir)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def run_tool(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "1"}
    env.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
    return subprocess.run([PY, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def check(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-4000:]}\nSTDERR:\n{proc.stderr[-4000:]}"
    )


def _train_once(base: Path, overrides: list[str]) -> dict:
    data_root, run_dir = base / "shapes", base / "run"
    check(run_tool(["tools/train.py", *overrides, f"data.root={data_root}", f"hydra.run.dir={run_dir}"]))
    return {"run_dir": str(run_dir), "data_root": str(data_root)}


def shared_training_run(tmp_path_factory, request, name: str, overrides: list[str]):
    """Train once per session under `name`; returns (run_dir, data_root, metrics)."""
    worker = getattr(request.config, "workerinput", {}).get("workerid")
    if worker is None:
        info = _train_once(tmp_path_factory.mktemp(name), overrides)
    else:
        from filelock import FileLock

        shared = tmp_path_factory.getbasetemp().parent  # common to the workers of this session
        marker = shared / f"{name}_run.json"
        with FileLock(str(marker) + ".lock"):
            if marker.is_file():
                info = json.loads(marker.read_text())
            else:
                base = shared / name
                base.mkdir(exist_ok=True)
                info = _train_once(base, overrides)
                marker.write_text(json.dumps(info))
    run_dir, data_root = Path(info["run_dir"]), Path(info["data_root"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return run_dir, data_root, metrics


def eval_one_and_two_processes(checkpoint: str, tmp_path: Path, overrides: list[str]) -> tuple[dict, dict]:
    """tools/eval.py of a checkpoint on 5 val images, once in one process and once with
    trainer=ddp_cpu (2 DDP processes, gloo); returns both metrics.json. Batch 1 keeps the numerics
    identical, and 5 images make the DistributedSampler pad one."""
    common = [
        "tools/eval.py",
        f"ckpt={checkpoint}",
        f"data.root={tmp_path / 'shapes5'}",
        *overrides,
        "data.synthetic_options.num_val=5",
        "data.val_batch_size=1",
    ]
    check(run_tool([*common, f"hydra.run.dir={tmp_path / 'one'}"]))
    check(run_tool([*common, "trainer=ddp_cpu", f"hydra.run.dir={tmp_path / 'two'}"]))
    return tuple(json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))


def tiny_segmentation(num_train: int = 8) -> list[str]:
    """Overrides of a tiny, fast segmentation run on generated shapes_cityscapes data."""
    return [
        "task=segment",
        "backbone=v3_small",
        "backbone.width_mult=0.35",
        f"data.synthetic_options.num_train={num_train}",
        "data.synthetic_options.num_val=4",
        "data.synthetic_options.size=[64,128]",
        "data.crop=[64,64]",
        "data.batch_size=4",
        "data.val_batch_size=2",
        "data.num_workers=0",
        "trainer.enable_progress_bar=false",
        "trainer.budget=null",  # epochs, not the recipe's time budget: the same steps on any machine
    ]


def tiny_detection() -> list[str]:
    """Data overrides of a tiny, fast detection run on generated shapes_coco data (128 px)."""
    return [
        "data.synthetic_options.num_train=8",
        "data.synthetic_options.num_val=4",
        "data.synthetic_options.image_size=128",
        "data.batch_size=4",
        "data.val_batch_size=4",
        "data.num_workers=0",
        "head.image_size=128",
        "trainer.enable_progress_bar=false",
    ]
