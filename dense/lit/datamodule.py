"""`TaskDataModule`: what the COCO and Cityscapes datamodules share (thin glue over `dense.data`).

Prepare (generate a built-in synthetic data set once), set up once per stage, the per-process
batch derived from the global one, loaders with seeded augmentation per worker (and per rank) and
pinned memory on CUDA, and the data set's metadata (`info()`). A subclass says how to generate its
synthetic set, how to build its data sets and its metadata.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from dense.data.info import DatasetInfo
from dense.data.report import DataPathError
from dense.lit.config import per_process_batch

__all__ = ["TaskDataModule", "per_process_batch", "seed_transform", "worker_init"]


def seed_transform(dataset: Any, seed: int) -> None:
    """albumentations' `Compose` keeps its own RNG (global seeds do not reach it): seed it."""
    transform = getattr(dataset, "transform", None)
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(int(seed) % 2**32)


def worker_init(worker_id: int, rank: int = 0) -> None:
    """Every DataLoader worker gets its own augmentation stream and one OpenCV thread.

    Forked workers would all inherit the same RNG state and draw identical crops / flips;
    `worker_info.seed` differs per worker and per epoch and follows `torch.manual_seed` (so runs
    stay reproducible). The workers are the data-loading parallelism already: OpenCV's own thread
    pool in each of them would only compete with the training threads (badly so on small CPUs).
    """
    import cv2  # albumentations' backend; imported here, in the worker process only

    cv2.setNumThreads(1)
    info = get_worker_info()
    if info is not None:
        # Every rank draws the same base seed: offset it, or the ranks' crops / flips would coincide.
        seed_transform(info.dataset, info.seed + rank * info.num_workers)


