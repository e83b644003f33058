"""dense: mobile dense-prediction models (MobileNet V1/V2/V3, MixNet; SSDLite; R-ASPP / LR-ASPP)."""

from dense.backbones import build_backbone
from dense.build import build_model
from dense.weights import from_timm, from_torchvision

__version__ = "0.1.0"
__all__ = ["__version__", "build_backbone", "build_model", "from_timm", "from_torchvision"]
