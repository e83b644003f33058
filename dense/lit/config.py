"""Checks and helpers for the composed Hydra configs of ``tools/train.py`` and ``tools/eval.py``.

Imports only OmegaConf (no torch, no Lightning), so a wrong combination of config groups fails in
about a second, before any data is generated or loaded and before a model is built.

How the groups fit (``conf/``): ``task`` picks the Lightning module, the datamodule class and
the default ``head`` and ``data``; every ``head`` and ``data`` option names the task it serves
(``head.task``, ``data.task``), which is what :func:`validate_config` checks.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dense.errors import UserError

__all__ = [
    "TRAINER_KEYS",
    "ConfigError",
    "parse_budget",
    "check_data_root",
    "check_output_dir",
    "per_process_batch",
    "datamodule_kwargs",
    "group_options",
    "json_safe",
    "tidy_logging",
    "trainer_config",
    "validate_config",
]

TASKS = ("detect", "segment")
# Keys of the `data` group that describe the option rather than being datamodule arguments.
_DATA_META_KEYS = ("task",)

# The arguments of lightning.pytorch.Trainer (tests/test_reliability_tools.py checks this list against
# the installed Lightning), and `budget`, the job's time budget that tools/train.py handles itself.
# Listed, not read from Lightning, so a wrong key fails in a second, before torch is imported.
TRAINER_KEYS = frozenset(
    """_target_ budget accelerator strategy devices num_nodes precision logger callbacks fast_dev_run
    max_epochs min_epochs max_steps min_steps max_time limit_train_batches limit_val_batches
    limit_test_batches limit_predict_batches overfit_batches val_check_interval check_val_every_n_epoch
    num_sanity_val_steps log_every_n_steps enable_checkpointing enable_progress_bar enable_model_summary
    accumulate_grad_batches gradient_clip_val gradient_clip_algorithm deterministic benchmark
    inference_mode use_distributed_sampler profiler detect_anomaly barebones plugins sync_batchnorm
    reload_dataloaders_every_n_epochs default_root_dir enable_autolog_hparams model_registry""".split()
)


class ConfigError(UserError, ValueError):
    """The composed configuration is inconsistent (the message says which keys and how to fix)."""


_UNITS = {"h": 3600.0, "min": 60.0, "m": 60.0, "s": 1.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(h|min|m|s)")


def parse_budget(value: Any) -> float | None:
    """Seconds of a budget: "10min", "90s", "1h30min", "1.5h", "00:09:30" or a number of minutes;
    None / "" / "null" -> None. A ValueError names the value otherwise."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "null", "none")):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value) * 60.0
    else:
        text = str(value).strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+:\d{1,2}:\d{1,2}", text):
            h, m, s = (int(x) for x in text.split(":"))
            seconds = h * 3600.0 + m * 60.0 + s
        elif _PART.sub("", text) == "" and text:
            seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
        else:
            raise ValueError(
                f"trainer.budget={value!r} is not a duration: write e.g. 10min, 90s, 1h30min, 1.5h, "
                "00:09:30 or a number of minutes"
            )
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"trainer.budget={value!r} must be a positive duration")
    return seconds


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
    or 32 (segment); the optimizer has a positive learning rate and ``ema.decay`` is null or in
    (0, 1) (train); the checkpoint exists (``ckpt`` to resume in train, required in eval).

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

    _check_trainer(cfg.get("trainer"), stage, (cfg.get("sched") or {}).get("_target_"))
    if stage == "train":
        _check_batch(cfg)
        _check_ema(cfg.get("ema"))
        lr = cfg.get("optim", {}).get("lr")
        if lr is not None and not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ConfigError(f"optim.lr must be a positive number, got {lr!r}")
        _check_fused(cfg.get("optim") or {}, cfg.get("trainer") or {})
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


