"""Scan a data set as training would see it, before spending GPU hours on it (``conf/check_data.yaml``).

    python tools/check_data.py data=coco data.root=/coco
    python tools/check_data.py data=cityscapes data.root=/cityscapes decode=false
    python tools/check_data.py data=shapes_coco out=report.json

Builds the data sets of the ``data`` group with the training code (the same checks: annotation
file, layout, label values), then reads every image (``decode=true``: every pixel, so truncated
files are found). Prints per split the counts per problem and the first offending files:
errors (training or evaluation would not start, or an epoch would skip more than
``max_skipped_fraction`` of its samples) and notes (converted, clipped, dropped or skipped and
counted). Exit status 0 when training would start, 2 when it would not.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

try:
    import dense  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hydra
from omegaconf import DictConfig

from dense.errors import UserError, exit_user_error
from dense.lit.config import ConfigError, check_data_root, datamodule_kwargs, json_safe

log = logging.getLogger("dense.check_data")


def _scan_coco(dm: Any, decode: bool, max_skipped: float) -> list[Any]:
    from dense.data.coco import CocoDetection
    from dense.data.report import DataReport

    reports = []
    for split, images, ann, train in (
        ("train", dm.train_images, dm.train_ann, True),
        ("val", dm.val_images, dm.val_ann, False),
    ):
        try:
            ds = CocoDetection(images, ann, train=train, min_box_size=dm.min_box_size)
        except UserError as e:
            report = DataReport(f"{split}: {ann}")
            report.error(str(e), [ann])
            reports.append(report)
            continue
        report = ds.report
        report.source = f"{split}: {ann} ({images})"
        ds.scan_images(decode=decode)
        if train:
            _too_many_skipped(report, len(ds), max_skipped)
            if not any(len(r["boxes"]) for r in ds._records):
                report.error("usable boxes in the training annotations: none", [ann])
        reports.append(report)
    return reports


def _too_many_skipped(report: Any, n: int, max_skipped: float) -> None:
    """An error when more than `max_skipped` of the `n` training samples would be skipped."""
    skipped = {f for k, v in report.notes.items() if "skipped in training" in k for f in v}
    if n and len(skipped) / n > max_skipped:
        report.error(
            f"of {n} training images are unreadable, more than max_skipped_fraction="
            f"{max_skipped} (training would stop in the first epoch):",
            sorted(skipped),
        )


def _scan_cityscapes(dm: Any, decode: bool, max_skipped: float) -> list[Any]:
    from dense.data.cityscapes import CityscapesSegmentation
    from dense.data.report import DataReport

    reports = []
    for split, train in ((dm.train_split, True), (dm.val_split, False)):
        try:
            ds = CityscapesSegmentation(
                dm.root, split, train=train, check_values=dm.check_values, cache_dir=dm.scan_cache
            )
        except UserError as e:
            report = DataReport(f"{split}: {dm.root}")
            report.error(str(e), [dm.root / "gtFine" / split])
            reports.append(report)
            continue
        # labels were decoded by the data set's value check; images only header-checked
        report = ds.scan_images(decode=decode)
        report.source = f"{split}: {dm.root}"
        if train:
            _too_many_skipped(report, len(ds), max_skipped)
        reports.append(report)
    return reports


def check(cfg: DictConfig) -> int:
    from dense.lit.cityscapes_data import CityscapesDataModule
    from dense.lit.coco_data import CocoDataModule

    check_data_root(cfg)
    task = cfg.data.get("task")
    modules = {"detect": CocoDataModule, "segment": CityscapesDataModule}
    if task not in modules:
        raise ConfigError(f"data.task={task!r}: check_data knows {sorted(modules)}")
    dm = modules[task](**datamodule_kwargs(cfg))
    dm.prepare_data()  # a synthetic set is generated here, as in training
    if not dm.root.is_dir():
        raise ConfigError(f"data root not found: {dm.root}. {dm.layout}")
    decode, max_skipped = bool(cfg.decode), float(cfg.max_skipped_fraction)
    reports = (
        _scan_coco(dm, decode, max_skipped) if task == "detect" else _scan_cityscapes(dm, decode, max_skipped)
    )
    for r in reports:
        print(r.format())
    if cfg.get("out"):
        Path(cfg.out).write_text(json.dumps(json_safe([r.to_dict() for r in reports]), indent=2) + "\n")
    errors = sum(len(v) for r in reports for v in r.errors.values())
    if errors:
        raise UserError(f"{errors} problem(s) found in {dm.root}: training would not start (see above)")
    print(f"check_data.py: {dm.root}: training would start")
    return 0


@hydra.main(version_base="1.3", config_path="../conf", config_name="check_data")
def main(cfg: DictConfig) -> int:
    try:
        return check(cfg)
    except UserError as e:
        exit_user_error("check_data.py", e)


if __name__ == "__main__":
    main()
