"""Checks and helpers for the composed Hydra configs of ``tools/train.py`` and ``tools/eval.py``.

Imports only OmegaConf (no torch, no Lightning), so a wrong combination of config groups fails in
about a second, before any data is generated or loaded and before a model is built.

How the groups fit (``conf/``): ``task`` picks the Lightning module, the datamodule class and
the default ``head`` and ``data``; every ``head`` and ``data`` option names the task it serves
(``head.task``, ``data.task``), which is what :func:`validate_config` checks.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = [
    "ConfigError",
    "per_process_batch",
    "datamodule_kwargs",
    "group_options",
    "json_safe",
    "tidy_logging",
    "validate_config",
]

TASKS = ("detect", "segment")
# Keys of the `data` group that describe the option rather than being datamodule arguments.
_DATA_META_KEYS = ("task",)


class ConfigError(ValueError):
    """The composed configuration is inconsistent (the message says which keys and how to fix)."""


def per_process_batch(global_batch: int, devices: int, num_nodes: int = 1, accumulate: int = 1) -> int:
    """The batch of one process for a global batch spread over devices x nodes processes and
    `accumulate` gradient-accumulation steps; an error naming the numbers if it does not divide."""
    share = int(devices) * int(num_nodes) * int(accumulate)
    if int(global_batch) < 1 or share < 1 or int(global_batch) % share:
        raise ValueError(
            f"global batch {global_batch} (data.global_batch_size, from recipe.global_batch) does not divide "
            f"over trainer.devices={devices} x trainer.num_nodes={num_nodes} x "
            f"trainer.accumulate_grad_batches={accumulate} = {share}: choose a global batch that is a "
            "multiple of it (and scale optim.lr linearly with it), or set the per-process batch "
            "directly with data.batch_size=N"
        )
    return int(global_batch) // share


def group_options(conf_dir: str | os.PathLike | None, group: str, task: str | None = None) -> list[str]:
    """Option names of a config group (``conf/<group>/*.yaml``); with ``task``, only those whose
    ``task`` key matches. Used for the hints of the error messages; empty if unknown."""
    if conf_dir is None:
        return []
    out = []
    for path in sorted(Path(conf_dir, group).glob("*.yaml")):
        if task is not None:
            try:
                if OmegaConf.load(path).get("task") != task:
                    continue
            except Exception:  # a hint must never hide the real error
                continue
        out.append(path.stem)
    return out


def _choice(group: str) -> str | None:
    """The option chosen for ``group`` in the running Hydra app (None outside one)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.choices.get(group)
    except Exception:
        return None


def validate_config(
    cfg: DictConfig, *, conf_dir: str | os.PathLike | None = None, stage: str = "train"
) -> None:
    """Check the composed config before any work starts.

    Checks: the task is known; the head and the data set serve that task; the output stride is 16
    or 32 (segment); the optimizer has a positive
    learning rate (train); the checkpoint exists (``ckpt`` to resume in train, required in eval).

    Raises:
        ConfigError: with the offending keys, the valid options and the override that fixes it.
    """
    task_node = cfg.get("task")
    if not isinstance(task_node, DictConfig) or "name" not in task_node:
        raise ConfigError(f"the config has no task (choose one: {', '.join(f'task={t}' for t in TASKS)})")
    task = task_node.name
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; valid: {list(TASKS)}")
    for key in ("model", "module", "datamodule"):
        if key not in task_node:
            raise ConfigError(f"conf/task/{task}.yaml must define task.{key}")

    head = cfg.get("head")
    if head is not None:
        head_task = head.get("task")
        if head_task != task:
            name = _choice("head") or head.get("name")
            valid = group_options(conf_dir, "head", task)
            raise ConfigError(
                f"head={name} is a {head_task!r} head and cannot be used with task={task}"
                + (f"; heads for task={task}: {valid} (e.g. head={valid[0]})" if valid else "")
            )

    data = cfg.get("data")
    if data is None:
        raise ConfigError(f"the config has no data set (choose one: {group_options(conf_dir, 'data', task)})")
    data_task = data.get("task")
    if data_task != task:
        name = _choice("data") or "?"
        valid = group_options(conf_dir, "data", task)
        kind = f"a {data_task!r}" if data_task else "not marked as a"
        raise ConfigError(
            f"data={name} is {kind} data set and cannot be used with task={task}"
            + (f"; data sets for task={task}: {valid}" if valid else "")
        )

    if task == "segment" and head is not None:
        stride = head.get("output_stride")
        if stride not in (16, 32):
            raise ConfigError(
                f"head.output_stride={stride}: segmentation backbones run at output stride 16 (last stage "
                "dilated, the papers' setting) or 32 (plain)"
            )

    if stage == "train":
        _check_batch(cfg)
        lr = cfg.get("optim", {}).get("lr")
        if lr is not None and not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ConfigError(f"optim.lr must be a positive number, got {lr!r}")
        ckpt = cfg.get("ckpt")
        if ckpt is not None and not Path(ckpt).is_file():
            raise ConfigError(f"ckpt={ckpt}: no such checkpoint to resume from")
    elif stage == "eval":
        ckpt = cfg.get("ckpt") if not OmegaConf.is_missing(cfg, "ckpt") else None
        if ckpt is None:
            raise ConfigError("eval needs a checkpoint: ckpt=PATH (e.g. outputs/.../checkpoints/last.ckpt)")
        if not Path(ckpt).is_file():
            raise ConfigError(f"ckpt={ckpt}: no such checkpoint")
    else:
        raise ValueError(f"unknown stage {stage!r}")


def _check_batch(cfg: DictConfig) -> None:
    """The recipe's global batch must divide over the processes; checked here when the trainer's
    numbers are plain integers (devices=-1 / "auto" are only known to Lightning)."""
    data, trainer = cfg.get("data") or {}, cfg.get("trainer") or {}
    numbers = (
        data.get("global_batch_size"),
        trainer.get("devices", 1),
        trainer.get("num_nodes", 1),
        trainer.get("accumulate_grad_batches", 1),
    )
    if data.get("batch_size") is None and all(isinstance(n, int) and n > 0 for n in numbers):
        try:
            per_process_batch(*numbers)
        except ValueError as e:
            raise ConfigError(str(e)) from None


def datamodule_kwargs(cfg: DictConfig, **overrides: Any) -> dict[str, Any]:
    """The ``data`` group as plain keyword arguments for ``task.datamodule`` (meta keys removed)."""
    kwargs = OmegaConf.to_container(cfg.data, resolve=True)
    for key in _DATA_META_KEYS:
        kwargs.pop(key, None)
    kwargs.update(overrides)
    return kwargs


def tidy_logging() -> None:
    """Call after importing Lightning inside a Hydra app: one copy of every log line.

    ``import lightning`` always adds its own console handler and still propagates to the root
    logger, which Hydra has configured (console + the run's log file): every Lightning message
    would be printed twice. faster-coco-eval logs the whole COCOeval summary at INFO, which the
    Lightning modules already print as a table. Two warnings that say nothing to a user are muted.
    """
    import logging
    import warnings

    if logging.getLogger().hasHandlers():
        logging.getLogger("lightning").handlers.clear()
    logging.getLogger("faster_coco_eval").setLevel(logging.WARNING)
    # The padded DistributedSampler duplicates are removed before scoring (merge_detections).
    warnings.filterwarnings("ignore", message=r".*it is recommended to use `Trainer\(devices=1")
    # Lightning 2.6 with torch >= 2.10 warns about its own pytree use on every batch transfer.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def json_safe(obj: Any) -> Any:
    """NaN / inf -> null (an IoU of a class absent from the data is NaN), so metrics.json is strict
    JSON; dict keys become strings."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj
