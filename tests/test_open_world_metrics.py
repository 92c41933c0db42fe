"""The open-world experiment's detection metrics against scikit-learn (independent implementations)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from helpers import ROOT
from sklearn.metrics import roc_auc_score, roc_curve


@pytest.fixture(scope="module")
def ow():
    sys.path.insert(0, str(ROOT / "experiments" / "open_world"))
    try:
        import run  # noqa: PLC0415

        yield run
    finally:
        sys.path.pop(0)
        sys.modules.pop("run", None)


@pytest.mark.parametrize("ties", [False, True])
def test_auroc_matches_sklearn(ow, ties):
    rng = np.random.default_rng(3)
    pos, neg = rng.normal(1, 1, 300), rng.normal(0, 1, 500)
    if ties:  # binary scores (the unlabeled-nearest flag) tie massively
        pos, neg = (pos > 0.5).astype(float), (neg > 0.5).astype(float)
    want = roc_auc_score(np.r_[np.ones(300), np.zeros(500)], np.r_[pos, neg])
    assert ow.auroc(pos, neg) == pytest.approx(want, abs=1e-12)


def test_fpr_at_95_tpr(ow):
    rng = np.random.default_rng(4)
    pos, neg = rng.normal(2, 1, 1000), rng.normal(0, 1, 2000)
    fpr, tpr, _ = roc_curve(np.r_[np.ones(1000), np.zeros(2000)], np.r_[pos, neg])
    want = fpr[np.searchsorted(tpr, 0.95)]  # the first threshold reaching 95% TPR
    assert ow.fpr_at_tpr(pos, neg) == pytest.approx(want, abs=1e-3)
