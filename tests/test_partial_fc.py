"""Partial FC head: the margin softmax against a dense reference, negative sampling, prediction, and the sharded
(DDP) head against the single-process one in 2 gloo processes (loss, weight and embedding gradients)."""

from __future__ import annotations

import math
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from helpers import make_cfg, subprocess_env

import lsc.train
from lsc.models.partial_fc import PartialFCHead, init_weight, shard_range


def reference_loss(z, w, y, scale, margin, kind="cosface", cols=None):
    """Dense margin softmax cross-entropy over the columns `cols` (all by default), float64."""
    cos = F.normalize(z.double(), dim=1) @ F.normalize(w.double(), dim=1).T
    if cols is not None:
        cos = cos[:, cols]
        y = torch.searchsorted(cols, y)
    t = cos[torch.arange(len(y)), y]
    t = t - margin if kind == "cosface" else torch.cos(torch.acos(t.clamp(-1, 1)) + margin)
    cos = cos.clone()
    cos[torch.arange(len(y)), y] = t
    return F.cross_entropy(scale * cos, y)


@pytest.mark.parametrize("kind", ["cosface", "arcface"])
def test_full_softmax_matches_dense_reference(kind):
    torch.manual_seed(0)
    head = PartialFCHead(50, 8, scale=16, margin=0.3, margin_type=kind).double()  # float64: compare the math
    z, y = torch.randn(12, 8, dtype=torch.float64, requires_grad=True), torch.randint(0, 50, (12,))
    loss = head(z, y)
    w = head.weight.detach().clone().requires_grad_(True)
    z2 = z.detach().clone().requires_grad_(True)
    ref = reference_loss(z2, w, y, 16, 0.3, kind)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
    loss.backward()
    ref.backward()
    torch.testing.assert_close(head.weight.grad, w.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(z.grad, z2.grad, rtol=1e-9, atol=1e-12)


def test_sampling_keeps_positives_and_scores_the_sample():
    torch.manual_seed(1)
    head = PartialFCHead(100, 6, scale=10, margin=0.1, sample_rate=0.2)
    y = torch.tensor([3, 3, 50, 97, 12])
    index, target = head._sample(y.clone())
    assert index.numel() == 20 and torch.equal(index, index.sort().values) and index.unique().numel() == 20
    assert set(y.tolist()) <= set(index.tolist()) and torch.equal(index[target], y)
    # the loss is the dense softmax restricted to the sampled columns
    z = torch.randn(5, 6)
    torch.manual_seed(7)
    loss = head(z, y)
    torch.manual_seed(7)
    cols, _ = head._sample(y.clone())
    assert loss.item() == pytest.approx(reference_loss(z, head.weight, y, 10, 0.1, cols=cols).item(), rel=1e-5)
    # fewer sample slots than positives: exactly the positives
    small = PartialFCHead(100, 6, sample_rate=0.01)
    index, _ = small._sample(y.clone())
    assert index.tolist() == sorted(set(y.tolist()))


def test_predict_is_argmax_cosine():
    torch.manual_seed(2)
    head = PartialFCHead(300, 5)
    z = torch.randn(40, 5)
    want = (F.normalize(z, dim=1) @ F.normalize(head.weight, dim=1).T).argmax(1)
    assert torch.equal(head.predict(z, chunk=64), want)


def test_sharded_init_equals_the_full_init():
    full = init_weight(0, 2_500_000, 2, seed=3)  # spans three init chunks
    for world in (2, 3):
        parts = [init_weight(*shard_range(2_500_000, r, world), 2, seed=3) for r in range(world)]
        assert torch.equal(torch.cat(parts), full)
    assert [shard_range(10, r, 3) for r in range(3)] == [(0, 4), (4, 7), (7, 10)]


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"sample_rate": 0}, "sample_rate"),
        ({"margin_type": "x"}, "margin_type"),
        ({"scale": 0}, "scale"),
        ({"margin": 1.0}, "margin"),
    ],
)
def test_bad_settings(bad, match):
    with pytest.raises(ValueError, match=match):
        PartialFCHead(10, 4, **bad)


