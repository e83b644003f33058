"""Deployment latency, image in, result out: every inference path of dense beside torchvision's model.

SSDLite320 V3-Large end to end (a 480x640 uint8 image in, boxes in its pixels out: resize, normalise,
network, decode, NMS) and LR-ASPP V3-Large at 1024x2048 (image in, label map out). Paths: PyTorch
eager (`model.predict`), PyTorch with BatchNorm folded, ONNX Runtime fp32 (the `dense.deploy`
runner; for the detector both the raw export with NMS in numpy and the end-to-end graph) and int8
(`quantize_int8`). All are timed in one process, interleaved with torchvision's model called the usual
way, and given as ratios to it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from rich.markup import escape

from dense.benchmark.peers import normalise, torchvision_pair
from dense.benchmark.report import print_table
from dense.benchmark.timing import interleave_many
from dense.complexity import count_madds
from dense.deploy import load
from dense.deploy.quantize import quantize_int8
from dense.export import export_onnx, fold_batchnorm

__all__ = ["TARGETS", "deploy_tables", "detect_deploy", "segment_deploy", "to_float"]

# the most each task's deployment path may take, as a fraction of torchvision's time (batch 1)
TARGETS = {"detect": 0.35, "segment": 0.4}


def to_float(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 3xHxW float in [0, 1] (what torchvision's `to_tensor` does), for the torch paths."""
    return torch.from_numpy(image).permute(2, 0, 1).float().div_(255)


def _random_images(n: int, hw: tuple[int, int], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for _ in range(n)]


def argmax_graph(onnx_in: Path, onnx_out: Path) -> Path:
    """A copy of a segmentation export whose output is the label map (ArgMax over the classes in the
    graph, int64 [N, H, W]) instead of the logits: onnxruntime's ArgMax runs on the intra-op threads,
    numpy's `argmax(0)` over [K, H, W] on one, and no float logits at full size leave the graph."""
    proto = onnx.load(str(onnx_in))
    (out,) = proto.graph.output
    proto.graph.node.append(onnx.helper.make_node("ArgMax", [out.name], ["labels"], axis=1, keepdims=0))
    del proto.graph.output[:]
    proto.graph.output.append(onnx.helper.make_tensor_value_info("labels", onnx.TensorProto.INT64, None))
    onnx.save(proto, str(onnx_out))
    return onnx_out


def _session(path: Path, threads: int) -> ort.InferenceSession:
    """The session settings of `dense.deploy.load` (intra-op threads, inter-op 1, ORT_ENABLE_ALL)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _time(
    title: str, fns: dict[str, tuple[str, Callable[[], object]]], *, iters: int, warmup: int
) -> list[dict]:
    """Interleaved medians of the callables, each as a ratio to the "torchvision" one; printed."""
    with torch.inference_mode():
        seconds = interleave_many({k: fn for k, (_, fn) in fns.items()}, iters=iters, warmup=warmup)
    base = seconds["torchvision"]
    rows = [
        dict(key=k, label=label, ms=seconds[k] * 1e3, ratio=seconds[k] / base)
        for k, (label, _) in fns.items()
    ]
    print_table(
        title,
        ("path", "ms", "ratio to torchvision"),
        [(escape(r["label"]), f"{r['ms']:.1f}", f"{r['ratio']:.3f}") for r in rows],
    )
    return rows


def detect_deploy(
    workdir: Path,
    *,
    threads: int,
    iters: int,
    warmup: int,
    image_hw: tuple[int, int] = (480, 640),
    onnx: bool = True,
) -> dict:
    """SSDLite320 V3-Large, batch 1, end to end from an `image_hw` uint8 image, every path vs torchvision."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    tv, ours = torchvision_pair("ssdlite320_mobilenet_v3_large", num_classes=91)
    folded = fold_batchnorm(ours)  # a copy
    image = _random_images(1, image_hw, seed=0)[0]
    fns = {
        "torchvision": ("torchvision `model([img])`", lambda: tv([to_float(image)])),
        "eager": ("PyTorch eager `predict`", lambda: ours.predict(to_float(image)[None])),
        "folded": ("PyTorch, BatchNorm folded", lambda: folded.predict(to_float(image)[None])),
    }
    if onnx:
        size = tuple(ours.image_size)
        raw = export_onnx(folded, workdir / "ssdlite.onnx", image_size=size)
        e2e = export_onnx(folded, workdir / "ssdlite_e2e.onnx", image_size=size, end_to_end=True)
        runners = {k: load(p, threads=threads) for k, p in (("raw", raw), ("e2e", e2e))}
        calibration = [runners["raw"].preprocess(im) for im in _random_images(4, image_hw, seed=1)]
        q = quantize_int8(e2e, workdir / "ssdlite_e2e_int8.onnx", calibration)
        runners["int8"] = load(q, threads=threads)
        fns["ort_fp32"] = ("ONNX Runtime fp32, NMS in numpy", lambda: runners["raw"].predict(image))
        fns["ort_fp32_e2e"] = ("ONNX Runtime fp32, end-to-end graph", lambda: runners["e2e"].predict(image))
        fns["ort_int8_e2e"] = ("ONNX Runtime int8, end-to-end graph", lambda: runners["int8"].predict(image))
    h, w = image_hw
    title = f"SSDLite320 V3-Large end to end, {h}x{w} uint8 image, batch 1"
    return dict(
        title=title,
        model="SSDLite320 V3-Large",
        input=f"{h}x{w} -> 320x320",
        madds=count_madds(ours, 320, forward="forward"),
        iters=iters,
        warmup=warmup,
        target=TARGETS["detect"],
        rows=_time(f"{title}, {threads} threads (median of {iters})", fns, iters=iters, warmup=warmup),
    )


