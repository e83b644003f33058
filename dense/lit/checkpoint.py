"""Rebuild a model from a training checkpoint without Lightning, Hydra or the run's config files.

The Lightning modules write a ``"dense_model"`` entry into every checkpoint
(``on_save_checkpoint``)::

    checkpoint["dense_model"] = {
        "task": "detect",                 # build_model's task: "detect" or "segment"
        "config": {...},                  # model.config.to_dict(): build_model(task, **config)
        "state_dict_prefix": "model.",    # where the model's weights live in checkpoint["state_dict"]
        "info": {...},                    # the data set's DatasetInfo.to_dict(): class count and
                                          # names, label -> category id, val ground truth
        "val_metrics": {...},             # the last validation's logged metrics
    }

This module only needs torch (plain ``torch.load``), so exporters, benchmarks and other training
loops can load a checkpoint; it deliberately does not import Lightning.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dense.build import build_model
from dense.data.info import DatasetInfo
from dense.errors import UserError

__all__ = [
    "CHECKPOINT_KEY",
    "CheckpointError",
    "check_checkpoint",
    "describe_file",
    "load_detector_from_checkpoint",
    "load_model_from_checkpoint",
    "load_segmenter_from_checkpoint",
    "read_checkpoint",
]

CHECKPOINT_KEY = "dense_model"
EXPECTED = "expected a checkpoint written by dense's tools/train.py (checkpoints/last.ckpt or best-*.ckpt)"


class CheckpointError(UserError, ValueError):
    """A file that is not a checkpoint of this project (or of the wrong task): says what it is."""


class CheckpointNotFoundError(UserError, FileNotFoundError):
    """The checkpoint path does not exist."""


def describe_file(path: str | os.PathLike) -> str:
    """What a file that ``torch.load`` refused looks like, from its first bytes (for messages)."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return "an empty file"
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except zipfile.BadZipFile:
            return f"a truncated or damaged zip archive ({size} bytes; an interrupted save?)"
        if any(n.endswith("/data.pkl") for n in names):
            return f"a torch file that does not load ({size} bytes)"
        return f"a zip archive that is not a torch file (holds {names[:3]})"
    if head[:1] == b"\x80":
        return "a legacy (non-zip) pickle file"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"binary data that is not a torch file ({size} bytes)"
    first = text.strip().splitlines()[0][:60] if text.strip() else ""
    return f"a text file (starts with {first!r})"


