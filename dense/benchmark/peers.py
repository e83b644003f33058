"""The torchvision / timm models dense is compared with, and dense's twins of torchvision's task models.

The peers take ImageNet-normalised input (their usual call); dense models normalise inside.
"""

from __future__ import annotations

import torch

import dense
from dense.constants import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["PEERS", "build_peer", "normalise", "torchvision_model", "torchvision_pair"]

# dense backbone -> (library, peer name)
PEERS = {
    "v1": ("timm", "mobilenetv1_100"),
    "v2": ("torchvision", "mobilenet_v2"),
    "v3_large": ("torchvision", "mobilenet_v3_large"),
    "v3_small": ("torchvision", "mobilenet_v3_small"),
    "mixnet_s": ("timm", "mixnet_s"),
    "mixnet_m": ("timm", "mixnet_m"),
    "mixnet_l": ("timm", "mixnet_l"),
}

# torchvision task models with a dense twin (`dense.from_torchvision`) -> their torchvision.models module
TASK_MODELS = {
    "ssdlite320_mobilenet_v3_large": "detection",
    "lraspp_mobilenet_v3_large": "segmentation",
}


def build_peer(backbone: str) -> torch.nn.Module:
    """The ImageNet classifier of another library that `backbone`'s classifier is compared with."""
    lib, name = PEERS[backbone]
    if lib == "torchvision":
        import torchvision

        return getattr(torchvision.models, name)()
    import timm  # imported only when needed: it is slow to import

    return timm.create_model(name)


def normalise(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] as the peers take them; the statistics are cast from float32 to x's dtype."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).to(x.dtype)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1).to(x.dtype)
    return (x - mean) / std


def torchvision_model(name: str, num_classes: int) -> torch.nn.Module:
    """torchvision's task model `name` (a TASK_MODELS key), random weights, in train mode."""
    import torchvision

    family = getattr(torchvision.models, TASK_MODELS[name])
    return getattr(family, name)(weights=None, weights_backbone=None, num_classes=num_classes)


def torchvision_pair(name: str, num_classes: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """torchvision's task model and dense's copy of it with the same (random) weights, both in eval mode."""
    tv = torchvision_model(name, num_classes).eval()
    return tv, dense.from_torchvision(name, tv.state_dict()).eval()
