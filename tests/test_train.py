"""The training app in-process: `lsc.train.train(cfg)` on tiny CPU configs, checkpoints, eval, loggers, errors."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import re
from pathlib import Path

import matplotlib.image
import pytest
import torch
from helpers import (
    CONF,
    HAN_TEST_FONTS,
    HAS_FMNIST,
    HAS_HAN_TEST_FONTS,
    expected_n_dim,
    make_cfg,
    make_cifar,
    make_image_folder,
)
from hydra.errors import InstantiationException
from omegaconf import OmegaConf, open_dict

import lsc.eval
import lsc.train
from lsc.centers import ClassCenters
from lsc.losses import SoftmaxLoss
from lsc.models import CEModule, LSCModule

N_DIGITS = 1797  # scikit-learn's digits: 1,797 8x8 images


@pytest.fixture
def spy_build(monkeypatch):
    """Records what `train()` built: [(datamodule, module, centers)]."""
    built = []
    real = lsc.train.build

    def spy(cfg, ckpt=None, init=None, ckpt_path=None):
        out = real(cfg, ckpt=ckpt, init=init, ckpt_path=ckpt_path)
        built.append(out)
        return out

    monkeypatch.setattr(lsc.train, "build", spy)
    return built


# ---- fast_dev_run over data x backbone x centers x loss ----------------------------------------------------

DATA = {
    "digits": ["data=digits"],
    "synthetic": ["data=synthetic"],
    "fashion_mnist": ["data=fashion_mnist"],
    "digits_inst": ["data=digits", "data.instance_labels=true"],
}
N_CLASSES = {"digits": 10, "synthetic": 10, "fashion_mnist": 10, "digits_inst": N_DIGITS}
IMG = {"digits": 8, "synthetic": 32, "fashion_mnist": 28, "digits_inst": 8}
PATCH = {"digits": 4, "synthetic": 8, "fashion_mnist": 7, "digits_inst": 4}  # ViT patch dividing the image
CENTERS = ["v21", "v22", "v11", "a_n", "a_nr", "a_np", "a_n_interp", "v22p"]
LOSSES = ["cos", "dist", "dist_cos"]
BACKBONES = ["encoder_small", "test_vit"]

# a covering set: every value of every axis at least once ...
_data = list(DATA)
COVER = [(_data[i % 4], BACKBONES[(i // 4 + i) % 2], c, LOSSES[i % 3]) for i, c in enumerate(CENTERS)]
# ... plus full crosses: every centers option at many classes (instance labels exercise the topk fallbacks),
# every loss x backbone, every data x backbone
CROSS = [("digits_inst", "encoder_small", c, "cos") for c in CENTERS]
CROSS += [("digits", b, "v21", loss) for b in BACKBONES for loss in LOSSES]
CROSS += [(d, b, "v22", "cos") for d in DATA for b in BACKBONES]
CROSS += [("digits", "encoder_small", c, loss) for c in CENTERS for loss in LOSSES]  # dist uses raw positions
CASES = list(dict.fromkeys(COVER + CROSS))


def test_cases_cover_every_axis():
    for axis, values in enumerate((list(DATA), BACKBONES, CENTERS, LOSSES)):
        assert {c[axis] for c in CASES} == set(values)


def _case_overrides(data, backbone, centers, loss):
    ovr = [*DATA[data], f"model/backbone={backbone}", f"centers={centers}", f"loss={loss}"]
    if backbone == "test_vit":
        ovr.append(f"model.backbone.patch_size={PATCH[data]}")
    return ovr + ["++trainer.fast_dev_run=true"]


@pytest.mark.parametrize("data,backbone,centers,loss", CASES, ids=["-".join(c) for c in CASES])
def test_fast_dev_run(tmp_path, spy_build, data, backbone, centers, loss):
    if data == "fashion_mnist" and not HAS_FMNIST:
        pytest.skip("Fashion-MNIST IDX files not installed (make data)")
    cfg = make_cfg(tmp_path, *_case_overrides(data, backbone, centers, loss))
    metrics = lsc.train.train(cfg)

    ((dm, module, cc),) = spy_build
    n_classes = N_CLASSES[data]
    assert dm.num_classes == n_classes
    n_dim = expected_n_dim(centers, n_classes)  # auto = max(n_min, 16), n_min from the closed-form counts
    assert cc.n_dim == n_dim and cc.n_classes == n_classes
    x, _ = next(iter(dm.val_dataloader()))
    assert x.shape[-1] == IMG[data]
    module.eval()
    with torch.no_grad():
        assert module(x).shape == (x.shape[0], n_dim)  # no classification layer: the head outputs n_dim

    assert math.isfinite(metrics["train/loss"]) and metrics["train/loss"] >= 0
    for k in ("val/acc", "val/acc_cossim", "val/acc_topk", "val/agreement"):
        assert 0.0 <= metrics[k] <= 1.0, k
    # both predictors are exact (ties -> lowest label), so they agree on every sample
    assert metrics["val/agreement"] == 1.0
    assert metrics["val/acc_cossim"] == metrics["val/acc_topk"] == metrics["val/acc"]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["n_dim"] == n_dim and saved["val/acc_topk"] == metrics["val/acc_topk"]


def test_fast_dev_run_ce_baseline(tmp_path, spy_build):
    cfg = make_cfg(tmp_path, "data=digits", "model=ce", "++trainer.fast_dev_run=true")
    metrics = lsc.train.train(cfg)
    ((dm, module, cc),) = spy_build
    assert cc is None and isinstance(module, CEModule)
    x, _ = next(iter(dm.val_dataloader()))
    module.eval()
    with torch.no_grad():
        assert module(x).shape == (x.shape[0], 10)  # logits over the 10 classes
    assert math.isfinite(metrics["train/loss"]) and 0 <= metrics["val/acc"] <= 1
    assert "val/acc_cossim" not in metrics  # PredictorAccuracy has nothing to compare for CE
    assert "n_dim" not in json.loads((tmp_path / "metrics.json").read_text())


# ---- every experiment, shrunk from outside (style.md section 7) --------------------------------------------

# what each experiment needs to run on a CPU in a second: fake data under data.root, small images, tiny samples;
# group choices, optimizer, schedule, precision and centers stay the experiment's own
IMAGES = {"data.img_size": 32}
SHRINK = {
    "enc_cinic": dict(root="folder", train_eval_size=8),
    "fmnist_enc": dict(root="fmnist"),
    "fmnist_inst": dict(root="fmnist", limit=500, val_size=16),
    "han_glyphs": dict(root="han"),
    "vit_1m": dict(root="folder", val_size=8, **IMAGES),
    "vit_cifar": dict(root="cifar"),
    "vit_i1k": dict(root="folder", train_eval_size=8, **IMAGES),
    "vit_i1k_v21": dict(root="folder", train_eval_size=8, **IMAGES),
}
# (system, n_classes of the shrunk data, auto_min_dim or a fixed n_dim)
EXPECT = {
    "enc_cinic": ("a_n", 3, 16),
    "fmnist_enc": ("v21", 10, 16),
    "fmnist_inst": ("v22", 500, 0),
    "han_glyphs": ("v21", 4, "256"),
    "vit_1m": ("v22", 12, 16),
    "vit_cifar": ("v21", 10, 16),
    "vit_i1k": ("a_n", 3, "384"),
    "vit_i1k_v21": ("v21", 3, 0),
}


def test_every_experiment_has_a_shrink():
    assert set(SHRINK) == set(EXPECT) == {p.stem for p in (CONF / "experiment").glob("*.yaml")}


@pytest.mark.parametrize("name", sorted(SHRINK))
def test_experiment_fast_dev_run(tmp_path, spy_build, name):
    shrink = dict(SHRINK[name])
    root = shrink.pop("root")
    if root == "fmnist":
        if not HAS_FMNIST:
            pytest.skip("Fashion-MNIST IDX files not installed (make data)")
        ovr = []
    elif root == "han":  # the three small CJK fonts `make install` installs, 4 ideographs
        if not HAS_HAN_TEST_FONTS:
            pytest.skip("CJK test fonts not installed (make install)")
        ovr = [f"data.font_dirs=[{','.join(HAN_TEST_FONTS)}]", "data.test_designs=[WenQuanYi Micro Hei]",
               "data.val_designs=[]", "data.min_designs=2", "data.codepoints=[U+4E00,U+4E8C,U+4E09,U+5927]",
               f"data.cache_dir={tmp_path / 'glyphs'}"]  # fmt: skip
    elif root == "cifar":
        make_cifar(tmp_path / "cifar", 10, n_train=20, n_test=8)
        ovr = [f"data.root={tmp_path / 'cifar'}"]
    else:  # 3 classes x 4 images per split; CINIC-10 names its validation folder valid/
        make_image_folder(tmp_path / "images", 3, 4, splits=("train", "val", "valid"), size=40)
        ovr = [f"data.root={tmp_path / 'images'}"]
    ovr += [f"data.{k.removeprefix('data.')}={v}" for k, v in shrink.items()]
    cfg = make_cfg(tmp_path / "run", f"+experiment={name}", *ovr, "data.batch_size=4", "data.num_workers=0")
    with open_dict(cfg):
        cfg.trainer.fast_dev_run = True
    assert cfg.trainer.accelerator == "cpu"  # TINY's trainer=cpu beat the experiment's trainer=gpu
    metrics = lsc.train.train(cfg)
    ((dm, module, cc),) = spy_build
    system, n_classes, dim = EXPECT[name]
    assert dm.num_classes == n_classes and cc.spec["system"]["name"] == system
    n_dim = int(dim) if isinstance(dim, str) else expected_n_dim(system, n_classes, floor=dim)
    assert cc.n_dim == n_dim
    # the many_classes study's recipe: data-aware assignment + full-system softmax for the instance-label runs;
    # and for han_glyphs (experiments/han_glyphs: data-aware + the margin softmax, 16,384 hidden behind 128)
    recipe = name in ("fmnist_inst", "vit_1m", "han_glyphs")
    assert (cc.assignment is not None) == recipe and isinstance(module.loss_fn, SoftmaxLoss) == recipe
    if name in ("fmnist_inst", "han_glyphs"):  # the studies' flat heads: 1,024 / 16,384 hidden units
        head = module.backbone.trunk.head
        assert head[-1].in_features == {"fmnist_inst": 1024, "han_glyphs": 16384}[name]
        first = head[0]  # han_glyphs: a bias-free 128-wide bottleneck before its hidden layer
        assert (first.out_features, first.bias is None) == ((128, True) if name == "han_glyphs" else (1024, False))
    x, _ = next(iter(dm.train_dataloader()))
    module.eval()
    with torch.no_grad():
        assert module(x).shape == (x.shape[0], n_dim)
    assert math.isfinite(metrics["train/loss"]) and 0 <= metrics["val/acc_topk"] <= 1


# ---- nothing n_classes-sized in LSC mode -----------------------------------------------------------------


def _shapes(module):
    return {k: tuple(v.shape) for k, v in [*module.named_parameters(), *module.named_buffers()]}


def test_lsc_has_no_n_classes_sized_state(tmp_path):
    # n_dim fixed (>= n_min(v21, 1e6) = 127): with `auto` the width itself would grow with n_classes
    common = ["data=synthetic", "centers=v21", "centers.n_dim=128"]
    small = lsc.train.build(make_cfg(tmp_path, *common, "data.num_classes=10"))[1]
    huge = lsc.train.build(make_cfg(tmp_path, *common, "data.num_classes=1000000"))[1]
    assert isinstance(huge, LSCModule) and huge.centers.n_classes == 1_000_000
    assert _shapes(small) == _shapes(huge)
    assert sum(p.numel() for p in small.parameters()) == sum(p.numel() for p in huge.parameters())
    assert max(max(s, default=1) for s in _shapes(huge).values()) < 10_000


def test_ce_classifier_grows_with_n_classes(tmp_path):
    common = ["data=synthetic", "model=ce"]
    small = lsc.train.build(make_cfg(tmp_path, *common, "data.num_classes=10"))[1]
    with torch.device("meta"):  # 128M parameters: shapes only, no memory
        huge = lsc.train.build(make_cfg(tmp_path, *common, "data.num_classes=1000000"))[1]
    last = small.backbone.trunk.head[-1]
    assert isinstance(last, torch.nn.Linear) and last.out_features == 10
    in_features = last.in_features  # encoder_small's hidden width
    n_small = sum(p.numel() for p in small.parameters())
    n_huge = sum(p.numel() for p in huge.parameters())
    assert n_huge - n_small == (10**6 - 10) * (in_features + 1)


def test_encoder_small_flat_hidden_width_from_the_config(tmp_path):
    """`model.backbone.hidden` widens the flat head's first linear layer: parameters grow by the closed form."""
    common = ["data=synthetic", "centers=v21", "centers.n_dim=16", "model/backbone=encoder_small_flat"]
    base = lsc.train.build(make_cfg(tmp_path, *common))[1].backbone.trunk.head
    wide = lsc.train.build(make_cfg(tmp_path, *common, "model.backbone.hidden=512"))[1].backbone.trunk.head
    feats = base[0].in_features  # 64 channels x 7 x 7
    assert feats == 64 * 7 * 7 and wide[0].in_features == feats
    widths = (base[0].out_features, wide[0].out_features, wide[-1].in_features, wide[-1].out_features)
    assert widths == (128, 512, 512, 16)
    n = [sum(p.numel() for p in h.parameters()) for h in (base, wide)]
    assert n == [(feats + 1) * h + (h + 1) * 16 for h in (128, 512)]


