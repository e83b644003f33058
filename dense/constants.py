"""Constants shared by the models, the data pipelines and the metrics (a leaf: imports nothing).

Kept apart so that every layer can use them without importing a task, and so that tools which only
score saved predictions can read them without importing torch.
"""

from __future__ import annotations

__all__ = ["IGNORE_INDEX", "IMAGENET_MEAN", "IMAGENET_STD", "SSD_MEAN", "SSD_STD"]

# Per-channel mean / std of RGB images in [0, 1]: what ImageNet-trained torchvision / timm weights
# expect (classification and segmentation).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# SSD / SSDLite scale images to [-1, 1] (the TF reference and torchvision): a mean / std like any other.
SSD_MEAN = (0.5, 0.5, 0.5)
SSD_STD = (0.5, 0.5, 0.5)

# Label value that losses and metrics skip (Cityscapes trainIds: void pixels, crop padding).
IGNORE_INDEX = 255
