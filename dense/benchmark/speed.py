"""Classifier latency, batch 1 on the CPU: dense (as built, and with BatchNorm fused) / its peer."""

from __future__ import annotations

import copy

import torch

from dense.backbones.blocks import fuse_batchnorm
from dense.benchmark.peers import PEERS, build_peer, normalise
from dense.benchmark.report import print_table
from dense.benchmark.timing import time_pair
from dense.classification import build_classifier
from dense.complexity import count_madds

__all__ = ["speed_table"]


def speed_table(names: list[str], *, threads: int, size: int, iters: int, warmup: int) -> list[dict]:
    """Each backbone's classifier vs its peer (`PEERS`); ratios < 1 mean dense is faster."""
    torch.set_num_threads(threads)
    x = torch.rand(1, 3, size, size)
    xn = normalise(x)
    rows, cells = [], []
    for name in names:
        ours, peer = build_classifier(name).eval(), build_peer(name).eval()
        td, tp = time_pair(ours, peer, x, xn, iters=iters, warmup=warmup)
        # dense's inference path: BatchNorm folded into the convolutions; the peer is timed again beside it
        fused = fuse_batchnorm(copy.deepcopy(ours))
        tf, tp2 = time_pair(fused, peer, x, xn, iters=iters, warmup=warmup)
        lib, peer_name = PEERS[name]
        rows.append(
            dict(
                model=name,
                peer=f"{lib}:{peer_name}",
                size=size,
                madds=count_madds(ours, size),
                dense_ms=td * 1e3,
                peer_ms=tp * 1e3,
                ratio=td / tp,
                fused_ms=tf * 1e3,
                fused_ratio=tf / tp2,
            )
        )
        cells.append(
            (
                name,
                f"{lib}:{peer_name}",
                f"{td * 1e3:.2f}",
                f"{tp * 1e3:.2f}",
                f"{td / tp:.3f}",
                f"{tf * 1e3:.2f}",
                f"{tf / tp2:.3f}",
            )
        )
    print_table(
        f"CPU latency, batch 1, {size}x{size}, {threads} threads, eval (median of {iters})",
        ("model", "peer", "dense ms", "peer ms", "dense / peer", "fused ms", "fused / peer"),
        cells,
    )
    return rows
