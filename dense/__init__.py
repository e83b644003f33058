"""dense: mobile dense-prediction models (MobileNet V1/V2/V3, MixNet; SSDLite; R-ASPP / LR-ASPP).

The public names are imported lazily so that light tools (scoring, data generation) start without
importing torch.
"""

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "build_backbone": "dense.build",
    "build_model": "dense.build",
    "from_timm": "dense.hub",
    "from_torchvision": "dense.hub",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dense' has no attribute {name!r}")