class TaskDataModule(LightningDataModule):
    """Base of `CocoDataModule` and `CityscapesDataModule`.

    Args:
        root: data set directory.
        global_batch_size: training batch summed over all processes (the recipe's
            `recipe.global_batch`, which its learning rate is written for). The batch of each
            process is derived from it in `setup`: global / (devices x nodes x gradient
            accumulation), an error if that does not divide.
        batch_size: training batch per process, set directly; it wins over `global_batch_size`
            (the global batch is then batch_size x processes). Neither given: 8 per process.
        val_batch_size: per process in validation (default: the training batch per process).
        num_workers: DataLoader worker processes (per device).
        synthetic: generate the built-in synthetic data set at `root` in `prepare_data` if needed.
        synthetic_options: keyword arguments of that generator.
        pin_memory: pin host memory (default: when CUDA is available).
        loader_timeout_s: with worker processes, a batch that takes longer than this is an error
            (a hung worker, e.g. on a stalled network file system). 0 (default): wait; a worker
            that dies is still reported within seconds, because torch checks its workers every
            5 s only while no timeout is set (a timeout replaces that check).
    """

    synthetic_name = ""  # the data= option that generates a synthetic set in this layout
    layout = ""  # what the folder must hold (for error messages)

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        global_batch_size: int | None = None,
        batch_size: int | None = None,
        val_batch_size: int | None = None,
        num_workers: int = 2,
        synthetic: bool = False,
        synthetic_options: Mapping[str, Any] | None = None,
        pin_memory: bool | None = None,
        loader_timeout_s: float = 0.0,
    ) -> None:
        super().__init__()
        if global_batch_size is None and batch_size is None:
            batch_size = 8
        for name, value in (
            ("global_batch_size", global_batch_size),
            ("batch_size", batch_size),
            ("val_batch_size", val_batch_size),
        ):
            if value is not None and int(value) < 1:
                raise ValueError(f"batch sizes must be >= 1, got {name}={value}")
        if int(num_workers) < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.root = Path(root).expanduser()
        self.global_batch_size = None if global_batch_size is None else int(global_batch_size)
        self.fixed_batch_size = None if batch_size is None else int(batch_size)
        self.fixed_val_batch_size = None if val_batch_size is None else int(val_batch_size)
        # The per-process batches; derived again in `setup`, once the trainer's process count is known.
        self.batch_size = self.fixed_batch_size or self.global_batch_size
        self.val_batch_size = self.fixed_val_batch_size or self.batch_size
        self.num_workers = int(num_workers)
        self.synthetic = bool(synthetic)
        self.synthetic_options = dict(synthetic_options or {})
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.loader_timeout_s = float(loader_timeout_s)
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None

    # --- what subclasses provide ------------------------------------------------------------------
    def generate(self) -> None:
        """Write the synthetic data set at `root` unless it is there already (atomic, any process)."""
        raise NotImplementedError

    def build_datasets(self, stage: str | None) -> None:
        """Fill `val_dataset` (and `train_dataset` for stage "fit" / None) if not built yet."""
        raise NotImplementedError

    def info(self) -> DatasetInfo:
        """The data set's metadata; sets the data module up if needed."""
        raise NotImplementedError

    collate_fn: Callable[[list[Any]], Any] | None = None

    # --- shared -----------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Generate the synthetic data set if asked (safe to call from several processes)."""
        if self.synthetic:
            self.generate()

    def setup(self, stage: str | None = None) -> None:
        """Check the root and build the data sets (once; later calls for the same stage are no-ops)."""
        if not self.root.is_dir():
            hint = "" if self.synthetic else f"; data={self.synthetic_name} (synthetic=true) generates one"
            raise DataPathError(f"data root not found: {self.root}{hint}. {self.layout}")
        if stage in (None, "fit") or self.fixed_val_batch_size is None:
            self.batch_size = self._derive_batch(stage)
            self.val_batch_size = self.fixed_val_batch_size or self.batch_size
        had_train = self.train_dataset is not None
        self.build_datasets(stage)
        if self.train_dataset is not None and not had_train:
            # With num_workers=0 the main process augments: seed it from torch (and the rank) so runs
            # repeat and the ranks differ.
            seed_transform(self.train_dataset, torch.initial_seed() + self._rank())

    def _derive_batch(self, stage: str | None) -> int:
        """The training batch of this process: `batch_size` if set, else the global batch over the
        trainer's processes (one process without a trainer)."""
        if self.fixed_batch_size is not None:
            return self.fixed_batch_size
        t = self.trainer
        devices, nodes, accumulate = (
            (t.num_devices, t.num_nodes, t.accumulate_grad_batches) if t else (1, 1, 1)
        )
        batch = per_process_batch(self.global_batch_size, devices, nodes, accumulate)
        if stage in (None, "fit"):
            rank_zero_info(
                f"batch per process {batch} = global batch {self.global_batch_size} / ({devices} devices x "
                f"{nodes} nodes x {accumulate} accumulation steps)"
            )
        return batch

    def _rank(self) -> int:
        return int(self.trainer.global_rank) if self.trainer is not None else 0

    def _ready(self) -> None:
        if self.val_dataset is None:
            self.prepare_data()
            self.setup("validate")

    def loader(
        self, dataset: Dataset, batch_size: int, *, train: bool, sampler: Sampler | None = None
    ) -> DataLoader:
        workers = self.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            # Drop a ragged last training batch: a batch of one breaks BatchNorm on 1x1 maps (SSDLite's
            # extra layers, R-ASPP's image pooling). Keep it when the whole set fits in one batch.
            drop_last=train and len(dataset) > batch_size,
            num_workers=workers,
            collate_fn=self.collate_fn,
            pin_memory=self.pin_memory,
            persistent_workers=workers > 0,  # worker start-up costs seconds per epoch on small CPUs
            worker_init_fn=partial(worker_init, rank=self._rank()) if workers > 0 else None,
            timeout=self.loader_timeout_s if workers > 0 else 0,
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup('fit') has not been called yet")
        return self.loader(self.train_dataset, self.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        if self.val_dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not been called yet")
        return self.loader(self.val_dataset, self.val_batch_size, train=False, sampler=self.val_sampler())

    def val_sampler(self) -> Sampler | None:
        return None

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
