"""What a trained model costs: parameters, multiply-adds at the task's input size and the CPU
latency at batch 1, measured in the job (so a sweep compares accuracy against cost)."""

from __future__ import annotations

import copy
import statistics
import time
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from dense.complexity import count_madds, count_params

__all__ = ["input_size", "model_cost"]

CITYSCAPES_SIZE = (1024, 2048)


def input_size(cfg: DictConfig) -> tuple[int, int]:
    """(H, W) of one evaluated image: `cost.input_size` when set; detection: `head.image_size`;
    segmentation: the synthetic data's size or Cityscapes' 1024x2048, times `data.eval_scale`."""
    size = cfg.get("cost", {}).get("input_size")
    if size is None and cfg.task.name == "detect":
        size = cfg.head.image_size
    if size is None:
        data = cfg.data
        size = data.synthetic_options.size if data.get("synthetic") else CITYSCAPES_SIZE
        scale = float(data.get("eval_scale", 1.0) or 1.0)
        size = [round(int(s) * scale) for s in size]
    if isinstance(size, int):
        return size, size
    h, w = (int(s) for s in size)
    return h, w


@torch.inference_mode()
def cpu_latency_ms(model: nn.Module, size: tuple[int, int], runs: int = 5, warmup: int = 2) -> float:
    """Median wall time of `runs` eval-mode forward passes of one image on the CPU (a copy of
    the model, so the trained one stays where it is)."""
    model = copy.deepcopy(model).cpu().eval()
    x = torch.rand(1, 3, *size)
    times = []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        model(x)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def model_cost(model: nn.Module, task: str, size: tuple[int, int], latency_runs: int = 5) -> dict[str, Any]:
    """params (BatchNorm folded, as the papers), MAdds (detection without post-processing) and
    the median CPU latency in ms at batch 1, with the thread count it ran with."""
    forward = "forward" if task == "detect" else None
    out: dict[str, Any] = {
        "params": count_params(model),
        "madds": count_madds(model, size, forward=forward),
        "input_size": list(size),
    }
    if latency_runs > 0:
        out["latency_ms_cpu"] = cpu_latency_ms(model, size, runs=latency_runs)
        out["latency_threads"] = torch.get_num_threads()
    return out
