"""Open world: the k closest labeled centers against a brute-force ranking, `python -m lsc.predict` on a digits
checkpoint and an image folder, growing the label space (centers kept bit for bit; a checkpoint initializes
the grown run, CE's head rows appended), data views for growth, and the bad inputs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import make_cfg, subprocess_env

import lsc.models.module
import lsc.train
from lsc.centers import ClassCenters, make_system
from lsc.centers.assignment import Assignment, assign_nearest_free
from lsc.data import DigitsDataModule
from lsc.predict import Predictor, check_out, list_inputs, predict_to_csv


def brute_top(cc: ClassCenters, z: torch.Tensor, k: int):
    """Every labeled center scored in float64 from its raw integer vector; ties by lowest label."""
    v = cc.system.vectors(cc.index_of(torch.arange(cc.n_classes)), dtype=torch.float64)
    s = F.normalize(z.double(), dim=1) @ F.normalize(v, dim=1).T
    order = torch.sort(-s, dim=1, stable=True).indices[:, :k]
    return order, s.gather(1, order)


@pytest.mark.parametrize(
    ("system", "n_classes", "n_dim"),
    [("v22", 100_000, 27), ("v22", 60_000, 27), ("v21", 70_000, 80), ("a_n_interp", 500, 10), ("v22", 300, 10),
     ("a_np", 40, 10)],
)  # fmt: skip
@pytest.mark.parametrize("k", [1, 7])
def test_top_labels_match_brute_force(system, n_classes, n_dim, k):
    cc = ClassCenters(system, n_classes, n_dim=n_dim)
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, n_classes, (40,), generator=g)
    z = torch.cat([cc(y) + 0.05 * torch.randn(40, n_dim, generator=g), torch.randn(20, n_dim, generator=g)])
    z[-1] = 0
    z[-1, :2] = 1.0  # exact ties among many centers
    labels, cos = cc.top_labels(z, k)
    want_l, want_c = brute_top(cc, z, k)
    assert torch.equal(labels, want_l)
    torch.testing.assert_close(cos, want_c, rtol=0, atol=1e-12)
    assert torch.equal(labels[:, 0], cc.predict(z, "cossim"))  # top-1 is the predictor's label


def test_top_labels_through_a_data_assignment():
    s = make_system("v22", 20)
    idx, _ = assign_nearest_free(s, torch.randn(15_000, 20, dtype=torch.float64))
    cc = ClassCenters(s, 15_000, assignment=Assignment(idx, s.count))
    z = torch.randn(30, 20)
    labels, cos = cc.top_labels(z, 4)
    want_l, _ = brute_top(cc, z, 4)
    assert torch.equal(labels, want_l)


def test_top_labels_bad_k():
    cc = ClassCenters("v21", 10, n_dim=8)
    with pytest.raises(ValueError, match="k=11 exceeds the 10 classes"):
        cc.top_labels(torch.randn(2, 8), 11)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        cc.top_labels(torch.randn(2, 8), 0)


# ---- lsc.predict on a digits checkpoint ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory):
    run = tmp_path_factory.mktemp("digits")
    lsc.train.train(make_cfg(run, "data=digits", "trainer.max_epochs=2", "data.batch_size=64"))
    return run / "checkpoints" / "last.ckpt"


def digit_folder(root, n=24):
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray((d.images[i] * (255 / 16)).round().astype(np.uint8)).save(root / f"{i:03d}.png")
    return d


def test_predictor_on_an_image_folder_matches_brute_force(digits_ckpt, tmp_path):
    d = digit_folder(tmp_path / "imgs")
    pred = Predictor.from_checkpoint(digits_ckpt)
    files = list_inputs(str(tmp_path / "imgs"))
    assert [f.split("/")[-1] for f in files] == [f"{i:03d}.png" for i in range(24)]  # input order
    out = pred.predict(files, k=4)
    z = pred.embed(files)
    want_l, want_c = brute_top(pred.centers, z, 4)
    assert torch.equal(out["labels"], want_l)
    torch.testing.assert_close(out["cos"], want_c, rtol=0, atol=1e-9)
    # the same images through the training data pipeline give the same embeddings (the run's eval transform)
    dm = DigitsDataModule()
    dm.setup("fit")
    t = dm.prototype_set().transform
    x = [t(torch.from_numpy((d.images[i] * 255 / 16).round().astype(np.uint8))[None]) for i in range(3)]
    torch.testing.assert_close(pred.embed(x), z[:3], rtol=1e-5, atol=1e-5)
    assert (out["labels"][:, 0].numpy() == d.target[:24]).mean() > 0.5  # it learned something
    _, lab = pred.centers.nearest(z)
    assert torch.equal(out["nearest_unlabeled"], lab < 0)
    torch.testing.assert_close(out["open_set_score"], 1 - out["cos"][:, 0])


def test_predict_cli_writes_rows_in_order(digits_ckpt, tmp_path):
    digit_folder(tmp_path / "imgs", n=10)
    (tmp_path / "imgs" / "zz_broken.png").write_bytes(b"not an image")
    out = tmp_path / "preds.csv"
    p = subprocess.run(
        [sys.executable, "-m", "lsc.predict", f"ckpt_path={digits_ckpt}", f"input={tmp_path / 'imgs'}", f"out={out}",
         "k=3", f"hydra.run.dir={tmp_path / 'h'}"],
        env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    rows = list(csv.DictReader(open(out)))
    assert list(rows[0]) == ["path", "label", "class_name", "cos", "nearest_unlabeled", "open_set_score", "label_2",
                             "label_3", "class_name_2", "class_name_3", "cos_2", "cos_3", "error"]  # fmt: skip
    assert len(rows) == 11 and rows[-1]["path"].endswith("zz_broken.png") and rows[-1]["error"]
    assert rows[-1]["label"] == "" and "skipped unreadable image" in p.stderr
    pred = Predictor.from_checkpoint(digits_ckpt)
    want = pred.predict([r["path"] for r in rows[:10]], k=3)
    assert [int(r["label"]) for r in rows[:10]] == want["labels"][:, 0].tolist()
    assert [int(r["label_3"]) for r in rows[:10]] == want["labels"][:, 2].tolist()
    # digits' class names are the digits themselves: every named column names its label
    assert all(r[f"class_name{s}"] == r[f"label{s}"] for r in rows[:10] for s in ("", "_2", "_3"))


def test_predict_with_a_softmax_checkpoint_gives_probabilities(tmp_path):
    run = tmp_path / "run"
    lsc.train.train(make_cfg(run, "data=digits", "loss=softmax", "trainer.max_epochs=1", "data.batch_size=64"))
    pred = Predictor.from_checkpoint(run / "checkpoints" / "last.ckpt")
    assert pred.scale == 16.0
    z = torch.randn(5, pred.centers.n_dim)
    out = pred.predict_embeddings(z, k=10)  # all 10 classes: their probabilities plus the unlabeled vectors' = 1
    all_lp = torch.stack([pred.centers.log_prob(z.double(), torch.full((5,), c), 16.0) for c in range(10)], 1)
    want = all_lp.exp().gather(1, out["labels"])
    torch.testing.assert_close(out["prob"], want, rtol=1e-6, atol=1e-9)
    assert (out["prob"].sum(1) < 1).all()
    rows = tmp_path / "p.csv"
    predict_to_csv(pred, [torch.zeros(1, 8, 8)] * 3, rows, 2, 2, progress=False)
    assert list(csv.DictReader(open(rows)))[0].keys() >= {"prob_1", "prob_2"}


def test_predict_bad_inputs(digits_ckpt, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no images"):
        list_inputs(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="neither an image folder"):
        list_inputs(str(tmp_path / "nope"))
    pred = Predictor.from_checkpoint(digits_ckpt)
    with pytest.raises(ValueError, match="k=11 exceeds the checkpoint's 10 classes"):
        predict_to_csv(pred, ["x.png"], tmp_path / "o.csv", 11, 4, progress=False)
    ce = tmp_path / "ce"
    lsc.train.train(make_cfg(ce, "data=digits", "model=ce", "trainer.max_epochs=1"))
    with pytest.raises(ValueError, match="not an LSC checkpoint"):
        Predictor.from_checkpoint(ce / "checkpoints" / "last.ckpt")


# ---- growing the label space ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("system", "shuffle"), [("v22", True), ("v21", False), ("a_n_interp", True)])
def test_grow_keeps_every_old_center(system, shuffle):
    cc = ClassCenters(system, 500, n_dim=16, seed=4, shuffle=shuffle)
    big = cc.grow(700)
    assert big.n_classes == 1200
    old = torch.arange(500)
    assert torch.equal(big(old), cc(old)) and torch.equal(big.index_of(old), cc.index_of(old))  # bit for bit
    assert big.grows_from(cc.spec) and not cc.grows_from(big.spec)
    assert big.index_of(torch.arange(1200)).unique().numel() == 1200


def test_grow_a_data_assignment():
    s = make_system("v22", 12)
    idx, _ = assign_nearest_free(s, torch.randn(300, 12, dtype=torch.float64))
    cc = ClassCenters(s, 300, assignment=Assignment(idx, s.count))
    new_p = torch.randn(200, 12, dtype=torch.float64)
    big = cc.grow(200, new_p)
    assert torch.equal(big.index_of(torch.arange(300)), idx)
    grown = big.index_of(torch.arange(300, 500))
    assert not set(grown.tolist()) & set(idx.tolist())
    assert big.grows_from(cc.spec, idx)
    with pytest.raises(ValueError, match="grow from the new classes' prototypes"):
        cc.grow(5)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_grow_refuses_bad_counts(bad):
    with pytest.raises(ValueError, match="n_new must be a positive integer"):
        ClassCenters("v22", 10, n_dim=8).grow(bad)


def test_grow_past_the_system():
    with pytest.raises(ValueError, match="exceeds V_8\\^22's 420 vectors"):
        ClassCenters("v22", 400, n_dim=8).grow(21)


def test_keep_classes_and_replay():
    y = DigitsDataModule().raw()[0].targets
    dm = DigitsDataModule(keep_classes=[5, 6, 7, 8, 9], replay_per_class=3, val_fraction=0.1)
    assert dm.num_classes == 10
    idx = dm._select(dm.raw()[0])
    t = y[idx]
    for c in range(5):
        assert (t == c).sum() == 3 and torch.equal(idx[t == c], (y == c).nonzero()[:3, 0])  # the first 3 of each
    assert ((t >= 5).sum() == (y >= 5).sum()).item()
    with pytest.raises(ValueError, match="replay_per_class needs data.keep_classes"):
        DigitsDataModule(replay_per_class=2)
    with pytest.raises(ValueError, match="keep_classes must be a non-empty list"):
        DigitsDataModule(keep_classes=[])


@pytest.mark.parametrize("model", ["lsc", "ce"])
def test_init_from_grows_the_label_space(tmp_path, model):
    """5 digit classes, then all 10 from the first run's weights: LSC's old centers and CE's old head rows kept."""
    common = ["data=digits", f"model={model}", "trainer.max_epochs=1", "data.batch_size=64"]
    a, b = tmp_path / "a", tmp_path / "b"
    lsc.train.train(make_cfg(a, *common, "data.classes=5"))
    first = torch.load(a / "checkpoints" / "last.ckpt", weights_only=True)
    cfg = make_cfg(b, *common, "data.keep_classes=[5,6,7,8,9]", "data.replay_per_class=5",
                   f"init_from={a / 'checkpoints' / 'last.ckpt'}")  # fmt: skip
    _, module, centers = lsc.train.build(cfg, init=first)
    grown = lsc.models.module.init_weights_from(module, first, "a")
    if model == "lsc":
        assert grown == {"old_classes": 5, "new_classes": 5}
        old = ClassCenters.from_spec(first["lsc_centers"])
        assert torch.equal(centers(torch.arange(5)), old(torch.arange(5)))
        assert all(torch.equal(module.state_dict()[k], v) for k, v in first["state_dict"].items())
    else:
        rows = module.class_rows()
        w_new, w_old = module.state_dict()[rows[0]], first["state_dict"][rows[0]]
        assert w_new.shape[0] == 10 and w_old.shape[0] == 5 and torch.equal(w_new[:5], w_old)
    metrics = lsc.train.train(cfg)  # and the run itself trains from there, on all 10 classes
    assert 0 <= metrics["val/acc"] <= 1 and json.loads((b / "metrics.json").read_text())["epochs"] == 1
    other = make_cfg(tmp_path / "c", "data=digits", "centers.seed=7", f"init_from={a / 'checkpoints' / 'last.ckpt'}")
    if model == "lsc":
        with pytest.raises(ValueError, match="trained with other class centers"):
            lsc.train.train(other)


