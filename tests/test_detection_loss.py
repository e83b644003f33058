"""SSD loss: the batched matching and box loss equal the per-image loop they replaced; GIoU box
loss; quality focal loss; ATSS matching on hand-made anchors; a tiny training run with the switches."""

from __future__ import annotations

import json
import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

import dense
from dense.detection.box_coder import encode
from dense.detection.loss import atss_match, match_batch, ssd_loss


# --- the per-image reference (the implementation before batching), kept here only ----------------
def ref_match(gt_boxes, anchors, iou_threshold=0.5):
    if gt_boxes.numel() == 0:
        return torch.full((anchors.shape[0],), -1, dtype=torch.int64)
    iou = box_iou(gt_boxes, anchors)
    best_iou, matches = iou.max(dim=0)
    matches[best_iou < iou_threshold] = -1
    matches[iou.argmax(dim=1)] = torch.arange(gt_boxes.shape[0])
    return matches


def ref_ssd_loss(cls_logits, box_deltas, anchors, targets, kind="softmax", neg_to_pos=3):
    n, a, k = cls_logits.shape
    cls_t = torch.zeros((n, a), dtype=torch.int64)
    box_loss = cls_logits.new_zeros(())
    num_pos = 0
    for i, t in enumerate(targets):
        m = ref_match(t["boxes"], anchors)
        pos = torch.nonzero(m >= 0).squeeze(1)
        num_pos += pos.numel()
        if pos.numel():
            gt = t["boxes"][m[pos]]
            box_loss = box_loss + F.smooth_l1_loss(
                box_deltas[i, pos], encode(gt, anchors[pos]), reduction="sum"
            )
            cls_t[i, pos] = t["labels"][m[pos]]
    denom = max(1, num_pos)
    if kind == "softmax":
        ce = F.cross_entropy(cls_logits.reshape(-1, k), cls_t.reshape(-1), reduction="none").view(n, a)
        fg = cls_t > 0
        neg_loss = ce.masked_fill(fg, float("-inf"))
        rank = neg_loss.argsort(1, descending=True).argsort(1)
        bg = rank < neg_to_pos * fg.sum(1, keepdim=True)
        cls_loss = (ce[fg].sum() + ce[bg].sum()) / denom
    else:
        from torchvision.ops import sigmoid_focal_loss

        onehot = F.one_hot(cls_t, k)[..., 1:].to(cls_logits.dtype)
        cls_loss = sigmoid_focal_loss(cls_logits[..., 1:], onehot, alpha=0.75, gamma=2.0, reduction="sum")
        cls_loss = cls_loss / denom
    box_loss = box_loss / denom
    return {"loss_cls": cls_loss, "loss_box": box_loss, "loss": cls_loss + box_loss}


# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def anchors():
    """The real 320x320 "torchvision" anchors of SSDLite (3234)."""
    return dense.build_model("detect", "v3_small", num_classes=4, width_mult=0.35).anchors((320, 320))


def random_boxes(g, m, size=320.0):
    xy = torch.rand(m, 2, generator=g) * size * 0.8
    wh = torch.rand(m, 2, generator=g) * size * 0.5 + 2
    return torch.cat((xy, (xy + wh).clamp(max=size)), 1)


def random_batch(seed, counts, k=7):
    """Targets with the given box counts; a count < 0 repeats one box -count times (duplicates
    compete for the same best anchor), and one image also repeats its first box."""
    g = torch.Generator().manual_seed(seed)
    targets = []
    for c in counts:
        if c < 0:
            boxes = random_boxes(g, 1).repeat(-c, 1)
        else:
            boxes = random_boxes(g, c)
            if c >= 3:
                boxes[2] = boxes[0]
        targets.append({"boxes": boxes, "labels": torch.randint(1, k, (len(boxes),), generator=g)})
    return targets


BATCHES = [(0, [0, 1, 5, 40]), (1, [0, 0]), (2, [-3, 2, 0, 17]), (3, [1]), (4, [60, 3, -2, 0, 1, 9])]


