"""Cityscapes mIoU: our scorer and metric against the official cityscapesscripts evaluator."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dense.data.cityscapes import (
    CITYSCAPES_CLASSES,
    LABEL_ID_TO_TRAIN_ID,
    TRAIN_ID_TO_LABEL_ID,
)
from dense.evaluation.cityscapes import (
    CityscapesEvalError,
    CityscapesMIoU,
    format_iou_table,
    prediction_filename,
    save_label_ids_png,
    score_folder,
)

# label ids by name (cityscapesscripts.helpers.labels)
ROAD, SIDEWALK, BUILDING, WALL, SKY, PERSON, CAR, TRAIN, BICYCLE = 7, 8, 11, 12, 23, 24, 26, 31, 33
VOID_IDS = [0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30]  # ignoreInEval labelIds


def _make_case(root: Path, n_images: int = 6, size: tuple[int, int] = (48, 80), seed: int = 0):
    """Ground truth in the gtFine layout plus noisy labelIds predictions named after the images.

    GT: blocky scenes over many labelIds, with void ids (0, 1, 4, parking 9, caravan 29...).
    'train' (31) never appears in GT nor predictions -> NaN; 'wall' (12) is predicted but never in
    GT -> IoU 0; predictions include void labelIds (false negatives on class pixels).
    """
    rng = np.random.default_rng(seed)
    h, w = size
    present = [ROAD, SIDEWALK, BUILDING, 13, 17, 19, 20, 21, 22, SKY, PERSON, 25, CAR, 27, 28, 32, BICYCLE]
    gt_root = root / "gtFine" / "val"
    pred_root = root / "results"
    names = []
    for i in range(n_images):
        city = ["frankfurt", "lindau"][i % 2]
        name = f"{city}_{i:06d}_000019"
        names.append(name)
        blocks = rng.choice(present + VOID_IDS[:6] + [9, 29], size=(h // 8, w // 8))
        gt = np.kron(blocks, np.ones((8, 8), dtype=np.int64)).astype(np.uint8)
        gt[rng.random((h, w)) < 0.05] = 0  # scattered 'unlabeled'
        pred = gt.copy()
        noise = rng.random((h, w))
        pred[noise < 0.15] = rng.choice(present, size=int((noise < 0.15).sum()))
        pred[(noise >= 0.15) & (noise < 0.2)] = rng.choice(
            VOID_IDS, size=int(((noise >= 0.15) & (noise < 0.2)).sum())
        )
        pred[:4, :4] = WALL  # predicted, never in GT
        d = gt_root / city
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(gt, "L").save(d / f"{name}_gtFine_labelIds.png")
        pd = pred_root / city  # sub-folders: the official search is recursive
        pd.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pred, "L").save(pd / prediction_filename(name))
    return gt_root, pred_root, names


def _official(gt_root: Path, pred_root: Path) -> dict:
    """Run cityscapesscripts' evaluateImgLists programmatically (no files written, no printing)."""
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as ev

    args = ev.CArgs()
    for k, v in vars(ev.args).items():
        setattr(args, k, v)
    args.evalInstLevelScore = False  # needs *_instanceIds.png; nIoU is not what we compare
    args.evalPixelAccuracy = False
    args.JSONOutput = False
    args.quiet = True
    args.colorized, args.bold, args.nocol = False, "", ""
    args.predictionPath = str(pred_root)
    args.predictionWalk = None
    gts = sorted(str(p) for p in gt_root.rglob("*_gtFine_labelIds.png"))
    preds = [ev.getPrediction(args, g) for g in gts]  # the official pairing rule finds our files
    return ev.evaluateImgLists(preds, gts, args)


