"""Every option of every config group composes and instantiates; experiments and sweeps compose.

Parametrized over the files in conf/<group>/ (timm's "every registered variant" test, style.md section 7), so a
new option is covered without editing this file.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path

import hydra
import lightning as L
import pytest
import torch
import torch.nn.functional as F
from helpers import CONF, HAN_TEST_FONTS, HAS_FMNIST, ROOT, compose_cfg, make_cfg
from hydra.errors import ConfigCompositionException, InstantiationException
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from omegaconf import OmegaConf

from lsc.callbacks import DataWaitMonitor, EmbeddingPlot, LastCheckpoint, PredictorAccuracy
from lsc.centers import ClassCenters
from lsc.data import LSCDataModule
from lsc.models import Backbone, CEModule, LSCModule, PartialFCModule
from lsc.train import build, build_centers, instantiate_dict


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_every_group_has_options():
    # guards the parametrizations below against an empty glob (a moved conf/ would pass vacuously)
    for group in ("data", "centers", "model", "model/backbone", "loss", "trainer", "callbacks", "logger"):
        assert options(group), group
    assert {"digits", "synthetic", "fashion_mnist", "imagefolder", "cifar10", "cifar100"} <= set(options("data"))
    assert {"v21", "v22", "v11", "a_n", "a_nr", "a_np", "a_n_interp", "v22p", "table"} <= set(options("centers"))


# ---- data --------------------------------------------------------------------------------------------------

NEEDS_ROOT = {"imagefolder", "cifar10", "cifar100", "streaming"}
CLASSES = {"digits": 10, "synthetic": 10, "fashion_mnist": 10, "han_glyphs": 4, "fmnist_grid": 10_000}
SHAPES = {"digits": (1, 8, 8), "synthetic": (3, 32, 32), "fashion_mnist": (1, 28, 28), "han_glyphs": (1, 32, 32),
          "fmnist_grid": (1, 28, 28)}  # fmt: skip


@pytest.mark.parametrize("name", options("data"))
def test_data_option_instantiates(tmp_path, name):
    cfg = make_cfg(tmp_path, f"data={name}")
    assert cfg.data.seed == cfg.seed  # `seed: ${seed}` wiring
    if name in NEEDS_ROOT:
        if name in ("imagefolder", "streaming"):
            # root: null in the option file; Hydra wraps the constructor's ValueError
            with pytest.raises(InstantiationException, match=r"data\.root") as e:
                hydra.utils.instantiate(cfg.data)
            assert isinstance(e.value.__cause__, ValueError)
            cfg = make_cfg(tmp_path, f"data={name}", f"data.root={tmp_path / 'nonexistent'}")
        dm = hydra.utils.instantiate(cfg.data)
        assert isinstance(dm, LSCDataModule)
        with pytest.raises(FileNotFoundError, match=r"data\.root="):
            dm.num_classes  # noqa: B018
        return
    if name == "han_glyphs":  # the three small CJK fonts `make install` installs, not every system font
        fonts = [Path(p) for p in HAN_TEST_FONTS]
        if not all(p.exists() for p in fonts):
            pytest.skip("CJK test fonts not installed (make install)")
        cfg = make_cfg(tmp_path, "data=han_glyphs", f"data.font_dirs=[{','.join(map(str, fonts))}]",
                       "data.test_designs=[WenQuanYi Micro Hei]", "data.val_designs=[]", "data.min_designs=2",
                       "data.codepoints=[U+4E00,U+4E8C,U+4E09,U+5927]")  # fmt: skip
    if name in ("fashion_mnist", "fmnist_grid") and not HAS_FMNIST:
        pytest.skip("Fashion-MNIST IDX files not installed (make data)")
    dm = hydra.utils.instantiate(cfg.data)
    assert isinstance(dm, LSCDataModule)
    assert dm.num_classes == CLASSES[name]
    assert (dm.channels, dm.out_size, dm.out_size) == SHAPES[name]


def test_data_options_are_covered():
    assert set(options("data")) == NEEDS_ROOT | set(CLASSES)


# ---- centers -----------------------------------------------------------------------------------------------

SYSTEM_OF = {"a_nr": "a_n"}  # a_nr = a_n in random order
SHUFFLED = {"v21", "v22", "v11", "a_nr", "a_n_interp", "v22p"}


@pytest.mark.parametrize("name", options("centers"))
def test_centers_option_instantiates(tmp_path, name):
    extra = []
    if name == "table":
        table = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [-1, 0, 0], [0, -1, 0]])
        torch.save(table, tmp_path / "t.pt")
        extra = [f"centers.table={tmp_path / 't.pt'}"]
        with pytest.raises(ValueError, match=r"centers\.table"):
            build_centers(make_cfg(tmp_path, "centers=table").centers, 5)
    cfg = make_cfg(tmp_path, f"centers={name}", *extra)
    n_classes = 5 if name == "table" else 10
    cc = build_centers(cfg.centers, n_classes)
    assert isinstance(cc, ClassCenters)
    assert cc.n_classes == n_classes
    assert cc.spec["system"]["name"] == SYSTEM_OF.get(name, name)
    assert cc.shuffle == (name in SHUFFLED)
    assert cc.n_dim == (3 if name == "table" else 16)  # auto = max(n_min, auto_min_dim=16) at 10 classes
    c = cc(torch.arange(n_classes))
    assert c.shape == (n_classes, cc.n_dim)
    torch.testing.assert_close(c.norm(dim=1), torch.ones(n_classes))
    assert len({tuple(r) for r in c.tolist()}) == n_classes  # distinct centers


# ---- model and backbones -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", options("model"))
def test_model_option_instantiates(tmp_path, name):
    cfg = make_cfg(tmp_path, f"model={name}")
    dm, module, centers = build(cfg)
    x = torch.zeros(2, 3, 32, 32)
    if name == "lsc":
        assert isinstance(module, LSCModule) and centers is not None
        assert module(x).shape == (2, centers.n_dim)
    elif name == "partial_fc":  # an embedding; the class weights live in the head
        assert isinstance(module, PartialFCModule) and centers is None
        assert module(x).shape == (2, cfg.model.embed_dim)
        assert module.head.weight.shape == (dm.num_classes, cfg.model.embed_dim)
    else:
        assert isinstance(module, CEModule) and centers is None
        assert module(x).shape == (2, dm.num_classes)
    opt = module.configure_optimizers()
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["lr"] == cfg.model.optimizer.lr


BACKBONE_FEATURES = {"test_vit": 64, "vit_small_patch16_224": 384, "resnet18": 512}  # timm's widths


@pytest.mark.parametrize("name", options("model/backbone"))
def test_backbone_option_instantiates(tmp_path, name):
    cfg = make_cfg(tmp_path, f"model/backbone={name}")
    kw = {"out_dim": 16, "in_chans": 3}
    if "img_size" in cfg.model.backbone:
        kw["img_size"] = 32  # what build() passes for `img_size: null`: the data's size
    bb = hydra.utils.instantiate(cfg.model.backbone, **kw)
    assert isinstance(bb, Backbone)
    if name in BACKBONE_FEATURES:
        assert bb.num_features == BACKBONE_FEATURES[name]
        assert isinstance(bb.proj, torch.nn.Linear) and bb.proj.in_features == BACKBONE_FEATURES[name]
    bb.eval()
    with torch.no_grad():
        z = bb(torch.randn(2, 3, 32, 32))
    assert z.shape == (2, 16) and torch.isfinite(z).all()


# ---- losses ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", options("loss"))
def test_loss_option_matches_formula(tmp_path, name):
    cfg = make_cfg(tmp_path, f"loss={name}", "centers=v21", "centers.n_dim=6")
    loss = hydra.utils.instantiate(cfg.loss)
    cc = build_centers(cfg.centers, 10)
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(7, 6, generator=g), torch.randint(0, 10, (7,), generator=g)
    pos = cc.positions(y)
    assert set(pos.unique().tolist()) <= {-1.0, 0.0, 1.0}  # raw V^21 entries
    cos = 1 - F.cosine_similarity(z, pos, dim=1).mean()  # the unit center is pos / |pos|
    dist = (torch.exp(torch.clamp((z - pos).norm(dim=1) - 1.0, min=0)) - 1).mean()  # radius 1
    if name == "softmax":  # dense cross-entropy over every vector of V_6^21 (60 vectors), margin on the target
        every = cc.system.vectors(torch.arange(cc.system.count), normalize=True)
        logits = F.normalize(z, dim=1) @ every.T
        logits[torch.arange(7), cc.index_of(y)] -= cfg.loss.margin
        want = F.cross_entropy(cfg.loss.scale * logits, cc.index_of(y))
    else:
        want = {"cos": cos, "dist": dist, "dist_cos": dist + cos}[name]
    torch.testing.assert_close(loss(z, y, cc), want)


# ---- trainer, callbacks, loggers ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", options("trainer"))
def test_trainer_option(tmp_path, name):
    cfg = make_cfg(tmp_path, f"trainer={name}")
    assert cfg.trainer.default_root_dir == str(tmp_path)
    if name in ("gpu", "ddp"):  # compose only on a CPU machine
        assert cfg.trainer.accelerator == "gpu"
        assert cfg.trainer.precision == "bf16-mixed"
        if name == "ddp":
            assert cfg.trainer.strategy == "ddp" and cfg.trainer.devices == 2
        return
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=[], logger=False)
    assert isinstance(trainer, L.Trainer)
    assert trainer.max_epochs == cfg.trainer.max_epochs
    assert trainer.world_size == (2 if name == "ddp_cpu" else 1)
    if name != "default":
        assert type(trainer.accelerator).__name__ == "CPUAccelerator"
    if name == "ddp_cpu":
        assert type(trainer.strategy).__name__ == "DDPStrategy"
        assert trainer.strategy._get_process_group_backend() == "gloo"  # CPU DDP = gloo


@pytest.mark.parametrize("name", options("callbacks"))
def test_callbacks_option(tmp_path, name):
    cfg = make_cfg(tmp_path, f"callbacks={name}", quiet=False)
    cbs = instantiate_dict(cfg.get("callbacks"))
    if name == "none":
        assert cbs == []
        return
    types = sorted(type(c).__name__ for c in cbs)
    assert types == sorted(
        t.__name__
        for t in (ModelCheckpoint, LastCheckpoint, PredictorAccuracy, EmbeddingPlot, RichProgressBar, DataWaitMonitor)
    )
    (best,) = [c for c in cbs if isinstance(c, ModelCheckpoint)]
    (last,) = [c for c in cbs if isinstance(c, LastCheckpoint)]
    assert best.dirpath == str(tmp_path / "checkpoints") and best.monitor == "val/acc"
    assert last.path == tmp_path / "checkpoints" / "last.ckpt" and last.every is None


@pytest.mark.parametrize("name", options("logger"))
def test_logger_option(tmp_path, name, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = make_cfg(tmp_path, f"logger={name}")
    loggers = instantiate_dict(cfg.logger)
    want = {"csv": ["CSVLogger"], "wandb": ["WandbLogger"], "tensorboard": ["TensorBoardLogger"]}
    want["many"] = sorted(want["csv"] + want["wandb"] + want["tensorboard"])
    assert sorted(type(lg).__name__ for lg in loggers) == want[name]
    for lg in loggers:
        assert str(lg.save_dir) == str(tmp_path)
    if name in ("wandb", "many"):
        assert cfg.logger.wandb.offline is True  # ${lsc_wandb_offline:} under WANDB_MODE=offline


def test_wandb_offline_unless_online(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert make_cfg(tmp_path, "logger=wandb").logger.wandb.offline is True  # no login prompt by default
    monkeypatch.setenv("WANDB_MODE", "online")
    assert make_cfg(tmp_path, "logger=wandb").logger.wandb.offline is False


# ---- experiments ---------------------------------------------------------------------------------------------


def _leaves(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _experiment_expectations(name: str) -> tuple[dict, dict]:
    """(group -> option, key -> value) an experiment file states, following `- <other experiment>` defaults."""
    # OmegaConf's YAML loader, as Hydra reads it (PyYAML alone reads `1e-4` as a string)
    raw = OmegaConf.to_container(OmegaConf.load(CONF / "experiment" / f"{name}.yaml"))
    groups, values = {}, {}
    for d in raw.pop("defaults", []):
        if isinstance(d, str):  # another experiment (vit_i1k_v21 extends vit_i1k)
            g, v = _experiment_expectations(d)
            groups.update(g)
            values.update(v)
        else:
            ((k, v),) = d.items()
            groups[k.removeprefix("override /")] = v
    values.update(_leaves(raw))
    return groups, values


@pytest.mark.parametrize("name", options("experiment"))
def test_experiment_composes(name):
    cfg = compose_cfg([f"+experiment={name}"])
    groups, values = _experiment_expectations(name)
    assert groups and values
    for group, option in groups.items():  # every group override took effect
        own = OmegaConf.load(CONF / group / f"{option}.yaml")
        node = OmegaConf.select(cfg, group.replace("/", "."))
        if "_target_" in own:
            assert node._target_ == own._target_, group
        if "system" in own:
            assert node.system == own.system, group
        if group == "trainer":
            assert node.accelerator == own.accelerator
    for key, value in values.items():  # and every value the file sets, including the inherited ones
        got = OmegaConf.select(cfg, key)
        got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
        assert got == value, key
    assert name in cfg.tags or cfg.tags[0] in name  # every experiment tags its runs


def test_experiment_needs_plus():
    # style.md trap 1: experiment is not in the defaults, so only the `+experiment=` form works
    with pytest.raises(ConfigCompositionException, match=r"\+experiment"):
        compose_cfg(["experiment=fmnist_enc"])


# ---- sweeps ----------------------------------------------------------------------------------------------------

GROUPS = {str(p.relative_to(CONF)) for p in CONF.rglob("*") if p.is_dir()}


@pytest.mark.parametrize("name", options("sweep"))
def test_sweep_keys_exist(name):
    cfg = compose_cfg([f"+sweep={name}"], return_hydra_config=True)
    assert cfg.hydra.mode.name == "MULTIRUN"
    params = cfg.hydra.sweeper.params
    assert params, "a sweep must sweep something"
    swept = {}
    for key, values in params.items():
        values = [v.strip() for v in str(values).split(",")]
        assert len(values) >= 2, key
        if key in GROUPS:  # a group sweep (model: lsc,ce): every value is an option file
            for v in values:
                assert (CONF / key / f"{v}.yaml").exists(), (key, v)
        else:
            sentinel = object()
            assert OmegaConf.select(cfg, key, default=sentinel) is not sentinel, f"swept key {key} not in config"
        swept[key] = values
    # every job of the grid composes, and the swept value lands where it should
    grid = list(itertools.product(*swept.values()))
    for combo in grid[:: max(1, len(grid) // 3)]:
        ovr = [f"+sweep={name}"] + [f"{k}={v}" for k, v in zip(swept, combo, strict=True)]
        job = compose_cfg(ovr)
        for k, v in zip(swept, combo, strict=True):
            if k in GROUPS:
                assert (
                    OmegaConf.select(job, k.replace("/", "."))._target_
                    == OmegaConf.load(CONF / k / f"{v}.yaml")._target_
                )
            else:
                assert str(OmegaConf.select(job, k)) == v


def test_eval_and_debug_configs_compose(tmp_path):
    ev = compose_cfg(["ckpt_path=/x.ckpt"], config_name="eval")
    assert ev.task_name == "eval" and ev.ckpt_path == "/x.ckpt"
    assert OmegaConf.to_container(ev.data) == OmegaConf.to_container(compose_cfg([]).data)  # same groups as train
    fdr = compose_cfg(["+debug=fdr"])
    assert fdr.trainer.fast_dev_run is True and fdr.logger is None
    lim = compose_cfg(["+debug=limit"])
    assert (lim.trainer.max_epochs, lim.trainer.limit_train_batches) == (2, 5)


def test_slurm_launcher_composes():
    cfg = compose_cfg(["hydra/launcher=slurm"], return_hydra_config=True)
    assert "submitit" in cfg.hydra.launcher._target_.lower()
    assert cfg.hydra.launcher.gpus_per_node == 1


def test_package_and_config_files_are_not_gitignored():
    """A fresh clone must have every module and config (a bare `data/` pattern would drop lsc/data, conf/data)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    files = [str(p.relative_to(ROOT)) for p in [*(ROOT / "lsc").rglob("*.py"), *CONF.rglob("*.yaml")]]
    p = subprocess.run(["git", "check-ignore", "--no-index", *files], cwd=ROOT, capture_output=True, text=True)
    ignored = p.stdout.split()
    assert not ignored, f"ignored by .gitignore: {ignored}"
