"""Reading state-dict files (torch only: nothing here knows a model or a task)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from dense.errors import UserError

__all__ = ["WeightsError", "as_state_dict", "how_to_obtain", "load_state_dict_file"]


class WeightsError(UserError, ValueError):
    """A checkpoint that is missing or does not fit the model it is loaded into."""


def how_to_obtain(source: str, name: str, path: str | os.PathLike) -> str:
    """The one-line command that saves a peer's pretrained weights to `path` on a connected machine."""
    if source == "torchvision":
        builder = f"torchvision.models.{name}(weights='DEFAULT')"
        imports = "import torch, torchvision"
    else:
        builder = f"timm.create_model('{name}', pretrained=True)"
        imports = "import torch, timm"
    return f"python -c \"{imports}; torch.save({builder}.state_dict(), '{path}')\""


def load_state_dict_file(path: str | os.PathLike, *, source: str = "", name: str = "") -> dict[str, Tensor]:
    """Read a state dict saved with torch.save (plain, or nested under "state_dict" / "model").

    `source` / `name` (e.g. "torchvision", "mobilenet_v3_large") only improve the error message of a
    missing file: it then prints the command that makes it.
    """
    p = Path(path)
    if not p.is_file():
        hint = ""
        if source and name:
            hint = f" Save {source}'s {name} weights there on a machine with internet:\n  " + how_to_obtain(
                source, name, p
            )
        raise WeightsError(f"weights file '{p}' not found.{hint}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # unreadable / not a torch file
        raise WeightsError(f"weights file '{p}' could not be read as a torch checkpoint: {e}") from e
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(f"weights file '{p}' does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def as_state_dict(state_dict_or_path, *, source: str = "", name: str = "") -> dict[str, Tensor]:
    """A state dict given as a mapping, or read from a file (see `load_state_dict_file`)."""
    if isinstance(state_dict_or_path, Mapping):
        return dict(state_dict_or_path)
    return load_state_dict_file(state_dict_or_path, source=source, name=name)
