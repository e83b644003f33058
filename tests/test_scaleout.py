"""Scale-out: the global-batch rule, the trainer presets (cpu, ddp_cpu, ddp), SyncBatchNorm, the
SLURM launcher config, and DDP training runs of tools/train.py on the CPU (docs/scale-out.md)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from lit_runs import ROOT, check, run_tool

CONF = ROOT / "conf"


def _compose(overrides: list[str], config_name: str = "train", hydra: bool = False):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides, return_hydra_config=hydra)


def _trainer(cfg, tmp_path: Path, **overrides):
    """The composed trainer, built as tools/train.py builds it (nothing is launched yet)."""
    from hydra.utils import instantiate

    from dense.lit.config import trainer_config

    return instantiate(
        trainer_config(cfg),
        logger=False,
        enable_checkpointing=False,
        default_root_dir=str(tmp_path),
        **overrides,
    )


def _batch(cfg, trainer) -> int:
    """The training batch per process that the composed datamodule derives under `trainer`."""
    from hydra.utils import instantiate

    from dense.lit.config import datamodule_kwargs

    dm = instantiate(cfg.task.datamodule, **datamodule_kwargs(cfg))
    dm.trainer = trainer
    return dm._derive_batch("fit")


# --------------------------------------------------------------------------------------------------
# the global-batch rule
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["detect", "segment"])
def test_single_process_keeps_the_recipe_batch(task, tmp_path):
    """`make train` / `make train-segment`: one process, batch 4 = the recipe's global batch."""
    cfg = _compose([f"task={task}"])
    assert cfg.recipe.global_batch == cfg.data.global_batch_size == 4 and cfg.data.batch_size is None
    assert _batch(cfg, _trainer(cfg, tmp_path)) == 4


def test_processes_share_the_global_batch(tmp_path):
    cfg = _compose(["trainer=ddp_cpu"])
    trainer = _trainer(cfg, tmp_path)
    assert trainer.num_devices * trainer.num_nodes == 2
    assert _batch(cfg, trainer) == 2  # 4 / 2 processes; the learning rate stays the recipe's
    assert cfg.optim.lr == _compose([]).optim.lr
    # gradient accumulation counts as processes: 4 / (2 x 2)
    assert _batch(cfg, _trainer(cfg, tmp_path, accumulate_grad_batches=2)) == 1
    # an explicit per-process batch wins over the rule
    mine = _compose(["trainer=ddp_cpu", "data.batch_size=3"])
    assert _batch(mine, _trainer(mine, tmp_path)) == 3


@pytest.mark.parametrize(("experiment", "per_process"), [("ssdlite_coco", 24), ("lraspp_cityscapes", 8)])
def test_published_recipes_split_over_their_gpus(experiment, per_process, tmp_path):
    """192 over 8 GPUs (torchvision's 24 per GPU), 16 over 2 (the paper's 8); 4 nodes x 4 GPUs of
    the COCO recipe give 12 per GPU with the same learning rate."""
    cfg = _compose([f"experiment={experiment}"])
    assert cfg.data.batch_size is None and cfg.data.global_batch_size == cfg.recipe.global_batch
    assert _batch(cfg, _trainer(cfg, tmp_path, accelerator="cpu")) == per_process
    if experiment == "ssdlite_coco":
        cfg = _compose([f"experiment={experiment}", "trainer.devices=4", "trainer.num_nodes=4"])
        assert _batch(cfg, _trainer(cfg, tmp_path, accelerator="cpu")) == 12 and cfg.optim.lr == 0.15


def test_indivisible_global_batch_names_the_numbers(tmp_path):
    cfg = _compose(["trainer=ddp_cpu", "trainer.devices=3"])
    with pytest.raises(ValueError) as e:
        _batch(cfg, _trainer(cfg, tmp_path))
    msg = str(e.value)
    for part in ("global batch 4", "trainer.devices=3", "trainer.num_nodes=1", "data.batch_size"):
        assert part in msg, msg
    # an explicit per-process batch needs no division
    ok = _compose(["trainer=ddp_cpu", "trainer.devices=3", "data.batch_size=2"])
    assert _batch(ok, _trainer(ok, tmp_path)) == 2


def test_datamodule_without_a_recipe_keeps_its_defaults(tmp_path):
    from dense.lit.coco_data import CocoDataModule

    dm = CocoDataModule(tmp_path)
    assert dm.batch_size == dm.val_batch_size == 8
    with pytest.raises(ValueError, match="global_batch_size=0"):
        CocoDataModule(tmp_path, global_batch_size=0)


