"""BENCHMARKS.md from a benchmark result (the dict that tools/benchmark.py writes as JSON).

Every figure of the run as a table, under a header naming the date, CPU model, thread count and
library versions: a measured table means nothing without them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["render", "write_markdown"]


def table(columns: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A GitHub-flavoured markdown table; None cells are blank."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join("" if c is None else str(c) for c in row) + " |")
    return "\n".join(lines)


def _f(x: float | None, digits: int) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _delta(ours: float, paper: float | None) -> str:
    return "" if paper is None else f"{(ours / paper - 1) * 100:+.1f}%"


def _header(result: dict) -> str:
    m, s = result["machine"], result["settings"]
    v = m["versions"]
    libs = ", ".join(f"{k} {v[k]}" for k in v if v[k] is not None)
    return "\n".join(
        [
            "# Benchmarks",
            "",
            f"Written by `{s['command']}` on {m['date']}.",
            "",
            table(
                ("", ""),
                [
                    ("CPU", f"`{m['cpu']}`, {m['logical_cpus']} logical CPUs"),
                    ("threads", m["threads"]),
                    ("Python", m["python"]),
                    ("libraries", libs),
                    ("timing", f"batch 1, median of {s['iters']} calls after {s['warmup']} warm-up calls"),
                ],
            ),
            "",
            "Each comparison runs dense and its peer interleaved in one process, so that machine noise "
            "hits both alike; ratio = dense / peer, below 1 is faster. Read the ratios, not the "
            "milliseconds: on shared virtual CPUs they move by up to ~0.1 between runs. The rows with "
            "fewer calls say so.",
        ]
    )


def _floor(result: dict) -> str:
    mm = result["matmul"]
    rows = [
        (r["model"], r["input"], r["what"], _f(r["madds_g"], 3), _f(r["ms"], 1), _f(r["floor_ms"], 2))
        + (_f(r["ratio"], 1),)
        for r in result["floor"]
    ]
    return "\n".join(
        [
            "## Distance from the hardware",
            "",
            f"Matrix-multiply rate: **{mm['gflops']:.0f} GFLOP/s** (fp32 `torch.mm` of {mm['n']}x{mm['n']} "
            f"matrices, {mm['threads']} threads, best of {mm['repeats']}). Compute floor = 2 x MAdds / rate "
            "(one multiply-add = 2 FLOPs; MAdds of the network as `dense.complexity.count_madds` counts "
            "them, pre- and postprocessing not included). latency / floor = how many times slower than "
            "the machine's best case each measured latency is.",
            "",
            table(("model", "input", "what", "MAdds G", "ms", "floor ms", "latency / floor"), rows),
        ]
    )


def _deploy(result: dict) -> str:
    out = [
        "## Deployment: image in, result out",
        "",
        "Every inference path of dense beside torchvision's model called the usual way (weights=None, "
        "eval mode; the uint8 image converted to a float tensor in [0, 1], its own transform and "
        "postprocess). All sides start from the same HxWx3 uint8 image and end with boxes in its pixels "
        "/ a label map of its size. ONNX Runtime: intra-op threads = the thread count, inter-op 1, "
        "ORT_ENABLE_ALL. Random weights (the same on both sides): the detector keeps every candidate "
        "above its score threshold (0.001), the worst case of its postprocess.",
    ]
    for t in result["deploy"].values():
        target = t.get("target")
        rows = []
        for r in t["rows"]:
            meets = (
                ""
                if target is None or r["key"] == "torchvision"
                else ("yes" if r["ratio"] <= target else "no")
            )
            rows.append((r["label"], _f(r["ms"], 1), _f(r["ratio"], 3), meets))
        out += [
            "",
            f"### {t['title']}",
            "",
            f"Median of {t['iters']} rounds after {t['warmup']} warm-up rounds; target: at most "
            f"**{target}x** torchvision's time.",
            "",
            table(("path", "ms", "ratio to torchvision", f"<= {target}"), rows),
        ]
        if t.get("notes"):
            out += [""] + [f"- {n}" for n in t["notes"]]
    return "\n".join(out)


def _speed(result: dict) -> str:
    s = result["settings"]
    rows = [
        (r["model"], r["peer"], _f(r["dense_ms"], 2), _f(r["peer_ms"], 2), _f(r["ratio"], 3))
        + (_f(r["fused_ms"], 2), _f(r["fused_ratio"], 3))
        for r in result["speed"]
    ]
    return "\n".join(
        [
            f"## Classifiers, batch 1, {s['size']}x{s['size']}, eval mode",
            "",
            '"dense" is the model as built (eval mode folds each BatchNorm into its convolution on the fly); '
            '"fused" after `fuse_batchnorm(model)`.',
            "",
            table(("model", "peer", "dense ms", "peer ms", "dense / peer", "fused ms", "fused / peer"), rows),
        ]
    )


def _ratios(rows: dict, labels: dict[str, str], digits: int) -> str:
    cells = [
        (
            what,
            _f(rows[k]["dense_ms"], digits),
            _f(rows[k]["torchvision_ms"], digits),
            _f(rows[k]["ratio"], 3),
        )
        for k, what in labels.items()
        if k in rows
    ]
    return table(("what", "dense ms", "torchvision ms", "dense / torchvision"), cells)


def _detect(result: dict) -> str:
    d = result["detect"]
    out = [
        "## SSDLite320 V3-Large vs torchvision (PyTorch)",
        "",
        "Same weights on both sides (dense's twin loaded from torchvision's state dict), 320x320 input.",
        "",
        _ratios(
            d,
            {
                "predict": "predict, batch 1, postprocess included (torchvision as `model([img])`)",
                "train_step": "train step, batch 8, loss + backward + SGD",
            },
            1,
        ),
    ]
    c = d.get("coco_scoring")
    if c:
        sec = c["seconds"]
        out += [
            "",
            f"COCO box scoring of {c['num_detections']:,} synthetic detections (median of a few): "
            f"faster-coco-eval {sec['faster_coco_eval']:.2f} s, pycocotools {sec['pycocotools']:.2f} s "
            f"({c['speedup']:.1f}x); identical 12 stats: {c['identical']}.",
        ]
    return "\n".join(out)


def _segment(result: dict) -> str:
    d = result["segment"]
    out = [
        "## LR-ASPP V3-Large vs torchvision (PyTorch)",
        "",
        "Same weights on both sides; fewer calls (the median of a few) at full Cityscapes resolution.",
        "",
        _ratios(
            d,
            {
                "inference_1024x2048": "inference, 1024x2048, batch 1 (logits)",
                "train_step_8x256x512": "train step, batch 8, 256x512, CE + backward + SGD",
            },
            0,
        ),
    ]
    if "miou_update_s_per_image" in d:
        out += [
            "",
            f"Cityscapes mIoU accumulation: {d['miou_update_s_per_image'] * 1e3:.1f} ms per 1024x2048 image.",
        ]
    return "\n".join(out)


def _paper(result: dict) -> str:
    out = ["## Complexity vs the papers", ""]
    if "paper" in result:
        rows = [
            (r["model"], f"{r['width_mult']:g}", r["resolution"], _f(r["params_m"], 2), r["paper_params_m"])
            + (_delta(r["params_m"], r["paper_params_m"]), _f(r["madds_m"], 1), r["paper_madds_m"])
            + (_delta(r["madds_m"], r["paper_madds_m"]), _f(r["madds_elementwise_m"], 1), r["source"])
            for r in result["paper"]
        ]
        cols = (
            "model",
            "width",
            "res",
            "params M",
            "paper",
            "Δ",
            "MAdds M",
            "paper",
            "Δ",
            "MAdds+elementwise M",
        )
        out += [
            "ImageNet classifiers (params without BatchNorm; MAdds at the resolution):",
            "",
            table(cols + ("source",), rows),
            "",
        ]
    if "paper_detection" in result:
        rows = []
        for r in result["paper_detection"]:
            if "ours_madds_b" in r:
                rows.append(
                    (r["backbone"], f"{r['width_mult']:g}", r["reduced_tail"], _f(r["ours_params_m"], 2))
                    + (r["params_m"], _delta(r["ours_params_m"], r["params_m"]), _f(r["ours_madds_b"], 3))
                    + (r["madds_b"], _delta(r["ours_madds_b"], r["madds_b"]))
                )
            else:  # torchvision's preset: its parameter count with BatchNorm
                rows.append(
                    (f"{r['backbone']} (torchvision anchors)", "1", True, f"{r['params']:,}")
                    + (f"{r['torchvision_params']:,}", "", "", "", "")
                )
        cols = ("backbone", "width", "reduced tail", "params M", "paper", "Δ", "MAdds B", "paper", "Δ")
        out += ["SSDLite, 320x320, 91 classes, tf anchors (MobileNetV3 Table 6):", "", table(cols, rows), ""]
    if "paper_segmentation" in result:
        rows = [
            (f"{r['backbone']}{' RF2' if r['reduced_tail'] else ''} {r['head']}", r["head_channels"])
            + (r["output_stride"], f"{r['size'][0]}x{r['size'][1]}", _f(r["ours_params_m"], 3), r["params_m"])
            + (_f(r["ours_madds_b"], 2), r["madds_b"], _delta(r["ours_madds_b"], r["madds_b"]))
            for r in result["paper_segmentation"]
        ]
        cols = ("model", "F", "OS", "input", "params M", "paper", "MAdds B", "paper", "Δ")
        out += ["Segmentation, 19 classes (MobileNetV3 Tables 7-8):", "", table(cols, rows), ""]
    return "\n".join(out).rstrip()


def _train_cost(result: dict) -> str:
    d = result["train_cost"]
    phases = d["phases_ms"]
    total = sum(phases.values())

    def ratios(ms: dict, base: str) -> list:
        return [(k, f"{v:.1f}", f"{v / ms[base]:.3f}") for k, v in ms.items()]

    top = d["profile_top"]
    return "\n".join(
        [
            f"## A detection training step (batch {d['batch']}, {d['threads']} threads)",
            "",
            "SSDLite V3-Large, reduced tail, the head's default losses and matcher, torch's default "
            "AdamW, on the built-in shapes_coco batches (flip, no loader workers) or --data-root's.",
            "",
            table(("phase", "ms", "share"), [(k, f"{v:.1f}", f"{v / total:.0%}") for k, v in phases.items()]),
            "",
            table(
                ("memory format, whole step (interleaved)", "ms", "ratio"),
                ratios(d["memory_format_ms"], "channels-last"),
            ),
            "",
            table(
                ("loss switch, whole step (interleaved)", "ms", "ratio"),
                ratios(d["switches_ms"], next(iter(d["switches_ms"]))),
            ),
            "",
            table(("AdamW step", "ms", "ratio"), ratios(d["adamw_step_ms"], "default")),
            "",
            table(
                ("torch.profiler operator", "self ms per step", "share"),
                [(r["op"], f"{r['self_ms_per_step']:.1f}", f"{r['share']:.0%}") for r in top],
            ),
        ]
    )


SECTIONS = (
    ("deploy", _deploy),
    ("floor", _floor),
    ("speed", _speed),
    ("detect", _detect),
    ("segment", _segment),
    ("train_cost", _train_cost),
)


def render(result: dict) -> str:
    """The whole report: header, then a section for each part of the run present in `result`."""
    parts = [_header(result)]
    parts += [fn(result) for key, fn in SECTIONS if result.get(key)]
    if any(k in result for k in ("paper", "paper_detection", "paper_segmentation")):
        parts.append(_paper(result))
    return "\n\n".join(parts) + "\n"


def write_markdown(result: dict, path: Path) -> Path:
    """Write `render(result)` to `path`; returns it."""
    path = Path(path)
    path.write_text(render(result))
    return path
