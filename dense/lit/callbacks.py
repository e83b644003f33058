"""Training callbacks of `tools/train.py`: checkpoints by epochs / steps / wall time, written
atomically; the RNG state carried through checkpoints (so a resumed run continues the same random
streams); the divergence check that turns a non-finite loss into a clear failure (or skips such
steps up to a limit); and the data-health check that stops a run whose epochs skip too many
unreadable samples or make no optimizer step."""

from __future__ import annotations

import errno
import logging
import math
import os
import random
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from dense.data.report import DataError, ids_text
from dense.errors import UserError

__all__ = [
    "AtomicCheckpointIO",
    "CheckpointSpaceError",
    "DataHealth",
    "DivergenceCheck",
    "DivergenceError",
    "RngState",
    "checkpoint_callbacks",
]

log = logging.getLogger(__name__)


class DivergenceError(UserError, RuntimeError):
    """The training loss became NaN or infinite (a recipe problem: learning rate, data)."""


class DivergenceCheck(Callback):
    """Stops training with `DivergenceError("diverged at step N: loss is nan (train/loss_box=nan)")`
    on a non-finite loss, before its backward pass (a NaN step would only spoil the weights and
    every later step). The message names the loss terms the module logged for that step.

    Args:
        max_skipped_steps: instead of stopping, skip up to this many such steps in the whole run
            (their gradients are dropped: no weight update, no optimizer state change); the next
            one stops the run. 0: stop at the first.
    """

    def __init__(self, max_skipped_steps: int = 0) -> None:
        self.max_skipped_steps = int(max_skipped_steps)
        self.skipped_steps: list[int] = []
        self._drop_grads = False

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        value = float(loss.detach())
        if math.isfinite(value):
            return
        terms = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if k.startswith("train/loss_") and torch.is_tensor(v) and v.numel() == 1  # the terms, not the sum
        }
        bad = {k: v for k, v in terms.items() if not math.isfinite(v)}
        detail = ", ".join(f"{k}={v}" for k, v in (bad or terms).items())
        where = (
            f"step {trainer.global_step} (epoch {trainer.current_epoch}, batch {trainer.fit_loop.batch_idx})"
        )
        if len(self.skipped_steps) < self.max_skipped_steps:
            self.skipped_steps.append(int(trainer.global_step))
            self._drop_grads = True
            log.warning(
                "non-finite loss %s at %s%s: step skipped (%d of at most %d)",
                value,
                where,
                f" ({detail})" if detail else "",
                len(self.skipped_steps),
                self.max_skipped_steps,
            )
            return
        skipped = f"; {len(self.skipped_steps)} earlier step(s) skipped" if self.skipped_steps else ""
        raise DivergenceError(
            f"diverged at {where}: loss is {value}{f' ({detail})' if detail else ''}{skipped}; the last "
            "good checkpoint is kept (lower optim.lr, or faults.max_nonfinite_steps=N to skip such steps)"
        )

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        if self._drop_grads:
            # torch optimizers leave parameters without a gradient untouched (momentum included).
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.grad = None
            self._drop_grads = False

    def state_dict(self) -> dict[str, Any]:
        return {"skipped_steps": list(self.skipped_steps)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped_steps = [int(s) for s in state.get("skipped_steps", [])]


class DataHealth(Callback):
    """The training side of the bad-data policy (README, "What happens with bad data").

    Per epoch: samples the data set skipped (unreadable images: ``train_dataset.skipped_files()``)
    against the samples the epoch used. Stops the run with a `DataError` when more than
    ``max_skipped_fraction`` of them were skipped, or when the epoch made no optimizer step; else
    logs the skipped files and their count (``train/skipped_images``). Batches are detection
    ``(images, targets)`` or segmentation ``{"image": ...}``; ``None`` (all skipped) uses nothing.
    :meth:`summary` goes into metrics.json.
    """

    def __init__(self, max_skipped_fraction: float = 0.1) -> None:
        if not 0.0 <= float(max_skipped_fraction) <= 1.0:
            raise ValueError(f"max_skipped_fraction must be in [0, 1], got {max_skipped_fraction}")
        self.max_skipped_fraction = float(max_skipped_fraction)
        self.skipped: set[str] = set()
        self.skipped_per_epoch: list[int] = []
        self._step0 = 0
        self._used = 0

    @staticmethod
    def _dataset(trainer: Trainer) -> Any:
        ds = getattr(getattr(trainer, "datamodule", None), "train_dataset", None)
        return ds if hasattr(ds, "skipped_files") else None

    # The skip log is cleared before the run and right after each epoch's reading, never at an
    # epoch's start: Lightning creates the loader iterator (its workers start prefetching, and
    # may already skip files) before on_train_epoch_start.
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        ds = self._dataset(trainer)
        if ds is not None:
            ds.reset_skipped()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._step0, self._used = trainer.global_step, 0

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if batch is None:
            return
        if isinstance(batch, (tuple, list)) and len(batch) == 2:  # detection: (images, targets)
            self._used += len(batch[1])
        elif isinstance(batch, dict) and "image" in batch:
            self._used += int(batch["image"].shape[0])

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        ds = self._dataset(trainer)
        skipped = ds.skipped_files() if ds is not None else []
        if ds is not None:
            ds.reset_skipped()
        self.skipped.update(skipped)
        self.skipped_per_epoch.append(len(skipped))
        epoch, seen = trainer.current_epoch, self._used + len(skipped)
        # (an epoch cut short by a stop request, or without batches at all, is not the data's fault)
        if trainer.global_step == self._step0 and seen and not trainer.should_stop:
            why = (
                f"; {len(skipped)} unreadable training images were skipped {ids_text(skipped)}"
                if skipped
                else ""
            )
            raise DataError(
                f"epoch {epoch} made no optimizer step ({self._used} samples used){why}: "
                "check the training images and annotations (python tools/check_data.py data=...)"
            )
        if seen and len(skipped) / seen > self.max_skipped_fraction:
            raise DataError(
                f"epoch {epoch}: {len(skipped)} of {seen} training samples "
                f"({100 * len(skipped) / seen:.1f}%) were unreadable and skipped, more than "
                "faults.max_skipped_fraction="
                f"{self.max_skipped_fraction}: {ids_text(skipped)}"
            )
        if skipped:
            log.warning(
                "epoch %d: skipped %d unreadable training sample(s) of %d: %s",
                epoch,
                len(skipped),
                seen,
                ids_text(skipped),
            )
        if ds is not None:  # a chart per run, for either task
            pl_module.log("train/skipped_images", float(len(skipped)), on_step=False, on_epoch=True)

    def summary(self) -> dict[str, Any]:
        """For metrics.json: skipped samples per epoch and the files, capped."""
        return {
            "skipped_samples_per_epoch": list(self.skipped_per_epoch),
            "skipped_files": sorted(self.skipped)[:100],
            "num_skipped_files": len(self.skipped),
        }


class CheckpointSpaceError(UserError):
    """The checkpoint folder's disk is full (or would be by this checkpoint); the last good
    checkpoint is kept."""


_SPACE_MARGIN = 16 * 2**20  # room left for the logs and metrics written next to the checkpoints


def _tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in a checkpoint dict: about the size of its file."""
    total, stack = 0, [obj]
    while stack:
        x = stack.pop()
        if torch.is_tensor(x):
            total += x.numel() * x.element_size()
        elif isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
    return total


def _no_space(error: BaseException) -> bool:
    """ENOSPC / EDQUOT in `error` or what it was raised from (torch.save reports a failed write of
    its zip writer as a RuntimeError raised while handling the OSError)."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        e = e.__cause__ or e.__context__
    return False


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file in its own folder, fsyncs it, then renames it over
    the target: a process killed while saving leaves the previous checkpoint intact.

    A full disk is a `CheckpointSpaceError` naming the folder, the free and the needed space and
    the last good checkpoint (to resume from): raised before writing when the free space is below
    the checkpoint's size (the larger of the previous file written and the tensors' bytes) plus
    16 MiB, and when a write fails with ENOSPC / EDQUOT (the temporary file is removed).

    Why not Lightning's own save: it serialises the whole checkpoint into memory, writes it to the
    system temporary folder and moves it, which is a copy (not atomic) when that folder is on
    another file system than the run (local /tmp, network run folder), and it never fsyncs.
    """

    def __init__(self) -> None:
        super().__init__()
        self._last_path: Path | None = None  # the last checkpoint this object wrote
        self._last_size = 0

    def _space_error(self, path: Path, needed: int, free: int | None = None) -> CheckpointSpaceError:
        folder = path.parent
        if free is None:
            free = shutil.disk_usage(folder).free
        newest = sorted(folder.glob("*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
        last = next((p for p in [self._last_path, path, *newest] if p is not None and p.is_file()), None)
        kept = (
            f"the last good checkpoint is intact at {last} (free some space, then resume with ckpt={last})"
            if last
            else "no checkpoint was written yet"
        )
        return CheckpointSpaceError(
            f"checkpoint folder {folder}: {free / 2**20:.0f} MiB free, writing {path.name} needs about "
            f"{needed / 2**20:.0f} MiB; {kept}"
        )

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        needed = max(self._last_size, _tensor_bytes(checkpoint)) + _SPACE_MARGIN
        free = shutil.disk_usage(path.parent).free
        if free < needed:  # the old file stays until the rename: the new one needs its full size
            raise self._space_error(path, needed, free)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            size = os.path.getsize(tmp)
            os.replace(tmp, path)
        except BaseException as e:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(e, Exception) and _no_space(e):
                raise self._space_error(path, needed) from e
            raise
        self._last_path, self._last_size = path, size
        try:  # the rename itself survives a power cut once the folder is synced
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            pass


def _transform_rngs(trainer: Trainer) -> list[Any]:
    """The albumentations RNG holders of the training transform (the Compose and every transform
    in it, depth first): each keeps its own generators, seeded once at setup."""
    dataset = getattr(getattr(trainer, "datamodule", None), "train_dataset", None)
    out, stack = [], [getattr(dataset, "transform", None)]
    while stack:
        t = stack.pop(0)
        if t is None:
            continue
        if hasattr(t, "random_generator") and hasattr(t, "py_random"):
            out.append(t)
        stack[:0] = list(getattr(t, "transforms", []) or [])
    return out


class RngState(Callback):
    """Saves torch / numpy / python RNG states and the training transform's generators in the
    checkpoint and restores them on resume, as plain types (the file stays `weights_only`)."""

    def __init__(self) -> None:
        self._trainer: Trainer | None = None
        self._pending: dict[str, Any] | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
        state = {
            "torch": torch.get_rng_state(),
            "numpy": [kind, [int(k) for k in keys], int(pos), int(has_gauss), float(gauss)],
            "python": _plain(random.getstate()),
            "transforms": [],
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        if self._trainer is not None:
            state["transforms"] = [
                [t.random_generator.bit_generator.state, _plain(t.py_random.getstate())]
                for t in _transform_rngs(self._trainer)
            ]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Restored when the first training epoch starts: the data is set up after loading.
        self._pending = state

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        state, self._pending = self._pending, None
        if state is None:
            return
        torch.set_rng_state(state["torch"])
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))  # noqa: NPY002
        random.setstate(_tuple(state["python"]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        # The data set reseeds its transform once per process on first use: let it do so now, so
        # that it does not overwrite the restored generators on the first batch.
        dataset = getattr(trainer.datamodule, "train_dataset", None)
        getattr(dataset, "_reseed_transform", lambda: None)()
        for t, (np_state, py_state) in zip(_transform_rngs(trainer), state["transforms"]):
            t.random_generator.bit_generator.state = np_state
            t.py_random.setstate(_tuple(py_state))
        # On resume the loader's iterator was made before this hook (a fresh epoch makes it after):
        # make it again, so its seeds and the shuffle come from the restored state.
        fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
        if fetcher is not None:
            iter(fetcher)


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


def _tuple(value: Any) -> Any:
    return tuple(_tuple(v) for v in value) if isinstance(value, list) else value


def checkpoint_callbacks(
    dirpath: str | Path,
    monitor: str,
    mode: str,
    *,
    every_n_epochs: int | None = 1,
    every_n_train_steps: int | None = None,
    train_time_interval_min: float | None = None,
) -> list[ModelCheckpoint]:
    """The best checkpoint by `monitor` and `last.ckpt` every `every_n_epochs`; `last.ckpt` also
    every `every_n_train_steps` and every `train_time_interval_min` minutes when set (Lightning
    allows one trigger per ModelCheckpoint, so each trigger is its own)."""
    common = {"dirpath": dirpath, "save_last": True, "enable_version_counter": False}
    out = [
        ModelCheckpoint(
            filename="best-epoch{epoch:03d}",
            monitor=monitor,
            mode=mode,
            save_top_k=1,
            auto_insert_metric_name=False,
            every_n_epochs=int(every_n_epochs or 0),  # 0: none (Lightning's None would mean 1)
            **common,
        )
    ]
    if every_n_train_steps:
        out.append(ModelCheckpoint(save_top_k=0, every_n_train_steps=int(every_n_train_steps), **common))
    if train_time_interval_min:
        interval = timedelta(minutes=float(train_time_interval_min))
        out.append(ModelCheckpoint(save_top_k=0, train_time_interval=interval, **common))
    return out