@pytest.mark.parametrize("seed,counts", BATCHES)
def test_batched_matching_equals_the_per_image_rule(anchors, seed, counts):
    targets = random_batch(seed, counts)
    m = max(len(t["boxes"]) for t in targets)
    boxes = torch.zeros(len(targets), m, 4)
    valid = torch.zeros(len(targets), m, dtype=torch.bool)
    for i, t in enumerate(targets):
        boxes[i, : len(t["boxes"])], valid[i, : len(t["boxes"])] = t["boxes"], True
    got = match_batch(boxes, valid, anchors)
    for i, t in enumerate(targets):
        assert torch.equal(got[i], ref_match(t["boxes"], anchors)), i


@pytest.mark.parametrize("kind", ["softmax", "focal"])
@pytest.mark.parametrize("seed,counts", BATCHES)
def test_batched_loss_and_gradients_equal_the_per_image_loop(anchors, seed, counts, kind):
    targets = random_batch(seed, counts)
    g = torch.Generator().manual_seed(seed + 100)
    n, a, k = len(targets), anchors.shape[0], 7
    logits = torch.randn(n, a, k, generator=g, requires_grad=True)
    deltas = torch.randn(n, a, 4, generator=g, requires_grad=True)
    ours = ssd_loss(logits, deltas, anchors, targets, kind=kind)
    ref = ref_ssd_loss(logits, deltas, anchors, targets, kind=kind)
    for key in ("loss_cls", "loss_box", "loss"):
        torch.testing.assert_close(ours[key], ref[key], rtol=1e-6, atol=1e-6)
    # an all-empty batch leaves the deltas out of the reference's graph
    grad = partial(torch.autograd.grad, inputs=(logits, deltas), allow_unused=True, materialize_grads=True)
    grads, ref_grads = grad(ours["loss"]), grad(ref["loss"])
    for mine, theirs in zip(grads, ref_grads):
        torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-6)
    if sum(map(abs, counts)):
        assert ours["loss_box"] > 0 and grads[1].abs().sum() > 0


def test_giou_box_loss(anchors):
    """Perfect deltas give no GIoU loss; the loss is 10 (the weight) x the mean of 1 - GIoU."""
    targets = random_batch(0, [0, 1, 5])
    n, a = len(targets), anchors.shape[0]
    logits = torch.zeros(n, a, 7)
    perfect = torch.zeros(n, a, 4)
    for i, t in enumerate(targets):
        m = match_batch(t["boxes"][None], torch.ones(1, len(t["boxes"]), dtype=torch.bool), anchors)[0]
        pos = m >= 0
        perfect[i, pos] = encode(t["boxes"][m[pos]], anchors[pos])
    out = ssd_loss(logits, perfect, anchors, targets, box_loss="giou")
    assert out["loss_box"].abs() < 1e-5
    deltas = perfect.clone().requires_grad_()
    with torch.no_grad():  # every positive twice as wide and tall as its ground truth: IoU 1/4
        deltas[..., 2:] += 5 * math.log(2)
    out = ssd_loss(logits, deltas, anchors, targets, box_loss="giou")
    torch.testing.assert_close(out["loss_box"], torch.tensor(10 * 0.75), rtol=1e-4, atol=1e-4)
    out["loss"].backward()
    assert deltas.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="unknown box loss"):
        ssd_loss(logits, perfect, anchors, targets, box_loss="l2")