def read_checkpoint(path: str | os.PathLike, *, weights_only: bool = True) -> dict[str, Any]:
    """``torch.load`` a checkpoint on the CPU, with errors that name the file and say what it is.

    ``weights_only=True`` (the default) refuses arbitrary pickled objects, which is enough for the
    checkpoints that ``dense`` writes; pass ``False`` only for files from a trusted source.

    Raises:
        CheckpointNotFoundError: no such file. CheckpointError: not a torch checkpoint dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as e:  # torch raises KeyError / EOFError / RuntimeError / UnpicklingError here
        what = describe_file(path)
        if "Weights only load failed" in str(e) and what.startswith(("a torch file", "a legacy")):
            what = "a torch file holding pickled Python objects that weights_only=True refuses to run"
        raise CheckpointError(f"{path}: is {what}, not a checkpoint; {EXPECTED}") from e
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: holds a {type(ckpt).__name__}, not a checkpoint dict; {EXPECTED}")
    return ckpt


def check_checkpoint(
    ckpt: dict[str, Any], path: str | os.PathLike, task: str | None = None
) -> dict[str, Any]:
    """The ``dense_model`` entry of a loaded checkpoint; an error saying what the file is otherwise
    (another project's Lightning checkpoint, a plain state dict, the other task's checkpoint)."""
    meta = ckpt.get(CHECKPOINT_KEY)
    if not isinstance(meta, dict) or "config" not in meta or "task" not in meta:
        if "pytorch-lightning_version" in ckpt or "state_dict" in ckpt:
            keys = list((ckpt.get("state_dict") or {}).keys())[:3]
            what = f"a Lightning / torch checkpoint of another project (state_dict keys {keys} ...)"
        elif ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            what = f"a plain state dict of {len(ckpt)} tensors (keys {list(ckpt)[:3]} ...)"
        else:
            what = f"a dict with keys {sorted(map(str, ckpt))[:8]}"
        raise CheckpointError(
            f"{path}: is {what}; it has no '{CHECKPOINT_KEY}' entry, so it was not written by dense's "
            f"Lightning modules (tools/train.py) and the model cannot be rebuilt from it; {EXPECTED}"
        )
    if task is not None and meta["task"] != task:
        raise CheckpointError(
            f"{path}: holds a {meta['task']!r} model, expected {task!r} (task={meta['task']} for this file)"
        )
    return meta


def load_model_from_checkpoint(
    path: str | os.PathLike,
    *,
    task: str | None = None,
    strict: bool = True,
    weights_only: bool = True,
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model stored in a ``dense`` training checkpoint and load its weights.

    Args:
        path: a ``.ckpt`` written by ``tools/train.py`` (any Lightning module of ``dense.lit``).
        task: when given, the checkpoint must hold a model of this task.
        strict: passed to ``load_state_dict``.
        weights_only: passed to ``torch.load`` (see :func:`read_checkpoint`).

    Returns:
        ``(model, extras)``: the model in eval mode on the CPU, and a dict with ``task``,
        ``config``, ``info`` (the training data's :class:`DatasetInfo`, None if absent),
        ``val_metrics``, ``epoch``, ``global_step`` and ``path``.
    """
    ckpt = read_checkpoint(path, weights_only=weights_only)
    meta = check_checkpoint(ckpt, path, task)
    config = _upgrade_config(meta["task"], dict(meta["config"]))
    try:
        model = build_model(meta["task"], **config)
    except TypeError as e:  # an option this version does not know
        raise CheckpointError(f"{path}: the model config does not fit this version of dense: {e}") from e

    prefix = meta.get("state_dict_prefix", "model.")
    state = ckpt.get("state_dict")
    if state is None:
        raise CheckpointError(f"{path}: checkpoint has no 'state_dict'")
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not weights:
        raise CheckpointError(f"{path}: no weights under the prefix {prefix!r} in the state_dict")
    model.load_state_dict(weights, strict=strict)
    model.eval()

    extras = {k: v for k, v in meta.items() if k not in ("config", "state_dict_prefix", "info")}
    extras.update(
        config=config,
        info=_info(meta),
        epoch=ckpt.get("epoch"),
        global_step=ckpt.get("global_step"),
        path=str(path),
    )
    return model, extras


def _upgrade_config(task: str, config: dict[str, Any]) -> dict[str, Any]:
    """Configs of checkpoints written by dense 0.1 before the detection option `loss` became
    `cls_loss` (it sat beside the `loss()` method)."""
    config.pop("task", None)  # build_model takes the task positionally
    if task == "detect" and "loss" in config:
        config["cls_loss"] = config.pop("loss")
    return config


def _info(meta: dict[str, Any]) -> DatasetInfo | None:
    """The training data's DatasetInfo; older checkpoints kept the class names and the label map
    as separate entries."""
    if isinstance(meta.get("info"), dict):
        return DatasetInfo.from_dict(meta["info"])
    names = meta.get("class_names")
    if not names:
        return None
    label_map = {int(k): int(v) for k, v in (meta.get("label_to_cat_id") or {}).items()}
    return DatasetInfo(num_classes=len(names), class_names=names, label_to_cat_id=label_map)


def load_detector_from_checkpoint(
    path: str | os.PathLike, *, strict: bool = True, weights_only: bool = True
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the SSDLite ``Detector`` of a detection checkpoint (see
    :func:`load_model_from_checkpoint`); ``extras["info"].label_to_cat_id`` maps its labels back to
    the dataset's category ids."""
    return load_model_from_checkpoint(path, task="detect", strict=strict, weights_only=weights_only)


def load_segmenter_from_checkpoint(
    path: str | os.PathLike, *, strict: bool = True, weights_only: bool = True
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the R-ASPP / LR-ASPP ``Segmenter`` of a segmentation checkpoint (see
    :func:`load_model_from_checkpoint`); ``extras["info"].class_names`` are indexed by trainId."""
    return load_model_from_checkpoint(path, task="segment", strict=strict, weights_only=weights_only)
