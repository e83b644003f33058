"""Torch-level checkpoint handling: read state-dict files, map a peer's ordered keys, load a
backbone's layers. Model-level import of whole peer models (`from_torchvision`, `from_timm`) lives
in `dense.hub`, which knows every task."""

from .backbone import TIMM_MODELS, TORCHVISION_MODELS, load_backbone_weights, peer_of_backbone
from .io import WeightsError, as_state_dict, how_to_obtain, load_state_dict_file
from .mapping import infer_num_classes, load_mapped, map_ordered

__all__ = [
    "TIMM_MODELS",
    "TORCHVISION_MODELS",
    "WeightsError",
    "as_state_dict",
    "how_to_obtain",
    "infer_num_classes",
    "load_backbone_weights",
    "load_mapped",
    "load_state_dict_file",
    "map_ordered",
    "peer_of_backbone",
]
