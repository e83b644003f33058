"""The package's layers: imports point one way, no cycles, every module imports on its own.

Layers, each importing only from those below it: leaf modules (constants, features, normalize)
-> backbones -> weights -> detection | segmentation | classification (side by side) -> build ->
hub -> lit -> benchmark. Data and evaluation sit beside the models and know no model.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "dense"
MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__") for p in PKG.rglob("*.py")
)


def _path(module: str) -> Path:
    p = ROOT.joinpath(*module.split("."))
    return p / "__init__.py" if p.is_dir() else p.with_suffix(".py")


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not _path(module).name == "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> list[tuple[str, bool]]:
    """(imported dense module, at module level?) for every import statement of `module`."""
    tree = ast.parse(_path(module).read_text())
    top = {id(n) for n in tree.body} | {id(n) for s in tree.body if isinstance(s, ast.If) for n in s.body}
    top |= {id(n) for s in tree.body if isinstance(s, ast.Try) for n in s.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node)
            # `from dense.x import y` imports the submodule dense.x.y when there is one
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        out += [(n, id(node) in top) for n in names if n == "dense" or n.startswith("dense.")]
    return out


GRAPH = {m: sorted({n for n, _ in _imports(m) if n != m}) for m in MODULES}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "dense"


def test_every_dense_import_is_at_module_level():
    late = [f"{m} -> {n}" for m in MODULES for n, top in _imports(m) if not top]
    assert not late, f"function-level imports of dense modules hide the layering: {late}"


def test_no_import_cycle():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in GRAPH.get(m, []):
            if state.get(n) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(n) :] + [n]))
            if n in GRAPH and not state.get(n):
                visit(n)
        stack.pop()
        state[m] = 2

    for m in MODULES:
        if not state.get(m):
            visit(m)


# what each layer may import from dense (besides itself)
LEAVES = {"constants", "errors", "features", "normalize", "papers"}
ALLOWED = {
    "backbones": LEAVES,
    "weights": LEAVES | {"backbones"},
    "classification": LEAVES | {"backbones", "weights"},
    "detection": LEAVES | {"backbones", "weights"},
    "segmentation": LEAVES | {"backbones", "weights"},
    "complexity": LEAVES | {"backbones"},
    "data": LEAVES,
    "evaluation": LEAVES | {"data"},
    "build": LEAVES | {"backbones", "weights", "classification", "detection", "segmentation"},
    "hub": LEAVES | {"build", "weights"},
    "export": LEAVES
    | {"backbones", "weights", "classification", "detection", "segmentation", "build", "data", "evaluation"}
    | {"deploy"},
    "deploy": set(),  # runs without torch: numpy, onnxruntime, Pillow, OpenCV only
}


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_import_only_downwards(layer):
    bad = [
        f"{m} -> {n}"
        for m in MODULES
        if _layer(m) == layer
        for n in GRAPH[m]
        if _layer(n) not in ALLOWED[layer] | {layer} and n != "dense"
    ]
    assert not bad, f"dense.{layer} may import only {sorted(ALLOWED[layer])}: {bad}"


def test_core_imports_neither_lightning_nor_hydra():
    core = [m for m in MODULES if _layer(m) in ALLOWED]
    bad = []
    for m in core:
        for node in ast.walk(ast.parse(_path(m).read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            bad += [f"{m} -> {n}" for n in names if n.split(".")[0] in ("lightning", "hydra", "omegaconf")]
    assert not bad


def test_every_module_imports_on_its_own():
    """Each module in a fresh interpreter as far as dense goes: a parent process imports only the
    heavy third-party libraries, then forks once per module (an import cycle would fail there)."""
    script = textwrap.dedent(
        f"""
        import os, sys, traceback
        import torch, torchvision, lightning, hydra, albumentations, cv2, pycocotools, torchmetrics  # noqa
        assert not [m for m in sys.modules if m == "dense" or m.startswith("dense.")]
        failed = []
        for name in {MODULES!r}:
            pid = os.fork()
            if pid == 0:
                try:
                    __import__(name)
                except BaseException:
                    traceback.print_exc()
                    os._exit(1)
                os._exit(0)
            _, status = os.waitpid(pid, 0)
            if status:
                failed.append(name)
        print("FAILED", failed)
        sys.exit(1 if failed else 0)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
