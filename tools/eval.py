"""Re-evaluate a training checkpoint (Hydra entry point; config ``conf/eval.yaml``).

    python tools/eval.py task=detect ckpt=outputs/.../checkpoints/last.ckpt data=shapes_coco
    python tools/eval.py task=segment ckpt=outputs/.../checkpoints/last.ckpt data=shapes_cityscapes

The model is rebuilt from the checkpoint alone (``dense.lit.checkpoint``), including its input
size; the data set comes from the ``data`` group, with the same overrides as in training. The
validation is the training's own (same pipeline, same scoring), so the numbers equal those at the
end of training. Writes to ``output_dir``: ``metrics.json`` and the predictions:

- detect: ``val/map``, ``val/map_50``, ... and ``detections.json`` (COCO results format with the
  data set's category and image ids, scorable with ``tools/score.py coco GT.json detections.json``);
- segment: ``val/miou``, ``val/iou/<class>`` and, unless ``save_predictions=false``, one labelIds
  PNG per val image in ``pred_dir`` named after it (the official submission format, scorable with
  ``tools/score.py cityscapes ROOT/gtFine/val PRED_DIR``).
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
from dense.lit.config import (
    ConfigError,
    check_data_root,
    datamodule_kwargs,
    json_safe,
    tidy_logging,
    trainer_config,
    validate_config,
)

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
log = logging.getLogger("dense.eval")


def evaluate(cfg: DictConfig) -> float | None:
    """Load the checkpoint, validate it on the configured data, write metrics.json and predictions."""
    import lightning.pytorch as pl
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import RichProgressBar

    from dense.lit.checkpoint import load_model_from_checkpoint

    tidy_logging()
    pl.seed_everything(cfg.seed, workers=True)
    out = Path(cfg.output_dir)
    task = cfg.task.name
    try:
        model, extras = load_model_from_checkpoint(cfg.ckpt, task=task)
    except ValueError as e:  # wrong task, not a dense checkpoint: a usage error, not a crash
        raise ConfigError(str(e)) from e
    data_overrides, module_overrides = {}, {}
    if task == "detect":
        # The network input size is the checkpoint's, whatever head.image_size says.
        data_overrides["image_size"] = list(model.config.image_size)
    elif cfg.get("save_predictions", False):
        module_overrides["pred_dir"] = str(cfg.pred_dir)
    datamodule = instantiate(cfg.task.datamodule, **datamodule_kwargs(cfg, **data_overrides))
    info = datamodule.info()
    _check_classes(extras["info"], info)
    # A partial, then called: instantiate() would turn the DatasetInfo dataclass into a DictConfig.
    module = instantiate(cfg.task.module, _partial_=True)(
        model=model, info=info, num_log_images=0, **module_overrides
    )

    callbacks = [RichProgressBar()] if cfg.trainer.get("enable_progress_bar", True) else []
    trainer = instantiate(
        trainer_config(cfg),
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        default_root_dir=str(out),
    )
    trainer.validate(module, datamodule=datamodule, verbose=False)
    if not trainer.is_global_zero:
        return module.last_metrics.get(cfg.task.monitor)

    out.mkdir(parents=True, exist_ok=True)
    common = {
        "checkpoint": str(Path(cfg.ckpt).resolve()),
        "epoch": extras.get("epoch"),
        "global_step": extras.get("global_step"),
    }
    if task == "detect":
        dets_path = out / "detections.json"
        dets_path.write_text(json.dumps(module.last_detections))
        coco = module.last_coco
        metrics = {
            **module.last_metrics,
            "per_category_AP": dict(coco.per_category_ap) if coco else {},
            "num_images": coco.num_images if coco else 0,
            "num_detections": coco.num_detections if coco else 0,
            **common,
            "gt": info.val_ann_file,
            "detections": str(dets_path.resolve()),
        }
    else:
        pred_dir = module.pred_dir
        metrics = {
            **module.last_metrics,
            "num_images": module.last_num_images,
            **common,
            "gt": info.val_label_dir,
            "predictions": str(pred_dir.resolve()) if pred_dir is not None else None,
        }
    (out / "metrics.json").write_text(json.dumps(json_safe(metrics), indent=2) + "\n")
    log.info("metrics.json and the predictions written to %s", out)
    return module.last_metrics.get(cfg.task.monitor)


def _check_classes(trained: Any, data: Any) -> None:
    """The checkpoint's classes must be the data set's: a wrong data= would score nonsense."""
    if trained is None:
        return
    if trained.label_to_cat_id != data.label_to_cat_id or trained.num_classes != data.num_classes:
        raise ConfigError(
            f"the checkpoint was trained on {trained.num_classes} classes (label -> category id "
            f"{trained.label_to_cat_id}), the data set has {data.num_classes} ({data.label_to_cat_id}): "
            "wrong data= for this checkpoint?"
        )


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> float | None:
    try:
        validate_config(cfg, conf_dir=CONF_DIR, stage="eval")
        check_data_root(cfg)
        return evaluate(cfg)
    except UserError as e:  # config, data or checkpoint: one line, exit status 2
        exit_user_error("eval.py", e)


if __name__ == "__main__":
    main()