def test_trains_through_the_app(tmp_path):
    cfg = make_cfg(tmp_path, "model=partial_fc", "model.embed_dim=12", "data.num_samples=48", "trainer.max_epochs=2")
    metrics = lsc.train.train(cfg)
    assert 0 <= metrics["val/acc"] <= 1 and math.isfinite(metrics["train/loss"])
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["state_dict"]["head.weight"].shape == (10, 12)


DDP_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import torch, torch.distributed as dist, torch.multiprocessing as mp
    from lsc.models.partial_fc import PartialFCHead

    N, C, D, WORLD = 8, 21, 6, 2  # 21 classes: unequal shards (11 + 10)

    def data():
        g = torch.Generator().manual_seed(0)
        return torch.randn(N * WORLD, D, generator=g), torch.randint(0, C, (N * WORLD,), generator=g)

    def worker(rank, port, out):
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        torch.set_num_threads(1)
        dist.init_process_group("gloo", rank=rank, world_size=WORLD)
        z, y = data()
        head = PartialFCHead(C, D, scale=20, margin=0.25, seed=4)
        head.shard(rank, WORLD)
        zl = z[rank * N : (rank + 1) * N].clone().requires_grad_(True)
        loss = head(zl, y[rank * N : (rank + 1) * N])
        loss.backward()
        pred = head.predict(z[rank * N : (rank + 1) * N])
        res = {"loss": loss.item(), "wgrad": head.weight.grad, "zgrad": zl.grad, "pred": pred}
        got = [None] * WORLD
        dist.all_gather_object(got, res)
        if rank == 0:
            torch.save(got, out)
        dist.destroy_process_group()

    if __name__ == "__main__":
        mp.spawn(worker, args=(int(sys.argv[1]), sys.argv[2]), nprocs=WORLD)
    """
)


@pytest.mark.slow
def test_sharded_head_matches_single_process(tmp_path):
    script, out = tmp_path / "pfc.py", tmp_path / "pfc.pt"
    script.write_text(DDP_SCRIPT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.run(
        [sys.executable, str(script), str(port), str(out)],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-4000:]
    ranks = torch.load(out, weights_only=False)
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(16, 6, generator=g), torch.randint(0, 21, (16,), generator=g)
    head = PartialFCHead(21, 6, scale=20, margin=0.25, seed=4)
    z = z.requires_grad_(True)
    loss = head(z, y)
    loss.backward()
    for r in ranks:
        assert r["loss"] == pytest.approx(loss.item(), rel=1e-6)  # every rank: the loss of the global batch
    torch.testing.assert_close(torch.cat([r["wgrad"] for r in ranks]), head.weight.grad, rtol=1e-5, atol=1e-7)
    # the backbone sees world x its rows' gradient: DDP's average over ranks then equals the single process
    torch.testing.assert_close(torch.cat([r["zgrad"] for r in ranks]) / 2, z.grad, rtol=1e-5, atol=1e-7)
    assert torch.equal(torch.cat([r["pred"] for r in ranks]), head.predict(z.detach()))


@pytest.mark.slow
def test_ddp_training_checkpoints_the_full_head(tmp_path):
    """2 gloo processes: each rank trains its shard; the checkpoint holds every class's weight (gathered), and a
    single process evaluates it."""
    from helpers import run_ddp

    run = tmp_path / "run"
    run_ddp("trainer=ddp_cpu", "model=partial_fc", "model.embed_dim=12", "data=digits", "data.batch_size=32",
            "trainer.max_epochs=1", "++trainer.limit_train_batches=6", "~callbacks.rich_progress_bar",
            "++trainer.enable_progress_bar=false", "~logger", f"hydra.run.dir={run}", f"paths.log_dir={tmp_path}",
            cwd=tmp_path, timeout=400)  # fmt: skip
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    w = ckpt["state_dict"]["head.weight"]
    assert w.shape == (10, 12)
    init = init_weight(0, 10, 12, seed=0)
    assert not torch.equal(w[:5], init[:5]) and not torch.equal(w[5:], init[5:])  # both shards were trained
    import lsc.eval

    ecfg = make_cfg(tmp_path / "e", "trainer=cpu", config_name="eval")  # evaluated on one process
    got = lsc.eval.evaluate(ecfg, str(run / "checkpoints" / "last.ckpt"), ["trainer=cpu"], {"trainer"})
    assert 0 <= got["val/acc"] <= 1  # digits: no test split, eval scores the validation split