# ---- nothing a user has is overwritten or silently wrong (issue 22) -----------------------------------------------


def test_out_is_checked_before_any_work(tmp_path):
    img = tmp_path / "a.png"
    img.write_bytes(b"png")
    old = tmp_path / "p.csv"
    old.write_text("old rows")
    with pytest.raises(FileExistsError, match=r"exists; pass overwrite=true"):
        check_out(old, False, [str(img)])
    with pytest.raises(FileExistsError, match=r"p\.csv exists"):  # out=p.parquet would also write p.csv
        check_out(tmp_path / "p.parquet", False, [])
    assert check_out(old, True, [str(img)]) == old
    with pytest.raises(ValueError, match=r"is one of the inputs"):  # even with overwrite=true
        check_out(tmp_path / "list.csv", True, [str(tmp_path / "list.csv"), str(img)])
    with pytest.raises(ValueError, match=r"must end in \.csv or \.parquet"):
        check_out(img, True, [])
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(ValueError, match=r"is a folder"):
        check_out(tmp_path / "d.csv", True, [])
    with pytest.raises(PermissionError, match=r"not a folder"):
        check_out(old / "x.csv", True, [])
    assert old.read_text() == "old rows"
    try:
        import pyarrow  # noqa: F401
    except ImportError:  # not CSV text in a .parquet file
        with pytest.raises(ValueError, match=r"writing parquet needs pyarrow"):
            check_out(tmp_path / "q.parquet", False, [])


