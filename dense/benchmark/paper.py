"""Params and multiply-adds of dense models beside the papers' tables (reference figures: dense.papers).

The tests check the same figures against the same rows, through the model builders here.
"""

from __future__ import annotations

import torch

import dense
from dense.benchmark.report import print_table, versus
from dense.classification import build_classifier
from dense.complexity import count_madds, count_params
from dense.papers import (
    CLASSIFIERS,
    SEGMENTATION,
    SSDLITE,
    TORCHVISION_SSDLITE_PARAMS,
    DetectionRow,
    SegmentationRow,
)

__all__ = [
    "classifier_table",
    "segmentation_model",
    "segmentation_table",
    "ssdlite_figures",
    "ssdlite_model",
    "ssdlite_table",
]


def classifier_table() -> list[dict]:
    """ImageNet classifiers vs MobileNetV1 / V2 / V3 and MixConv."""
    rows, cells = [], []
    for r in CLASSIFIERS:
        model = build_classifier(r.backbone, width_mult=r.width_mult)
        p = count_params(model) / 1e6
        m = count_madds(model, r.resolution) / 1e6
        me = count_madds(model, r.resolution, elementwise=True) / 1e6
        rows.append(
            dict(
                model=r.backbone,
                width_mult=r.width_mult,
                resolution=r.resolution,
                params_m=round(p, 3),
                paper_params_m=r.params_m,
                madds_m=round(m, 1),
                paper_madds_m=r.madds_m,
                madds_elementwise_m=round(me, 1),
                source=r.source,
            )
        )
        cells.append(
            (r.backbone, f"{r.width_mult:g}", str(r.resolution))
            + versus(p, r.params_m, 2)
            + versus(m, r.madds_m, 1)
            + (f"{me:.1f}",)
        )
    print_table(
        "ImageNet classifiers: dense vs the papers (params without BN; MAdds at the resolution)",
        ("model", "width", "res", "params M", "paper", "Δ", "MAdds M", "paper", "Δ", "MAdds+elementwise M"),
        cells,
    )
    return rows


def ssdlite_model(row: DetectionRow, num_classes: int = 91) -> torch.nn.Module:
    """SSDLite as Table 6 counts it: 320x320, "tf" anchors."""
    return dense.build_model(
        "detect",
        row.backbone,
        num_classes=num_classes,
        width_mult=row.width_mult,
        reduced_tail=row.reduced_tail,
        anchors="tf",
    )


def ssdlite_figures(row: DetectionRow) -> tuple[float, float]:
    """Params (millions, without BatchNorm) and MAdds (billions, 320x320) of a Table 6 row's model."""
    model = ssdlite_model(row)
    return count_params(model) / 1e6, count_madds(model, 320) / 1e9


def ssdlite_table() -> list[dict]:
    """SSDLite, "tf" anchors, 320x320, 91 classes: MobileNetV3 Table 6; torchvision's preset."""
    rows, cells = [], []
    for r in SSDLITE:
        p, m = ssdlite_figures(r)
        rows.append(dict(r._asdict(), ours_params_m=round(p, 3), ours_madds_b=round(m, 3)))
        cells.append(
            (r.backbone, f"{r.width_mult:g}", str(r.reduced_tail))
            + versus(p, r.params_m, 2)
            + versus(m, r.madds_b, 3)
        )
    tv = dense.build_model("detect", "v3_large", num_classes=91, reduced_tail=True, anchors="torchvision")
    n = count_params(tv, include_norm=True)
    cells.append(
        ("v3_large (torchvision anchors)", "1", "True", f"{n:,}", f"{TORCHVISION_SSDLITE_PARAMS:,}")
        + ("",) * 4
    )
    rows.append(
        dict(
            backbone="v3_large",
            anchors="torchvision",
            params=n,
            torchvision_params=TORCHVISION_SSDLITE_PARAMS,
        )
    )
    print_table(
        "SSDLite 320x320, 91 classes, tf anchors: dense vs MobileNetV3 Table 6",
        ("backbone", "width", "reduced tail", "params M", "paper", "Δ", "MAdds B", "paper", "Δ"),
        cells,
    )
    return rows


def segmentation_model(row: SegmentationRow) -> torch.nn.Module:
    """R-ASPP / LR-ASPP as Tables 7-8 count them: 19 classes (Cityscapes)."""
    return dense.build_model(
        "segment",
        row.backbone,
        head=row.head,
        num_classes=19,
        reduced_tail=row.reduced_tail,
        output_stride=row.output_stride,
        head_channels=row.head_channels,
    )


def segmentation_table() -> list[dict]:
    """R-ASPP / LR-ASPP, 19 classes: MobileNetV3 Tables 7-8 (see README for the params gap)."""
    rows, cells = [], []
    for r in SEGMENTATION:
        model = segmentation_model(r)
        p, m = count_params(model) / 1e6, count_madds(model, r.size) / 1e9
        rows.append(dict(r._asdict(), ours_params_m=round(p, 3), ours_madds_b=round(m, 3)))
        cells.append(
            (f"{r.backbone}{' RF2' if r.reduced_tail else ''} {r.head}", str(r.head_channels))
            + (str(r.output_stride), f"{r.size[0]}x{r.size[1]}")
            + versus(p, r.params_m, 3)[:2]  # no params Δ: the paper leaves some layers out (README)
            + versus(m, r.madds_b, 2)
        )
    print_table(
        "Segmentation, 19 classes: dense vs MobileNetV3 Tables 7-8",
        ("model", "F", "OS", "input", "params M", "paper", "MAdds B", "paper", "Δ"),
        cells,
    )
    return rows
