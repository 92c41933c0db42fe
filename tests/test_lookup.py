"""The fused class-center lookup (`lsc.centers._lookup`): the same centers as the torch path, bit for bit, for every
system family and order; labels checked inside it; one LSC loss step in a small constant number of aten ops; and
torch.compile tracing the losses is test_compile.py's. The Triton kernel's cases are in test_triton.py."""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from lsc.centers import ClassCenters, _lookup, make_system
from lsc.centers import _kernels as kernels
from lsc.centers.assignment import Assignment, assign_nearest_free
from lsc.losses import CosineLoss, SoftmaxLoss

pytestmark = pytest.mark.skipif(not kernels.HAVE_NUMBA, reason="the CPU lookup needs numba")

# (system, n_dim, n_classes): every family; more than one orbit (a_n, v22p, a_n_interp), several value groups
# (a_n_interp: 2 and -1), one side only (v10), nonzeros filling n_dim (v22 at 4), and m, k >= 10 (v10_1)
SYSTEMS = [("v11", 12, 100), ("v21", 9, 200), ("v22", 12, 400), ("v22", 4, 6), ("v33", 11, 300), ("v31", 7, 100),
           ("v22p", 10, 300), ("a_n", 8, 60), ("a_np", 9, 40), ("a_n_interp", 6, 150), ("v10", 5, 5),
           ("v10_1", 12, 100)]  # fmt: skip


def reference(cc: ClassCenters, labels: torch.Tensor) -> torch.Tensor:
    """The torch path: the order, then unranking and normalization, op by op."""
    return cc.system.vectors(cc.index_of(labels), normalize=True)


def centers(name, n_dim, n_classes, order, seed=3) -> ClassCenters:
    if order == "data":
        system = make_system(name, n_dim)
        if not hasattr(system, "orbits"):  # a_np: no data-aware walk; any explicit table
            idx = torch.randperm(system.count, generator=torch.Generator().manual_seed(seed))[:n_classes]
            return ClassCenters(system, n_classes, assignment=Assignment(idx, system.count))
        protos = torch.randn(n_classes, n_dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        return ClassCenters(system, n_classes, assignment=Assignment(assign_nearest_free(system, protos)[0],
                                                                      system.count))  # fmt: skip
    return ClassCenters(name, n_classes, n_dim=n_dim, seed=seed, shuffle=order == "keyed")


@pytest.mark.parametrize("order", ["keyed", "identity", "data"])
@pytest.mark.parametrize("cfg", SYSTEMS, ids=lambda c: f"{c[0]}-{c[1]}")
def test_equals_the_torch_path(cfg, order):
    cc = centers(*cfg, order)
    labels = torch.cat([torch.arange(cc.n_classes), torch.randint(0, cc.n_classes, (64,))])
    got = _lookup.lookup(cc, labels)
    assert got.dtype == torch.float32 and got.shape == (labels.numel(), cc.n_dim)
    assert torch.equal(got, reference(cc, labels))
    assert torch.equal(cc(labels), got)  # __call__ takes the fused path
    assert torch.allclose(got.double().norm(dim=1), torch.ones(len(labels), dtype=torch.float64), atol=1e-6)


def test_tables_in_every_order():
    t = torch.randn(30, 7, generator=torch.Generator().manual_seed(0))
    keyed = ClassCenters("table", 25, table=t, shuffle=True)
    data = ClassCenters("table", 20, table=t, assignment=Assignment(torch.randperm(30)[:20], 30))
    for cc in (keyed, ClassCenters("table", 30, table=t), data):
        labels = torch.arange(cc.n_classes).flip(0)
        assert torch.equal(_lookup.lookup(cc, labels), reference(cc, labels))


@pytest.mark.parametrize("name", ["v31", "v21", "a_n_interp"])
def test_millions_of_classes_and_cycle_walks(name):
    """1M classes at n_min, with every label whose Feistel rounds leave [0, count) (cycle-walks) in the batch."""
    cc = ClassCenters(name, 1_000_000, seed=7)
    every = torch.arange(cc.n_classes)
    walkers = every[cc.perm._rounds(every, True) >= cc.perm.count]
    assert walkers.numel() > 0, "no label walks: the case does not test cycle-walking"
    labels = torch.cat([walkers, torch.randint(0, cc.n_classes, (20_000,), generator=torch.Generator().manual_seed(1))])
    assert torch.equal(_lookup.lookup(cc, labels), reference(cc, labels))


def test_shapes_and_empty():
    cc = ClassCenters("v22", 500)
    labels = torch.randint(0, 500, (3, 4))
    assert torch.equal(cc(labels), reference(cc, labels.reshape(-1)).reshape(3, 4, cc.n_dim))
    assert cc(torch.empty(0, dtype=torch.int64)).shape == (0, cc.n_dim)
    assert torch.equal(cc(torch.tensor([5, 6], dtype=torch.int32)), reference(cc, torch.tensor([5, 6])))


@pytest.mark.parametrize("bad", [[0, 500], [-1, 3], [499, 10**12]])
def test_out_of_range_labels_raise_early(bad):
    cc = ClassCenters("v22", 500)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 500\)"):
        cc(torch.tensor(bad))
    with pytest.raises(ValueError, match="integers"):
        cc(torch.tensor([1.0]))


def _top_level_ops(fn) -> list[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()

    def op(e):
        return e.name.startswith(("aten::", "lsc::"))

    def inside(e):  # called by another op, or inside one of our custom ops (its autograd wrapper included)
        p = e.cpu_parent
        while p is not None:
            if op(p) or "lsc_" in p.name:
                return True
            p = p.cpu_parent
        return False

    return [e.name for e in prof.events() if op(e) and not inside(e)]


@pytest.mark.parametrize("loss", ["cos", "softmax"])
def test_one_loss_step_runs_a_small_constant_number_of_ops(loss):
    """Forward + backward of an LSC loss step: the same handful of aten ops at 1k and 1M classes and in every family
    (the torch path ran ~180 for the cosine loss of V^22 at 1M classes: Feistel rounds, searchsorted, scatters)."""
    counts = {}
    for name, n_classes in (("v22", 1_000), ("v22", 1_000_000), ("v21", 1_000_000), ("a_n", 1_000)):
        cc = ClassCenters(name, n_classes)
        fn = CosineLoss() if loss == "cos" else SoftmaxLoss(scale=16.0, margin=0.2)
        z = torch.randn(256, cc.n_dim, requires_grad=True)
        y = torch.randint(0, n_classes, (256,))
        fn(z, y, cc).backward()  # warm: plans and caches
        ops = _top_level_ops(lambda fn=fn, z=z, y=y, cc=cc: fn(z, y, cc).backward())
        assert ops.count("lsc::center_lookup") == 1
        counts[name, n_classes] = len(ops)
    # the count does not depend on n_classes, nor on the family beyond the orbits' log Z terms (A_n has two)
    assert counts["v22", 1_000] == counts["v22", 1_000_000] == counts["v21", 1_000_000], counts
    assert counts["v22", 1_000] <= (35 if loss == "cos" else 80), counts
    assert counts["a_n", 1_000] <= (35 if loss == "cos" else 125), counts
