"""The soak tool: RSS sampling of a process tree from /proc, and a short real soak run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dense.benchmark.soak import Sample, process_tree_rss, summarise
from tests.lit_runs import check, run_tool, tiny_segmentation

pytestmark = pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads /proc (Linux)")


def test_process_tree_rss_sees_a_child_and_its_memory():
    # a parent that starts a child which holds 200 MiB of touched memory
    code = textwrap.dedent(
        """
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c",
            "import time; b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); "
            "print('ready', flush=True); time.sleep(30)"], stdout=subprocess.PIPE, text=True)
        child.stdout.readline()
        print('ready', flush=True)
        time.sleep(30)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        main, children, n = process_tree_rss(proc.pid)
        assert n == 1
        assert children > 200 * 2**20 > main  # the child's buffer is counted in the tree, not the parent
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the child too
        proc.wait()
    with pytest.raises(ProcessLookupError):
        process_tree_rss(proc.pid)


def test_summarise_compares_after_warmup_with_the_end():
    mib = 2**20
    samples = [Sample(float(t), (500 + (400 if t == 0 else 0) + t) * mib, 100 * mib, 2) for t in range(20)]
    s = summarise(samples)
    # the first 10% (2 samples) are warm-up: the 900 MiB spike at t=0 is not the start
    assert s["main_start_mib"] == 502 and s["main_end_mib"] == 519 and s["main_growth_mib"] == 17
    assert s["main_peak_mib"] == 900 and s["workers_end_mib"] == 100
    # a final validation without workers after training is not the end of training
    tail = [*samples, Sample(20.0, 900 * mib, 0, 0)]
    assert summarise(tail)["main_end_mib"] == 519
    with pytest.raises(ValueError, match="fewer than 2"):
        summarise(samples[:1])


@pytest.mark.slow
def test_soak_tool_runs_steps_with_checkpoints_and_workers(tmp_path):
    out = tmp_path / "soak"
    overrides = [o for o in tiny_segmentation(num_train=16) if not o.startswith("data.num_workers")]
    proc = run_tool(
        [
            "tools/soak.py",
            "steps=12",
            "every=4",
            "interval=0.2",
            f"out={out}",
            "data.num_workers=2",
            f"data.root={tmp_path / 'shapes'}",
            *overrides,
        ],
        timeout=600,
    )
    check(proc)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["global_step"] == 12 and summary["checkpoints_every"] == 4
    assert summary["samples"] >= 2 and summary["main_end_mib"] > 50
    assert summary["workers_peak_mib"] > 0  # the two loader workers were seen
    assert (out / "run" / "checkpoints" / "last.ckpt").is_file()
    rows = (out / "rss.csv").read_text().splitlines()
    assert rows[0].startswith("t_s,main_rss_mib") and len(rows) == summary["samples"] + 1
    assert "steps, a checkpoint every 4" in proc.stdout, proc.stdout


def test_soak_tool_rejects_bad_own_keys(tmp_path):
    proc = run_tool(["tools/soak.py", "steps=lots", f"out={tmp_path}"], timeout=120)
    assert proc.returncode == 2 and "soak: error: steps / every" in proc.stderr, proc.stderr