def test_quality_focal_loss_equals_its_two_part_form(anchors):
    """The quality focal loss ("qfl": GFL, Li et al. 2020, eq. 5) against the form written the other way, as
    mmdetection writes it: negatives BCE(x, 0) * sigmoid(x) ** 2; a positive's own class
    BCE(x, IoU) * |IoU - sigmoid(x)| ** 2 with the IoU of its decoded box (torchvision's box_iou),
    all over the number of positives; no gradient flows into the boxes through the target."""
    from dense.detection.box_coder import decode

    targets = random_batch(2, [-3, 2, 0, 17])
    g = torch.Generator().manual_seed(7)
    n, a, k = len(targets), anchors.shape[0], 7
    logits = torch.randn(n, a, k, generator=g, requires_grad=True)
    deltas = (0.3 * torch.randn(n, a, 4, generator=g)).requires_grad_()
    ours = ssd_loss(logits, deltas, anchors, targets, kind="qfl")
    x = logits[..., 1:]
    p = x.sigmoid()
    want = (F.binary_cross_entropy_with_logits(x, torch.zeros_like(x), reduction="none") * p**2).sum()
    num_pos = 0
    for i, t in enumerate(targets):
        m = ref_match(t["boxes"], anchors)
        for j in torch.nonzero(m >= 0).squeeze(1).tolist():
            gt = t["boxes"][m[j]]
            iou = box_iou(decode(deltas[i, j][None], anchors[j][None]), gt[None])[0, 0].detach()
            c = int(t["labels"][m[j]]) - 1
            want = want - F.binary_cross_entropy_with_logits(x[i, j, c], torch.tensor(0.0)) * p[i, j, c] ** 2
            want = want + F.binary_cross_entropy_with_logits(x[i, j, c], iou) * (iou - p[i, j, c]).abs() ** 2
            num_pos += 1
    torch.testing.assert_close(ours["loss_cls"], want / num_pos, rtol=1e-5, atol=1e-6)
    (grad_boxes,) = torch.autograd.grad(ours["loss_cls"], deltas, retain_graph=True, allow_unused=True)
    assert grad_boxes is None or grad_boxes.abs().sum() == 0
    # a perfect box with a confident score for its class costs less than the same score on a poor box
    perfect = torch.zeros(1, a, 4)
    t = [{"boxes": torch.tensor([[40.0, 50, 200, 220]]), "labels": torch.tensor([3])}]
    m = ref_match(t[0]["boxes"], anchors)
    pos = m >= 0
    perfect[0, pos] = encode(t[0]["boxes"][m[pos]], anchors[pos])
    confident = torch.full((1, a, k), -9.0)
    confident[0, pos, 3] = 9.0
    good = ssd_loss(confident, perfect, anchors, t, kind="qfl")["loss_cls"]
    poor = ssd_loss(confident, perfect + 1.0, anchors, t, kind="qfl")["loss_cls"]
    assert good < 1e-3 < poor


# --- ATSS on hand-made anchors -----------------------------------------------------------------------
def grid_anchors(n_cells, cell, size):
    """One square anchor of side `size` per cell of an n x n grid with `cell`-pixel cells."""
    c = (torch.arange(n_cells, dtype=torch.float32) + 0.5) * cell
    cy, cx = torch.meshgrid(c, c, indexing="ij")
    ctr = torch.stack((cx.reshape(-1), cy.reshape(-1)), 1)
    return torch.cat((ctr - size / 2, ctr + size / 2), 1)


def test_atss_positives_worked_out_by_hand():
    """One level, a 4x4 grid of 10-px cells with one 10-px anchor each (anchor i = cell i,
    row-major). Ground truth [0, 0, 12, 10], centre (6, 5), k = 3: the closest centres are cells 0
    (distance 1, IoU 100/120 = 0.83), 1 (distance 9, IoU 20/200 = 0.1) and 4 (distance 10.05,
    IoU 0); mean 0.31 + std 0.45 = threshold 0.77: cell 0 alone is positive."""
    anchors = grid_anchors(4, 10.0, 10.0)
    gt = torch.tensor([[[0.0, 0, 12, 10]]])
    valid = torch.ones(1, 1, dtype=torch.bool)
    m = atss_match(gt, valid, anchors, [16], [1], topk=3)
    assert m[0].tolist() == [0] + [-1] * 15
    # a 20x20 box over cells 0, 1, 4, 5 (k = 4, all at distance 7.07): each overlaps it with IoU
    # 0.25, threshold 0.25 + 0: all four are positive, though far below IoU 0.5 (where the "iou"
    # matcher would keep one forced anchor only)
    gt = torch.tensor([[[0.0, 0, 20, 20]]])
    m = atss_match(gt, valid, anchors, [16], [1], topk=4)
    assert torch.nonzero(m[0] >= 0).squeeze(1).tolist() == [0, 1, 4, 5]
    assert box_iou(gt[0], anchors).max() < 0.5