def test_bad_arguments_or_a_failing_run_leave_the_old_file_intact(digits_ckpt, tmp_path):
    digit_folder(tmp_path / "imgs", n=6)
    items = list_inputs(str(tmp_path / "imgs"))
    pred = Predictor.from_checkpoint(digits_ckpt)
    out = tmp_path / "p.csv"
    out.write_text("old rows")
    for k, bs in ((0, 2), (-1, 2), ("five", 2), (3, 0), (3, -5)):
        with pytest.raises(ValueError, match=r"must be a positive integer"):
            predict_to_csv(pred, items, out, k, bs, progress=False)
    calls = []

    def embed_then_fail(x):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("disk full")
        return Predictor.embed(pred, x)

    pred.embed = embed_then_fail
    with pytest.raises(RuntimeError, match="disk full"):
        predict_to_csv(pred, items, out, 3, 2, progress=False)
    assert out.read_text() == "old rows"  # replaced only by a finished file
    assert len(list(csv.DictReader(open(tmp_path / "p.csv.partial")))) == 2  # what was predicted is kept


def test_a_predictions_csv_as_input_reads_its_paths(digits_ckpt, tmp_path):
    digit_folder(tmp_path / "imgs", n=4)
    items = list_inputs(str(tmp_path / "imgs"))
    predict_to_csv(Predictor.from_checkpoint(digits_ckpt), items, tmp_path / "p.csv", 2, 2, progress=False)
    assert list_inputs(str(tmp_path / "p.csv")) == items