def test_encoder_head_depth_and_bottleneck(tmp_path):
    """`depth` stacks hidden layers, `bottleneck` puts a bias-free linear map before them: parameter counts by the
    closed form, and the head's output equals the same layers applied by hand (a rank-b first layer)."""
    common = ["data=synthetic", "centers=v21", "centers.n_dim=16", "model/backbone=encoder_small_flat"]
    feats, h, b = 64 * 7 * 7, 96, 8
    deep = lsc.train.build(make_cfg(tmp_path, *common, f"model.backbone.hidden={h}", "model.backbone.depth=2"))[1]
    neck = lsc.train.build(make_cfg(tmp_path, *common, f"model.backbone.hidden={h}", f"model.backbone.bottleneck={b}"))
    deep, neck = deep.backbone.trunk.head, neck[1].backbone.trunk.head
    n = [sum(p.numel() for p in m.parameters()) for m in (deep, neck)]
    assert n == [(feats + 1) * h + (h + 1) * h + (h + 1) * 16, feats * b + (b + 1) * h + (h + 1) * 16]
    x = torch.randn(5, feats)
    low = neck[0].weight  # (b, feats)
    by_hand = torch.relu(x @ low.T @ neck[1].weight.T + neck[1].bias) @ neck[3].weight.T + neck[3].bias
    torch.testing.assert_close(neck(x), by_hand)
    assert torch.linalg.matrix_rank(neck[1].weight @ low) == b
    with pytest.raises(InstantiationException, match="depth >= 1"):  # Hydra wraps the encoder's ValueError
        lsc.train.build(make_cfg(tmp_path, *common, "model.backbone.depth=0"))


