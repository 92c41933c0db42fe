"""Full-system softmax: log Z and log_prob against a brute-force logsumexp over the materialized system, for every
system family; gradients by gradcheck against autograd through the brute force; stability; the loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import make_cfg

import lsc.train
from lsc.centers import ClassCenters, make_system
from lsc.centers.partition import log_partition
from lsc.losses import SoftmaxLoss

FAMILIES = ["v11", "v21", "v22", "v31", "v33", "v20", "v03", "a_n", "a_np", "a_n_interp", "v21p", "v22p"]
DIMS = [6, 8, 10]


def brute(system, z: torch.Tensor, scale: float) -> torch.Tensor:
    v = system.vectors(torch.arange(system.count), normalize=True, dtype=torch.float64)
    return torch.logsumexp(scale * F.normalize(z.double(), dim=1) @ v.T, 1)


def queries(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(6, n, generator=g, dtype=torch.float64)
    z[1] = 0.0
    z[1, 0] = 1.0  # one-hot
    z[2] = torch.tensor([1.0, 1.0, -1.0, -1.0] * n)[:n]  # ties
    z[3, : n // 2] = z[3, 0]  # a block of equal coordinates
    return z


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("n", DIMS)
@pytest.mark.parametrize("scale", [1.0, 16.0, 200.0])
def test_log_z_matches_brute_force(name, n, scale):
    s = make_system(name, n)
    z = queries(n, hash((name, n)) % 1000)
    torch.testing.assert_close(log_partition(s, z, scale), brute(s, z, scale), rtol=1e-12, atol=1e-10)


def test_table_log_z():
    t = torch.randn(30, 5, dtype=torch.float64)
    s = make_system("table", 5, vectors=t)
    z = torch.randn(7, 5, dtype=torch.float64)
    want = torch.logsumexp(16 * F.normalize(z, dim=1) @ F.normalize(s.table.double(), dim=1).T, 1)
    torch.testing.assert_close(log_partition(s, z, 16.0), want, rtol=1e-6, atol=1e-5)  # table held in float32


@pytest.mark.parametrize("name", ["v22", "a_n", "a_np", "a_n_interp", "v21p"])
def test_gradients_by_gradcheck(name):
    s = make_system(name, 7)
    z = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: log_partition(s, x, 5.0), (z,))
    # and equal to autograd through the brute force
    z2 = z.detach().clone().requires_grad_(True)
    log_partition(s, z, 5.0).sum().backward()
    brute(s, z2, 5.0).sum().backward()
    torch.testing.assert_close(z.grad, z2.grad, rtol=1e-10, atol=1e-12)


def test_stable_at_scale_64_and_n_dim_600():
    s = make_system("v22", 600)
    z = torch.randn(4, 600)
    z[0] = 0
    z[0, :4] = torch.tensor([1.0, 1.0, -1.0, -1.0])  # a center: the largest logit is 64 exactly
    lz = log_partition(s, z, 64.0)
    assert torch.isfinite(lz).all()
    # float32 against float64: float32 or better accuracy
    torch.testing.assert_close(lz.double(), log_partition(s, z.double(), 64.0), rtol=1e-6, atol=1e-4)
    # the log-partition is at least the largest logit, at most it plus log(count)
    assert 64 - 1e-4 <= lz[0].item() <= 64 + math.log(s.count)
    zr = z.requires_grad_(True)
    log_partition(s, zr, 64.0).sum().backward()
    assert torch.isfinite(zr.grad).all()


def test_log_prob_is_a_distribution_over_the_system():
    cc = ClassCenters("v21", 60, n_dim=6)  # 60 vectors, all labeled
    z = torch.randn(5, 6, dtype=torch.float64)
    lp = torch.stack([cc.log_prob(z, torch.full((5,), c), 8.0) for c in range(60)], 1)
    torch.testing.assert_close(lp.exp().sum(1), torch.ones(5, dtype=torch.float64))
    # with unlabeled vectors the labeled probabilities sum to less than 1 (the rest is on unlabeled vectors)
    cc = ClassCenters("v21", 20, n_dim=6)
    lp = torch.stack([cc.log_prob(z, torch.full((5,), c), 8.0) for c in range(20)], 1)
    assert (lp.exp().sum(1) < 1).all()
    assert torch.equal(lp.argmax(1), cc.predict(z.float(), "cossim"))  # argmax softmax = argmax cosine


def test_softmax_loss_against_dense_cross_entropy():
    cc = ClassCenters("v22", 90, n_dim=6)  # all 90 vectors labeled: the dense CE is over every class
    z, y = torch.randn(8, 6), torch.randint(0, 90, (8,))
    centers = cc(torch.arange(90)).double()
    for margin in (0.0, 0.3):
        loss = SoftmaxLoss(scale=10.0, margin=margin)(z, y, cc)
        cos = F.normalize(z.double(), dim=1) @ centers.T
        cos[torch.arange(8), y] -= margin
        assert loss.item() == pytest.approx(F.cross_entropy(10 * cos, y).item(), rel=1e-5)


def test_learned_scale_gets_a_gradient():
    loss_fn = SoftmaxLoss(scale=10.0, learn_scale=True)
    cc = ClassCenters("v22", 50, n_dim=8)
    loss_fn(torch.randn(4, 8), torch.randint(0, 50, (4,)), cc).backward()
    assert loss_fn.log_scale.grad is not None and loss_fn.scale.item() == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"scale": 0}, "scale"),
        ({"scale": -1}, "scale"),
        ({"margin": 1.0}, "margin"),
        ({"margin": -0.1}, "margin"),
        ({"cos_weight": -1}, "cos_weight"),
    ],
)
def test_bad_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        SoftmaxLoss(**kw)


def test_wrong_width_is_refused():
    with pytest.raises(ValueError, match="n_dim=8"):
        log_partition(make_system("v22", 8), torch.randn(2, 9), 4.0)


@pytest.mark.parametrize("centers", ["v21", "v22", "v11", "a_n", "a_nr", "a_np", "a_n_interp", "v22p"])
def test_trains_with_every_system(tmp_path, centers):
    cfg = make_cfg(tmp_path, "loss=softmax", f"centers={centers}", "centers.n_dim=8", "trainer.max_epochs=1")
    metrics = lsc.train.train(cfg)
    assert math.isfinite(metrics["train/loss"]) and 0 < metrics["train/target_prob"] <= 1


@pytest.mark.parametrize("name", ["v22", "v21", "v33", "a_n", "a_n_interp", "v22p"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_kernel_equals_the_torch_tree(name, dtype):
    """The fused numba kernel (CPU default) against the log-space tree (other devices, the reference): values,
    gradients in z and in a learned scale."""
    s = make_system(name, 12)
    z = torch.randn(300, 12, dtype=dtype)
    z[0] = 0
    z[0, 0] = 1.0
    outs = {}
    for backend in ("numba", "torch"):
        zz = z.clone().requires_grad_(True)
        scale = torch.tensor(12.0, dtype=dtype, requires_grad=True)
        lz = log_partition(s, zz, scale, backend=backend)
        (lz * torch.linspace(0.5, 1.5, 300, dtype=dtype)).sum().backward()
        outs[backend] = (lz.detach(), zz.grad, scale.grad)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    for a, b in zip(outs["numba"], outs["torch"], strict=True):
        torch.testing.assert_close(a, b, **tol)


def test_scale_past_float64_falls_back_to_the_tree():
    s = make_system("v22", 10)
    z = torch.randn(3, 10, dtype=torch.float64)
    torch.testing.assert_close(log_partition(s, z, 500.0), brute(s, z, 500.0), rtol=1e-12, atol=1e-9)
