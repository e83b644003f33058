"""Shared machinery of the synthetic data-set generators (shapes_coco, shapes_cityscapes).

- :func:`ensure_generated`: generate a data set once into a folder and reuse it, safe against
  interrupted runs and concurrent callers (DDP ranks, DataLoader workers, parallel tests);
- :func:`image_rng`: the random stream of one image, a pure function of ``(seed, split, index)``,
  so an image does not change when a split grows and the output is byte-identical for equal
  parameters, with any number of processes;
- :func:`run_jobs`: render independent images serially or in a process pool;
- small helpers: :func:`check_split_sizes`, :func:`read_json`, :func:`to_uint8`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "SPLITS",
    "check_split_sizes",
    "ensure_generated",
    "image_rng",
    "read_json",
    "run_jobs",
    "to_uint8",
]

# Index of a split in the random streams: part of every generated image's identity.
SPLITS = {"train": 0, "val": 1}

_J = TypeVar("_J")
_R = TypeVar("_R")


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream ``(seed, split, index)``: image ``index`` of ``split`` and nothing else."""
    return np.random.default_rng([seed, SPLITS[split], index])


def check_split_sizes(num_train: int, num_val: int) -> None:
    """Raise ValueError unless both image counts are >= 0."""
    if num_train < 0 or num_val < 0:
        raise ValueError(f"num_train / num_val must be >= 0, got {num_train} / {num_val}")


def to_uint8(a: np.ndarray) -> np.ndarray:
    """Clip to [0, 255] and convert to uint8 (values are truncated, as ``astype`` does)."""
    return np.clip(a, 0, 255).astype(np.uint8)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def run_jobs(fn: Callable[[_J], _R], jobs: Sequence[_J], workers: int | None, per_worker: int) -> list[_R]:
    """``[fn(job) for job in jobs]``, in a process pool when there are enough jobs.

    ``workers`` (default: CPU count) is capped so that each process gets at least ``per_worker``
    jobs; ``fn`` and the jobs must be picklable. Results keep the order of ``jobs``.
    """
    workers = min(int(workers or os.cpu_count() or 1), max(1, len(jobs) // per_worker))
    if workers <= 1:
        return [fn(job) for job in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, jobs, chunksize=per_worker))


def ensure_generated(
    root: str | os.PathLike,
    params: dict[str, Any],
    generate: Callable[[Path], object],
    manifest_name: str,
    read_params: Callable[[Path], dict[str, Any] | None],
) -> Path:
    """Make ``root`` hold the data set described by ``params``, generating it only when needed.

    Args:
        root: the data set's folder.
        params: what the manifest of a matching data set records (compared with ``==``).
        generate: writes the complete data set, manifest last, into the (existing, empty) folder
            it is given.
        manifest_name: file name of the manifest in ``root``, for error messages.
        read_params: the parameters recorded by our manifest in a folder, or None when the folder
            has no manifest written by this generator.

    Returns:
        ``Path(root)``.

    Reuses ``root`` when its manifest records ``params``. Otherwise the data set is generated
    into a temporary sibling folder and renamed to ``root`` (atomic on one file system), so
    neither an interrupted run nor a concurrent reader ever sees a half-written data set, and
    concurrent callers end with one complete copy. A previous data set with other parameters is
    replaced; a non-empty ``root`` (or a file) without our manifest is never deleted:
    FileExistsError instead. RuntimeError when ``root`` does not hold ``params`` afterwards.
    """
    root = Path(root)
    if read_params(root) == params:
        return root
    _refuse_foreign(root, manifest_name, read_params)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        generate(tmp)
        # Checked before anything at root is replaced: a broken generator must not cost the old copy.
        if read_params(tmp) != params:
            raise RuntimeError(f"generating {root} wrote other parameters than requested: {params}")
        _install(tmp, root, params, manifest_name, read_params)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if read_params(root) != params:
        raise RuntimeError(f"{root} does not hold the requested data set after generation: {params}")
    return root


def _refuse_foreign(
    root: Path, manifest_name: str, read_params: Callable[[Path], dict[str, Any] | None]
) -> None:
    """FileExistsError when ``root`` is a file or a non-empty folder that we did not generate."""
    if not root.exists() or read_params(root) is not None:
        return
    if root.is_dir() and not any(root.iterdir()):
        return
    raise FileExistsError(
        f"{root} exists, is not empty and has no {manifest_name} written by this generator: refusing "
        "to overwrite it with generated data; choose another folder or remove it"
    )


def _install(
    tmp: Path,
    root: Path,
    params: dict[str, Any],
    manifest_name: str,
    read_params: Callable[[Path], dict[str, Any] | None],
    attempts: int = 10,
) -> None:
    """Rename ``tmp`` to ``root``, moving a stale ``root`` aside first; other writers may race us."""
    for _ in range(attempts):
        if read_params(root) == params:  # another process installed the same data set first
            return
        if root.exists():
            # Looked at again: a foreign folder may have appeared since the first check.
            _refuse_foreign(root, manifest_name, read_params)
            _remove(root)
        try:
            os.rename(tmp, root)
            return
        except OSError:  # root re-appeared in between (another process): look again
            time.sleep(0.05)
    raise RuntimeError(f"could not install the generated data set at {root} (concurrent writers?)")


def _remove(root: Path) -> None:
    """Delete a stale data set: renamed aside first (atomic), so ``root`` is never half-deleted."""
    stale = root.parent / f".{root.name}.stale-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(root, stale)
    except FileNotFoundError:
        return  # another process moved it first
    shutil.rmtree(stale, ignore_errors=True)
