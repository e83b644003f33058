"""Deployment without torch: run exported ONNX files (numpy, onnxruntime, Pillow, OpenCV).

runner = dense.deploy.load("model.onnx")
det = runner.predict("street.jpg")      # {"boxes", "scores", "labels", "names"}, original pixels
labels = runner.predict(rgb_array)      # segmentation: [H, W] label map at the original size
"""

from .images import read_image
from .runner import DetectorRunner, Runner, SegmenterRunner, load, read_metadata

__all__ = ["DetectorRunner", "Runner", "SegmenterRunner", "load", "read_image", "read_metadata"]