# --------------------------------------------------------------------------------------------------
# presets: ddp_cpu, ddp, SyncBatchNorm
# --------------------------------------------------------------------------------------------------
def test_ddp_cpu_preset_is_gloo_ddp(tmp_path):
    from lightning.pytorch.strategies import DDPStrategy

    cfg = _compose(["trainer=ddp_cpu"])
    trainer = _trainer(cfg, tmp_path)
    assert isinstance(trainer.strategy, DDPStrategy)
    assert trainer.strategy._process_group_backend == "gloo"
    assert trainer.num_devices == 2 and trainer.num_nodes == 1
    assert cfg.trainer.sync_batchnorm is False  # torch's SyncBatchNorm rejects CPU tensors
    assert _compose(["trainer=cpu"]).trainer.sync_batchnorm is False
    ev = _compose(["trainer=ddp_cpu", f"ckpt={CONF / 'train.yaml'}"], "eval")
    assert ev.trainer.strategy.process_group_backend == "gloo"


def test_ddp_preset_syncs_batchnorm(tmp_path):
    """Under trainer=ddp Lightning turns every BatchNorm of the model into a SyncBatchNorm."""
    import dense

    cfg = _compose(["trainer=ddp", "trainer.devices=2"])
    assert cfg.trainer.sync_batchnorm is True
    trainer = _trainer(cfg, tmp_path, accelerator="cpu")  # the conversion is the same on GPUs
    model = dense.build_model("detect", "v3_small", num_classes=3, width_mult=0.35, image_size=128)
    converted = trainer.strategy._layer_sync.apply(model)
    kinds = {type(m) for m in converted.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    assert kinds == {torch.nn.SyncBatchNorm}
    off = _trainer(
        _compose(["trainer=ddp", "trainer.devices=2", "trainer.sync_batchnorm=false"]),
        tmp_path,
        accelerator="cpu",
    )
    assert off.strategy._layer_sync is None


# --------------------------------------------------------------------------------------------------
# SLURM: what submitit is given, and what Lightning makes of the job
# --------------------------------------------------------------------------------------------------
SLURM_OVERRIDES = [
    "hydra/launcher=slurm",
    "trainer=ddp",
    "trainer.num_nodes=2",
    "trainer.devices=4",
    "hydra.launcher.partition=gpu",
]


def test_slurm_launcher_submits_the_trainer_layout(tmp_path, monkeypatch):
    """The real launcher submits (sbatch and srun replaced by stubs): the job script asks for the
    trainer's nodes and one task and one GPU per device, and SIGUSR1 before the time limit."""
    import submitit
    from hydra.utils import instantiate

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\necho 'Submitted batch job 4242'\n")
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path('/usr/bin')}:{Path('/bin')}")
    monkeypatch.setattr(submitit.core.core.Job, "results", lambda self: [None])  # no waiting

    cfg = _compose([*SLURM_OVERRIDES, f"hydra.sweep.dir={tmp_path / 'sweep'}"], hydra=True)
    launcher = instantiate(cfg.hydra.launcher)
    assert launcher.params["max_num_timeout"] == 0  # Lightning requeues, not submitit
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    launcher.launch([["seed=1"]], initial_job_idx=0)
    (script,) = (tmp_path / "sweep" / ".submitit").rglob("*_submission.sh")
    flags = {line.split("=")[0]: line.partition("=")[2] for line in script.read_text().splitlines()}
    assert flags["#SBATCH --nodes"] == "2" and flags["#SBATCH --ntasks-per-node"] == "4"
    assert flags["#SBATCH --gpus-per-node"] == "4" and flags["#SBATCH --partition"] == "gpu"
    assert int(flags["#SBATCH --nodes"]) == cfg.trainer.num_nodes
    assert (
        int(flags["#SBATCH --ntasks-per-node"])
        == int(flags["#SBATCH --gpus-per-node"])
        == cfg.trainer.devices
    )
    assert flags["#SBATCH --time"] == "4320" and "#SBATCH --requeue" in flags
    assert flags["#SBATCH --signal"] == "USR1@120"  # Lightning's requeue signal (below)


