"""Defaults that work at 10^8 classes (the scale issue, item 5): nothing per epoch or at start-up scans every center."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch
from helpers import make_cfg

import lsc.train
from lsc.callbacks import PredictorAccuracy
from lsc.centers import ClassCenters


def test_one_epoch_at_1e8_classes_runs_with_the_default_callbacks(tmp_path, caplog):
    # before: the validation callback's cossim scanned all 10^8 centers per sample (14 minutes and not done)
    cfg = make_cfg(tmp_path, "data=synthetic", "data.num_classes=100000000", "data.num_samples=64",
                   "centers.auto_min_dim=0", "trainer.max_epochs=1")  # fmt: skip
    with caplog.at_level(logging.INFO, logger="lsc.callbacks.predictor_accuracy"):
        metrics = lsc.train.train(cfg)
    assert 0 <= metrics["val/acc_topk"] <= 1
    assert "val/acc_cossim" not in metrics
    assert "val: cossim skipped: a dense scan of 100,000,000 centers x 586 dims" in caplog.text


@pytest.mark.parametrize("budget", [None, 40 * 16 * 25, 40 * 16 * 7])
def test_dense_predictors_score_the_first_samples_within_the_budget(budget):
    cc = ClassCenters("v21", 40, n_dim=16, seed=1)
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 40, (30,), generator=g)
    z = cc(y) + 0.6 * torch.randn(30, 16, generator=g)  # noisy: some wrong, so the scored rows matter
    cb = PredictorAccuracy(methods=("cossim", "topk"), train_eval=False, unlabeled_share=False, dense_budget=budget)
    logged = {}
    module = SimpleNamespace(centers=cc, log=lambda name, v, **kw: logged.__setitem__(name, float(v)))
    for a in range(0, 30, 8):  # batches of 8, 8, 8, 6
        cb._update(module, z[a : a + 8], y[a : a + 8], "val")
    cb._log(module, "val")
    n = 30 if budget is None else budget // (40 * 16)  # 25 or 7 samples
    want_cos = (cc.predict(z[:n], "cossim") == y[:n]).double().mean().item()
    want_topk = (cc.predict(z, "topk") == y).double().mean().item()
    assert logged["val/acc_cossim"] == pytest.approx(want_cos) and logged["val/acc_topk"] == pytest.approx(want_topk)
    assert 0 < want_topk < 1  # the noise makes the prefix matter
    assert cb.dense_done == {}  # the next epoch starts its budget again
    with pytest.raises(ValueError, match=r"dense_budget must be > 0 or null"):
        PredictorAccuracy(dense_budget=0)