# ---- 2 epochs on digits -> metrics.json, summary line, checkpoint, eval --------------------------------


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A 2-epoch digits run (v21, encoder_small); returns (run dir, cfg, metrics, printed output)."""
    run = tmp_path_factory.mktemp("digits_run")
    cfg = make_cfg(run, "data=digits", "data.batch_size=64", "trainer.max_epochs=2")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        metrics = lsc.train.train(cfg)
    return run, cfg, metrics, buf.getvalue()


def test_two_epochs_metrics_json_and_summary(digits_run):
    run, cfg, metrics, out = digits_run
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["epochs"] == 2 and saved["n_dim"] == 16
    for k in ("val/acc_cossim", "val/acc_topk"):
        assert 0.5 < saved[k] <= 1.0, k  # 2 epochs on digits learn something (chance is 0.1)
        assert saved[k] == pytest.approx(metrics[k], abs=1e-9)
    lines = [ln for ln in out.splitlines() if ln.startswith("lsc:")]
    assert len(lines) == 1, out
    pairs = dict(re.findall(r"(\S+)=(\S+)", lines[0]))
    for k in ("val/acc_cossim", "val/acc_topk"):
        assert float(pairs[k]) == pytest.approx(saved[k], abs=5e-5)  # printed with 4 decimals
    assert int(pairs["epochs"]) == 2 and int(pairs["n_dim"]) == 16
    assert not (run / "embeddings").exists()  # n_dim 16: no embedding plot


def test_summary_line_is_printed(tmp_path, capsys):
    cfg = make_cfg(tmp_path, "++trainer.fast_dev_run=true")
    metrics = lsc.train.train(cfg)
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("lsc:")]
    pairs = dict(re.findall(r"(\S+)=(\S+)", line))
    assert float(pairs["val/acc_cossim"]) == pytest.approx(metrics["val/acc_cossim"], abs=5e-5)
    assert float(pairs["val/acc_topk"]) == pytest.approx(metrics["val/acc_topk"], abs=5e-5)


def test_eval_reproduces_final_validation(digits_run, tmp_path):
    run, _, _, _ = digits_run
    saved = json.loads((run / "metrics.json").read_text())
    ckpt = run / "checkpoints" / "last.ckpt"
    ecfg = make_cfg(tmp_path, f"ckpt_path={ckpt}", config_name="eval")
    got = lsc.eval.evaluate(ecfg, str(ckpt))
    # digits has no test split: eval scores the held-out validation split (as val/), last.ckpt = final weights
    assert got["val/acc_cossim"] == pytest.approx(saved["val/acc_cossim"], abs=1e-6)
    assert got["val/acc_topk"] == pytest.approx(saved["val/acc_topk"], abs=1e-6)
    assert json.loads((tmp_path / "metrics.json").read_text())["val/acc_topk"] == got["val/acc_topk"]


def test_checkpoint_holds_centers_and_config(digits_run):
    run, cfg, _, _ = digits_run
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    want = ClassCenters("v21", 10, n_dim=16, seed=0, shuffle=True).spec  # built independently of the run
    assert ckpt["lsc_centers"] == want
    assert ckpt["lsc_config"] == OmegaConf.to_container(cfg, resolve=True)
    assert ckpt["epoch"] == 1  # 0-based: the end of the second epoch


@pytest.mark.parametrize("override", ["centers.seed=1", "centers=v22", "centers.n_dim=17", "centers.shuffle=false"])
def test_checkpoint_refuses_other_centers(digits_run, tmp_path, override):
    run, _, _, _ = digits_run
    ckpt_path = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    cfg = make_cfg(tmp_path, "data=digits", override)
    _, module, _ = lsc.train.build(cfg)
    with pytest.raises(ValueError, match="other class centers"):
        module.on_load_checkpoint(ckpt)
    # the same through the eval entry point (override on top of the stored config) ...
    ecfg = make_cfg(tmp_path, f"ckpt_path={ckpt_path}", override, config_name="eval")
    groups = {"centers"} if override.startswith("centers=") else set()
    with pytest.raises(ValueError, match="other class centers"):
        lsc.eval.evaluate(ecfg, str(ckpt_path), [override], groups)
    # ... and through resuming a training run (refused before anything is built, naming the key)
    key = "centers.system" if override == "centers=v22" else override.partition("=")[0]
    with pytest.raises(ValueError, match=rf"trained with other settings: .*{re.escape(key)} \("):
        lsc.train.train(make_cfg(tmp_path, "data=digits", override, f"ckpt_path={ckpt_path}", "trainer.max_epochs=3"))


def test_last_checkpoint_every_n_train_steps(tmp_path):
    # conf/callbacks/default.yaml: last.ckpt "every epoch (and every_n_train_steps)", the mid-epoch resume setting
    cfg = make_cfg(
        tmp_path,
        "data=digits",
        "data.batch_size=64",
        "callbacks.last_checkpoint.every_n_train_steps=5",
        "++trainer.limit_train_batches=12",
    )
    lsc.train.train(cfg)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert (ckpt["epoch"], ckpt["global_step"]) == (0, 12)  # written at the epoch end too, not only at step 10


# ---- loggers ---------------------------------------------------------------------------------------------


def test_csv_logger(tmp_path):
    cfg = make_cfg(tmp_path, "logger=csv", "data=digits", "data.batch_size=64", "trainer.max_epochs=2")
    lsc.train.train(cfg)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    with open(tmp_path / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    val = [r for r in rows if r.get("val/acc_cossim")]
    assert len(val) == 2  # one row per validation epoch
    for r in val:
        assert r["val/acc_topk"], "val/acc_cossim and val/acc_topk are logged in the same row"
        for k in ("val/acc_cossim", "val/acc_topk"):
            assert 0.0 <= float(r[k]) <= 1.0
    assert float(val[-1]["val/acc_topk"]) == pytest.approx(saved["val/acc_topk"], abs=1e-6)
    assert [int(r["epoch"]) for r in val] == [0, 1]


def test_resume_into_the_same_dir_keeps_the_earlier_csv_log(tmp_path):
    # Lightning's CSVLogger deletes a metrics.csv already in its directory; the epochs before a resume into the
    # same output dir must survive (metrics.1.csv) and lsc.study.runs.epochs must read both back, in order
    from lsc.study.runs import epochs

    args = ("logger=csv", "data=digits", "data.batch_size=64")
    lsc.train.train(make_cfg(tmp_path, *args, "trainer.max_epochs=1"))
    first = (tmp_path / "csv" / "metrics.csv").read_text()
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    lsc.train.train(make_cfg(tmp_path, *args, "trainer.max_epochs=2", f"ckpt_path={ckpt}"))
    assert (tmp_path / "csv" / "metrics.1.csv").read_text() == first
    with open(tmp_path / "csv" / "metrics.csv") as f:
        assert {int(r["epoch"]) for r in csv.DictReader(f) if r.get("val/acc")} == {1}
    rows = epochs(tmp_path)
    assert [r["epoch"] for r in rows] == [0, 1] and all("val/acc" in r for r in rows)
    with open(tmp_path / "csv" / "metrics.1.csv") as f:
        val0 = [float(r["val/acc"]) for r in csv.DictReader(f) if r.get("val/acc")]
    assert rows[0]["val/acc"] == pytest.approx(val0[-1])


def test_run_one_resumes_a_stopped_run(tmp_path):
    # a study run killed after its first epoch (last.ckpt, no metrics.json) continues from that checkpoint when
    # the study runs again: the new CSV log starts at epoch 1, the earlier one is kept, both epochs are read back
    from lsc.study.runs import run_dir, run_one

    ov = ["data=digits", "data.batch_size=64", "trainer.max_epochs=2", "trainer.precision=32-true"]
    d = run_dir(tmp_path, "r", ov)
    lsc.train.train(make_cfg(d, *ov[:2], "trainer.max_epochs=1", "logger=csv"))
    (d / "metrics.json").unlink()  # as if killed before the end
    r = run_one(tmp_path, "r", ov, ckpt_every=7)  # last.ckpt every 7 steps too; the run's key stays the same
    assert "callbacks.last_checkpoint.every_n_train_steps=7" in (d / ".hydra" / "overrides.yaml").read_text()
    with open(d / "csv" / "metrics.csv") as f:
        assert {int(x["epoch"]) for x in csv.DictReader(f) if x.get("val/acc")} == {1}
    assert (d / "csv" / "metrics.1.csv").exists() and [e["epoch"] for e in r["epochs"]] == [0, 1]
    assert r["wall_s"] > 0 and not (d / "wall_s.partial").exists()
    # a results header counts the runs' own wall times, cached ones included, not only this invocation's
    from lsc.study.runs import wall_note

    assert wall_note(0, [{"wall_s": 3600.0}, {"wall_s": 1800.0}, {"wall_s": None}, None]).endswith(", 1.5 h of runs")


def test_final_validation_scores_the_last_epoch(tmp_path):
    # validating every 2nd of 3 epochs leaves the last epoch unscored: final_validation scores last.ckpt on the
    # validation split (lsc.eval split=val); the reference is the same run validating every epoch
    from lsc.study.runs import epochs, final_validation

    args = ("logger=csv", "data=digits", "data.batch_size=64", "trainer.max_epochs=3")
    every = lsc.train.train(make_cfg(tmp_path / "every", *args, "trainer.check_val_every_n_epoch=1"))
    lsc.train.train(make_cfg(tmp_path / "sparse", *args, "trainer.check_val_every_n_epoch=2"))
    sparse = json.loads((tmp_path / "sparse" / "metrics.json").read_text())
    r = {"dir": str(tmp_path / "sparse"), "metrics": sparse, "epochs": epochs(tmp_path / "sparse")}
    assert [e["epoch"] for e in r["epochs"] if "val/acc" in e] == [1]  # epoch 2 (the last) was not validated
    r = final_validation(r)
    assert r["final_eval_epoch"] == 2 and r["metrics"]["val/acc_logged"] == pytest.approx(sparse["val/acc"])
    for k in ("val/acc", "val/acc_topk", "val/acc_cossim"):
        assert r["metrics"][k] == pytest.approx(every[k], abs=1e-6), k
    # a run whose last epoch was validated is left as it is
    full = {"dir": str(tmp_path / "every"), "metrics": dict(every), "epochs": epochs(tmp_path / "every")}
    assert final_validation(full)["metrics"] == every and not (tmp_path / "every" / "final_eval").exists()


def test_eval_split_must_be_test_or_val(digits_run, tmp_path):
    run, *_ = digits_run
    ecfg = make_cfg(tmp_path, f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "split=train", config_name="eval")
    with pytest.raises(ValueError, match="split must be 'test' or 'val'"):
        lsc.eval.evaluate(ecfg, str(run / "checkpoints" / "last.ckpt"))


def test_wandb_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline must be the default, not the environment's
    monkeypatch.setattr("builtins.input", lambda *a: pytest.fail("wandb prompted for input"))
    cfg = make_cfg(tmp_path, "logger=wandb")
    assert cfg.logger.wandb.offline is True
    lsc.train.train(cfg)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list(tmp_path.rglob("*"))
    assert list(runs[0].glob("*.wandb")), list(runs[0].iterdir())


# ---- embedding plot --------------------------------------------------------------------------------------


@pytest.mark.parametrize("system,classes", [("v21", 3), ("v11", 6)])  # |V_3^21| = 3, |V_3^11| = 6
def test_embedding_plot_png(tmp_path, system, classes):
    cfg = make_cfg(
        tmp_path,
        "data=digits",
        f"data.classes={classes}",
        f"centers={system}",
        "centers.n_dim=3",
        "callbacks.embedding_plot.every_n_epochs=1",
    )
    lsc.train.train(cfg)
    pngs = sorted((tmp_path / "embeddings").glob("*.png"))
    assert [p.name for p in pngs] == ["epoch_0000.png"]
    assert pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(pngs[0])
    assert img.ndim == 3 and min(img.shape[:2]) > 100
    assert json.loads((tmp_path / "metrics.json").read_text())["n_dim"] == 3


# ---- bad configs fail early, with a message that says what to do -----------------------------------------


def _fails_early(tmp_path, exc, match, *overrides):
    cfg = make_cfg(tmp_path, *overrides)
    with pytest.raises(exc, match=match) as e:
        lsc.train.train(cfg)
    assert not (Path(tmp_path) / "checkpoints").exists() and not (Path(tmp_path) / "metrics.json").exists()
    return e


def test_n_dim_below_n_min(tmp_path):
    # |V_4^22| = 6 < 10 classes; n_min(v22, 10) = 5
    _fails_early(tmp_path, ValueError, r"n_dim >= 5 \(n_min\)", "data=digits", "centers=v22", "centers.n_dim=4")


def test_missing_imagefolder_root(tmp_path):
    _fails_early(tmp_path, FileNotFoundError, r"data\.root=/nonexistent", "data=imagefolder", "data.root=/nonexistent")


def test_missing_fashion_mnist_root(tmp_path):
    _fails_early(
        tmp_path, FileNotFoundError, r"data\.root=/nonexistent", "data=fashion_mnist", "data.root=/nonexistent"
    )


def test_missing_cifar_root(tmp_path):
    _fails_early(tmp_path, FileNotFoundError, r"data\.root=/nonexistent", "data=cifar10", "data.root=/nonexistent")


def test_unknown_system(tmp_path):
    e = _fails_early(tmp_path, ValueError, r"unknown vector system 'v99x'", "centers.system=v99x")
    for name in ("v{m}{k}", "a_n", "a_np", "a_n_interp", "table"):
        assert name in str(e.value)


@pytest.mark.parametrize("rows,match", [(5, r"n_classes=10 .*table row per class"), (12, r"12 rows .* 10 classes")])
def test_table_rows_must_match_classes(tmp_path, rows, match):
    torch.save(torch.randn(rows, 8), tmp_path / "t.pt")
    _fails_early(tmp_path, ValueError, match, "centers=table", f"centers.table={tmp_path}/t.pt")


def test_table_centers_train(tmp_path, spy_build):
    table = torch.nn.functional.normalize(torch.randn(10, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    torch.save(table, tmp_path / "t.pt")
    cfg = make_cfg(tmp_path, "centers=table", f"centers.table={tmp_path}/t.pt", "++trainer.fast_dev_run=true")
    lsc.train.train(cfg)
    ((_, _, cc),) = spy_build
    assert cc.n_dim == 8
    torch.testing.assert_close(cc(torch.arange(10)), table)  # row c is class c


def test_vit_patch_must_divide_image(tmp_path):
    e = _fails_early(
        tmp_path, Exception, r"patch_size", "data=digits", "model/backbone=test_vit", "model.backbone.patch_size=3"
    )
    # timm_backbone raises ValueError; Hydra's instantiate wraps it (InstantiationException)
    assert isinstance(e.value, ValueError) or isinstance(e.value.__cause__, ValueError)
    assert "img_size=8" in str(e.value)


def test_n_dim_must_be_integer(tmp_path):
    _fails_early(tmp_path, ValueError, r"'auto' or an integer", "centers.n_dim=abc")


@pytest.mark.parametrize(("precision", "native", "warns"), [("bf16-mixed", False, True), ("bf16-mixed", True, False),
                                                           ("32-true", False, False)])  # fmt: skip
def test_bf16_on_a_cpu_without_native_bf16_warns(precision, native, warns, monkeypatch, caplog):
    """bf16 autocast on an AVX2 CPU (oneDNN emulates bf16) is several times slower than float32: the run says so."""
    import logging

    import lightning as L

    from lsc import train as train_mod

    monkeypatch.setattr(train_mod, "cpu_has_native_bf16", lambda: native)
    t = L.Trainer(accelerator="cpu", precision=precision, logger=False, enable_checkpointing=False)
    with caplog.at_level(logging.WARNING, logger="lsc.train"):
        assert train_mod.warn_slow_cpu_bf16(t) is warns
    assert ("set trainer.precision=32-true" in caplog.text) is warns


def test_last_ckpt_names_the_best_checkpoint_its_epoch_saved(tmp_path, caplog):
    # at epoch 2's end ModelCheckpoint saves best_epoch_001 and deletes best_epoch_000; last.ckpt, written at the same
    # moment, must name the new file. It named the deleted one, so a finished run killed before its test step could
    # not be resumed: the test step asked for the deleted file.
    args = ("data=fmnist_grid", "data.k=1", "data.per_class=20", "data.eval_size=200", "data.batch_size=50",
            "trainer.precision=32-true", "trainer.max_epochs=2")  # fmt: skip
    newest = ("callbacks.model_checkpoint.monitor=step", "callbacks.model_checkpoint.mode=max")  # each epoch the best
    first = lsc.train.train(make_cfg(tmp_path / "a", *args, *newest))
    ckdir = tmp_path / "a" / "checkpoints"
    ck = torch.load(ckdir / "last.ckpt", weights_only=False)
    (key,) = [k for k in ck["callbacks"] if k.startswith("ModelCheckpoint")]
    assert Path(ck["callbacks"][key]["best_model_path"]) == ckdir / "best_epoch_001.ckpt"
    assert (ckdir / "best_epoch_001.ckpt").is_file() and not (ckdir / "best_epoch_000.ckpt").exists()
    resumed = lsc.train.train(make_cfg(tmp_path / "b", *args, *newest, f"ckpt_path={ckdir / 'last.ckpt'}"))
    assert resumed["test/acc_topk"] == first["test/acc_topk"]  # the same best weights, tested again
    # a last.ckpt naming a best file that is gone (as written before the fix): the weights in memory are tested
    ck["callbacks"][key]["best_model_path"] = str(ckdir / "best_epoch_000.ckpt")
    torch.save(ck, tmp_path / "stale.ckpt")
    with caplog.at_level("WARNING", logger="lsc.train"):
        stale = lsc.train.train(make_cfg(tmp_path / "c", *args, *newest, f"ckpt_path={tmp_path / 'stale.ckpt'}"))
    assert "best_epoch_000.ckpt is gone; testing the weights in memory" in caplog.text
    assert stale["test/acc_topk"] == first["test/acc_topk"]  # the last epoch's weights are the best here
