"""ImageNet weights into a built backbone, without building the classifier they came from.

Nothing is downloaded: the user saves a peer's state dict on a connected machine and passes the
file (or the dict).
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from dense.backbones.mobilenet import Backbone

from .io import WeightsError, as_state_dict
from .mapping import map_ordered

__all__ = ["TIMM_MODELS", "TORCHVISION_MODELS", "load_backbone_weights", "peer_of_backbone"]

# peer classifier name -> dense backbone
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


def peer_of_backbone(name: str) -> tuple[str, str]:
    """(source, peer model name) whose checkpoints a dense backbone loads: torchvision for V2 / V3,
    timm for V1 / MixNet."""
    for source, table in (("torchvision", TORCHVISION_MODELS), ("timm", TIMM_MODELS)):
        for peer, backbone in table.items():
            if backbone == name:
                return source, peer
    raise WeightsError(f"no ImageNet checkpoint format is known for backbone {name!r}")


def _dense_format(sd: Mapping[str, Tensor]) -> dict[str, Tensor] | None:
    """Keys of a backbone saved by dense (alone, or inside a dense classifier), else None."""
    if any(k.startswith("backbone.stem.") for k in sd):  # a dense classifier
        return {k.removeprefix("backbone."): v for k, v in sd.items() if k.startswith("backbone.")}
    if any(k.startswith("stem.") for k in sd):  # a dense backbone
        return dict(sd)
    return None


def load_backbone_weights(backbone: Backbone, weights) -> Backbone:
    """Load an ImageNet checkpoint into the built layers of `backbone`, in place; returns it.

    `weights`: a path or state dict in the peer's format (torchvision for V2 / V3, timm for V1 /
    MixNet) or as saved from a dense classifier / backbone. The backbone's tensors are the first
    ones of the peer's classifier in order, so they map without building that classifier; layers
    the backbone did not build, and the classifier, are ignored. Only the first tensors are checked
    (kind and shape, one for one), so any peer state dict that starts with this backbone loads,
    e.g. the backbone part of a torchvision detector or segmenter of the same architecture.
    """
    name = backbone.family.name
    source, peer = peer_of_backbone(name)
    sd = as_state_dict(weights, source=source, name=peer)
    where = weights if not isinstance(weights, Mapping) else "state dict"
    own = backbone.state_dict()
    picked = _dense_format(sd)
    if picked is None:
        try:
            picked = map_ordered(sd, own, what=f"{source} {peer} checkpoint '{where}'", prefix=True)
        except WeightsError as e:
            raise WeightsError(
                f"{e}\n(backbone {name!r} loads {source}'s {peer} checkpoints, width_mult="
                f"{backbone.width_mult}, reduced_tail={backbone.reduced_tail})"
            ) from None
    picked = {k: v for k, v in picked.items() if k in own}
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
    return backbone
