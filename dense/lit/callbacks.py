"""Training callbacks of `tools/train.py`: checkpoints by epochs / steps / wall time, the RNG state
carried through checkpoints (so a resumed run continues the same random streams), and the
divergence check that turns a non-finite loss into a clear failure."""

from __future__ import annotations

import math
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

__all__ = ["DivergenceError", "DivergenceCheck", "RngState", "checkpoint_callbacks"]


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite."""


class DivergenceCheck(Callback):
    """Stops training with `DivergenceError("diverged at step N: loss is nan")` on a non-finite loss
    (before its backward pass: a NaN step would only spoil the weights and every later step)."""

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        value = float(loss.detach())
        if not math.isfinite(value):
            raise DivergenceError(f"diverged at step {trainer.global_step}: loss is {value}")


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