def segment_deploy(
    workdir: Path,
    *,
    threads: int,
    iters: int,
    warmup: int,
    image_hw: tuple[int, int] = (1024, 2048),
    onnx: bool = True,
) -> dict:
    """LR-ASPP V3-Large, batch 1, an `image_hw` uint8 image to its label map, every path vs torchvision."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    tv, ours = torchvision_pair("lraspp_mobilenet_v3_large", num_classes=19)
    folded = fold_batchnorm(ours)  # a copy
    image = _random_images(1, image_hw, seed=0)[0]
    fns = {
        "torchvision": (
            'torchvision `model(x)["out"].argmax(1)`',
            lambda: tv(normalise(to_float(image)[None]))["out"].argmax(1),
        ),
        "eager": ("PyTorch eager `predict`", lambda: ours.predict(to_float(image)[None])),
        "folded": ("PyTorch, BatchNorm folded", lambda: folded.predict(to_float(image)[None])),
    }
    if onnx:
        fp32 = export_onnx(folded, workdir / "lraspp.onnx", image_size=image_hw)
        runners = {"fp32": load(fp32, threads=threads)}
        calibration = [runners["fp32"].preprocess(im) for im in _random_images(2, image_hw, seed=1)]
        runners["int8"] = load(
            quantize_int8(fp32, workdir / "lraspp_int8.onnx", calibration), threads=threads
        )
        fns["ort_fp32"] = ("ONNX Runtime fp32", lambda: runners["fp32"].predict(image))
        fns["ort_int8"] = ("ONNX Runtime int8", lambda: runners["int8"].predict(image))
        # what the runner would gain from the argmax inside the graph (its preprocess, then the session)
        am = _session(argmax_graph(fp32, workdir / "lraspp_argmax.onnx"), threads)
        pre = runners["fp32"].preprocess
        fns["ort_fp32_argmax"] = (
            "ONNX Runtime fp32, ArgMax in the graph (not in the runner)",
            lambda: am.run(None, {am.get_inputs()[0].name: pre(image)})[0][0],
        )
    h, w = image_hw
    title = f"LR-ASPP V3-Large, {h}x{w} uint8 image to label map, batch 1"
    return dict(
        title=title,
        model="LR-ASPP V3-Large",
        input=f"{h}x{w}",
        madds=count_madds(ours, image_hw),
        iters=iters,
        warmup=warmup,
        target=TARGETS["segment"],
        rows=_time(f"{title}, {threads} threads (median of {iters})", fns, iters=iters, warmup=warmup),
    )


def deploy_tables(
    *,
    threads: int,
    iters: int,
    warmup: int,
    segment_iters: int = 5,
    segment_warmup: int = 2,
    onnx: bool = True,
) -> dict:
    """Both tasks; the ONNX files are written to a temporary folder and removed after.
    The 1024x2048 rounds are long: `segment_iters` / `segment_warmup` of them."""
    with tempfile.TemporaryDirectory(prefix="dense-bench-") as tmp:
        return dict(
            detect=detect_deploy(Path(tmp), threads=threads, iters=iters, warmup=warmup, onnx=onnx),
            segment=segment_deploy(
                Path(tmp), threads=threads, iters=segment_iters, warmup=segment_warmup, onnx=onnx
            ),
        )
