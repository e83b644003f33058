"""ensure_generated: the shared "generate once, atomically" installer of the synthetic data sets."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from dense.data.synthetic import ensure_generated, read_json

MANIFEST = "manifest.json"


def _read_params(root: Path) -> dict | None:
    data = read_json(root / MANIFEST)
    return data["params"] if data is not None and data.get("tool") == "test" else None


def _generator(params: dict, calls: list, delay: float = 0.0):
    """Writes one data file per parameter value, then the manifest (last: it means "complete")."""

    def generate(out: Path) -> None:
        calls.append(out)
        for k, v in params.items():
            (out / f"{k}.txt").write_text(str(v))
        time.sleep(delay)
        (out / MANIFEST).write_text(json.dumps({"tool": "test", "params": params}))

    return generate


def _ensure(root: Path, params: dict, calls: list, delay: float = 0.0) -> Path:
    return ensure_generated(root, params, _generator(params, calls, delay), MANIFEST, _read_params)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_generates_once_then_reuses(tmp_path: Path) -> None:
    calls: list = []
    assert _ensure(tmp_path / "ds", {"a": 1}, calls) == tmp_path / "ds"
    assert _ensure(tmp_path / "ds", {"a": 1}, calls) == tmp_path / "ds"
    assert len(calls) == 1 and calls[0].parent == tmp_path  # generated in a sibling folder
    assert _names(tmp_path / "ds") == ["a.txt", MANIFEST]
    assert _names(tmp_path) == ["ds"]  # no temporary folder left


def test_changed_parameters_replace_the_old_copy(tmp_path: Path) -> None:
    calls: list = []
    _ensure(tmp_path / "ds", {"a": 1}, calls)
    _ensure(tmp_path / "ds", {"b": 2}, calls)
    assert len(calls) == 2
    assert _names(tmp_path / "ds") == ["b.txt", MANIFEST]  # nothing of the old copy is left
    assert _names(tmp_path) == ["ds"]


def test_foreign_data_is_refused_and_kept(tmp_path: Path) -> None:
    calls: list = []
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="mine.*refusing"):
        _ensure(mine, {"a": 1}, calls)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="refusing"):
        _ensure(tmp_path / "file", {"a": 1}, calls)
    assert calls == [] and (mine / "thesis.txt").read_text() == "precious"
    (tmp_path / "empty").mkdir()  # an empty folder is not data: used
    _ensure(tmp_path / "empty", {"a": 1}, calls)
    assert _names(tmp_path / "empty") == ["a.txt", MANIFEST]
    assert _names(tmp_path) == ["empty", "file", "mine"]


def test_foreign_data_appearing_during_generation_is_kept(tmp_path: Path) -> None:
    root = tmp_path / "ds"

    def generate(out: Path) -> None:
        root.mkdir()
        (root / "thesis.txt").write_text("precious")  # another tool wrote here meanwhile
        _generator({"a": 1}, [])(out)

    with pytest.raises(FileExistsError, match="refusing"):
        ensure_generated(root, {"a": 1}, generate, MANIFEST, _read_params)
    assert _names(root) == ["thesis.txt"]
    assert _names(tmp_path) == ["ds"]


def test_failed_generation_keeps_the_old_copy(tmp_path: Path) -> None:
    _ensure(tmp_path / "ds", {"a": 1}, [])

    def crash(out: Path) -> None:
        (out / "half.txt").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ensure_generated(tmp_path / "ds", {"a": 2}, crash, MANIFEST, _read_params)
    wrong = _generator({"a": 3}, [])  # writes a manifest with other parameters than asked for
    with pytest.raises(RuntimeError, match="other parameters"):
        ensure_generated(tmp_path / "ds", {"a": 2}, wrong, MANIFEST, _read_params)
    assert _read_params(tmp_path / "ds") == {"a": 1}
    assert _names(tmp_path) == ["ds"]


@pytest.mark.parametrize("stale", [False, True])
def test_concurrent_callers_end_with_one_complete_copy(tmp_path: Path, stale: bool) -> None:
    root, params, calls, errors = tmp_path / "ds", {"a": 1, "b": 2}, [], []
    if stale:  # all callers also race to move the same outdated copy aside
        _ensure(root, {"old": 0}, [])
    start = threading.Barrier(6)

    def caller() -> None:
        start.wait()
        try:
            assert _ensure(root, params, calls, delay=0.2) == root
        except BaseException as e:  # reported below, from the main thread
            errors.append(e)

    threads = [threading.Thread(target=caller) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and len(calls) >= 2  # they did race: several generated a copy
    assert _names(root) == ["a.txt", "b.txt", MANIFEST]
    assert _read_params(root) == params
    assert _names(tmp_path) == ["ds"]  # no temporary or stale folders left
