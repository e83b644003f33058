"""`build_model`: the one public model builder (DESIGN.md sec. 2)."""

from __future__ import annotations

from torch import nn

__all__ = ["TASKS", "build_model"]

TASKS = ("classify", "detect", "segment")


def build_model(task: str, backbone: str, head: str | None = None, **options) -> nn.Module:
    """Build a plain-torch model for `task`.

    Args:
        task: "classify" (ImageNet classifier of the backbone), "detect" (SSDLite) or "segment"
            (R-ASPP / LR-ASPP).
        backbone: "v1", "v2", "v3_large", "v3_small", "mixnet_s", "mixnet_m", "mixnet_l".
        head: the task's head, where it has a choice.
        options: keyword options of the task's builder (num_classes, width_mult, reduced_tail, ...).

    Every model takes float images in [0, 1], [N, 3, H, W], and normalises inside.
    """
    if task == "classify":
        if head not in (None, "linear"):
            raise ValueError(f"task 'classify' has no head {head!r}")
        from dense.classification import build_classifier

        return build_classifier(backbone, **options)
    if task == "detect":
        from dense.detection import build_detector  # noqa: F401  (added by the detection issue)

        return build_detector(backbone, head=head, **options)
    if task == "segment":
        from dense.segmentation import build_segmenter  # noqa: F401

        return build_segmenter(backbone, head=head, **options)
    raise ValueError(f"unknown task {task!r}; valid: {list(TASKS)}")