def test_predictor_api_inputs(digits_ckpt, tmp_path):
    from PIL import Image

    digit_folder(tmp_path / "imgs", n=2)
    pred = Predictor.from_checkpoint(digits_ckpt)
    path = str(tmp_path / "imgs" / "000.png")
    want = pred.predict([path], k=2)
    assert torch.equal(pred.predict(path, k=2)["labels"], want["labels"])  # one path, not its characters
    rgb = Image.open(path).convert("RGB")  # to a grayscale model: converted as a path's image is
    assert torch.equal(pred.predict([rgb], k=2)["labels"], want["labels"])
    with pytest.raises(ValueError, match=r"no images given"):
        pred.predict([])
    with pytest.raises(TypeError, match=r"must be float"):
        pred.predict([torch.zeros(1, 8, 8, dtype=torch.uint8)])
    (tmp_path / "junk.ckpt").write_bytes(b"\x80\x04junk" * 10)
    with pytest.raises(ValueError, match=r"junk\.ckpt is not a checkpoint written by lsc/Lightning"):
        Predictor.from_checkpoint(tmp_path / "junk.ckpt")


def test_predict_cli_refuses_to_overwrite(digits_ckpt, tmp_path):
    digit_folder(tmp_path / "imgs", n=2)
    out = tmp_path / "preds.csv"
    out.write_text("yesterday's predictions")
    cmd = [sys.executable, "-m", "lsc.predict", f"ckpt_path={digits_ckpt}", f"input={tmp_path / 'imgs'}", f"out={out}",
           f"hydra.run.dir={tmp_path / 'h'}"]  # fmt: skip
    p = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode != 0 and "exists; pass overwrite=true" in p.stderr and out.read_text().startswith("yester")
    p = subprocess.run([*cmd, "overwrite=true"], env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert len(list(csv.DictReader(open(out)))) == 2