def _check_trainer(trainer: Any, stage: str, sched: str | None = None) -> None:
    """Unknown trainer keys (a typo given as `+trainer.key=...` would fail inside Lightning) and a
    training length that never ends."""
    if not isinstance(trainer, DictConfig):
        return
    unknown = sorted(set(trainer.keys()) - TRAINER_KEYS)
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, sorted(TRAINER_KEYS), n=3, cutoff=0.6)
            hints.append(f"trainer.{key}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        raise ConfigError(
            f"unknown trainer key(s): {'; '.join(hints)}; valid keys are the arguments of "
            "lightning.pytorch.Trainer and trainer.budget"
        )
    if stage != "train":
        return
    epochs, steps = trainer.get("max_epochs"), trainer.get("max_steps")
    endless = epochs is not None and epochs < 0 and (steps is None or steps <= 0)
    try:
        budget = parse_budget(trainer.get("budget"))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if endless and budget is None:
        raise ConfigError(
            f"trainer.max_epochs={epochs} trains without end, and the schedule needs a length: set "
            "trainer.budget (a time budget) or trainer.max_steps=N, or give trainer.max_epochs=N"
        )
    if endless and sched and not sched.endswith("warmup_linear"):
        # cosine / poly are laid out over a step count, which an open-ended run does not have
        raise ConfigError(
            f"sched={sched.rsplit('.', 1)[-1]} needs the run's length in steps, but trainer.max_epochs="
            f"{epochs} ends the run by trainer.budget: use sched=linear (it follows the budget) or set "
            "trainer.max_epochs=N"
        )


def _check_fused(optim: Any, trainer: Any) -> None:
    """Lightning refuses gradient clipping with a fused optimizer under mixed precision (the fused
    step unscales the gradients itself): say so before any work, not at the first step."""
    clip = trainer.get("gradient_clip_val")
    mixed = "mixed" in str(trainer.get("precision", ""))
    if optim.get("fused") and clip and mixed:
        raise ConfigError(
            f"optim.fused=true cannot be combined with trainer.gradient_clip_val={clip} under "
            f"trainer.precision={trainer.get('precision')}: set optim.fused=false, or drop the clipping"
        )


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_ema(ema: Any) -> None:
    """The `ema` block: decay null (off) or strictly between 0 and 1; whole-number step settings."""
    if not isinstance(ema, DictConfig) or ema.get("decay") is None:
        return
    decay = ema.get("decay")
    if not (_number(decay) and 0 < decay < 1):
        raise ConfigError(
            f"ema.decay={decay!r} must be a number between 0 and 1, exclusive (e.g. 0.995: an average "
            "over about 1 / (1 - decay) = 200 updates), or null for no weight averaging"
        )
    every, start = ema.get("update_every", 1), ema.get("start_step")
    if not (isinstance(every, int) and not isinstance(every, bool) and every >= 1):
        raise ConfigError(f"ema.update_every={every!r} must be a whole number of optimizer steps >= 1")
    if start is not None and not (isinstance(start, int) and not isinstance(start, bool) and start >= 0):
        raise ConfigError(f"ema.start_step={start!r} must be an optimizer step >= 0, or null for the first")


def trainer_config(cfg: DictConfig) -> DictConfig:
    """The ``trainer`` group as ``lightning.pytorch.Trainer``'s arguments: without ``budget``, which
    the tools turn into a callback (`dense.lit.budget.TrainingBudget`)."""
    return OmegaConf.masked_copy(cfg.trainer, [k for k in cfg.trainer if k != "budget"])


def check_data_root(cfg: DictConfig) -> None:
    """The data root of a non-synthetic data set must exist: checked by the tools before anything
    heavy is imported (the datamodule checks the layout under it)."""
    data = cfg.get("data")
    if data is None or data.get("synthetic", False) or data.get("root") is None:
        return
    root = Path(str(data.root)).expanduser()
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "not found"
        raise ConfigError(
            f"data root {what}: data.root={root} (set data.root=PATH; data=shapes_coco or "
            "data=shapes_cityscapes generate a small synthetic data set)"
        )


def check_output_dir(path: str | os.PathLike, *, min_free_mb: float = 100.0) -> None:
    """The run directory must be writable and have some free space, checked before training (a
    failure at the first checkpoint would lose the work)."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as e:
        raise ConfigError(f"output_dir={out} is not writable: {e.strerror or e}") from None
    free_mb = shutil.disk_usage(out).free / 2**20
    if free_mb < min_free_mb:
        raise ConfigError(
            f"output_dir={out}: only {free_mb:.0f} MiB free on its disk; checkpoints and logs need more "
            f"(at least {min_free_mb:.0f} MiB)"
        )


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
