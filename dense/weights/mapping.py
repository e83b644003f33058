"""Map a peer's state dict onto a dense model by order.

Our blocks declare their tensors in the peers' order (expand, depthwise, SE, project; stem first,
classifier last), so conversion is an ordered walk over both state dicts with every tensor's kind
(weight / bias / running stats) and shape checked: a mismatch stops with both names rather than
loading something silently wrong. This replaces a hand-written name table per variant, which
would be hundreds of lines that can drift.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from .io import WeightsError

__all__ = ["infer_num_classes", "load_mapped", "map_ordered"]


def _kind(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _tensors(sd: Mapping[str, Tensor]) -> list[tuple[str, Tensor]]:
    # BatchNorm's num_batches_tracked is skipped on both sides (some checkpoints drop it)
    return [(k, v) for k, v in sd.items() if not k.endswith("num_batches_tracked")]


def map_ordered(
    src: Mapping[str, Tensor], dst: Mapping[str, Tensor], *, what: str, prefix: bool = False
) -> dict[str, Tensor]:
    """Map `src` tensors onto `dst` keys by order; kinds and shapes must agree one for one.

    prefix: `dst` may be the first part of `src` only (a backbone built up to its last tap, loaded
    from a whole classifier's checkpoint); otherwise both must hold the same number of tensors.
    """
    s, d = _tensors(src), _tensors(dst)
    if len(s) < len(d) or (len(s) != len(d) and not prefix):
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


def load_mapped(model: nn.Module, mapped: dict[str, Tensor]) -> None:
    """Load a complete mapped state dict (BatchNorm counters may be absent)."""
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise WeightsError(
            f"mapped weights do not cover the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )


def infer_num_classes(sd: Mapping[str, Tensor]) -> int:
    """Rows of the last weight: the class count of a classifier checkpoint."""
    last_weight = [v for k, v in sd.items() if k.endswith("weight")][-1]
    return int(last_weight.shape[0])
