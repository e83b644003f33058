"""What a benchmark ran on: date, CPU model, thread count and library versions (the header of a report)."""

from __future__ import annotations

import datetime
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = ["cpu_model", "machine_info"]

LIBRARIES = ("torch", "torchvision", "onnxruntime", "onnx", "numpy", "opencv-python-headless", "timm")


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The first "model name" of /proc/cpuinfo (Linux); platform.processor() elsewhere."""
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def machine_info(threads: int) -> dict:
    """Date (UTC), CPU model, logical CPUs, the benchmark's thread count, Python and library versions
    (None for a library that is not installed)."""
    libs = {name: _version(name) for name in LIBRARIES}
    if libs["opencv-python-headless"] is None:  # the wheel has several names
        libs["opencv-python-headless"] = _version("opencv-python")
    libs["opencv"] = libs.pop("opencv-python-headless")
    return dict(
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        cpu=cpu_model(),
        logical_cpus=os.cpu_count(),
        threads=threads,
        python=platform.python_version(),
        versions=libs,
    )
