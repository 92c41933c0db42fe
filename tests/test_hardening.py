"""The fresh-machine and bad-input findings of the hardening issue, one test (or a few) per finding.

Install extras, README commands (see test_readme.py), resume from the checkpoint's config, exact mid-epoch
resume, held-out validation, image-folder labels by class name, unreadable images, early errors for bad
settings, a quiet console, and `data.val_limit`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

import pytest
import tomllib
import torch
from helpers import ROOT, crash_and_resume, make_cfg, make_cifar, make_image_folder, run_lsc
from omegaconf import open_dict

import lsc.eval
import lsc.train
from lsc.centers import ClassCenters
from lsc.data import CIFARDataModule, DigitsDataModule, ImageFolderDataModule, SyntheticDataModule
from lsc.data.base import BadImageError, collate_skipping_bad
from lsc.runconfig import check_resume, load_checkpoint

# ---- 1. make install installs every extra the tests exercise --------------------------------------------------


def test_make_install_installs_every_extra():
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    m = re.search(r"^EXTRAS\s*=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert m, "Makefile has no EXTRAS line"
    assert set(m.group(1).split(",")) == extras  # slurm (the launcher test), faiss (the benchmark test), dev
    assert re.search(r'pip install -e "\.\[\$\(EXTRAS\)\]"', (ROOT / "Makefile").read_text())


# ---- 3. resuming takes the checkpoint's own config ------------------------------------------------------------

SYNTH = ["data=synthetic", "data.num_samples=40", "data.num_classes=5", "data.image_size=8", "data.batch_size=8"]


@pytest.fixture(scope="module")
def synth_run(tmp_path_factory):
    """One epoch on 5-class 8 px synthetic images (not the defaults: a resume that fell back to them would show)."""
    run = tmp_path_factory.mktemp("synth_run")
    lsc.train.train(make_cfg(run, *SYNTH, "centers.n_dim=12", "trainer.max_epochs=1"))
    return run / "checkpoints" / "last.ckpt"


def test_resume_config_comes_from_the_checkpoint(synth_run, tmp_path):
    # what `python -m lsc.train ckpt_path=... trainer.max_epochs=2` does: defaults composed, then the stored config
    (tmp_path / "old" / "checkpoints").mkdir(parents=True)
    synth_run = Path(shutil.copy(synth_run, tmp_path / "old" / "checkpoints" / "last.ckpt"))  # resumed in place
    overrides = [f"ckpt_path={synth_run}", "trainer.max_epochs=2"]
    composed = make_cfg(tmp_path, *overrides, tiny=False)
    assert composed.data._target_.endswith("DigitsDataModule")  # the defaults alone would train on digits
    cfg = lsc.train.resume_config(composed, overrides, set())
    assert cfg.data._target_.endswith("SyntheticDataModule") and cfg.data.num_classes == 5
    assert cfg.centers.n_dim == 12 and cfg.trainer.max_epochs == 2
    assert cfg.paths.output_dir == str(tmp_path)  # the new run logs into its own dir ...
    assert cfg.callbacks.last_checkpoint.dirpath == str(synth_run.parent)  # ... checkpoints continue in place
    assert cfg.callbacks.model_checkpoint.dirpath == str(synth_run.parent)
    with open_dict(cfg):
        cfg.callbacks.pop("rich_progress_bar", None)
        cfg.trainer.enable_progress_bar = False
    metrics = lsc.train.train(cfg)
    ckpt = torch.load(synth_run, weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["lsc_centers"]["n_classes"] == 5 and 0 <= metrics["val/acc_topk"] <= 1


@pytest.mark.parametrize(
    ("override", "group", "key"),
    [
        ("data=digits", "data", "data._target_"),
        ("data.transforms=standard", None, "data.transforms"),
        ("model/backbone=encoder", "model/backbone", "model.backbone"),
        ("loss=dist", "loss", "loss._target_"),
        ("seed=3", None, "seed"),
    ],
)
def test_resume_refuses_a_changed_run(synth_run, tmp_path, override, group, key):
    overrides = [f"ckpt_path={synth_run}", override]
    cfg = lsc.train.resume_config(make_cfg(tmp_path, *overrides, tiny=False), overrides, {group} if group else set())
    with pytest.raises(ValueError, match=rf"^ckpt_path=.* was trained with other settings: .*{re.escape(key)}"):
        lsc.train.train(cfg)


def test_resume_may_move_the_data_and_change_the_batch_size(synth_run, tmp_path):
    overrides = [f"ckpt_path={synth_run}", "data.batch_size=4", "data.num_workers=0", "trainer.max_epochs=2"]
    cfg = lsc.train.resume_config(make_cfg(tmp_path, *overrides, tiny=False), overrides, set())
    assert cfg.data.batch_size == 4
    check_resume(load_checkpoint(synth_run), cfg, synth_run)  # no error


# ---- 4. mid-epoch resume serves exactly the batches not yet seen ------------------------------------------------

INSTANCE = [
    "data=synthetic",
    "data.num_samples=48",
    "data.num_classes=48",
    "data.instance_labels=true",  # label = image index: the recorded labels are the samples served
    "data.image_size=8",
    "data.batch_size=4",  # 12 steps per epoch
    "data.val_size=8",
    "data.transforms=none",
    "trainer.max_epochs=2",
    "centers.n_dim=12",
]


@pytest.mark.parametrize("workers", [0, 2])
def test_mid_epoch_resume_replays_exactly_the_rest_of_the_epoch(tmp_path, workers):
    # worker processes prefetch ahead of the training loop; step 17 = epoch 2, batch 5 of 12
    (full, before, after), (wa, wc) = crash_and_resume(tmp_path, [*INSTANCE, f"data.num_workers={workers}"])
    assert len(full) == 24 and len(before) == 17
    assert before + after == full  # the same batches in the same order: none twice, none missed
    assert sorted(sum(after[-7:], [])) == sorted(set(range(48)) - set(sum(full[12:17], [])))
    assert all(torch.equal(wa[k], wc[k]) for k in wa), "the resumed run's weights differ from the uninterrupted run's"


# ---- 5. validation is held out from the training data; the test split is scored once ---------------------------


def test_validation_is_held_out_from_training_data(tmp_path):
    raw = make_cifar(tmp_path, 10, n_train=50, n_test=20)
    dm = CIFARDataModule(root=str(tmp_path), variant=10, val_fraction=0.2, seed=4)
    dm.setup("fit")
    train_idx, val_idx = dm.train_set.index.tolist(), dm.val_set.index.tolist()
    assert len(val_idx) == 10 and sorted(train_idx + val_idx) == list(range(50)) and not set(train_idx) & set(val_idx)
    assert dm.val_set.base is dm.train_set.base  # drawn from the training split ...
    assert dm.test_set.base is not dm.train_set.base and len(dm.test_set) == 20  # ... never from the test split
    x, y = dm.val_set[0]
    assert y == raw["train"][1][val_idx[0]]
    # seeded: the same split for the same seed, another for another seed
    again = CIFARDataModule(root=str(tmp_path), variant=10, val_fraction=0.2, seed=4)
    again.setup("fit")
    other = CIFARDataModule(root=str(tmp_path), variant=10, val_fraction=0.2, seed=5)
    other.setup("fit")
    assert again.val_set.index.tolist() == val_idx != other.val_set.index.tolist()


def test_training_selects_on_validation_and_tests_once(tmp_path):
    make_cifar(tmp_path / "data", 10, n_train=40, n_test=16)
    cfg = make_cfg(tmp_path, "data=cifar10", "data.batch_size=8", "data.num_workers=0", "trainer.max_epochs=2")
    metrics = lsc.train.train(cfg)
    assert {"val/acc_topk", "test/acc_topk"} <= set(metrics)
    # the test accuracy is a multiple of 1/16 (16 test images), the validation one of 1/4 (4 held-out images)
    assert (metrics["test/acc_topk"] * 16) % 1 == pytest.approx(0, abs=1e-6)
    assert (metrics["val/acc_topk"] * 4) % 1 == pytest.approx(0, abs=1e-6)


# ---- 6. image folders: labels by class name, indexed once from train/ -------------------------------------------


def test_image_folder_val_lacking_a_class_keeps_names(tmp_path):
    make_image_folder(tmp_path, n_classes=3, per_class=3, splits=("train",))
    make_image_folder(tmp_path / "tmp", n_classes=3, per_class=2, splits=("val",))
    (tmp_path / "val").mkdir()
    for c in (0, 2):  # val/ has class_00 and class_02 only
        (tmp_path / "tmp" / "val" / f"class_{c:02d}").rename(tmp_path / "val" / f"class_{c:02d}")
    dm = ImageFolderDataModule(root=str(tmp_path), img_size=8, val_fraction=0.2)
    dm.setup("fit")
    labels = [dm.test_set[i][1] for i in range(len(dm.test_set))]
    assert labels == [0, 0, 2, 2]  # class_02 keeps label 2 (per-folder indexing gave it 1)


def test_image_folder_val_with_an_unknown_class_is_an_error(tmp_path):
    make_image_folder(tmp_path, n_classes=2, per_class=2, splits=("train",))
    make_image_folder(tmp_path, n_classes=3, per_class=1, splits=("val",))
    with pytest.raises(ValueError, match=r"class folder\(s\) that the training folder lacks: class_02"):
        ImageFolderDataModule(root=str(tmp_path)).num_classes  # noqa: B018


# ---- 7. unreadable images: named, or skipped and counted -------------------------------------------------------


def _corrupt(tmp_path):
    make_image_folder(tmp_path, n_classes=2, per_class=3, splits=("train",))
    bad = tmp_path / "train" / "class_01" / "img_1.png"
    bad.write_bytes(bad.read_bytes()[:40])  # a truncated PNG
    return bad


def test_unreadable_image_fails_at_start_naming_the_file(tmp_path):
    bad = _corrupt(tmp_path)
    with pytest.raises(BadImageError, match=re.escape(str(bad))):
        ImageFolderDataModule(root=str(tmp_path)).num_classes  # noqa: B018  (checked at start: <= 2,000 images)


def test_unreadable_image_mid_run_names_the_file(tmp_path):
    bad = _corrupt(tmp_path)
    dm = ImageFolderDataModule(root=str(tmp_path), img_size=8, check_images=False, val_fraction=0.2)
    dm.setup("fit")
    ds = dm.train_set if str(bad) in [p for p, _ in dm.train_set.base.samples] else dm.val_set
    pos = [i for i in range(len(ds)) if dm.train_set.base.samples[int(ds.index[i])][0] == str(bad)]
    with pytest.raises(BadImageError, match=re.escape(str(bad)) + ".*data.on_bad_image=skip"):
        ds[pos[0]]


@pytest.mark.parametrize("check", [True, False])
def test_unreadable_image_skipped_and_counted(tmp_path, check):
    bad = _corrupt(tmp_path)
    dm = ImageFolderDataModule(
        root=str(tmp_path), img_size=8, check_images=check, on_bad_image="skip", val_fraction=0.2, batch_size=8
    )
    dm.setup("fit")
    got = 0
    with pytest.warns(UserWarning, match=re.escape(str(bad))) if not check else contextlib.nullcontext():
        for loader in (dm.train_dataloader(), dm.val_dataloader()):
            for batch in loader:
                got += len(batch[1])
    assert got == 5 and dm.bad_images.value == 1  # 6 files, 1 unreadable: skipped once, counted once
    assert collate_skipping_bad([None, None]) is None


# ---- 8. bad settings: a clear early error ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(limit=-5), r"data\.limit must be a positive integer"),
        (dict(val_fraction=0), r"data\.val_fraction must lie strictly between 0 and 1"),
        (dict(val_fraction=1.0), r"data\.val_fraction must lie strictly between 0 and 1"),
        (dict(val_fraction=1.5), r"data\.val_fraction must lie strictly between 0 and 1"),
        (dict(val_limit=0), r"data\.val_limit must be a positive integer"),
        (dict(batch_size=0), r"data\.batch_size must be a positive integer"),
        (dict(on_bad_image="ignore"), r"data\.on_bad_image must be one of error, skip"),
    ],
)
def test_bad_data_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        DigitsDataModule(**kw)


def test_limit_larger_than_the_data_warns(caplog):
    dm = DigitsDataModule(limit=5000)
    assert dm.num_classes == 10
    assert "data.limit=5,000 exceeds the 1,797 training images" in caplog.text


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(limit=1), r"has 1 class: a classifier needs at least 2"),
        (dict(limit=1, instance_labels=True), r"has 1 class: a classifier needs at least 2"),
        (dict(classes=1), r"has 1 class"),
    ],
)
def test_one_class_is_an_error(kw, match):
    with pytest.raises(ValueError, match=match):
        DigitsDataModule(**kw).num_classes  # noqa: B018


def test_hold_out_that_leaves_no_training_images():
    dm = SyntheticDataModule(num_samples=2, num_classes=2, val_fraction=0.9)
    with pytest.raises(ValueError, match=r"leaves none to train on; raise data\.limit or lower data\.val_fraction"):
        dm.setup("fit")


def test_max_epochs_zero_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"trainer\.max_epochs=0 trains nothing"):
        lsc.train.train(make_cfg(tmp_path, "trainer.max_epochs=0"))
    assert not (tmp_path / "metrics.json").exists()


def test_seed_must_be_an_integer(tmp_path):
    with pytest.raises(ValueError, match=r"^seed must be an integer, got 'abc'"):
        lsc.train.train(make_cfg(tmp_path, "seed=abc"))


def test_shuffle_must_be_a_bool(tmp_path):
    with pytest.raises(ValueError, match=r"shuffle must be true, false or null .*got 'maybe'"):
        ClassCenters("v21", 10, n_dim=8, shuffle="maybe")
    with pytest.raises(ValueError, match=r"shuffle must be true, false or null"):
        lsc.train.build(make_cfg(tmp_path, "centers.shuffle=maybe"))


def test_table_with_identical_rows():
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    with pytest.raises(ValueError, match=r"table rows 0 and 2 are identical"):
        ClassCenters("table", 3, table=t)


def test_unknown_predictor_is_refused_at_build_time(tmp_path):
    with pytest.raises(ValueError, match=r"model\.predictor='bogus' is not a predictor; choose one of cossim, topk"):
        lsc.train.build(make_cfg(tmp_path, "model.predictor=bogus"))


def test_eval_without_ckpt_path(tmp_path):
    with pytest.raises(ValueError, match=r"lsc\.eval needs ckpt_path=<checkpoint file>"):
        lsc.eval.evaluate(make_cfg(tmp_path, config_name="eval"), None)


def test_checkpoint_path_that_is_a_folder(tmp_path):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(IsADirectoryError, match=r"is a folder; point it at a checkpoint file, e\.g\. .*last\.ckpt"):
        lsc.eval.evaluate(make_cfg(tmp_path, config_name="eval"), str(tmp_path / "run"))
    with pytest.raises(IsADirectoryError, match="is a folder"):
        lsc.train.train(make_cfg(tmp_path, f"ckpt_path={tmp_path / 'run'}"))


@pytest.mark.parametrize("content", [b"garbage" * 10, b"", b"PK\x03\x04 not really a zip", b"\x80\x04junk" * 10])
@pytest.mark.parametrize("suffix", [".ckpt", ".pt"])
def test_garbage_checkpoint_or_table(tmp_path, content, suffix):
    f = tmp_path / f"x{suffix}"
    f.write_bytes(content)
    with pytest.raises(ValueError, match=r"is not a checkpoint written by lsc/Lightning") as e:
        lsc.eval.evaluate(make_cfg(tmp_path, config_name="eval"), str(f))
    assert "weights_only" not in str(e.value)
    with pytest.raises(ValueError, match=r"is not a centers file") as e:
        ClassCenters("table", 3, table=str(f))
    assert "weights_only" not in str(e.value)


def test_a_tensor_file_is_not_a_checkpoint(tmp_path):
    f = tmp_path / "t.ckpt"
    torch.save(torch.zeros(3), f)
    with pytest.raises(ValueError, match=r"is not a Lightning checkpoint \(no state_dict\)"):
        lsc.eval.evaluate(make_cfg(tmp_path, config_name="eval"), str(f))


# ---- 10. data.val_limit ------------------------------------------------------------------------------------------


def test_val_limit_caps_validation_and_test(tmp_path):
    make_cifar(tmp_path, 10, n_train=40, n_test=30)
    dm = CIFARDataModule(root=str(tmp_path), variant=10, limit=20, val_fraction=0.5, val_limit=3)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (10, 3, 3)
    full = CIFARDataModule(root=str(tmp_path), variant=10, limit=20, val_fraction=0.5)
    full.setup("fit")
    assert (len(full.val_set), len(full.test_set)) == (10, 30)  # data.limit alone limits training only
    for i in range(3):  # the first images of each
        assert torch.equal(dm.val_set[i][0], full.val_set[i][0]) and dm.test_set[i][1] == full.test_set[i][1]


# ---- 9. a first run prints the progress bar and the result line, not Lightning's chatter ------------------------


@pytest.mark.slow
def test_console_is_quiet(tmp_path):
    p = run_lsc("trainer.max_epochs=2", f"hydra.run.dir={tmp_path / 'run'}", f"paths.log_dir={tmp_path}", cwd=tmp_path)
    out = p.stdout + p.stderr
    for noise in ("weights_only", "Tip:", "LeafSpec", "GPU available", "set_vital", "deprecated", "┏━━"):
        assert noise not in out, f"{noise!r} in the console output:\n{out[-3000:]}"
    assert re.search(r"^lsc: val/acc_cossim=\S+ val/acc_topk=", p.stdout, re.M)
    assert "Epoch 1/1" in out  # the progress bar


def test_local_ddp_rendezvous_port_is_outside_the_ephemeral_range(monkeypatch):
    """Lightning's default rendezvous port is an ephemeral one, which rank 1's own connect can take (EADDRINUSE)."""
    from lsc.utils import _RENDEZVOUS_SET, set_local_rendezvous_port

    for k in _RENDEZVOUS_SET:  # set, then deleted: monkeypatch restores each (absent) after the test, so the
        monkeypatch.setenv(k, "")  # MASTER_PORT written below does not leak into later DDP tests' subprocesses
        monkeypatch.delenv(k)
    port = set_local_rendezvous_port()
    lo = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert port is not None and 20000 <= port < lo and os.environ["MASTER_PORT"] == str(port)
    assert set_local_rendezvous_port() is None  # a set MASTER_PORT (a launcher's, or the parent rank's) is kept
    assert os.environ["MASTER_PORT"] == str(port)


# ---- issue 22: bad inputs get a clear, early error ---------------------------------------------------------------


def test_center_api_refuses_bad_values():
    import math

    from lsc.losses import SoftmaxLoss

    cc = ClassCenters("v21", 10, n_dim=6)
    z = torch.randn(4, 6)
    for chunk in (-1, 0, 2.5, True):
        calls = (lambda c: cc.predict(z, "cossim", chunk_size=c), lambda c: cc.predict(z, "euclidean", chunk_size=c),
                 lambda c: cc.top_labels(z, 3, chunk_size=c))  # fmt: skip
        for call in calls:
            with pytest.raises(ValueError, match=r"chunk_size must be a positive integer"):
                call(chunk)
    for scale in (0, -2.0, math.nan, math.inf, torch.tensor(0.0)):
        with pytest.raises(ValueError, match=r"scale must be a finite positive number"):
            cc.log_prob(z, torch.arange(4), scale)
    with pytest.raises(ValueError, match=r"loss\.scale must be a finite positive number"):
        SoftmaxLoss(scale=math.inf)
    with pytest.raises(ValueError, match=r"labels must be integers .* got torch\.bool"):
        cc(torch.tensor([True, False]))
    with pytest.raises(ValueError, match=r"a centers spec needs system, n_classes, seed, shuffle"):
        ClassCenters.from_spec({})
    assert torch.equal(cc.predict(z, "cossim", chunk_size=3), cc.predict(z, "cossim"))  # a valid chunk changes nothing


@pytest.mark.parametrize(("system", "n_classes"), [("v21", 200), ("v22", 300), ("a_n", 50), ("v21", 50000)])
def test_one_tie_rule_for_every_predictor(system, n_classes):
    # a zero embedding ties with every vector: the lowest label, 0, from predict, top_labels and nearest alike
    cc = ClassCenters(system, n_classes, seed=3)
    z = torch.zeros(3, cc.n_dim)
    for method in ("cossim", "topk"):
        assert cc.predict(z, method).tolist() == [0, 0, 0], method
    assert cc.top_labels(z, 2)[0].tolist() == [[0, 1]] * 3
    idx, lab = cc.nearest(z)
    assert lab.tolist() == [0, 0, 0] and torch.equal(idx, cc.index_of(lab))


def test_model_and_data_values_are_checked(tmp_path):
    from lsc.models.partial_fc import PartialFCHead

    for d in (0, -3, 2.0):
        with pytest.raises(ValueError, match=r"model\.embed_dim must be a positive integer"):
            PartialFCHead(10, d)
    for size in (0, -5, 1.5):
        with pytest.raises(ValueError, match=r"data\.img_size must be a positive integer or null \(pixels a side"):
            DigitsDataModule(img_size=size)
    for keep, gone in (([5, 99], r"\[99\]"), ([10, 11], r"\[10, 11\]")):
        with pytest.raises(
            ValueError, match=rf"data\.keep_classes names classes the training data does not have: {gone}"
        ):
            DigitsDataModule(keep_classes=keep).num_classes  # noqa: B018
    assert DigitsDataModule(keep_classes=[3, 4]).num_classes == 5  # labels unchanged: 0..4


def test_eval_of_data_without_a_test_split(tmp_path):
    lsc.train.train(make_cfg(tmp_path / "run", "data=digits", "data.limit=200"))
    ckpt = str(tmp_path / "run" / "checkpoints" / "last.ckpt")
    with pytest.raises(ValueError, match=r"split=test: DigitsDataModule has no test split .* use split=val"):
        lsc.eval.evaluate(make_cfg(tmp_path / "e1", "split=test", config_name="eval"), ckpt)
    got = lsc.eval.evaluate(make_cfg(tmp_path / "e2", config_name="eval"), ckpt)  # default: the validation split
    assert "val/acc" in got and not any(k.startswith("test/") for k in got)
