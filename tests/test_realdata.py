"""Real-data accuracy: the default digits run (fast, part of `make test`) and Fashion-MNIST LSC vs CE
(`make test-realdata`, ~30 min on 2 CPU cores; marked `realdata`, so CI runs it only where it fits)."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import HAS_FMNIST, lsc_train_cmd, make_cfg, subprocess_env

from lsc.train import train


def test_default_run_reaches_95_percent_on_digits(tmp_path):
    """`python -m lsc.train` with no arguments: small encoder, digits, V^21 at auto n_dim, CPU."""
    cfg = make_cfg(tmp_path, tiny=False)
    metrics = train(cfg)
    assert metrics["val/acc_cossim"] >= 0.95
    assert metrics["val/acc_topk"] >= 0.95
    assert metrics["val/agreement"] == 1.0
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["val/acc_topk"] == pytest.approx(metrics["val/acc_topk"])


@pytest.mark.realdata
@pytest.mark.skipif(not HAS_FMNIST, reason="needs Debian's dataset-fashion-mnist (make data)")
def test_fmnist_enc_reaches_91_and_matches_ce(tmp_path):
    """+experiment=fmnist_enc: >= 91% test accuracy under both predictors, within 1 point of the same encoder with
    a classification layer and cross-entropy (same data, epochs, schedule). Both runs in parallel, 1 thread each."""

    def run(name, *extra):
        d = tmp_path / name
        cmd = lsc_train_cmd("+experiment=fmnist_enc", *extra, f"hydra.run.dir={d}", "~callbacks.rich_progress_bar")
        p = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=45 * 60)
        assert p.returncode == 0, p.stderr[-3000:]
        return json.loads((d / "metrics.json").read_text())

    with ThreadPoolExecutor(2) as ex:
        lsc, ce = ex.map(lambda a: run(*a), [("lsc",), ("ce", "model=ce")])
    print(f"fmnist_enc: LSC {lsc['test/acc_topk']:.4f} ({lsc['time_s']} s), CE {ce['test/acc']:.4f} ({ce['time_s']} s)")
    assert lsc["test/acc_topk"] >= 0.91 and lsc["test/acc_cossim"] >= 0.91
    assert lsc["test/acc_topk"] == lsc["test/acc_cossim"]
    assert lsc["test/acc_topk"] >= ce["test/acc"] - 0.01
    assert lsc["time_s"] <= 30 * 60