def _assert_close(a: float, b: float, tol: float = 1e-6) -> None:
    assert (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol, (a, b)


def test_score_folder_matches_official_evaluator(tmp_path):
    gt_root, pred_root, _ = _make_case(tmp_path)
    ours = score_folder(gt_root, pred_root)
    official = _official(gt_root, pred_root)
    assert ours["num_images"] == 6
    assert list(ours["IoU"]) == list(CITYSCAPES_CLASSES)
    for name in CITYSCAPES_CLASSES:
        _assert_close(ours["IoU"][name], official["classScores"][name])
    _assert_close(ours["mIoU"], official["averageScoreClasses"])
    # the case covers the semantics that matter
    assert math.isnan(ours["IoU"]["train"])  # absent everywhere -> NaN, excluded from the mean
    assert ours["IoU"]["wall"] == 0.0  # predicted only -> 0, included
    valid = [v for v in ours["IoU"].values() if not math.isnan(v)]
    assert len(valid) == 18 and 0.3 < ours["mIoU"] < 0.95


def _trainid_tensors(gt_root: Path, pred_root: Path):
    for g in sorted(gt_root.rglob("*_gtFine_labelIds.png")):
        name = g.name[: -len("_gtFine_labelIds.png")]
        p = next(pred_root.rglob(f"{name}*.png"))
        gt = LABEL_ID_TO_TRAIN_ID[np.asarray(Image.open(g))]
        pred = LABEL_ID_TO_TRAIN_ID[np.asarray(Image.open(p))]  # void predictions -> 255
        yield torch.from_numpy(pred).long()[None], torch.from_numpy(gt).long()[None]


def test_metric_matches_official_evaluator(tmp_path):
    gt_root, pred_root, _ = _make_case(tmp_path, seed=1)
    official = _official(gt_root, pred_root)
    metric = CityscapesMIoU()
    for pred, gt in _trainid_tensors(gt_root, pred_root):
        metric.update(pred, gt)
    out = metric.compute()
    assert out["iou"].shape == (19,)
    for i, name in enumerate(CITYSCAPES_CLASSES):
        _assert_close(float(out["iou"][i]), official["classScores"][name])
    _assert_close(out["miou"], official["averageScoreClasses"])
    metric.reset()
    assert int(metric.confmat.sum()) == 0


def test_metric_logits_and_batches_equal_labels(tmp_path):
    gt_root, pred_root, _ = _make_case(tmp_path, n_images=4, seed=2)
    pairs = list(_trainid_tensors(gt_root, pred_root))
    by_label, by_logits = CityscapesMIoU(), CityscapesMIoU()
    for pred, gt in pairs:
        by_label.update(pred, gt)
    # one batch of logits whose argmax is the prediction (void predictions become class 0 here,
    # so compare on pairs without void predictions)
    preds = torch.cat([p for p, _ in pairs]).clamp(max=18)
    gts = torch.cat([g for _, g in pairs])
    logits = torch.nn.functional.one_hot(preds, 19).permute(0, 3, 1, 2).float()
    by_logits.update(logits, gts)
    clamped = CityscapesMIoU()
    clamped.update(preds, gts)
    torch.testing.assert_close(by_logits.compute()["iou"], clamped.compute()["iou"], equal_nan=True)
    # logits at half resolution are upsampled to the target size before the argmax
    half = CityscapesMIoU()
    half.update(torch.zeros(1, 19, 24, 40).index_fill_(1, torch.tensor([2]), 1.0), gts[:1])
    assert int(half.confmat[:, 2].sum()) == int((gts[:1] < 19).sum())


def test_metric_agrees_with_torchmetrics_confusion_matrix():
    from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassJaccardIndex

    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 19, (3, 40, 60), generator=g)
    target[:, :5] = 255
    target[target == 18] = 255  # class 18 absent from GT
    preds = torch.where(
        torch.rand(target.shape, generator=g) < 0.7,
        target.clamp(max=17),
        torch.randint(0, 18, target.shape, generator=g),
    )
    ours = CityscapesMIoU()
    ours.update(preds, target)
    tm_cm = MulticlassConfusionMatrix(19, ignore_index=255)
    tm_cm.update(preds, target)
    assert torch.equal(ours.confmat[:, :19], tm_cm.compute())
    assert int(ours.confmat[:, 19].sum()) == 0
    tm_j = MulticlassJaccardIndex(19, average=None, ignore_index=255)
    tm_j.update(preds, target)
    ours_iou = ours.compute()["iou"]
    assert math.isnan(float(ours_iou[18]))  # torchmetrics reports 0 for this class; we follow the benchmark
    torch.testing.assert_close(ours_iou[:18].float(), tm_j.compute()[:18].float())


def test_metric_rejects_bad_target():
    m = CityscapesMIoU()
    with pytest.raises(ValueError, match=r"\[19\]"):
        m.update(torch.zeros(1, 4, 4, dtype=torch.long), torch.full((1, 4, 4), 19))
    with pytest.raises(ValueError, match="shape"):
        m.update(torch.zeros(1, 4, 5, dtype=torch.long), torch.zeros(1, 4, 4, dtype=torch.long))


