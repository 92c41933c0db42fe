"""The Triton kernels (`lsc.centers._triton`) against the torch and numba paths and brute force.

CPU: the Triton interpreter. triton 3.8 reads TRITON_INTERPRET inside `@triton.jit`, and triton.language's own
@jit helpers (tl.sum, tl.max, tl.zeros) are decorated when triton is first imported, so a process that imported
triton without it (lightning does, in any full test session) can only compile. The interpreter cases therefore
run in one spawned worker process started with TRITON_INTERPRET=1 (fixture `interp`): each test sends it one
case function and gets its assertion back. The gpu-marked tests run the compiled kernels in this process.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os

import pytest
import torch
import torch.nn.functional as F

triton = pytest.importorskip("triton")

from lsc.centers import ClassCenters, make_system  # noqa: E402
from lsc.centers import _kernels as kernels  # noqa: E402
from lsc.centers.assignment import Assignment, assign_nearest_free  # noqa: E402
from lsc.centers.partition import log_partition  # noqa: E402

# (system, n_dim, n_classes): every family, unlabeled vectors everywhere, plus edge shapes (no zeros, one side)
TOPK = [
    ("v11", 12, 100),
    ("v21", 8, 120),
    ("v22", 8, 300),
    ("v31", 6, 50),
    ("a_n", 10, 80),
    ("a_n_interp", 6, 200),
    ("v22p", 7, 250),
    ("v22", 4, 5),  # n_dim = nonzeros: top and bottom lists meet
    ("v10", 6, 4),  # positive values only
    ("a_n_interp", 1, 1),
]
HALF = {"bfloat16": torch.bfloat16, "float16": torch.float16}


# ---- the interpreter worker -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def interp():
    """run(fn, *args): fn(*args) in a worker process whose triton runs kernels in the interpreter."""
    old = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"  # inherited by the spawned worker from its start
    try:
        pool = mp.get_context("spawn").Pool(1, initializer=torch.set_num_threads, initargs=(1,))
    finally:
        if old is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = old
    yield lambda fn, *args: pool.apply_async(fn, args).get(timeout=300)
    pool.close()
    pool.join()


# ---- references and queries (run in the worker, or here for the GPU tests) ----------------------------------


def make_cc(name, n_dim, n_classes, shuffle=True, assign=False, seed=3) -> ClassCenters:
    if assign:  # the data-aware assignment (explicit table) from random prototypes
        system = make_system(name, n_dim)
        protos = torch.randn(n_classes, n_dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        table = Assignment(assign_nearest_free(system, protos)[0], system.count)
        return ClassCenters(system, n_classes, assignment=table)
    return ClassCenters(name, n_classes, n_dim=n_dim, seed=seed, shuffle=shuffle)


def queries(cc: ClassCenters, kind: str, rows: int, seed: int = 0) -> torch.Tensor:
    """gauss; int (entries -2..2: exact ties everywhere); adv (centers, centers + 1e-6 noise, one-hots, constant
    rows, boundary coordinates equal or one ulp apart, magnitudes 1e30 and 1e-30, subnormals, signed zeros)."""
    n = cc.n_dim
    g = torch.Generator().manual_seed(seed)
    if kind == "gauss":
        return torch.randn(rows, n, generator=g)
    if kind == "int":
        return torch.randint(-2, 3, (rows, n), generator=g).float()
    k = max(1, rows // 12)
    v = cc.system.vectors(torch.randint(0, cc.system.count, (k,), generator=g))
    eye = torch.eye(n)[torch.randint(0, n, (k,), generator=g)]
    near = torch.randn(4 * k, n, generator=g)
    order = near.argsort(1, descending=True)
    for r in range(4 * k):  # copy the t-th largest onto the (t+1)-th, or move it one ulp: boundary ties and near-ties
        t = r % max(1, n - 1)
        a, b = order[r, t], order[r, min(t + 1, n - 1)]
        near[r, b] = near[r, a] if r % 2 else torch.nextafter(near[r, a], torch.tensor(-math.inf))
    signed0 = torch.zeros(k, n)
    signed0[:, ::2] = -0.0
    signed0[:, 0] = 1.0
    parts = [
        v,
        v + 1e-6 * torch.randn(k, n, generator=g),
        eye,
        -eye,
        torch.ones(k, n),
        near,
        torch.randn(k, n, generator=g) * 1e30,
        torch.randn(k, n, generator=g) * 1e-30,
        torch.randn(k, n, generator=g) * 1e-40,  # float32 subnormals
        signed0,
    ]
    z = torch.cat(parts)
    return z[torch.randperm(len(z), generator=g)][:rows]  # 13 k >= rows


def _cos_keys(z: torch.Tensor, vecs: torch.Tensor) -> torch.Tensor:
    """[B, V] keys ordered as cos(z, v): exact integers sign(s) s^2 / |v|^2 for integer queries (so exact ties are
    ties), float64 cosines else."""
    if torch.equal(z, z.round()):
        s = z.double() @ vecs.T
        return torch.sign(s) * s * s / (vecs * vecs).sum(1)
    return z.double() @ (vecs / vecs.norm(dim=1, keepdim=True)).T


def brute_fast_labels(cc: ClassCenters, z: torch.Tensor):
    """What the fast path returns, from every vector: the label of the unique nearest vector, else (-1, slow)."""
    key = _cos_keys(z, cc.system.vectors(torch.arange(cc.system.count), dtype=torch.float64))
    best = key.max(1, keepdim=True).values
    tied = (key == best).sum(1) > 1
    table = torch.full((cc.system.count,), -1, dtype=torch.int64)
    table[cc.index_of(torch.arange(cc.n_classes))] = torch.arange(cc.n_classes)
    lab = table[key.argmax(1)]
    slow = tied | (lab < 0)
    return torch.where(slow, -1, lab), slow


def _diff(a, b) -> str:
    bad = (a != b).nonzero()[:, 0]
    return f"{bad.numel()} rows differ, first {bad[:5].tolist()}: {a[bad[:5]].tolist()} vs {b[bad[:5]].tolist()}"


def brute_closest_labeled(cc: ClassCenters, z: torch.Tensor):
    """(closest labeled center's label, unique?) from every labeled center: the topk predictor's answer."""
    key = _cos_keys(z, cc.system.vectors(cc.index_of(torch.arange(cc.n_classes)), dtype=torch.float64))
    best = key.max(1, keepdim=True).values
    return key.argmax(1), (key == best).sum(1) == 1


def check_topk(cc, z, block_rows=None, brute=False) -> dict:
    """fast_labels_triton == fast_labels_numba row for row (on the same float32 values, half types widened): the
    nearest-vector decision and the second-best check (a data-aware table: numba has no second-best check there, the
    kernel decides a superset of its rows); against fast_labels_torch (no second-best check): the same
    label on every row that one decides, and no row slow that it decides; optionally against brute force: every
    decided row holds its unique closest labeled center, and the nearest-vector rows are decided."""
    from lsc.centers._triton import fast_labels_triton

    lt, st = fast_labels_triton(cc, z, block_rows=block_rows)
    zr = z.float() if z.dtype in HALF.values() else z
    lr, sr = kernels.fast_labels_torch(cc, zr)
    assert lt.device == z.device and lt.dtype == torch.int64 and st.dtype == torch.bool
    lt, st, lr, sr = lt.cpu(), st.cpu(), lr.cpu(), sr.cpu()
    assert torch.equal(lt == -1, st)
    assert not (st & ~sr).any(), "slow where the torch path decides: " + _diff(st, sr)
    assert torch.equal(lt[~sr], lr[~sr]), "labels: " + _diff(lt[~sr], lr[~sr])
    if kernels.HAVE_NUMBA and zr.dtype == torch.float32:
        ln, sn = kernels.fast_labels_numba(cc, zr.cpu())
        if getattr(cc.perm, "explicit", False):  # numba maps a data-aware table after its kernel: no second-best check
            assert not (st & ~sn).any() and torch.equal(lt[~sn], ln[~sn]), "vs numba: " + _diff(lt[~sn], ln[~sn])
        else:
            assert torch.equal(st, sn), "slow flags vs numba: " + _diff(st, sn)
            assert torch.equal(lt, ln), "labels vs numba: " + _diff(lt, ln)
    if brute:
        lb, sb = brute_fast_labels(cc, zr.cpu())
        assert torch.equal(lt[~sb], lb[~sb]), "vs brute force: " + _diff(lt[~sb], lb[~sb])
        lab, unique = brute_closest_labeled(cc, zr.cpu())
        assert unique[~st].all() and torch.equal(lt[~st], lab[~st]), "vs brute force: " + _diff(lt[~st], lab[~st])
    unlabeled = cc.system.count - cc.n_classes
    return {"slow": int(st.sum()), "second": int((sr & ~st).sum()), "rows": len(z), "unlabeled": unlabeled}


# ---- interpreter cases (module-level functions: the worker imports this module to run them) ---------------


def case_topk(name, n_dim, n_classes, kind, rows, dtype="float32", shuffle=True, assign=False, block_rows=None):
    from lsc.centers._triton import interpreting

    assert interpreting()
    cc = make_cc(name, n_dim, n_classes, shuffle=shuffle, assign=assign)
    z = queries(cc, kind, rows, seed=n_dim + rows)
    z = z.to(HALF.get(dtype, getattr(torch, dtype)))
    bad = ~torch.isfinite(z).all(1)  # 1e30 overflows float16: embeddings are finite (check_embeddings)
    z[bad] = queries(cc, "gauss", int(bad.sum())).to(z.dtype)
    brute = kind != "adv" and dtype in ("float32", "float64") and cc.system.count <= 5000  # half types: ties
    return check_topk(cc, z, block_rows, brute=brute)


def case_topk_table_of_low_indices(name, n_dim):
    """An explicit table over the lower half of the indices, labels reversed: every nearest vector above the table's
    largest index is unlabeled (the kernel's binary search runs off the table's end there)."""
    from lsc.centers._triton import interpreting

    assert interpreting()
    system = make_system(name, n_dim)
    n = system.count // 2
    cc = ClassCenters(system, n, assignment=Assignment(torch.arange(n).flip(0), system.count))
    r = check_topk(cc, queries(cc, "gauss", 2000, seed=5), brute=system.count <= 5000)
    assert 0 < r["slow"] < r["rows"]
    return r


def case_topk_nonfinite_rows():
    """The kernel leaves rows with NaN/inf slow (label -1) and decides the others as before; `ClassCenters.predict` on
    the fused path skips the up-front NaN check and reports such rows from the slow ones, with their row numbers."""
    from lsc.centers._triton import fast_labels_triton, interpreting

    assert interpreting()
    cc = make_cc("v22", 8, 300)
    z = queries(cc, "gauss", 64, seed=3)
    lt0, st0 = fast_labels_triton(cc, z)
    zb = z.clone()
    zb[5, 2], zb[9, 0], zb[40, 7] = math.nan, math.inf, -math.inf
    lt, st = fast_labels_triton(cc, zb)
    bad = torch.zeros(64, dtype=torch.bool)
    bad[[5, 9, 40]] = True
    assert st[bad].all() and (lt[bad] == -1).all()
    assert torch.equal(st[~bad], st0[~bad]) and torch.equal(lt[~bad], lt0[~bad])
    saved = kernels.fast_labels, ClassCenters._fused_topk
    kernels.fast_labels = lambda cc, z: fast_labels_triton(cc, z)  # the CUDA dispatch, on CPU tensors
    ClassCenters._fused_topk = lambda self, device: True
    try:
        with pytest.raises(ValueError, match=r"NaN/inf in 3 row\(s\), first row 5"):
            cc.predict(zb, "topk")
        got = cc.predict(z, "topk")
    finally:
        kernels.fast_labels, ClassCenters._fused_topk = saved
    assert torch.equal(got, cc.predict(z, "cossim"))


def case_fallback():
    """Past MAX_DIM the kernel is not launched: the torch path's answer comes back."""
    from lsc.centers import _triton

    cc = make_cc("v22", 8, 300)
    z = queries(cc, "gauss", 50)
    old, _triton.MAX_DIM = _triton.MAX_DIM, 4
    try:
        assert not _triton.triton_topk_covers(cc)
        got = kernels.fast_labels(cc, z, backend="triton")  # the dispatcher takes the torch path
        with pytest.raises(ValueError, match=r"does not cover"):
            _triton.fast_labels_triton(cc, z)
    finally:
        _triton.MAX_DIM = old
    want = kernels.fast_labels_torch(cc, z)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def brute_log_z(system, z: torch.Tensor, scale) -> torch.Tensor:
    v = system.vectors(torch.arange(system.count), normalize=True, dtype=torch.float64)
    return torch.logsumexp(scale * F.normalize(z.double(), dim=1) @ v.T, 1)


def logz_queries(n: int, rows: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(rows, n, generator=g)
    z[0] = 0.0
    z[0, 0] = 1.0  # one-hot
    if rows > 2:
        z[1] = torch.tensor([1.0, 1.0, -1.0, -1.0] * n)[:n]  # ties
        z[2, : n // 2] = z[2, 0]  # a block of equal coordinates
    return z


def check_log_z(system, z, scale: float, learn_scale: bool, brute: bool) -> None:
    """log Z and its gradients (in z, and in a tensor scale) from the Triton kernel against the torch tree in
    float32, the tree in float64 and (small systems) the brute-force logsumexp in float64, with autograd."""
    w = torch.linspace(0.5, 1.5, len(z), dtype=torch.float64)
    out = {}
    refs = [("tree32", "torch", torch.float32), ("tree64", "torch", torch.float64)]
    for key, backend, dtype in [("triton", "triton", torch.float32), *refs]:
        zz = z.to(dtype).clone().requires_grad_(True)
        s = torch.tensor(scale, dtype=dtype, device=z.device, requires_grad=True) if learn_scale else scale
        lz = log_partition(system, zz, s, backend=backend)
        assert lz.dtype == dtype
        (lz * w.to(lz)).sum().backward()
        out[key] = [lz.detach().double(), zz.grad.double()] + ([s.grad.double()] if learn_scale else [])
    if brute:
        zz = z.cpu().double().requires_grad_(True)
        s = torch.tensor(scale, dtype=torch.float64, requires_grad=True) if learn_scale else scale
        lz = brute_log_z(system, zz, s)
        (lz * w).sum().backward()
        out["brute"] = [lz.detach(), zz.grad] + ([s.grad] if learn_scale else [])
    # float32 tolerances: both float32 paths round u = scale z / |z| to ~1e-7 relative, so errors grow with scale
    tol = [dict(rtol=1e-6, atol=1e-6 * (1 + scale)), dict(rtol=1e-5, atol=5e-6 * (1 + scale))]
    tol.append(dict(rtol=1e-5, atol=1e-5 * (1 + scale) * len(z)))
    for ref in [k for k in out if k != "triton"]:
        for what, a, b, t in zip(("log Z", "dz", "dscale"), out["triton"], out[ref], tol, strict=False):
            torch.testing.assert_close(a.cpu(), b.cpu(), **t, msg=lambda m, ref=ref, what=what: f"{what} vs {ref}: {m}")


def case_log_z(name, n, scale, rows, learn_scale):
    from lsc.centers._triton import interpreting

    assert interpreting()
    s = make_system(name, n)
    check_log_z(s, logz_queries(n, rows, seed=n), scale, learn_scale, brute=s.count <= 20000)


def case_log_z_stable_600():
    """test_partition.test_stable_at_scale_64_and_n_dim_600 on the Triton kernel: no underflow, float32 accuracy."""
    s = make_system("v22", 600)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 600, generator=g)
    z[0] = 0
    z[0, :4] = torch.tensor([1.0, 1.0, -1.0, -1.0])  # a center: the largest logit is 64 exactly
    zr = z.clone().requires_grad_(True)
    lz = log_partition(s, zr, 64.0, backend="triton")
    lz.sum().backward()
    z64 = z.double().requires_grad_(True)
    ref = log_partition(s, z64, 64.0, backend="torch")
    ref.sum().backward()
    assert torch.isfinite(lz).all() and torch.isfinite(zr.grad).all()
    torch.testing.assert_close(lz.double(), ref.detach(), rtol=1e-6, atol=1e-4)
    assert 64 - 1e-4 <= lz[0].item() <= 64 + math.log(s.count)
    torch.testing.assert_close(zr.grad.double(), z64.grad, rtol=1e-4, atol=1e-5)


def case_log_z_no_grad_and_empty():
    s = make_system("v21", 7)
    z = logz_queries(7, 9, 1)
    with torch.no_grad():
        a = log_partition(s, z, 8.0, backend="triton")
    torch.testing.assert_close(a.double(), brute_log_z(s, z, 8.0), rtol=1e-6, atol=1e-5)
    assert log_partition(s, z[:0], 8.0, backend="triton").shape == (0,)


# ---- CPU: interpreter -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gauss", "int", "adv"])
@pytest.mark.parametrize("cfg", TOPK, ids=lambda c: f"{c[0]}-{c[1]}")
def test_topk_equals_torch_path(interp, cfg, kind):
    r = interp(case_topk, *cfg, kind, 1000)
    if kind == "int" and r["rows"] > 1 and cfg[2] > 1:
        assert r["slow"] > 0  # ties and unlabeled nearest vectors were exercised
    if kind == "gauss" and r["unlabeled"]:
        assert r["second"] > 0  # the second-best check decided rows the nearest vector left


def test_topk_nonfinite_rows_are_left_slow_and_reported(interp):
    interp(case_topk_nonfinite_rows)


@pytest.mark.parametrize("cfg", [TOPK[2], TOPK[5], TOPK[6]], ids=lambda c: c[0])
@pytest.mark.parametrize("kind", ["gauss", "int"])
def test_topk_identity_order_and_explicit_assignment(interp, cfg, kind):
    interp(case_topk, *cfg, kind, 1000, "float32", False)  # identity order (shuffle=False)
    interp(case_topk, *cfg, kind, 1000, "float32", True, True)  # explicit assignment: identity, mapped after


@pytest.mark.parametrize("name,n_dim", [("v22", 8), ("a_n_interp", 6)])
def test_topk_explicit_table_maps_in_the_kernel(interp, name, n_dim):
    interp(case_topk_table_of_low_indices, name, n_dim)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float64"])
@pytest.mark.parametrize("cfg", [TOPK[2], TOPK[5], TOPK[6]], ids=lambda c: c[0])
def test_topk_dtypes(interp, cfg, dtype):
    interp(case_topk, *cfg, "gauss", 1000, dtype)
    interp(case_topk, *cfg, "adv", 500, dtype)


@pytest.mark.parametrize("rows,block_rows", [(1, None), (7, None), (64, None), (1, 1), (7, 1), (7, 16), (64, 16)])
def test_topk_batch_sizes_and_blocks(interp, rows, block_rows):
    interp(case_topk, "a_n_interp", 6, 200, "gauss", rows, "float32", True, False, block_rows)
    interp(case_topk, "v22", 8, 300, "int", rows, "float32", True, False, block_rows)


def test_topk_2_pow_16_rows(interp):
    r = interp(case_topk, "v22", 47, 1_000_000, "gauss", 1 << 16)  # 1M classes at n_min
    assert r["rows"] == 1 << 16


def test_topk_falls_back_past_max_dim(interp):
    interp(case_fallback)


@pytest.mark.parametrize("name,n", [("v11", 7), ("v21", 7), ("v22", 8), ("v31", 7), ("a_n", 6), ("a_n_interp", 6),
                                    ("v22p", 7), ("v33", 8), ("v03", 6)])  # fmt: skip
@pytest.mark.parametrize("scale", [1.0, 16.0, 64.0])
def test_log_z_forward_and_gradients(interp, name, n, scale):
    interp(case_log_z, name, n, scale, 40, scale == 16.0)


def test_log_z_large_scale_has_no_fallback(interp):
    interp(case_log_z, "v22", 10, 500.0, 8, True)  # past float64's linear-space range (numba falls back there)


def test_log_z_stable_at_scale_64_and_n_dim_600(interp):
    interp(case_log_z_stable_600)


def test_log_z_without_grad_and_empty_batch(interp):
    interp(case_log_z_no_grad_and_empty)


# ---- the class-center lookup (`_lookup`: one kernel from label to unit center) --------------------------------

LOOKUP = [("v11", 12, 100), ("v21", 9, 200), ("v22", 12, 400), ("v22", 4, 6), ("v33", 11, 300), ("v22p", 10, 300),
          ("a_n", 8, 60), ("a_np", 9, 40), ("a_n_interp", 6, 150), ("v10", 5, 5), ("v10_1", 12, 100),
          ("v31", 52, 1_000_000)]  # fmt: skip


def case_lookup(name, n_dim, n_classes, order, device="cpu"):
    """The Triton lookup (the interpreter for CPU tensors) against the torch path, bit for bit; labels that walk."""
    from lsc.centers import _lookup

    if order == "data" and name == "a_np":
        system = make_system(name, n_dim)
        cc = ClassCenters(system, n_classes, assignment=Assignment(torch.randperm(system.count)[:n_classes],
                                                                    system.count))  # fmt: skip
    else:
        cc = make_cc(name, n_dim, n_classes, shuffle=order == "keyed", assign=order == "data")
    if device == "cpu":
        assert _lookup._interpreting(), "the worker must run the interpreter"
    labels = torch.randint(0, n_classes, (min(n_classes, 3000),), generator=torch.Generator().manual_seed(0))
    if order == "keyed":  # every label whose Feistel rounds leave [0, count) (cycle-walks), up to 500
        every = torch.arange(min(n_classes, 1 << 20))
        labels = torch.cat([labels, every[cc.perm._rounds(every, True) >= cc.perm.count][:500]])
    ref = cc.system.vectors(cc.index_of(labels), normalize=True)
    got = _lookup.lookup(cc, labels.to(device)).cpu()
    assert torch.equal(got, ref), f"{name} {order}: max |diff| {(got - ref).abs().max():.3g}"
    return len(labels)


def case_lookup_table_and_bad_labels():
    from lsc.centers import _lookup

    t = torch.randn(30, 7, generator=torch.Generator().manual_seed(0))
    for cc in (ClassCenters("table", 25, table=t, shuffle=True),
               ClassCenters("table", 20, table=t, assignment=Assignment(torch.randperm(30)[:20], 30))):  # fmt: skip
        labels = torch.arange(cc.n_classes).flip(0)
        assert torch.equal(_lookup.lookup(cc, labels), cc.system.vectors(cc.index_of(labels), normalize=True))
    cc = make_cc("v22", 8, 300)
    for bad in ([0, 300], [-1, 2]):
        try:
            cc(torch.tensor(bad))
        except ValueError as e:
            assert "labels must lie in [0, 300)" in str(e)
        else:
            raise AssertionError(f"labels {bad} were accepted")
    assert cc(torch.empty(0, dtype=torch.int64)).shape == (0, 8)


# every system in every order (the data-aware walk at 1M classes is bench_assign's, not these tests')
LOOKUP_CASES = [(c, o) for c in LOOKUP for o in ("keyed", "identity", "data") if c[2] <= 10_000 or o != "data"]


@pytest.mark.parametrize("cfg,order", LOOKUP_CASES, ids=lambda c: c if isinstance(c, str) else f"{c[0]}-{c[1]}")
def test_lookup_equals_torch_path(interp, cfg, order):
    assert interp(case_lookup, *cfg, order) > 0


def test_lookup_tables_and_bad_labels(interp):
    interp(case_lookup_table_and_bad_labels)


# ---- CPU: dispatch (this process; nothing is launched) -----------------------------------------------------


def test_auto_dispatch(monkeypatch):
    assert not kernels.use_triton("cpu")
    assert kernels.use_triton("cuda")  # triton imports here
    monkeypatch.setenv("LSC_NO_TRITON", "1")
    assert not kernels.use_triton("cuda")
    with pytest.raises(ValueError, match="backend"):
        kernels.fast_labels(make_cc("v22", 8, 300), torch.randn(3, 8), backend="cuda")


def test_cpu_tensors_need_the_interpreter():
    from lsc.centers import _triton

    if _triton.interpreting():
        pytest.skip("this process runs the interpreter")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        _triton.fast_labels_triton(make_cc("v22", 8, 300), torch.randn(3, 8))
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        log_partition(make_system("v22", 8), torch.randn(3, 8), 4.0, backend="triton")


# ---- CUDA: the compiled kernels (this process) --------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("rows", [1, 7, 1000, 1 << 16])
@pytest.mark.parametrize("cfg", TOPK, ids=lambda c: f"{c[0]}-{c[1]}")
def test_cuda_topk(cfg, rows):
    for kind in ("gauss", "int", "adv"):
        cc = make_cc(*cfg)
        z = queries(cc, kind, rows, seed=rows).cuda()
        check_topk(cc, z, brute=rows <= 1000 and kind != "adv" and cc.system.count <= 5000)
        check_topk(cc, z.bfloat16())
        if rows == 1000 and cfg in (TOPK[2], TOPK[5], TOPK[6]):  # each variant is one more compile
            check_topk(make_cc(*cfg, shuffle=False), z)
            check_topk(make_cc(*cfg, assign=True), z)
            check_topk(cc, z.double())


@pytest.mark.gpu
@cuda
def test_cuda_auto_dispatch_and_predict(monkeypatch):
    from lsc.centers import _triton

    calls = []
    real = _triton.fast_labels_triton
    monkeypatch.setattr(_triton, "fast_labels_triton", lambda cc, z: calls.append(1) or real(cc, z))
    cc = make_cc("v22", 8, 300)
    z = queries(cc, "gauss", 2000)
    got = cc.predict(z.cuda(), "topk")
    assert calls and got.device.type == "cuda"
    assert torch.equal(got.cpu(), cc.predict(z, "cossim"))


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("name,n", [("v11", 7), ("v22", 8), ("v31", 7), ("a_n_interp", 6), ("v22p", 7), ("v33", 8)])
@pytest.mark.parametrize("scale", [1.0, 16.0, 64.0])
def test_cuda_log_z(name, n, scale):
    s = make_system(name, n)
    check_log_z(s, logz_queries(n, 40, seed=n).cuda(), scale, scale == 16.0, brute=True)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("rows", [1, 7, 4096, 1 << 16])
def test_cuda_log_z_rows(rows):
    s = make_system("v22", 47)
    check_log_z(s, logz_queries(47, rows, seed=rows).cuda(), 16.0, True, brute=False)


@pytest.mark.gpu
@cuda
def test_cuda_log_z_stable_and_auto(monkeypatch):
    from lsc.centers import _triton

    s = make_system("v22", 600)
    z = torch.randn(4, 600)
    z[0] = 0
    z[0, :4] = torch.tensor([1.0, 1.0, -1.0, -1.0])
    calls = []
    real = _triton.orbit_log_z_triton
    monkeypatch.setattr(_triton, "orbit_log_z_triton", lambda *a: calls.append(1) or real(*a))
    zr = z.cuda().requires_grad_(True)
    lz = log_partition(s, zr, 64.0)  # auto: the Triton kernel
    lz.sum().backward()
    assert calls
    z64 = z.double().requires_grad_(True)
    ref = log_partition(s, z64, 64.0)
    ref.sum().backward()
    torch.testing.assert_close(lz.double().cpu(), ref.detach(), rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(zr.grad.double().cpu(), z64.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("cfg,order", LOOKUP_CASES, ids=lambda c: c if isinstance(c, str) else f"{c[0]}-{c[1]}")
def test_cuda_lookup(cfg, order):
    case_lookup(*cfg, order, device="cuda")


# ---- the compiled path without a GPU -----------------------------------------------------------------------


@pytest.mark.slow
def test_kernels_compile_for_sm90():
    """Front end, TTGIR and ptxas (bundled with triton) for sm_90 on the variants the CUDA tests launch: catches
    what the interpreter accepts but the compiler does not (types, constexpr branches, gather, while loops)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from lsc.centers import _triton as T

    def build(fn, sig, consts, **opts):
        src = ASTSource(fn=fn, signature={**sig, **dict.fromkeys(consts, "constexpr")}, constexprs=consts)
        assert "cubin" in triton.compile(src, target=GPUTarget("cuda", 90, 32), options=opts).asm

    ptr = "*i32"
    topk = dict.fromkeys(["z_ptr", "table_ptr", "dot_val", "dot_src", "n_dot", "drop_val", "drop_a", "drop_b"], ptr)
    topk |= dict.fromkeys(["n_drop", "inv_norm", "offset", "slot_src", "slot_grp", "slot_place", "keys_ptr"], ptr)
    topk |= dict(labels_ptr="*i64", slow_ptr="*i8", table_ptr="*i64", dot_val="*fp64", drop_val="*fp64")
    topk |= dict(inv_norm="*fp64", offset="*i64", slot_place="*i64", keys_ptr="*i64")
    topk |= dict.fromkeys(["stride", "B", "n", "KC", "n_orb", "pa", "pb", "n_classes"], "i32") | {"count": "i64"}
    topk |= dict(sidx_ptr="*i64", lab_at_ptr="*i32", n_assigned="i64")
    meta = dict(BLOCK_B=16, NPAD=64, ST=3, SB=3, SELPAD=8, DPAD=4, LPAD=2, SPAD=4)
    variants = (("*fp32", 0, True, False, True), ("*bf16", 2, False, False, False), ("*fp32", 0, False, True, True))
    for z, up, shuffle, explicit, second in variants:
        consts = dict(meta, UPCAST=up, SHUFFLE=shuffle, ROUNDS=6 if shuffle else 0, EXPLICIT=explicit, LOG_C=21)
        consts |= dict(SECOND=second)
        build(T._topk_kernel, dict(topk, z_ptr=z), consts, num_warps=4, enable_fp_fusion=False)
    common = dict(z_ptr="*fp32", stride="i32", B="i32", n="i32", scale_ptr="*fp32", scale_val="fp32", inv_norm="fp32")
    dp = dict(W0=1.0, W1=-1.0, C0=2, C1=2, S=9, SPAD=16, BLOCK_B=16, SCALE_PTR=True)
    fwd = dict(common, logz_ptr="*fp32", aux_ptr="*fp32", f_ptr="*fp32")
    build(T._logz_fwd_kernel, fwd, dict(dp, BLOCK_N=64, STORE=True), num_warps=1)
    bwd = dict(common, **dict.fromkeys(["aux_ptr", "f_ptr", "g_ptr", "dz_ptr", "dcoef_ptr", "proj_ptr"], "*fp32"))
    build(T._logz_bwd_kernel, bwd, dp, num_warps=1)
    look = dict.fromkeys(["labels_ptr", "p_ptr", "binom_ptr", "sidx_ptr"], "*i64") | dict(B="i32", n="i32")
    look |= dict(out_ptr="*fp32", flag_ptr="*i32", inv_ptr="*fp64", vtab_ptr="*fp32", pos_ptr="*i32")
    for kind in (0, 1, 2):
        for order in (0, 1, 2):
            build(T._lookup_kernel, look, dict(BLOCK_B=16, NPAD=64, KIND=kind, ORDER=order, LOG=8), num_warps=4)
