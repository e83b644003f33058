"""Benchmarks of dense beside its references, one concept a module; `tools/benchmark.py` is the CLI.

peers          the torchvision / timm models dense is compared with, and their dense twins
paper          params / MAdds beside the papers' tables (classifiers, SSDLite, R-ASPP / LR-ASPP)
timing         interleaved timing of two callables in one process
speed          classifier latency, dense / peer
tasks          SSDLite and LR-ASPP inference and training steps, dense / torchvision
coco_scoring   faster-coco-eval vs pycocotools on a synthetic result set
report         the rich tables they print
"""
