"""How far each measured latency is from the hardware: the compute floor of a model on this CPU.

The rate is the machine's fp32 matrix-multiply throughput (torch.mm, best of a few), the best case
of its vector units. A model's floor is its work at that rate: FLOPs = 2 x MAdds (one multiply-add
is two floating-point operations, the papers' MAdds as `dense.complexity.count_madds` counts them),
floor = 2 x MAdds / rate. Depthwise convolutions, activations and memory traffic never reach the
matmul rate, so latency / floor is well above 1 even for a good runtime; it shows what is left.
"""

from __future__ import annotations

import time

import torch

__all__ = ["floor_ms", "floor_rows", "matmul_gflops"]


def matmul_gflops(threads: int, *, n: int = 2048, repeats: int = 5) -> dict:
    """fp32 GFLOP/s of an n x n by n x n torch.mm (2 n^3 FLOPs) with `threads` threads, best of
    `repeats` after one warm-up call."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
        out = torch.empty(n, n)
        torch.mm(a, b, out=out)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(a, b, out=out)
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(previous)
    return dict(n=n, threads=threads, repeats=repeats, gflops=2 * n**3 / best / 1e9)


def floor_ms(madds: float, gflops: float) -> float:
    """Milliseconds of 2 x `madds` FLOPs at `gflops`."""
    return 2 * madds / (gflops * 1e9) * 1e3


def _measured(result: dict) -> list[tuple[str, str, str, float, float]]:
    """(model, input, what, measured ms, MAdds) of every latency in a benchmark result that has MAdds."""
    out = []
    for r in result.get("speed", []):
        size = f"{r['size']}x{r['size']}"
        if "madds" in r:
            out += [
                (r["model"], size, "dense eager", r["dense_ms"], r["madds"]),
                (r["model"], size, "dense, BN fused", r["fused_ms"], r["madds"]),
                (r["model"], size, r["peer"], r["peer_ms"], r["madds"]),
            ]
    for task, key, model, size in (
        ("detect", "predict", "SSDLite320 V3-Large", "320x320"),
        ("segment", "inference_1024x2048", "LR-ASPP V3-Large", "1024x2048"),
    ):
        r = result.get(task, {}).get(key)
        if r and "madds" in r:
            out += [
                (model, size, f"dense {key}", r["dense_ms"], r["madds"]),
                (model, size, f"torchvision {key}", r["torchvision_ms"], r["madds"]),
            ]
    for t in result.get("deploy", {}).values():
        for r in t["rows"]:
            out.append((t["model"], t["input"], r["label"], r["ms"], t["madds"]))
    return out


def floor_rows(result: dict, gflops: float) -> list[dict]:
    """Per measured latency: MAdds, the compute floor at `gflops` and latency / floor."""
    rows = []
    for model, size, what, ms, madds in _measured(result):
        f = floor_ms(madds, gflops)
        rows.append(
            dict(model=model, input=size, what=what, madds_g=madds / 1e9, ms=ms, floor_ms=f, ratio=ms / f)
        )
    return rows
