"""Faults during training: a kill while saving a checkpoint, a non-finite loss, unreadable training
samples beyond the limit, an epoch without a step, a dead DataLoader worker, files that are not
checkpoints. Real Lightning runs of the real modules on files written to tmp_path."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import hostile
import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from dense import build_model
from dense.data.info import DatasetInfo
from dense.data.report import DataError
from dense.lit.callbacks import (
    AtomicCheckpointIO,
    CheckpointSpaceError,
    DataHealth,
    DivergenceCheck,
    DivergenceError,
)
from dense.lit.checkpoint import CheckpointError, load_model_from_checkpoint, read_checkpoint
from dense.lit.coco_data import CocoDataModule
from dense.lit.detection import DetectionModule

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ atomic checkpoints
KILLER = textwrap.dedent(
    """
    import sys, torch
    from dense.lit.callbacks import AtomicCheckpointIO
    io = AtomicCheckpointIO()
    big = {"state_dict": {"w": torch.randn(64, 1024, 1024)}, "step": 2}  # 256 MiB: slow to write
    print("ready", flush=True)
    while True:
        io.save_checkpoint(big, sys.argv[1])
    """
)


def test_kill_during_save_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints" / "last.ckpt"
    good = {"state_dict": {"w": torch.arange(10.0)}, "step": 1}
    AtomicCheckpointIO().save_checkpoint(good, path)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLER, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 60
        while not list(path.parent.glob(".last.ckpt.*.tmp")):  # the save has started writing
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.001)
        time.sleep(0.05)  # mid-write
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    partial = list(path.parent.glob(".last.ckpt.*.tmp"))
    loaded = torch.load(path, weights_only=True)
    if loaded["step"] == 1:  # killed before its rename: the previous one, intact
        assert torch.equal(loaded["state_dict"]["w"], good["state_dict"]["w"])
        assert partial, "the kill should have left the unfinished temporary file, not touched last.ckpt"
    else:  # a whole save finished before the kill: the new one, intact
        assert loaded["state_dict"]["w"].shape == (64, 1024, 1024)


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 40 MiB tmpfs: a real full disk (needs root; skipped where mounting is not allowed)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mnt)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _intact(path: Path, good: dict) -> None:
    loaded = torch.load(path, weights_only=True)
    assert loaded["step"] == good["step"] and torch.equal(loaded["state_dict"]["w"], good["state_dict"]["w"])
    assert not list(path.parent.glob(".*.tmp")), "the temporary file must be removed"


def test_a_full_disk_keeps_the_last_checkpoint_and_says_so(small_disk: Path) -> None:
    path = small_disk / "checkpoints" / "last.ckpt"
    good = {"state_dict": {"w": torch.arange(10.0)}, "step": 1}
    io = AtomicCheckpointIO()
    io.save_checkpoint(good, path)
    # too little space for the tensors: refused before writing
    big = {"state_dict": {"w": torch.zeros(16, 2**20)}, "step": 2}  # 64 MiB
    space = rf"checkpoint folder {path.parent}: \d+ MiB free, writing last.ckpt needs about 8\d MiB; "
    kept = rf"the last good checkpoint is intact at {path} \(free some space, then resume with ckpt={path}\)$"
    with pytest.raises(CheckpointSpaceError, match=space + kept):
        io.save_checkpoint(big, path)
    _intact(path, good)
    # more bytes than its tensors (a large pickled object): the write itself fails with ENOSPC
    blob = {"state_dict": {"w": torch.zeros(1)}, "step": 3, "notes": b"x" * (60 * 2**20)}
    with pytest.raises(CheckpointSpaceError, match=r"writing last.ckpt needs about \d+ MiB; " + kept) as e:
        io.save_checkpoint(blob, path)
    assert "No space left on device" in repr(e.value.__cause__.__context__ or e.value.__cause__)
    _intact(path, good)


def test_too_little_free_space_is_refused_before_writing(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "checkpoints" / "last.ckpt"
    good = {"state_dict": {"w": torch.arange(10.0)}, "step": 1}
    io = AtomicCheckpointIO()
    io.save_checkpoint(good, path)
    written = path.stat().st_size
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=written + 2**20))
    with pytest.raises(
        CheckpointSpaceError, match=rf"{path.parent}: 1 MiB free, .* needs about 16 MiB; .*{path}"
    ):
        io.save_checkpoint(good, tmp_path / "checkpoints" / "epoch1.ckpt")
    _intact(path, good)
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


# ------------------------------------------------------------------------ a tiny detection run
def _module(**kwargs) -> DetectionModule:
    torch.manual_seed(0)
    model = build_model("detect", backbone="v3_small", num_classes=3, image_size=(64, 64), width_mult=0.5)
    info = DatasetInfo(
        num_classes=3, class_names=["bg", "square", "disc"], label_to_cat_id={1: 3, 2: 7}, val_ann_file="-"
    )
    opt = lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9)  # noqa: E731
    return DetectionModule(model=model, info=info, optimizer=opt, num_log_images=0, **kwargs)


class Batches(Dataset):
    """Detection batches of 2 random images; those in `nan_at` have a NaN box (a NaN box loss)."""

    def __init__(self, n: int, nan_at: tuple[int, ...] = ()) -> None:
        self.n, self.nan_at = n, nan_at

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(i)
        box = torch.tensor([[8.0, 8.0, 40.0, 40.0]])
        if i in self.nan_at:
            box[0, 2] = float("nan")
        targets = [{"boxes": box.clone(), "labels": torch.tensor([1]), "image_id": j} for j in range(2)]
        return torch.rand(2, 3, 64, 64, generator=g), targets


def _trainer(tmp_path: Path, callbacks, **kw) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        default_root_dir=tmp_path,
        **kw,
    )


def _loader(ds: Dataset) -> DataLoader:
    return DataLoader(ds, batch_size=None)


def test_non_finite_loss_names_the_step_and_the_term(tmp_path: Path) -> None:
    module = _module()
    trainer = _trainer(tmp_path, [DivergenceCheck()])
    with pytest.raises(DivergenceError, match=r"diverged at step 2 .*loss is nan \(train/loss_box=nan\)"):
        trainer.fit(module, train_dataloaders=_loader(Batches(4, nan_at=(2,))))


def test_non_finite_steps_are_skipped_up_to_the_limit(tmp_path: Path) -> None:
    module = _module()
    seen: dict[int, dict[str, torch.Tensor]] = {}

    class Snapshot(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen[batch_idx] = {k: v.clone() for k, v in pl_module.model.state_dict().items()}

    check = DivergenceCheck(max_skipped_steps=1)
    trainer = _trainer(tmp_path, [check, Snapshot()])
    trainer.fit(module, train_dataloaders=_loader(Batches(4, nan_at=(1,))))
    assert check.skipped_steps == [1] and trainer.global_step == 4
    # the NaN step changed no weight (BatchNorm buffers move in the forward pass, not the step)
    params = dict(module.model.named_parameters())
    for name in params:
        assert torch.equal(seen[1][name], seen[2][name]), name
        assert torch.isfinite(params[name]).all()
    assert any(not torch.equal(seen[2][n], seen[3][n]) for n in params)  # the next step did update
    # a second one is over the limit
    check = DivergenceCheck(max_skipped_steps=1)
    with pytest.raises(DivergenceError, match="1 earlier step"):
        _trainer(tmp_path, [check]).fit(_module(), train_dataloaders=_loader(Batches(4, nan_at=(0, 2))))


# ------------------------------------------------------------------- unreadable training samples
def _coco_root(tmp_path: Path, n_train: int, broken: int) -> Path:
    root = tmp_path / "coco"
    hostile.coco_set(root, n_train, split="train2017")
    hostile.coco_set(root, 2, split="val2017")
    for s in ("train2017", "val2017"):
        (root / "annotations" / f"{s}.json").rename(root / "annotations" / f"instances_{s}.json")
    for k in range(1, broken + 1):
        hostile.truncated_jpeg(root / "train2017", {"file_name": f"{k:04d}.jpg"})
    return root


def _fit_coco(tmp_path: Path, root: Path, health: DataHealth) -> pl.Trainer:
    dm = CocoDataModule(root, image_size=64, batch_size=2, num_workers=0, augment="flip")
    trainer = _trainer(tmp_path, [health])
    trainer.fit(_module(), datamodule=dm)
    return trainer


def test_skipped_samples_are_counted_and_reported(tmp_path: Path) -> None:
    health = DataHealth(max_skipped_fraction=0.2)
    trainer = _fit_coco(tmp_path, _coco_root(tmp_path, 8, 1), health)
    assert trainer.global_step > 0
    assert health.summary() == {
        "skipped_samples_per_epoch": [1],
        "skipped_files": ["0001.jpg"],
        "num_skipped_files": 1,
    }


def test_too_many_skipped_samples_stop_the_run(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"epoch 0: 3 of 8 training samples \(37.5%\) .*0001.jpg"):
        _fit_coco(tmp_path, _coco_root(tmp_path, 8, 3), DataHealth(max_skipped_fraction=0.2))


def test_an_epoch_without_a_step_stops_the_run(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="epoch 0 made no optimizer step .*4 unreadable"):
        _fit_coco(tmp_path, _coco_root(tmp_path, 4, 4), DataHealth(max_skipped_fraction=1.0))


# ------------------------------------------------------------------------------ DataLoader worker
_KILLED_WORKER = textwrap.dedent(
    """
    import os, signal, sys, time
    import torch
    from torch.utils.data import Dataset
    from dense.errors import UserError, restore_sigchld, worker_deaths
    from dense.lit.datamodule import TaskDataModule

    def connection_reset():
        raise ConnectionResetError(104, "Connection reset by peer")

    class Reset:
        # Unpickled by the main process while it reads the batch from the loader's queue: where
        # fetching a tensor's file descriptor from a worker that just died raises this error.
        def __reduce__(self):
            return connection_reset, ()

    class Faulty(Dataset):
        def __init__(self, how):
            self.how = how

        def __len__(self):
            return 16

        def __getitem__(self, i):
            if i == 5 and self.how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer would
            if i == 5 and self.how == "reset":
                return Reset()
            if i == 5 and self.how == "dataset":  # the data set's own error: not a dead worker
                raise ConnectionResetError("the data set's network file system")
            return torch.zeros(2)

    dm = TaskDataModule(sys.argv[1], batch_size=1, num_workers=2)
    dm.collate_fn = list  # batches as lists of samples (a Reset is no tensor)
    for how in ("kill", "reset", "dataset"):
        loader = dm.loader(Faulty(how), 1, train=False)
        assert loader.timeout == 0  # a timeout would replace torch's 5-second check of its workers
        started = time.monotonic()
        try:
            with worker_deaths("lower data.num_workers", checkpoint=sys.argv[1] + "/last.ckpt"):
                list(loader)
        except (UserError, RuntimeError, ConnectionResetError) as e:
            print(f"{how} {time.monotonic() - started:.1f} s: {type(e).__name__}: {e}", flush=True)
        if how == "kill":  # torch's SIGCHLD handler is set aside, then given back for the next job
            aside = signal.getsignal(signal.SIGCHLD) is signal.SIG_DFL
            restore_sigchld()
            print(f"sigchld aside {aside} restored {signal.getsignal(signal.SIGCHLD) is not signal.SIG_DFL}")
    """
)


def test_a_killed_loader_worker_is_a_clear_error_not_a_hang(tmp_path: Path) -> None:
    # In a fresh interpreter: forking loader workers from a pytest-xdist worker, whose other
    # threads may hold locks, can deadlock the children before they run (seen once in CI).
    (tmp_path / "last.ckpt").write_bytes(b"")
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_WORKER, str(tmp_path)], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # torch names the worker from its SIGCHLD handler ("is killed by signal") or its 5-second check
    # ("exited unexpectedly"); a worker that dies while the main process reads its batch surfaces
    # as a bare ConnectionResetError / EOFError raised where torch reads its queue (seen in CI):
    # all end as one clear message with the fix and the checkpoint to resume from
    clear = (
        r"WorkerDiedError: a DataLoader worker process died \((?P<what>.*)\): often the out-of-memory "
        rf"killer; lower data.num_workers; resume with ckpt={re.escape(str(tmp_path))}/last.ckpt$"
    )
    assert "sigchld aside True restored True" in proc.stdout, proc.stdout[-2000:]
    found = {m.group(1): m for m in re.finditer(r"^(\w+) (\d+\.\d) s: (.*)$", proc.stdout, re.M)}
    assert set(found) == {"kill", "reset", "dataset"}, proc.stdout[-2000:]
    for how in ("kill", "reset"):
        message = re.match(clear, found[how].group(3))
        assert message and float(found[how].group(2)) < 30, proc.stdout[-2000:]
    worker = r"DataLoader worker \(pid(\(s\))? \d+\) (is killed by signal|exited unexpectedly)"
    # a SIGKILLed worker is named by torch, or (when it dies mid-transfer) by the bare error of
    # the broken connection: ConnectionResetError or EOFError (both seen in CI)
    killed = re.match(clear, found["kill"].group(3))["what"]
    bare = r"(ConnectionResetError|EOFError) while reading a batch from it"
    assert re.fullmatch(worker + ".*", killed) or re.fullmatch(bare, killed), killed
    assert (
        re.match(clear, found["reset"].group(3))["what"]
        == "ConnectionResetError while reading a batch from it"
    )
    # the same error type raised by the data set inside a worker is the data set's, kept as it is
    assert found["dataset"].group(3).startswith("ConnectionResetError: Caught ConnectionResetError in"), (
        proc.stdout[-2000:]
    )


# ------------------------------------------------------------------------- not a checkpoint
def test_files_that_are_not_checkpoints_say_what_they_are(tmp_path: Path) -> None:
    text = tmp_path / "notes.ckpt"
    text.write_text("epoch 3 was good\n")
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"encoder.w": torch.zeros(2)}, "pytorch-lightning_version": "2.5"}, other)
    plain = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(2)}, plain)
    pickled = tmp_path / "pickled.ckpt"
    torch.save({"obj": DataError("x")}, pickled)  # an arbitrary Python object
    truncated = tmp_path / "truncated.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(100_000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:50_000])
    cases = {
        text: r"is a text file \(starts with 'epoch 3 was good'\)",
        empty: "is an empty file",
        other: r"Lightning / torch checkpoint of another project \(state_dict keys \['encoder.w'\]",
        plain: r"a plain state dict of 1 tensors",
        pickled: "pickled Python objects that weights_only=True refuses",
        truncated: "truncated or damaged zip archive",
    }
    for path, message in cases.items():
        with pytest.raises(CheckpointError, match=message) as e:
            load_model_from_checkpoint(path, task="detect")
        assert str(e.value).startswith(str(path)) and "expected a checkpoint written by dense" in str(e.value)
    # the other task's checkpoint
    module = _module()
    trainer = _trainer(tmp_path, [], max_steps=1)
    trainer.fit(module, train_dataloaders=_loader(Batches(1)))
    ckpt = tmp_path / "detect.ckpt"
    trainer.save_checkpoint(ckpt)
    assert read_checkpoint(ckpt)["dense_model"]["task"] == "detect"
    with pytest.raises(CheckpointError, match=r"holds a 'detect' model, expected 'segment'"):
        load_model_from_checkpoint(ckpt, task="segment")