def _ddp_worker(rank: int, world: int, init: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    m = CityscapesMIoU()
    target = torch.full((1, 4, 4), 255)
    target[0, rank] = rank  # rank 0 sees class 0, rank 1 sees class 1
    m.update(target.clamp(max=18), target)
    res = m.compute()
    if rank == 0:
        torch.save({"confmat": m.confmat.clone(), "iou": res["iou"]}, out)
    torch.distributed.destroy_process_group()


def test_metric_syncs_across_ddp_ranks(tmp_path):
    out = tmp_path / "ddp.pt"
    # spawn, not fork: a forked child of a process whose OpenMP / gloo threads already ran can deadlock
    torch.multiprocessing.start_processes(
        _ddp_worker,
        args=(2, f"file://{tmp_path / 'init'}", str(out)),
        nprocs=2,
        join=True,
        start_method="spawn",
    )
    res = torch.load(out)
    # rank 0 only saw class 0; IoU 1 for class 1 proves rank 1's counts were summed in
    assert res["iou"][:2].tolist() == [1.0, 1.0] and bool(res["iou"][2:].isnan().all())
    assert int(res["confmat"].sum()) == 4  # the local state is restored after the synced compute


def test_save_label_ids_png_round_trip_scores_perfectly(tmp_path):
    gt_root, _, names = _make_case(tmp_path, n_images=3, seed=3)
    pred_dir = tmp_path / "preds"
    for name in names:
        city = name.split("_")[0]
        gt = np.asarray(Image.open(gt_root / city / f"{name}_gtFine_labelIds.png"))
        train_ids = torch.from_numpy(LABEL_ID_TO_TRAIN_ID[gt].astype(np.int64))  # 255 where void
        path = save_label_ids_png(train_ids, pred_dir / prediction_filename(name))
        written = np.asarray(Image.open(path))
        assert Image.open(path).mode == "L" and written.dtype == np.uint8
        np.testing.assert_array_equal(written, TRAIN_ID_TO_LABEL_ID[LABEL_ID_TO_TRAIN_ID[gt]])
        assert set(np.unique(written[LABEL_ID_TO_TRAIN_ID[gt] == 255])) <= {0}  # void -> 'unlabeled'
    res = score_folder(gt_root, pred_dir)
    official = _official(gt_root, pred_dir)
    for name in CITYSCAPES_CLASSES:
        _assert_close(res["IoU"][name], official["classScores"][name])
        assert math.isnan(res["IoU"][name]) or res["IoU"][name] == 1.0
    assert res["mIoU"] == 1.0


def test_score_folder_missing_prediction_names_it(tmp_path):
    gt_root, pred_root, names = _make_case(tmp_path, n_images=2)
    victim = next(pred_root.rglob(f"{names[1]}*.png"))
    victim.unlink()
    with pytest.raises(
        CityscapesEvalError, match=re.escape(f"{names[1]}_gtFine_labelIds.png") + ".*no prediction"
    ):
        score_folder(gt_root, pred_root)


def test_score_folder_size_mismatch_names_prediction(tmp_path):
    gt_root, pred_root, names = _make_case(tmp_path, n_images=2)
    victim = next(pred_root.rglob(f"{names[0]}*.png"))
    Image.fromarray(np.zeros((10, 20), np.uint8), "L").save(victim)
    with pytest.raises(CityscapesEvalError, match=re.escape(str(victim)) + ".*20x10.*80x48"):
        score_folder(gt_root, pred_root)


def test_score_folder_rejects_ambiguous_colour_and_bad_values(tmp_path):
    gt_root, pred_root, names = _make_case(tmp_path, n_images=2)
    pred = next(pred_root.rglob(f"{names[0]}*.png"))
    extra = pred.with_name(f"{names[0]}_color.png")
    Image.fromarray(np.zeros((48, 80, 3), np.uint8), "RGB").save(extra)
    with pytest.raises(CityscapesEvalError, match="several predictions"):
        score_folder(gt_root, pred_root)
    extra.unlink()
    Image.fromarray(np.zeros((48, 80, 3), np.uint8), "RGB").save(pred)
    with pytest.raises(CityscapesEvalError, match=re.escape(str(pred)) + ".*mode RGB"):
        score_folder(gt_root, pred_root)
    bad = np.full((48, 80), ROAD, np.uint8)
    bad[0, 0] = 200
    Image.fromarray(bad, "L").save(pred)
    with pytest.raises(CityscapesEvalError, match=re.escape(str(pred)) + r".*\[200\]"):
        score_folder(gt_root, pred_root)


def test_score_folder_empty_gt(tmp_path):
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    with pytest.raises(CityscapesEvalError, match="no \\*_gtFine_labelIds.png"):
        score_folder(tmp_path / "gt", tmp_path / "pred")


def test_format_iou_table():
    iou = [0.5] * 19
    iou[16] = float("nan")
    text = format_iou_table(torch.tensor(iou))
    for name in CITYSCAPES_CLASSES:
        assert name in text
    assert "n/a" in text and "50.00" in text
    assert text.splitlines()[-1].split() == ["mIoU", "50.00"]
    # the dict form that score_folder returns
    as_dict = format_iou_table(dict(zip(CITYSCAPES_CLASSES, iou)), miou=0.25)
    assert as_dict.splitlines()[-1].split() == ["mIoU", "25.00"]
