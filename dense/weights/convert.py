"""Import of torchvision / timm ImageNet checkpoints into dense models.

Nothing is downloaded: the user saves a peer's state dict on a connected machine and passes the
file (or the dict). Our blocks declare their tensors in the peers' order (expand, depthwise, SE,
project; stem first, classifier last), so conversion is an ordered walk over both state dicts with
every tensor's kind (weight / bias / running stats) and shape checked: a mismatch stops with both
names rather than loading something silently wrong. This replaces a hand-written name table per
variant, which would be hundreds of lines that can drift.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = [
    "TIMM_MODELS",
    "TORCHVISION_MODELS",
    "WeightsError",
    "from_timm",
    "from_torchvision",
    "load_backbone_weights",
    "load_state_dict_file",
    "map_ordered",
]

# peer name -> dense backbone
TORCHVISION_MODELS = {
    "mobilenet_v2": "v2",
    "mobilenet_v3_large": "v3_large",
    "mobilenet_v3_small": "v3_small",
}
TIMM_MODELS = {
    "mobilenetv1_100": "v1",
    "mixnet_s": "mixnet_s",
    "mixnet_m": "mixnet_m",
    "mixnet_l": "mixnet_l",
}
_SOURCE_OF_BACKBONE = {v: ("torchvision", k) for k, v in TORCHVISION_MODELS.items()} | {
    v: ("timm", k) for k, v in TIMM_MODELS.items()
}


class WeightsError(ValueError):
    """A checkpoint that is missing or does not fit the model it is loaded into."""


def how_to_obtain(source: str, name: str, path: str | os.PathLike) -> str:
    if source == "torchvision":
        builder = f"torchvision.models.{name}(weights='DEFAULT')"
        imports = "import torch, torchvision"
    else:
        builder = f"timm.create_model('{name}', pretrained=True)"
        imports = "import torch, timm"
    return f"python -c \"{imports}; torch.save({builder}.state_dict(), '{path}')\""


def load_state_dict_file(path: str | os.PathLike, *, source: str = "", name: str = "") -> dict[str, Tensor]:
    """Read a state dict saved with torch.save (plain, or nested under "state_dict" / "model")."""
    p = Path(path)
    if not p.is_file():
        hint = ""
        if source and name:
            hint = f" Save {source}'s {name} weights there on a machine with internet:\n  " + how_to_obtain(
                source, name, p
            )
        raise WeightsError(f"weights file '{p}' not found.{hint}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # unreadable / not a torch file
        raise WeightsError(f"weights file '{p}' could not be read as a torch checkpoint: {e}") from e
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(f"weights file '{p}' does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _as_state_dict(state_dict_or_path, source: str, name: str) -> dict[str, Tensor]:
    if isinstance(state_dict_or_path, Mapping):
        return dict(state_dict_or_path)
    return load_state_dict_file(state_dict_or_path, source=source, name=name)


def _kind(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def map_ordered(src: Mapping[str, Tensor], dst: Mapping[str, Tensor], *, what: str) -> dict[str, Tensor]:
    """Map `src` tensors onto `dst` keys by order; kinds and shapes must agree one for one.

    BatchNorm's `num_batches_tracked` is skipped on both sides (some checkpoints drop it).
    """
    s = [(k, v) for k, v in src.items() if not k.endswith("num_batches_tracked")]
    d = [(k, v) for k, v in dst.items() if not k.endswith("num_batches_tracked")]
    if len(s) != len(d):
        raise WeightsError(
            f"{what}: the checkpoint has {len(s)} tensors but the dense model has {len(d)}; "
            "is it the same architecture (width, reduced tail, number of classes)?"
        )
    out = {}
    for (sk, sv), (dk, dv) in zip(s, d):
        if _kind(sk) != _kind(dk) or sv.shape != dv.shape:
            raise WeightsError(
                f"{what}: checkpoint tensor '{sk}' {tuple(sv.shape)} does not fit dense '{dk}' "
                f"{tuple(dv.shape)}; is it the same architecture (width, reduced tail, classes)?"
            )
        out[dk] = sv.detach().clone()
    return out


def _load_mapped(model: nn.Module, mapped: dict[str, Tensor]) -> None:
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    assert not missing and not unexpected, (missing, unexpected)


def _infer_classes(sd: Mapping[str, Tensor]) -> int:
    last_weight = [v for k, v in sd.items() if k.endswith("weight")][-1]
    return int(last_weight.shape[0])


def from_torchvision(
    name: str,
    state_dict_or_path,
    *,
    width_mult: float = 1.0,
    reduced_tail: bool | None = None,
    dilated: bool = False,
) -> nn.Module:
    """The dense equivalent of a torchvision model, with its weights.

    name: "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small" (classifiers); further
    models (SSDLite, LR-ASPP) are added by their tasks.
    reduced_tail: None infers it from the checkpoint. dilated: torchvision's `dilated=True`
    (output stride 16; it has no parameters of its own, so it cannot be inferred).
    """
    from dense.classification import build_classifier

    if name in TORCHVISION_TASK_MODELS:
        return TORCHVISION_TASK_MODELS[name](_as_state_dict(state_dict_or_path, "torchvision", name))
    if name not in TORCHVISION_MODELS:
        supported = sorted([*TORCHVISION_MODELS, *TORCHVISION_TASK_MODELS])
        raise ValueError(f"unknown torchvision model {name!r}; supported: {supported}")
    sd = _as_state_dict(state_dict_or_path, "torchvision", name)

    def build(tail: bool) -> nn.Module:
        return build_classifier(
            TORCHVISION_MODELS[name],
            num_classes=_infer_classes(sd),
            width_mult=width_mult,
            reduced_tail=tail,
            output_stride=16 if dilated else 32,
        )

    return _try_tails(
        build, sd, f"torchvision {name}", tails=None if reduced_tail is None else (reduced_tail,)
    )


def _try_tails(build, sd: Mapping[str, Tensor], what: str, tails=None) -> nn.Module:
    """Build with the full tail, then the reduced one, and keep the one the checkpoint fits."""
    tails = tails or (False, True)
    for tail in tails:
        model = build(tail)
        try:
            mapped = map_ordered(sd, model.state_dict(), what=what)
        except WeightsError:
            if tail == tails[-1]:
                raise
            continue
        _load_mapped(model, mapped)
        return model
    raise AssertionError("unreachable")


def _ssdlite320_mobilenet_v3_large(sd: Mapping[str, Tensor]) -> nn.Module:
    """torchvision's SSDLite: "torchvision" anchors, 320x320, reduced tail unless it was trained from
    an ImageNet backbone (both are accepted)."""
    from dense.detection import build_detector

    key = "head.classification_head.module_list.0.1.weight"
    if key not in sd:
        raise WeightsError(f"not an ssdlite320_mobilenet_v3_large state dict: '{key}' is missing")
    num_classes = sd[key].shape[0] // 6  # 6 anchors per cell on the first map

    def build(tail: bool) -> nn.Module:
        return build_detector("v3_large", num_classes=num_classes, reduced_tail=tail, anchors="torchvision")

    return _try_tails(build, sd, "torchvision ssdlite320_mobilenet_v3_large")


def _lraspp_mobilenet_v3_large(sd: Mapping[str, Tensor]) -> nn.Module:
    """torchvision's LR-ASPP: dilated V3-Large (full tail), low-level features from the first block
    of the stride-8 stage, global pooling in branch B, F = 128."""
    from dense.segmentation import build_segmenter

    key = "classifier.high_classifier.weight"
    if key not in sd:
        raise WeightsError(f"not an lraspp_mobilenet_v3_large state dict: '{key}' is missing")
    model = build_segmenter(
        "v3_large",
        head="lraspp",
        num_classes=sd[key].shape[0],
        head_channels=sd[key].shape[1],
        output_stride=16,
        pooling="global",
        low_tap="c3_first",
    )
    _load_mapped(model, map_ordered(sd, model.state_dict(), what="torchvision lraspp_mobilenet_v3_large"))
    return model


# torchvision models of the tasks (detection, segmentation): name -> converter of a state dict
TORCHVISION_TASK_MODELS = {
    "ssdlite320_mobilenet_v3_large": _ssdlite320_mobilenet_v3_large,
    "lraspp_mobilenet_v3_large": _lraspp_mobilenet_v3_large,
}


def from_timm(name: str, state_dict_or_path) -> nn.Module:
    """The dense equivalent of a timm model ("mobilenetv1_100", "mixnet_s", "mixnet_m", "mixnet_l")."""
    from dense.classification import build_classifier

    if name not in TIMM_MODELS:
        raise ValueError(f"unknown timm model {name!r}; supported: {sorted(TIMM_MODELS)}")
    sd = _as_state_dict(state_dict_or_path, "timm", name)
    model = build_classifier(TIMM_MODELS[name], num_classes=_infer_classes(sd))
    _load_mapped(model, map_ordered(sd, model.state_dict(), what=f"timm {name}"))
    return model


def load_backbone_weights(backbone: nn.Module, name: str, weights) -> None:
    """Load an ImageNet checkpoint into the built layers of `backbone` (layers it did not build,
    and the classifier, are ignored). `weights`: a path or state dict in the peer's format
    (torchvision for V2 / V3, timm for V1 / MixNet) or as saved from a dense classifier / backbone."""
    from dense.classification import build_classifier

    source, peer = _SOURCE_OF_BACKBONE[name]
    sd = _as_state_dict(weights, source, peer)
    where = weights if not isinstance(weights, Mapping) else "state dict"
    full = build_classifier(
        name,
        num_classes=_infer_classes(sd),
        width_mult=backbone.width_mult,
        reduced_tail=backbone.reduced_tail,
    )
    if any(k.startswith("backbone.stem.") for k in sd):  # a dense classifier
        mapped = sd
    elif any(k.startswith("stem.") for k in sd):  # a dense backbone
        mapped = {"backbone." + k: v for k, v in sd.items()}
    else:
        try:
            mapped = map_ordered(sd, full.state_dict(), what=f"{source} {peer} checkpoint '{where}'")
        except WeightsError as e:
            raise WeightsError(
                f"{e}\n(backbone {name!r} loads {source}'s {peer} checkpoints, width_mult="
                f"{backbone.width_mult}, reduced_tail={backbone.reduced_tail})"
            ) from None
    own = backbone.state_dict()
    picked = {k.removeprefix("backbone."): v for k, v in mapped.items() if k.removeprefix("backbone.") in own}
    missing = [k for k in own if k not in picked and not k.endswith("num_batches_tracked")]
    if missing:
        raise WeightsError(f"weights '{where}' lack {len(missing)} backbone tensors, e.g. {missing[:3]}")
    bad = [k for k, v in picked.items() if v.shape != own[k].shape]
    if bad:
        raise WeightsError(
            f"weights '{where}': shapes differ for {bad[:3]} (checkpoint {tuple(picked[bad[0]].shape)}, "
            f"backbone {tuple(own[bad[0]].shape)})"
        )
    backbone.load_state_dict(picked, strict=False)
