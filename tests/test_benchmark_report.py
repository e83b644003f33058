"""BENCHMARKS.md and the compute floor from real (tiny) runs of tools/benchmark.py: the report carries
the machine, the versions and every figure of bench.json. No timing is asserted, only consistency."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import onnxruntime
import pytest
import torch
import torchvision

from dense.benchmark.floor import floor_ms, matmul_gflops
from dense.papers import CLASSIFIERS

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(tmp_path: Path, *args: str) -> tuple[dict, str]:
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "tools" / "benchmark.py"), *args, "--iters", "1", "--warmup", "0"]
    proc = subprocess.run(
        cmd + ["--out", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    md = tmp_path / "BENCHMARKS.md"  # beside --out by default
    return json.loads(out.read_text()), md.read_text()


def check_header(result: dict, md: str) -> None:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M)
        if model:
            assert f"`{model.group(1).strip()}`" in md
    assert result["machine"]["date"] in md
    assert "| threads | 2 |" in md
    versions = {"torch": torch.__version__, "torchvision": torchvision.__version__}
    for name, v in {**versions, "onnxruntime": onnxruntime.__version__}.items():
        assert f"{name} {v.split('+')[0]}" in md


def check_floor(result: dict, md: str) -> None:
    gflops = result["matmul"]["gflops"]
    assert f"**{gflops:.0f} GFLOP/s**" in md
    assert result["floor"]
    for r in result["floor"]:
        assert r["floor_ms"] == pytest.approx(2 * r["madds_g"] * 1e9 / (gflops * 1e9) * 1e3)
        assert r["ratio"] == pytest.approx(r["ms"] / r["floor_ms"])
        assert (
            f"| {r['what']} | {r['madds_g']:.3f} | {r['ms']:.1f} | {r['floor_ms']:.2f} | {r['ratio']:.1f} |"
            in md
        )


def test_report_of_a_speed_run(tmp_path):
    result, md = run_benchmark(tmp_path, "--speed", "--models", "v3_small", "--threads", "2")
    check_header(result, md)
    for section in ("# Benchmarks", "## Distance from the hardware", "## Classifiers, batch 1, 224x224"):
        assert section in md
    (row,) = result["speed"]
    cells = [row["dense_ms"], row["peer_ms"]], [row["ratio"], row["fused_ratio"]]
    assert all(f"{v:.2f}" in md for v in cells[0]) and all(f"{v:.3f}" in md for v in cells[1])
    check_floor(result, md)
    # the floor's MAdds are the paper's (MobileNetV3 Table 3: v3_small 1.0, 224: 56 M)
    paper = next(r for r in CLASSIFIERS if (r.backbone, r.width_mult, r.resolution) == ("v3_small", 1.0, 224))
    assert [r["madds_g"] for r in result["floor"]] == [pytest.approx(paper.madds_m / 1e3, rel=0.03)] * 3
    assert {r["what"] for r in result["floor"]} == {"dense eager", "dense, BN fused", row["peer"]}


def test_floor_arithmetic_and_matmul_rate():
    assert floor_ms(1e9, 100.0) == pytest.approx(20.0)  # 2 GFLOP at 100 GFLOP/s
    before = torch.get_num_threads()
    mm = matmul_gflops(1, n=256, repeats=2)
    assert (mm["n"], mm["threads"], mm["repeats"]) == (256, 1, 2) and mm["gflops"] > 0
    assert torch.get_num_threads() == before


@pytest.mark.slow
def test_report_of_a_deploy_run(tmp_path):
    result, md = run_benchmark(tmp_path, "--deploy", "--threads", "2")
    check_header(result, md)
    check_floor(result, md)
    for task, target in (("detect", 0.35), ("segment", 0.4)):
        t = result["deploy"][task]
        assert t["target"] == target and f"### {t['title']}" in md and f"| <= {target} |" in md
        keys = {r["key"] for r in t["rows"]}
        assert {"torchvision", "eager", "folded", "ort_fp32"} <= keys
        for r in t["rows"]:
            assert f"| {r['label']} | {r['ms']:.1f} | {r['ratio']:.3f} |" in md


@pytest.mark.slow
def test_report_of_a_train_cost_run(tmp_path):
    """--train-cost on a small data set in the built-in layout: every table of the run in bench.json
    and in BENCHMARKS.md, with the same figures."""
    from dense.benchmark.train_cost import SWITCHES
    from dense.data.shapes_coco import ensure_shapes_coco

    root = tmp_path / "shapes"
    ensure_shapes_coco(root, num_train=8, num_val=2, image_size=320, seed=0, workers=1)
    result, md = run_benchmark(tmp_path, "--train-cost", "--data-root", str(root), "--threads", "1")
    cost = result["train_cost"]
    phases = cost["phases_ms"]
    assert list(phases) == ["data", "forward", "loss", "backward", "optimizer"]
    assert all(v > 0 for v in phases.values())
    total = sum(phases.values())
    for k, v in phases.items():
        assert f"| {k} | {v:.1f} | {v / total:.0%} |" in md
    assert list(cost["memory_format_ms"]) == ["channels-last", "contiguous (NCHW)"]
    assert list(cost["switches_ms"]) == list(SWITCHES)
    for k, v in cost["switches_ms"].items():
        assert f"| {k} | {v:.1f} | {v / next(iter(cost['switches_ms'].values())):.3f} |" in md
    assert list(cost["adamw_step_ms"]) == ["default", "foreach", "fused"]
    top = cost["profile_top"]
    assert 1 <= len(top) <= 10 and 0 < sum(r["share"] for r in top) <= 1 + 1e-9
    assert any("conv" in r["op"] for r in top)  # a convolution network's step: convolutions lead
    assert f"| {top[0]['op']} | {top[0]['self_ms_per_step']:.1f} |" in md
