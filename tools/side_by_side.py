"""dense's SSDLite V3-Large vs torchvision's ssdlite320_mobilenet_v3_large, trained side by side on
the same data with the same pipeline, batch, optimizer, schedule and budget, scored the same way
(`make side-by-side`; the loop: dense/benchmark/side_by_side.py).

    python tools/side_by_side.py                          # built-in shapes_coco, the make-train recipe
    python tools/side_by_side.py budget=2min out=sbs.json  # each model's training time; result file
    python tools/side_by_side.py budget=1min data.synthetic_options.num_train=64   # any train.py override

budget: training seconds of each model (default: the recipe's trainer.budget); models: which to
train (dense,torchvision); out: the JSON written (default outputs/side_by_side/<date_time>.json).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

try:
    import dense  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from dense.errors import UserError, run_tool
from dense.lit.budget import parse_budget
from dense.lit.config import datamodule_kwargs

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
OWN_KEYS = ("budget", "models", "out")


def main(argv: list[str]) -> int:
    import torch

    from dense.benchmark.side_by_side import dense_contestant, run_side_by_side, torchvision_contestant

    own = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in argv if a.split("=", 1)[0] in OWN_KEYS}
    overrides = [a for a in argv if a.split("=", 1)[0] not in OWN_KEYS]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["task=detect", "backbone=v3_large", *overrides])
    try:
        budget_s = parse_budget(own.get("budget", cfg.trainer.get("budget")))
    except ValueError as e:
        raise UserError(str(e)) from e
    if budget_s is None:
        raise UserError("no budget: give budget=5min (each model's training time)")
    models = own.get("models", "dense,torchvision").split(",")
    if not models or set(models) - {"dense", "torchvision"}:
        raise UserError(f"models={own.get('models')!r}: choose from dense,torchvision")

    torch.manual_seed(cfg.seed)
    datamodule = instantiate(cfg.task.datamodule, **datamodule_kwargs(cfg))
    datamodule.prepare_data()
    datamodule.setup("fit")
    info = datamodule.info()
    contestants = []
    for name in models:
        torch.manual_seed(cfg.seed)
        if name == "dense":
            contestants.append(dense_contestant(instantiate(cfg.task.model, num_classes=info.num_classes)))
        else:
            contestants.append(torchvision_contestant(info.num_classes))
    print(
        f"side by side: {', '.join(models)}; {budget_s:.0f} s of training each; "
        f"batch {datamodule.batch_size}; "
        f"optimizer {cfg.optim._target_} lr {cfg.optim.lr}; augment {cfg.data.augment}; "
        f"{torch.get_num_threads()} threads",
        flush=True,
    )
    results = run_side_by_side(
        contestants,
        datamodule.train_dataloader(),
        datamodule.val_dataloader(),
        val_ann_file=str(info.val_ann_file),
        label_to_cat_id=dict(info.label_to_cat_id),
        budget_s=budget_s,
        optimizer=instantiate(cfg.optim),
        norm_weight_decay=cfg.task.module.get("norm_weight_decay"),
        warmup_fraction=float(cfg.sched.get("warmup_fraction", 0.1)),
        log=lambda line: print(line, flush=True),
    )
    print(f"\n{'model':<12} {'steps':>6} {'train s':>8} {'mAP@0.5':>8} {'mAP':>7}")
    for r in results:
        print(f"{r['model']:<12} {r['steps']:>6} {r['train_s']:>8.0f} {r['map_50']:>8.3f} {r['map']:>7.3f}")
    out = Path(own.get("out") or f"outputs/side_by_side/{time.strftime('%Y-%m-%d_%H-%M-%S')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "date": time.strftime("%Y-%m-%d"),
        "budget_s": budget_s,
        "threads": torch.get_num_threads(),
        "overrides": overrides,
        "results": results,
    }
    out.write_text(json.dumps(record, indent=2))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool("side_by_side.py", main, sys.argv[1:]))
