"""SSDLite detection: anchors, box coder, matching and losses, post-processing, the Detector."""

from .anchors import PRESETS as ANCHOR_PRESETS
from .anchors import AnchorGenerator
from .ssdlite import Detector, DetectorConfig, build_detector

__all__ = ["ANCHOR_PRESETS", "AnchorGenerator", "Detector", "DetectorConfig", "build_detector"]
