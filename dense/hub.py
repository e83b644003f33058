"""Whole peer models as dense models: `from_torchvision` and `from_timm` (nothing is downloaded).

The user saves a peer's state dict on a connected machine and passes the file (or the dict); the
tensors map onto ours in order (see `dense.weights.mapping`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import Tensor, nn

from dense.build import build_model
from dense.weights import (
    TIMM_MODELS,
    TORCHVISION_MODELS,
    WeightsError,
    as_state_dict,
    infer_num_classes,
    load_mapped,
    map_ordered,
)

__all__ = ["TIMM_MODELS", "TORCHVISION_MODELS", "TORCHVISION_TASK_MODELS", "from_timm", "from_torchvision"]


def _load_first_fitting(
    build: Callable[[bool], nn.Module], sd: Mapping[str, Tensor], what: str, tails
) -> nn.Module:
    """Build with each reduced-tail setting in turn and keep the first the checkpoint fits."""
    for tail in tails:
        model = build(tail)
        try:
            mapped = map_ordered(sd, model.state_dict(), what=what)
        except WeightsError:
            if tail == tails[-1]:
                raise
            continue
        load_mapped(model, mapped)
        return model
    raise AssertionError("unreachable")


def _ssdlite320_mobilenet_v3_large(sd: Mapping[str, Tensor]) -> nn.Module:
    """torchvision's SSDLite: "torchvision" anchors, 320x320, reduced tail unless it was trained from
    an ImageNet backbone (both are accepted)."""
    key = "head.classification_head.module_list.0.1.weight"
    if key not in sd:
        raise WeightsError(f"not an ssdlite320_mobilenet_v3_large state dict: '{key}' is missing")
    num_classes = sd[key].shape[0] // 6  # 6 anchors per cell on the first map

    def build(tail: bool) -> nn.Module:
        return build_model(
            "detect", "v3_large", num_classes=num_classes, reduced_tail=tail, anchors="torchvision"
        )

    return _load_first_fitting(build, sd, "torchvision ssdlite320_mobilenet_v3_large", (False, True))


def _lraspp_mobilenet_v3_large(sd: Mapping[str, Tensor]) -> nn.Module:
    """torchvision's LR-ASPP: dilated V3-Large (full tail), low-level features from the first block
    of the stride-8 stage, global pooling in branch B, F = 128."""
    key = "classifier.high_classifier.weight"
    if key not in sd:
        raise WeightsError(f"not an lraspp_mobilenet_v3_large state dict: '{key}' is missing")
    model = build_model(
        "segment",
        "v3_large",
        head="lraspp",
        num_classes=sd[key].shape[0],
        head_channels=sd[key].shape[1],
        output_stride=16,
        pooling="global",
        low_tap="c3_first",
    )
    load_mapped(model, map_ordered(sd, model.state_dict(), what="torchvision lraspp_mobilenet_v3_large"))
    return model


# torchvision models of the tasks (detection, segmentation): name -> converter of a state dict
TORCHVISION_TASK_MODELS = {
    "ssdlite320_mobilenet_v3_large": _ssdlite320_mobilenet_v3_large,
    "lraspp_mobilenet_v3_large": _lraspp_mobilenet_v3_large,
}


def from_torchvision(
    name: str,
    state_dict_or_path,
    *,
    width_mult: float = 1.0,
    reduced_tail: bool | None = None,
    dilated: bool = False,
) -> nn.Module:
    """The dense equivalent of a torchvision model, with its weights.

    name: "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small" (classifiers),
    "ssdlite320_mobilenet_v3_large" (detector), "lraspp_mobilenet_v3_large" (segmenter).
    reduced_tail: None infers it from the checkpoint. dilated: torchvision's `dilated=True`
    (output stride 16; it has no parameters of its own, so it cannot be inferred).
    """
    if name in TORCHVISION_TASK_MODELS:
        return TORCHVISION_TASK_MODELS[name](
            as_state_dict(state_dict_or_path, source="torchvision", name=name)
        )
    if name not in TORCHVISION_MODELS:
        supported = sorted([*TORCHVISION_MODELS, *TORCHVISION_TASK_MODELS])
        raise ValueError(f"unknown torchvision model {name!r}; supported: {supported}")
    sd = as_state_dict(state_dict_or_path, source="torchvision", name=name)

    def build(tail: bool) -> nn.Module:
        return build_model(
            "classify",
            TORCHVISION_MODELS[name],
            num_classes=infer_num_classes(sd),
            width_mult=width_mult,
            reduced_tail=tail,
            output_stride=16 if dilated else 32,
        )

    tails = (False, True) if reduced_tail is None else (reduced_tail,)
    return _load_first_fitting(build, sd, f"torchvision {name}", tails)


def from_timm(name: str, state_dict_or_path) -> nn.Module:
    """The dense equivalent of a timm model ("mobilenetv1_100", "mixnet_s", "mixnet_m", "mixnet_l")."""
    if name not in TIMM_MODELS:
        raise ValueError(f"unknown timm model {name!r}; supported: {sorted(TIMM_MODELS)}")
    sd = as_state_dict(state_dict_or_path, source="timm", name=name)
    model = build_model("classify", TIMM_MODELS[name], num_classes=infer_num_classes(sd))
    load_mapped(model, map_ordered(sd, model.state_dict(), what=f"timm {name}"))
    return model