def test_atss_levels_centre_inside_and_conflicts():
    """Two levels: anchors 0-15 = 4x4 cells of 10 px (10-px anchors, centres 5 / 15 / 25 / 35),
    anchors 16-19 = 2x2 cells of 20 px (20-px anchors, centres 10 / 30)."""
    anchors = torch.cat((grid_anchors(4, 10.0, 10.0), grid_anchors(2, 20.0, 20.0)))
    valid = torch.ones(1, 1, dtype=torch.bool)
    # gt [20, 20, 40, 40], centre (30, 30), k = 4 per level: level 0 gives cells 10, 11, 14, 15
    # (IoU 0.25 each), level 1 all four (IoU 0, 0, 0, 1 for anchor 19 = the gt itself); mean 0.25,
    # unbiased std 0.33, threshold 0.58: anchor 19 alone
    gt = torch.tensor([[[20.0, 20, 40, 40]]])
    m = atss_match(gt, valid, anchors, [16, 4], [1, 1], topk=4)
    assert torch.nonzero(m[0] >= 0).squeeze(1).tolist() == [19]
    # centre inside: a thin gt [21, 0, 29, 40] overlaps level-1 anchors 17 and 19 most (IoU 0.29,
    # above the threshold ~0.26), but their centres (x = 30) lie outside it: no positive at all
    thin = torch.tensor([[[21.0, 0, 29, 40]]])
    ious = box_iou(thin[0], anchors)[0]
    assert ious.argmax() in (17, 19) and ious[17] > 0.28
    assert (atss_match(thin, valid, anchors, [16, 4], [1, 1], topk=4) == -1).all()
    # anchor 0 = [0, 0, 10, 10] is positive for both gts (k = 2; gt 0 [0, 0, 11, 11]: IoU 0.83 above
    # its threshold 0.67; gt 1 [0, 0, 10, 10]: IoU 1): it takes gt 1, the higher IoU
    two = torch.tensor([[[0.0, 0, 11, 11], [0.0, 0, 10, 10]]])
    m = atss_match(two, torch.ones(1, 2, dtype=torch.bool), anchors, [16, 4], [1, 1], topk=2)
    assert m[0].tolist() == [1] + [-1] * 19
    m = atss_match(two[:, :1], valid, anchors, [16, 4], [1, 1], topk=2)
    assert m[0].tolist() == [0] + [-1] * 19  # alone, gt 0 has it


def test_atss_batched_equals_per_image_and_skips_padding(anchors):
    model = dense.build_model("detect", "v3_small", num_classes=4, width_mult=0.35)
    out_levels = [h * w * a for (h, w), a in zip(model.grid_sizes((320, 320)), [6] * 6)]
    targets = random_batch(5, [0, 1, 7, 3])
    m = max(len(t["boxes"]) for t in targets)
    boxes = torch.zeros(len(targets), m, 4)
    valid = torch.zeros(len(targets), m, dtype=torch.bool)
    for i, t in enumerate(targets):
        boxes[i, : len(t["boxes"])], valid[i, : len(t["boxes"])] = t["boxes"], True
    batched = atss_match(boxes, valid, anchors, out_levels, [6] * 6)
    for i, t in enumerate(targets):
        one = atss_match(t["boxes"][None], valid[i : i + 1, : len(t["boxes"])], anchors, out_levels, [6] * 6)
        assert torch.equal(batched[i], one[0])
        assert batched[i].max() < len(t["boxes"])  # never a padding row
    assert (batched[0] == -1).all() and (batched[1] >= 0).sum() > 1  # several positives for one box


