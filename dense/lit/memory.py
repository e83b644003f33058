"""Predicts the peak memory of a training step and of a validation step before training, so a
configuration that cannot fit fails at once with the numbers and the keys to change, instead of
the out-of-memory killer (or a CUDA OOM) minutes into the run.

How (our own code: neither torch nor Lightning predicts a step's memory without running it): one
forward pass + loss of the real model at batch 2 and at most 256 px a side (on the CPU, under
`torch.random.fork_rng`, its BatchNorm buffers restored) records the bytes of every tensor autograd
keeps for backward (`saved_tensors_hooks`, parameters excluded) and the largest single tensor.
Activations grow linearly with the batch and the pixels, so they are scaled to the configured
batch and input size. A training step then needs

    weights x (1 + 1 gradient + optimizer states) + activations + backward workspace
    (2 x the largest activation) + the batches in flight (input + targets, x prefetching workers),

and a validation step (no autograd) the weights + 4 x the largest tensor of the forward pass
(a layer's input and output, a skip connection, the loss's copy of the logits) + its batches.
Estimates are of float32 activations; mixed precision halves them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dense.lit.config import ConfigError, per_process_batch

__all__ = [
    "InsufficientMemoryError",
    "StepMemory",
    "available_memory",
    "check_memory",
    "check_training_memory",
    "estimate_memory",
    "optimizer_states",
]

_PROBE_BATCH = 2  # BatchNorm in training mode needs 2 samples on SSDLite's 1x1 extra maps
_PROBE_SIDE = 256  # the probe's largest side: < 0.5 s on a CPU for MobileNet-size models
GiB = 2**30
# The largest estimate / peak RSS ratio of each step (tests/test_memory.py: SSDLite and LR-ASPP,
# several batches and sizes), with room for the allocator's differences between machines
# (training: 0.99-1.11 on an Intel Xeon, up to 1.17 on an AMD EPYC): a run is refused only if it
# cannot fit even then.
_OVER_ESTIMATE = {"training step": 1.5, "validation step": 2.5}


class InsufficientMemoryError(ConfigError):
    """The configured batch / input size cannot fit in the memory of the device (predicted)."""


@dataclass(frozen=True)
class StepMemory:
    """Predicted bytes of one step (`what` names it: "training step" / "validation step")."""

    what: str
    weights: int  # weights, gradients and optimizer states (weights only in validation)
    activations: int  # kept for backward (training) or live at once (validation), with workspace
    batches: int  # the input batches in memory at once
    batch_size: int
    input_size: tuple[int, int]  # (h, w) of the network input

    @property
    def total(self) -> int:
        return self.weights + self.activations + self.batches


def optimizer_states(optimizer: Any) -> int:
    """Tensors of parameter size an optimizer keeps (momentum, moments): a class, an instance or
    a `functools.partial` of one (Hydra's `_partial_`). Unknown optimizers: 2 (as Adam)."""
    kwargs: dict[str, Any] = {}
    if isinstance(optimizer, functools.partial):
        optimizer, kwargs = optimizer.func, dict(optimizer.keywords)
    elif isinstance(optimizer, torch.optim.Optimizer):
        kwargs, optimizer = dict(optimizer.defaults), type(optimizer)
    name = getattr(optimizer, "__name__", "")
    if name == "SGD":
        return 1 if kwargs.get("momentum", 0) else 0
    if name in ("Adam", "AdamW", "NAdam", "RAdam", "Adamax"):
        return 2 + bool(kwargs.get("amsgrad", False))
    if name == "RMSprop":
        return 1 + bool(kwargs.get("momentum", 0)) + bool(kwargs.get("centered", False))
    if name == "Adagrad":
        return 1
    return 2


def _targets(task: str, n: int, h: int, w: int, num_classes: int) -> Any:
    if task == "detect":  # one box per image: the loss's matching is small next to the activations
        box = torch.tensor([[w * 0.25, h * 0.25, w * 0.75, h * 0.75]])
        return [{"boxes": box.clone(), "labels": torch.tensor([1])} for _ in range(n)]
    return torch.randint(0, num_classes, (n, h, w))


def _probe_size(size: tuple[int, int]) -> tuple[int, int]:
    """At most _PROBE_SIDE a side, a multiple of 32 (every stride divides it), aspect kept."""
    scale = min(1.0, _PROBE_SIDE / max(size))
    return tuple(max(64, int(round(s * scale / 32)) * 32) for s in size)  # type: ignore[return-value]


def _probe(
    model: nn.Module, task: str, size: tuple[int, int], num_classes: int, train: bool
) -> tuple[int, int]:
    """(bytes, largest tensor bytes) of one forward + loss of `model` on the CPU at batch 2 and
    `size`: with `train`, the tensors autograd saves for backward; else the module outputs."""
    h, w = size
    keep: set[int] = set()  # the parameters' storages (after the move to the CPU)
    seen: dict[int, int] = {}  # storage address -> bytes (views of one storage counted once)
    largest = [0]  # kept apart: without autograd a freed tensor's address is reused

    def record(t: Any) -> None:
        if torch.is_tensor(t):
            ptr, nbytes = t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()
            if ptr not in keep:
                seen[ptr] = nbytes
                largest[0] = max(largest[0], nbytes)

    def pack(t: torch.Tensor) -> torch.Tensor:
        record(t)
        return t

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        outputs = output.values() if isinstance(output, dict) else output
        for t in outputs if isinstance(outputs, (list, tuple, type({}.values()))) else [outputs]:
            record(t)

    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    was_training, device = model.training, next(model.parameters()).device
    handles = [] if train else [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.random.fork_rng(devices=[]):
            model.to("cpu").train(train)
            keep.update(p.untyped_storage().data_ptr() for p in model.parameters())
            images = torch.rand(_PROBE_BATCH, 3, h, w)
            targets = _targets(task, _PROBE_BATCH, h, w, num_classes)
            if train:
                with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                    model.loss(model(images), targets)
            else:
                with torch.no_grad():
                    record(model.loss(model(images), targets) if task == "segment" else model(images))
    finally:
        for handle in handles:
            handle.remove()
        model.load_state_dict(buffers)
        model.to(device).train(was_training)
    return sum(seen.values()), largest[0]


def estimate_memory(
    model: nn.Module,
    task: str,
    *,
    num_classes: int,
    batch_size: int,
    input_size: tuple[int, int],
    optimizer: Any = None,
    train: bool = True,
    precision: str = "32-true",
    num_workers: int = 0,
    device: torch.device | str = "cpu",
) -> StepMemory:
    """Predicted peak bytes of one training (`train`) or validation step at `batch_size` x
    [3, *input_size] (input_size = (h, w); segmentation targets at that size)."""
    probe = _probe_size(input_size)
    total, largest = _probe(model, task, probe, num_classes, train)
    scale = batch_size / _PROBE_BATCH * (input_size[0] * input_size[1]) / (probe[0] * probe[1])
    if "16" in str(precision):  # fp16 / bf16 activations (mixed precision keeps fp32 weights)
        total, largest = total // 2, largest // 2
    activations = int((total + 2 * largest) * scale) if train else int(4 * largest * scale)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    states = 2 + optimizer_states(optimizer) if train else 1
    pixels = input_size[0] * input_size[1]
    sample = 3 * pixels * 4 + (pixels * 8 if task == "segment" else 0)  # float image + int64 mask
    # the step's batch + torch's prefetch_factor 2 per worker (those wait in host memory)
    in_flight = 1 + (2 * num_workers if str(device).startswith("cpu") else 0)
    return StepMemory(
        what="training step" if train else "validation step",
        weights=params * states,
        activations=activations,
        batches=sample * batch_size * in_flight,
        batch_size=int(batch_size),
        input_size=(int(input_size[0]), int(input_size[1])),
    )


def _cgroup_free() -> int | None:
    """Bytes left under the cgroup v2 memory limit (the OOM killer's limit in a container)."""
    base = Path("/sys/fs/cgroup")
    try:
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        used = int((base / "memory.current").read_text())
        # memory.current counts page cache the kernel gives back under pressure (a data set just
        # read or generated): subtract the inactive file pages, as docker stats and the kubelet do
        for line in (base / "memory.stat").read_text().splitlines():
            if line.startswith("inactive_file "):
                used -= int(line.split()[1])
        return int(limit) - max(used, 0)
    except (OSError, ValueError):
        return None


def available_memory(device: torch.device | str = "cpu") -> tuple[int, str] | None:
    """(free bytes, where they were read) for new tensors on `device`; None if unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # what this process's caching allocator holds but does not use is free for it too
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + cached), f"free on {device} (torch.cuda.mem_get_info)"
    if device.type != "cpu":
        return None
    found = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found = (int(line.split()[1]) * 1024, "MemAvailable")
    except (OSError, ValueError, IndexError):
        pass
    cgroup = _cgroup_free()
    if cgroup is not None and (found is None or cgroup < found[0]):
        found = (cgroup, "left under the cgroup memory limit")
    return found


def _gib(n: int) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB / 10 else f"{n / 2**20:.0f} MiB"


def _keys(task: str, train: bool) -> str:
    if task == "detect":
        return "data.batch_size or head.image_size" if train else "data.val_batch_size or head.image_size"
    return "data.batch_size or data.crop" if train else "data.val_batch_size or data.eval_scale"


def check_memory(
    model: nn.Module,
    task: str,
    *,
    num_classes: int,
    train: tuple[int, tuple[int, int]],
    val: tuple[int, tuple[int, int]] | None,
    optimizer: Any = None,
    device: torch.device | str = "cpu",
    precision: str = "32-true",
    num_workers: int = 0,
    processes: int = 1,
) -> list[StepMemory]:
    """`processes`: how many processes of the run share this memory (CPU DDP on one machine).

    Raise `InsufficientMemoryError` when the training step (`train` = (batch, (h, w))) or the
    validation step (`val`, None: not checked) is predicted to need more than `device` has free.
    Returns the estimates (nothing is checked where the free memory is unknown)."""
    estimates = [
        estimate_memory(
            model,
            task,
            num_classes=num_classes,
            batch_size=b,
            input_size=s,
            optimizer=optimizer,
            train=is_train,
            precision=precision,
            num_workers=num_workers,
            device=device,
        )
        for is_train, (b, s) in [(True, train), *([(False, val)] if val else [])]
    ]
    free = available_memory(device)
    if free is None:
        return estimates
    if processes > 1:
        free = (free[0] // int(processes), f"{free[1]} / {processes} processes")
    for est in estimates:
        # refuse only what cannot fit even if the estimate is at its known worst over-estimate
        if est.total / _OVER_ESTIMATE[est.what] > free[0]:
            h, w = est.input_size
            raise InsufficientMemoryError(
                f"a {est.what} at batch {est.batch_size} x {h}x{w} px needs about {_gib(est.total)} "
                f"(activations {_gib(est.activations)}, weights / gradients / optimizer "
                f"{_gib(est.weights)}, batches {_gib(est.batches)}), more than the {_gib(free[0])} "
                f"{free[1]}: lower {_keys(task, est.what == 'training step')} "
                "(faults.check_memory=false skips this check)"
            )
    return estimates


def _side_pair(size: Any) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))


def _segment_val_size(datamodule: Any) -> tuple[int, int] | None:
    """(h, w) of the validation images of a Cityscapes-layout datamodule, from one file's header
    (or the synthetic set's options before it is generated); None if neither is there."""
    from PIL import Image

    folder = Path(datamodule.root) / "leftImg8bit" / datamodule.val_split
    first = next(folder.glob("*/*_leftImg8bit.png"), None) if folder.is_dir() else None
    if first is not None:
        with Image.open(first) as im:
            size = (im.height, im.width)
    elif datamodule.synthetic and "size" in datamodule.synthetic_options:
        size = _side_pair(datamodule.synthetic_options["size"])
    else:
        return None
    scale = float(getattr(datamodule, "eval_scale", 1.0))
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def check_training_memory(
    model: nn.Module, task: str, datamodule: Any, trainer: Any, optimizer: Any, num_classes: int
) -> list[StepMemory]:
    """`check_memory` for a Lightning `trainer` about to fit `model` on a `TaskDataModule`: the
    per-process training batch and input size (detect: `image_size`; segment: `crop`, validation
    at the val images' size x `eval_scale`) on the device of this process."""
    batch = datamodule.fixed_batch_size
    if batch is None:
        try:
            n = (trainer.num_devices, trainer.num_nodes, trainer.accumulate_grad_batches)
            batch = per_process_batch(datamodule.global_batch_size, *n)
        except ValueError:  # reported by the datamodule's setup
            return []
    val_batch = datamodule.fixed_val_batch_size or batch
    if task == "detect":
        train_size = val_size = _side_pair(datamodule.image_size)
    else:
        train_size, val_size = _side_pair(datamodule.crop), _segment_val_size(datamodule)
    try:
        device = trainer.strategy.root_device
    except Exception:  # noqa: BLE001 (a strategy that knows its device only once launched)
        device = torch.device("cpu")
    if int(getattr(trainer, "local_rank", 0)) != 0:
        return []  # local rank 0 checks for the processes of its machine (before they start)
    # CPU processes of one machine share its memory; each GPU has its own
    processes = int(trainer.num_devices) if device.type == "cpu" else 1
    return check_memory(
        model,
        task,
        num_classes=num_classes,
        train=(batch, train_size),
        val=(val_batch, val_size) if val_size is not None else None,
        optimizer=optimizer,
        device=device,
        precision=str(trainer.precision),
        num_workers=datamodule.num_workers,
        processes=processes,
    )
