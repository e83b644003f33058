"""Import of torchvision / timm checkpoints into dense models (nothing is downloaded)."""

from .convert import (
    TIMM_MODELS,
    TORCHVISION_MODELS,
    WeightsError,
    from_timm,
    from_torchvision,
    load_backbone_weights,
    load_state_dict_file,
)

__all__ = [
    "TIMM_MODELS",
    "TORCHVISION_MODELS",
    "WeightsError",
    "from_timm",
    "from_torchvision",
    "load_backbone_weights",
    "load_state_dict_file",
]