# --- through the Detector and the tools -----------------------------------------------------------
def test_detector_passes_levels_and_switches_to_the_loss():
    model = dense.build_model(
        "detect", "v3_small", num_classes=4, width_mult=0.35, image_size=128, anchors="tf", matcher="atss"
    )
    out = model(torch.rand(2, 3, 96, 160))  # another size than the configured one: its own levels
    per_cell = [3, 6, 6, 6, 6, 6]
    want = [h * w * a for (h, w), a in zip(model.grid_sizes((96, 160)), per_cell)]
    assert out["num_anchors_per_level"] == want and sum(want) == out["anchors"].shape[0]
    targets = [{"boxes": torch.tensor([[10.0, 10, 60, 70]]), "labels": torch.tensor([2])}] * 2
    atss = model.loss(out, targets)
    iou = ssd_loss(out["cls_logits"], out["box_deltas"], out["anchors"], targets)
    assert torch.isfinite(atss["loss"]) and atss["loss_box"] > 0 and atss["loss_cls"] != iou["loss_cls"]
    assert model.config.box_loss == "smooth_l1" and model.config.matcher == "atss"
    with pytest.raises(ValueError, match="unknown matcher"):
        dense.build_model("detect", "v3_small", num_classes=4, matcher="hungarian")
    with pytest.raises(ValueError, match="unknown box loss"):
        dense.build_model("detect", "v3_small", num_classes=4, box_loss="l1")
    with pytest.raises(ValueError, match="needs num_anchors_per_level"):
        ssd_loss(out["cls_logits"], out["box_deltas"], out["anchors"], targets, matcher="atss")


@pytest.mark.slow
def test_train_tool_with_giou_and_atss_reduces_the_training_loss(tmp_path):
    """tools/train.py end to end with head.box_loss=giou head.matcher=atss on generated shapes:
    the logged training loss falls, validation runs, the checkpoint keeps both switches."""
    from lit_runs import check, run_tool, tiny_detection

    from dense.lit.checkpoint import load_detector_from_checkpoint

    run_dir = tmp_path / "run"
    check(
        run_tool(
            [
                "tools/train.py",
                "task=detect",
                "backbone=v3_small",
                "backbone.width_mult=0.35",
                "head.box_loss=giou",
                "head.matcher=atss",
                "trainer.max_epochs=8",
                "trainer.budget=null",
                "trainer.check_val_every_n_epoch=8",
                "trainer.num_sanity_val_steps=0",
                "trainer.log_every_n_steps=1",
                *tiny_detection(),
                f"data.root={tmp_path / 'shapes'}",
                f"hydra.run.dir={run_dir}",
            ],
            timeout=900,
        )
    )
    rows = (run_dir / "csv" / "metrics.csv").read_text().splitlines()
    col = rows[0].split(",").index("train/loss")
    losses = [float(r.split(",")[col]) for r in rows[1:] if r.split(",")[col]]
    assert len(losses) == 16, losses
    assert sum(losses[-4:]) < 0.85 * sum(losses[:4]), losses  # 16 steps with warmup: ~0.8 seen
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["val/map"] <= 1.0
    model, _ = load_detector_from_checkpoint(metrics["checkpoint"])
    assert (model.config.box_loss, model.config.matcher) == ("giou", "atss")


@pytest.mark.parametrize("kind", ["focal", "qfl"])
def test_sigmoid_losses_start_every_class_at_the_prior(kind):
    """RetinaNet's initialisation (sec. 4.1) for the sigmoid losses: scores ~0.01 at the start, so
    the loss of the background anchors is small; softmax keeps torchvision's zero bias."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, 128, 128)
    sigmoid = dense.build_model("detect", "v3_small", num_classes=4, image_size=128, cls_loss=kind).eval()
    scores = sigmoid(x)["cls_logits"][..., 1:].sigmoid()
    assert 0.005 < scores.median() < 0.02
    softmax = dense.build_model("detect", "v3_small", num_classes=4, image_size=128).eval()
    assert all((block[-1].bias == 0).all() for block in softmax.cls_head)
    assert softmax(x)["cls_logits"].softmax(-1)[..., 1:].median() > 0.1
