"""Benchmarks of dense beside its references, one concept a module; `tools/benchmark.py` is the CLI.

peers          the torchvision / timm models dense is compared with, and their dense twins
paper          params / MAdds beside the papers' tables (classifiers, SSDLite, R-ASPP / LR-ASPP)
timing         interleaved timing of two callables in one process
speed          classifier latency, dense / peer
tasks          SSDLite and LR-ASPP inference and training steps, dense / torchvision
coco_scoring   faster-coco-eval vs pycocotools on a synthetic result set
deploy         image in, result out: eager / BN folded / ONNX Runtime fp32 and int8 vs torchvision
floor          the machine's matrix-multiply rate and each latency's distance from its compute floor
machine        date, CPU model, threads and library versions of a run
report         the rich tables they print
markdown       BENCHMARKS.md from a run's result
"""