def test_slurm_job_layout_is_what_lightning_expects(tmp_path, monkeypatch):
    """Inside the job (SLURM's variables for task 5 of 2 nodes x 4 tasks) the composed trainer is
    a SLURM run of 8 processes that requeues itself on SIGUSR1; the per-process batch follows."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    env = {
        "SLURM_NTASKS": "8",
        "SLURM_NTASKS_PER_NODE": "4",
        "SLURM_NNODES": "2",
        "SLURM_JOB_NAME": "train",
        "SLURM_JOB_ID": "4242",
        "SLURM_PROCID": "5",
        "SLURM_LOCALID": "1",
        "SLURM_NODEID": "1",
        "SLURM_NODELIST": "gpu[01-02]",
        "MASTER_ADDR": "gpu01",
        "MASTER_PORT": "12910",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cfg = _compose([*SLURM_OVERRIDES, "data=coco"])
    trainer = _trainer(cfg, tmp_path, accelerator="cpu")  # GPUs or not, the layout is the same
    slurm = trainer._accelerator_connector.cluster_environment
    assert isinstance(slurm, SLURMEnvironment) and slurm.auto_requeue
    assert slurm.requeue_signal == signal.SIGUSR1
    assert (trainer.world_size, trainer.global_rank, trainer.local_rank) == (8, 5, 1)
    assert _batch(cfg, trainer) == 192 // 8
    # Lightning's launcher checks the job against the trainer (as here) and refuses another layout:
    # why the launcher config interpolates the trainer's numbers
    slurm.validate_settings(num_devices=trainer.num_devices, num_nodes=trainer.num_nodes)
    other = _trainer(_compose([*SLURM_OVERRIDES[1:3], "trainer.devices=2"]), tmp_path, accelerator="cpu")
    with pytest.raises(ValueError, match="ntasks-per-node=4"):
        slurm.validate_settings(num_devices=other.num_devices, num_nodes=other.num_nodes)


# --------------------------------------------------------------------------------------------------
# DDP training on the CPU: rank-0 outputs, reproducibility
# --------------------------------------------------------------------------------------------------
DDP_TRAIN = [
    "tools/train.py",
    "task=detect",
    "backbone=v3_small",
    "backbone.width_mult=0.35",
    "trainer=ddp_cpu",
    "trainer.max_epochs=2",
    "trainer.budget=null",
    "trainer.check_val_every_n_epoch=1",
    "trainer.num_sanity_val_steps=0",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "data.synthetic_options.num_train=8",
    "data.synthetic_options.num_val=5",  # not a multiple of 2 processes
    "data.synthetic_options.image_size=128",
    "data.val_batch_size=2",
    "data.num_workers=0",
    "head.image_size=128",
]


def _ddp_train(tmp_path: Path, name: str, seed: int) -> tuple[Path, dict]:
    run_dir = tmp_path / name
    check(
        run_tool([*DDP_TRAIN, f"seed={seed}", f"data.root={tmp_path / 'shapes'}", f"hydra.run.dir={run_dir}"])
    )
    return run_dir, json.loads((run_dir / "metrics.json").read_text())


def _weights(path: str) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_ddp_cpu_training_writes_once_and_repeats(tmp_path):
    """Two 2-process runs with the same seed end with identical metrics and weights (the
    DistributedSampler is seeded from seed_everything and reshuffles every epoch); another seed
    does not. Rank 0 alone writes the run outputs; rank 1 leaves only its log."""
    run_a, a = _ddp_train(tmp_path, "a", seed=0)
    run_b, b = _ddp_train(tmp_path, "b", seed=0)
    run_c, c = _ddp_train(tmp_path, "c", seed=1)

    # 8 images, global batch 4 = 2 per process: 2 steps per epoch, 2 epochs
    assert a["global_step"] == 4 and a["epoch"] == 2

    def results(m: dict) -> dict:  # what the weights decide (not paths or timings)
        return {k: v for k, v in m.items() if k.startswith(("val/", "best_val/", "per_category"))}

    assert results(a) == results(b) and results(a)["val/map"] is not None
    wa, wb, wc = (_weights(m["checkpoint"]) for m in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)

    assert sorted(p.name for p in run_a.iterdir()) == sorted(
        [
            ".hydra",
            "checkpoints",
            "csv",
            "curves.png",
            "metrics.json",
            "tb",
            "train.log",
            "train_ddp_process_1.log",
        ]
    )
    ckpts = sorted(p.name for p in (run_a / "checkpoints").iterdir())
    assert ckpts == sorted(["last.ckpt", Path(a["best_checkpoint"]).name])
    assert sorted(p.name for p in (run_a / ".hydra").iterdir()) == [
        "config.yaml",
        "hydra.yaml",
        "overrides.yaml",
    ]
    assert len(list((run_a / "tb").glob("events.out.tfevents.*"))) == 1
    # the CSV log holds each logged step once (rank 0's)
    rows = (run_a / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    steps = [r.split(",")[header.index("step")] for r in rows[1:] if r.split(",")[header.index("train/loss")]]
    assert len(steps) == len(set(steps)) == 4
    assert "Initializing distributed: GLOBAL_RANK: 1" in (run_a / "train_ddp_process_1.log").read_text()


def test_ddp_train_sampler_is_seeded_and_reshuffled_each_epoch(tmp_path):
    """The loader Lightning hands each rank under trainer=ddp_cpu: a DistributedSampler seeded from
    seed_everything, disjoint halves of the set, another order every epoch (set_epoch), and the
    derived per-process batch."""
    import lightning.pytorch as pl
    from hydra.utils import instantiate
    from lightning.pytorch.trainer.states import RunningStage
    from torch.utils.data import DistributedSampler

    from dense.lit.config import datamodule_kwargs

    tiny = ["data.synthetic_options.num_train=16", "data.synthetic_options.num_val=2"]
    cfg = _compose(["trainer=ddp_cpu", f"data.root={tmp_path / 'shapes'}", "head.image_size=64", *tiny])

    def loader(seed: int, rank: int):
        pl.seed_everything(seed)
        trainer = _trainer(cfg, tmp_path)
        trainer.strategy.cluster_environment.set_global_rank(rank)  # this process plays `rank`
        dm = instantiate(cfg.task.datamodule, **datamodule_kwargs(cfg))
        dm.trainer = trainer
        dm.prepare_data()
        dm.setup("fit")
        return trainer._data_connector._prepare_dataloader(
            dm.train_dataloader(), shuffle=True, mode=RunningStage.TRAINING
        )

    def order(dl, epoch: int) -> list[int]:
        dl.sampler.set_epoch(epoch)
        return list(dl.sampler)

    rank0, rank1 = loader(7, 0), loader(7, 1)
    assert isinstance(rank0.sampler, DistributedSampler) and rank0.batch_size == 2
    assert rank0.sampler.seed == 7 and rank0.sampler.num_replicas == 2
    assert sorted(order(rank0, 0) + order(rank1, 0)) == list(range(16))
    assert order(rank0, 0) != order(rank0, 1)  # reshuffled every epoch
    assert order(loader(7, 0), 1) == order(rank0, 1)  # and the same in every run of that seed
    assert order(loader(8, 0), 0) != order(rank0, 0)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["command line", "sweep config"])
def test_ddp_cpu_multirun_has_one_sweep_folder(tmp_path, how):
    """Rank 1 of each job runs that job alone, also when a config group (sweep=, hparams_search=)
    sets hydra.mode=MULTIRUN."""
    sweeps = tmp_path / "sweeps"
    if how == "command line":
        sweep = ["-m", "seed=0,1"]
    else:
        (tmp_path / "conf" / "sweep").mkdir(parents=True)
        (tmp_path / "conf" / "sweep" / "seeds.yaml").write_text(
            "# @package _global_\nhydra:\n  mode: MULTIRUN\n  sweeper:\n    params:\n      seed: 0,1\n"
        )
        sweep = [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "sweep=seeds"]
    proc = run_tool(
        [
            "tools/train.py",
            *sweep,
            *[a for a in DDP_TRAIN[1:] if not a.startswith("trainer.max_epochs")],
            "trainer.max_epochs=1",
            f"data.root={tmp_path / 'shapes'}",
            f"hydra.sweep.dir={sweeps}/" + "${now:%H-%M-%S}",
        ]
    )
    check(proc)
    (sweep,) = sweeps.iterdir()  # rank 1 must not open a second one
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit())
    assert len(jobs) == 2
    for job in jobs:
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["global_step"] == 2  # both jobs on 2 processes
        assert (job / "train_ddp_process_1.log").is_file()


def test_an_indivisible_global_batch_is_a_config_error_before_any_work():
    from hydra import compose, initialize_config_dir

    from dense.lit.config import ConfigError, validate_config

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["trainer=ddp_cpu", "data.global_batch_size=5"])
        ok = compose(config_name="train", overrides=["trainer=ddp_cpu", "data.batch_size=5"])
    with pytest.raises(ConfigError, match=r"global batch 5 .* = 2"):
        validate_config(cfg, conf_dir=ROOT / "conf")
    validate_config(ok, conf_dir=ROOT / "conf")  # an explicit per-process batch needs no division
