"""Label predictors (cossim, topk, euclidean), the fast-path kernels and ClassCenters.nearest, against brute force.

The reference materializes the labeled centers C_c = system.vectors(index_of(c)) (the ranking tests check those
vectors against an itertools enumeration) and takes the argmax of cosine in float64, lowest label on exact ties.
For integer queries the cosine order is computed exactly (see `exact_cos_key`), so exact ties are real ties.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lsc.centers.class_centers as cc_mod
from lsc.centers import ClassCenters, make_system
from lsc.centers import _kernels as kernels

FAST = ("v11", "v21", "v22", "v22p", "a_n", "a_n_interp")

# (system, n_dim, n_classes); every n_classes < count so unlabeled vectors exist, and n_classes >= count / 8
CONFIGS = [
    ("v11", 12, 100),  # 132 vectors
    ("v21", 8, 120),  # 168
    ("v22", 8, 300),  # 420
    ("v22p", 7, 250),  # 420
    ("a_n", 10, 80),  # 110
    ("a_n_interp", 6, 200),  # 252
    ("a_np", 12, 60),  # 78
    ("table", 6, 100),  # 150 integer rows
]
TABLE_ROWS = 150


# ---- references -----------------------------------------------------------------------------------------


TABLE_SQ_NORMS = (2, 3, 5, 6, 7)  # no product of two of them is a square: see int_table


def int_table(rows: int, n_dim: int, seed: int) -> torch.Tensor:
    """Distinct integer rows, so exact ties between centers occur for integer queries.

    Squared norms are restricted to TABLE_SQ_NORMS. Two rows whose norms differ by a rational factor (|v|^2 = 2
    and 8, or 8 and 18) can have exactly equal cosines that no floating-point evaluation can tell apart
    (6 / sqrt(18) != 4 / sqrt(8) even in float64), so "lowest label on exact ties" is only well defined
    numerically when equal cosines come from equal norms.
    """
    rng = np.random.default_rng(seed)
    cand = rng.choice([-2, -1, 0, 1, 2], p=[0.05, 0.2, 0.5, 0.2, 0.05], size=(rows * 50, n_dim))
    t = np.unique(cand, axis=0)
    t = t[np.isin((t * t).sum(1), TABLE_SQ_NORMS)]
    rng.shuffle(t)
    assert len(t) >= rows
    return torch.tensor(t[:rows], dtype=torch.float32)


def make_cc(name, n_dim, n_classes, seed=0, shuffle=None) -> ClassCenters:
    if name == "table":
        return ClassCenters("table", n_classes, table=int_table(TABLE_ROWS, n_dim, seed), seed=seed, shuffle=shuffle)
    return ClassCenters(name, n_classes, n_dim=n_dim, seed=seed, shuffle=shuffle)


def exact_cos_key(z_int: np.ndarray, v_int: np.ndarray) -> np.ndarray:
    """Key ordered exactly like cos(z, v) for integer z, v: sign(s) s^2 / |v|^2, s = <z, v>.

    Both are small integers: equal cosines give bit-identical keys, different ones keys far apart.
    """
    s = z_int.astype(np.int64) @ v_int.astype(np.int64).T
    q = (v_int.astype(np.int64) ** 2).sum(1)
    return np.sign(s) * (s * s).astype(np.float64) / q.astype(np.float64)


def is_integer(t: torch.Tensor) -> bool:
    return bool(torch.equal(t, t.round()))


def cos_scores(z: torch.Tensor, v: torch.Tensor) -> np.ndarray:
    """[B, C] scores ordered like cosine (exact for integer inputs)."""
    if is_integer(z) and is_integer(v):
        return exact_cos_key(z.round().long().numpy(), v.round().long().numpy())
    v64 = v.double()
    return (z.double() @ (v64 / v64.norm(dim=1, keepdim=True)).T).numpy()


def centers(cc: ClassCenters) -> torch.Tensor:
    """Raw labeled centers, row c = class c, float64."""
    return cc.system.vectors(cc.index_of(torch.arange(cc.n_classes)), dtype=torch.float64)


def ref_cossim(cc: ClassCenters, z: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.argmax(cos_scores(z, centers(cc)), axis=1))  # first maximum = lowest label


def ref_euclidean(cc: ClassCenters, z: torch.Tensor) -> torch.Tensor:
    p = cc.positions(torch.arange(cc.n_classes)).double()
    d = ((z.double()[:, None, :] - p[None]) ** 2).sum(-1)  # exact for integer z and p
    return torch.from_numpy(np.argmin(d.numpy(), axis=1))  # first minimum = lowest label


def ref_label_table(cc: ClassCenters) -> np.ndarray:
    """label of every vector index (-1 when unlabeled), from index_of alone."""
    lab = np.full(cc.system.count, -1, dtype=np.int64)
    lab[cc.index_of(torch.arange(cc.n_classes)).numpy()] = np.arange(cc.n_classes)
    return lab


def ref_fast_labels(cc: ClassCenters, z: torch.Tensor):
    """What the fast path must return: the label of the unique nearest vector, else (-1, slow)."""
    full = cc.system.vectors(torch.arange(cc.system.count), dtype=torch.float64)
    key = cos_scores(z, full)
    best = key.max(1, keepdims=True)
    tied = (key == best).sum(1) > 1
    lab = ref_label_table(cc)[np.argmax(key, axis=1)]
    slow = tied | (lab < 0)
    return torch.from_numpy(np.where(slow, -1, lab)), torch.from_numpy(slow)


def ref_second_labeled(cc: ClassCenters, z: torch.Tensor) -> torch.Tensor:
    """Rows whose nearest vector is unique and unlabeled and whose second-best vector is unique and labeled."""
    full = cc.system.vectors(torch.arange(cc.system.count), dtype=torch.float64)
    key = torch.from_numpy(cos_scores(z, full))
    if key.shape[1] < 3:
        return torch.zeros(len(z), dtype=torch.bool)
    top = key.topk(3, dim=1)
    lab = torch.from_numpy(ref_label_table(cc))
    first_unlabeled = lab[top.indices[:, 0]] < 0
    second_labeled = lab[top.indices[:, 1]] >= 0
    unique = (top.values[:, 0] > top.values[:, 1]) & (top.values[:, 1] > top.values[:, 2])
    return first_unlabeled & second_labeled & unique


def queries(n_dim: int, seed: int, kind: str, rows: int = 400) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "gauss":
        return torch.randn(rows, n_dim, generator=g)
    return torch.randint(-2, 3, (rows, n_dim), generator=g).float()


def _id(cfg):
    return f"{cfg[0]}-{cfg[1]}-{cfg[2]}"


# ---- cossim / topk --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gauss", "int"])
@pytest.mark.parametrize("shuffle", [None, True])
@pytest.mark.parametrize("cfg", CONFIGS, ids=_id)
def test_topk_and_cossim_equal_brute_force(cfg, shuffle, kind):
    name, n_dim, n_classes = cfg
    cc = make_cc(name, n_dim, n_classes, seed=1, shuffle=shuffle)
    assert n_classes < cc.system.count
    z = queries(n_dim, 10 + n_dim, kind)
    want = ref_cossim(cc, z)
    if kind == "int":
        key = cos_scores(z, centers(cc))
        assert ((key == key.max(1, keepdims=True)).sum(1) > 1).any()  # exact ties are exercised
    if name in FAST:
        assert kernels.fast_labels_torch(cc, z)[1].any()  # some rows need the slow path
    assert torch.equal(cc.predict(z, "cossim"), want)
    assert torch.equal(cc.predict(z, "topk"), want)
    assert torch.equal(cc.predict(z), want)  # topk is the default
    assert torch.equal(cc.predict(z, "cossim", chunk_size=7), want)  # merging across chunks
    assert torch.equal(cc.predict(z, "cossim", bank=cc.bank()), want)
    assert torch.equal(cc.predict(z.double(), "topk"), want)


@pytest.mark.parametrize("kind", ["gauss", "int"])
@pytest.mark.parametrize("budget", [None, 1])
@pytest.mark.parametrize("cfg", [c for c in CONFIGS if c[0] in FAST], ids=_id)
def test_topk_best_first_search_path(cfg, budget, kind, monkeypatch):
    """SCAN_FALLBACK_CLASSES=0 sends unlabeled/tied rows through the best-first search (Algorithm 2);
    SEARCH_BUDGET=1 makes every search give up and fall back to the exact scan."""
    name, n_dim, n_classes = cfg
    monkeypatch.setattr(cc_mod, "SCAN_FALLBACK_CLASSES", 0)
    if budget is not None:
        monkeypatch.setattr(cc_mod, "SEARCH_BUDGET", budget)
    calls = []
    search = ClassCenters._search

    def counting_search(self, z_row):
        out = search(self, z_row)
        calls.append(out)
        return out

    monkeypatch.setattr(ClassCenters, "_search", counting_search)
    cc = make_cc(name, n_dim, n_classes, seed=2)
    assert 8 * n_classes >= cc.system.count
    z = queries(n_dim, 20 + n_dim, kind, rows=300)
    want = ref_cossim(cc, z)
    assert torch.equal(cc.predict(z, "topk"), want)
    assert calls, "the search path was not exercised"
    if budget == 1:
        assert any(c is None for c in calls)  # some searches ran out of budget


def test_topk_default_search_path_large(monkeypatch):
    """Past SCAN_FALLBACK_CLASSES (50k) with n_classes >= count / 8, the unmonkeypatched search path runs."""
    calls = []
    search = ClassCenters._search
    monkeypatch.setattr(ClassCenters, "_search", lambda self, z_row: calls.append(1) or search(self, z_row))
    cc = ClassCenters("v22", 50_001, n_dim=23, seed=4)  # 53,130 vectors
    assert cc.n_classes > cc_mod.SCAN_FALLBACK_CLASSES
    g = torch.Generator().manual_seed(0)
    z = torch.cat([torch.randn(200, 23, generator=g), torch.randint(-1, 2, (100, 23), generator=g).float()])
    want = ref_cossim(cc, z)
    _, slow = kernels.fast_labels(cc, z)  # the backend predict uses (numba on CPU when installed)
    assert slow.sum() >= 5  # enough rows take the slow path
    assert torch.equal(cc.predict(z, "topk"), want)
    assert len(calls) == int(slow.sum())
    assert torch.equal(cc.predict(z, "cossim"), want)


@settings(max_examples=50, deadline=None)
@given(
    name=st.sampled_from([*FAST, "a_np", "table"]),
    n_dim=st.integers(4, 8),
    frac=st.floats(0.05, 1.0),
    seed=st.integers(0, 2**31 - 1),
    kind=st.sampled_from(["gauss", "int"]),
    search=st.booleans(),
)
def test_predictors_property(name, n_dim, frac, seed, kind, search):
    if name == "table":
        n_dim = max(n_dim, 6)  # enough distinct rows with the allowed norms
    count = TABLE_ROWS if name == "table" else make_system(name, n_dim).count
    n_classes = max(1, min(count, round(frac * count)))
    cc = make_cc(name, n_dim, n_classes, seed=seed % 1000, shuffle=True)
    z = queries(n_dim, seed, kind, rows=200)
    want = ref_cossim(cc, z)
    old = cc_mod.SCAN_FALLBACK_CLASSES
    cc_mod.SCAN_FALLBACK_CLASSES = 0 if search else old
    try:
        got = cc.predict(z, "topk")
    finally:
        cc_mod.SCAN_FALLBACK_CLASSES = old
    assert torch.equal(got, want)
    assert torch.equal(cc.predict(z, "cossim"), want)
    assert torch.equal(cc.predict(z, "euclidean"), ref_euclidean(cc, z))


# ---- fast-path kernels ----------------------------------------------------------------------------------

KERNEL_CASES = [
    ("v11", 12, 100, None),
    ("v21", 8, 120, None),
    ("v22", 8, 300, None),
    ("v22", 8, 420, None),  # every vector labeled: only ties are slow
    ("v22p", 7, 250, None),
    ("v22p", 5, 40, False),
    ("a_n", 10, 80, None),
    ("a_n", 10, 80, True),
    ("a_n_interp", 6, 200, None),
    ("a_n_interp", 3, 36, False),
    ("a_n_interp", 1, 1, None),
    ("v33", 7, 100, None),
    ("v31", 6, 50, None),
    ("v20", 6, 15, None),
    ("v10", 6, 4, None),
]


@pytest.mark.parametrize("kind", ["gauss", "int"])
@pytest.mark.parametrize("name,n_dim,n_classes,shuffle", KERNEL_CASES)
def test_fast_labels_torch_and_numba(name, n_dim, n_classes, shuffle, kind):
    cc = make_cc(name, n_dim, n_classes, seed=3, shuffle=shuffle)
    z = queries(n_dim, 30 + n_dim, kind, rows=500)
    want_labels, want_slow = ref_fast_labels(cc, z)
    if kind == "int" and cc.system.count > 1:
        assert want_slow.any()
    lt, st_ = kernels.fast_labels_torch(cc, z)
    assert torch.equal(st_, want_slow)
    assert torch.equal(lt, want_labels)
    if not kernels.HAVE_NUMBA:
        pytest.skip("numba not available")
    ln, sn = kernels.fast_labels_numba(cc, z)
    # the fused kernel decides every row the torch path decides, identically ...
    assert not (sn & ~want_slow).any()
    assert torch.equal(ln[~want_slow], want_labels[~want_slow])
    # ... and also rows whose nearest vector is unlabeled but whose second-best vector is unique and labeled
    # (coordinates distinct), always with the exact closest labeled center
    exact = ref_cossim(cc, z)
    assert torch.equal(ln[~sn], exact[~sn])
    assert torch.equal(ln[sn], torch.full_like(ln[sn], -1))
    if kind == "gauss":
        second = ref_second_labeled(cc, z)
        must = want_slow & second
        assert not sn[must].any(), f"{int(sn[must].sum())} rows with a unique labeled runner-up left to the slow path"
    # a second call reuses the cached plan
    ln2, sn2 = kernels.fast_labels_numba(cc, z[:7])
    assert torch.equal(ln2, ln[:7]) and torch.equal(sn2, sn[:7])


@pytest.mark.parametrize("name,n_dim,n_classes", [("v22", 12, 2500), ("a_n_interp", 6, 200), ("v33", 7, 100)])
def test_fast_labels_numba_parallel_equals_serial(name, n_dim, n_classes, monkeypatch):
    """The multi-threaded kernel (prange over row blocks) gives the serial kernel's labels, row for row."""
    if not kernels.HAVE_NUMBA:
        pytest.skip("numba not available")
    cc = make_cc(name, n_dim, n_classes, seed=5, shuffle=True)
    z = torch.cat([queries(n_dim, 7, "gauss", rows=3000), queries(n_dim, 8, "int", rows=3000)])
    serial = kernels.fast_labels_numba(cc, z)
    monkeypatch.setattr(kernels, "PARALLEL_ROWS", 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        par = kernels.fast_labels_numba(cc, z)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(par[0], serial[0]) and torch.equal(par[1], serial[1])
    want_labels, want_slow = ref_fast_labels(cc, z[:500])
    assert torch.equal(par[0][:500][~want_slow], want_labels[~want_slow])


def test_fast_labels_torch_row_blocks():
    cc = make_cc("a_n_interp", 6, 200, seed=3)
    z = queries(6, 5, "gauss", rows=300)
    a = kernels.fast_labels_torch(cc, z)
    b = kernels.fast_labels_torch(cc, z, row_block=64)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# ---- euclidean ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gauss", "int"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=_id)
def test_euclidean_equals_brute_force(cfg, kind):
    name, n_dim, n_classes = cfg
    cc = make_cc(name, n_dim, n_classes, seed=4, shuffle=True)
    z = queries(n_dim, 40 + n_dim, kind)
    if kind == "gauss":
        z = 1.5 * z  # the raw positions have norm sqrt(2)..sqrt(6)
    want = ref_euclidean(cc, z)
    assert torch.equal(cc.predict(z, "euclidean"), want)
    assert torch.equal(cc.predict(z, "euclidean", chunk_size=5), want)
    # positions are the raw vectors of the labeled centers
    assert torch.equal(cc.positions(torch.arange(n_classes)).double(), centers(cc))


# ---- ClassCenters.nearest and the unit centers ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["gauss", "int"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=_id)
def test_class_centers_nearest(cfg, kind):
    name, n_dim, n_classes = cfg
    cc = make_cc(name, n_dim, n_classes, seed=5, shuffle=True)
    z = queries(n_dim, 50 + n_dim, kind)
    idx, label = cc.nearest(z)
    full = cc.system.vectors(torch.arange(cc.system.count), dtype=torch.float64)
    scores, table = cos_scores(z, full), ref_label_table(cc)
    raw = torch.from_numpy(np.argmax(scores, axis=1))
    assert torch.equal(cc.system.nearest(z), raw)  # the raw algorithm: ties -> lowest vector index
    want_idx = []  # the predictors' tie rule: a tied labeled vector wins, lowest label first
    for row in scores:
        tied = np.flatnonzero(row >= row.max() - 1e-12)
        labeled = tied[table[tied] >= 0]
        want_idx.append(labeled[np.argmin(table[labeled])] if len(labeled) else tied[0])
    assert torch.equal(idx, torch.tensor(want_idx))
    assert torch.equal(label, torch.from_numpy(table)[idx])
    assert torch.equal(label[label >= 0], cc.predict(z, "topk")[label >= 0])
    if kind == "int" and name != "table":
        assert not torch.equal(idx, raw)  # integer queries tie with +-1 vectors: the rule is exercised
    assert (label == -1).any() and (label >= 0).any()


@pytest.mark.parametrize("cfg", CONFIGS, ids=_id)
def test_unit_centers(cfg):
    name, n_dim, n_classes = cfg
    cc = make_cc(name, n_dim, n_classes, seed=6, shuffle=True)
    labels = torch.randint(0, n_classes, (300,), generator=torch.Generator().manual_seed(0))
    u = cc(labels)
    assert u.shape == (300, n_dim) and u.dtype == torch.float32
    torch.testing.assert_close(u.double().norm(dim=1), torch.ones(300, dtype=torch.float64), rtol=0, atol=1e-6)
    p = cc.positions(labels).double()
    torch.testing.assert_close(u.double(), p / p.norm(dim=1, keepdim=True), rtol=0, atol=1e-7)
    assert torch.equal(cc.bank(), cc(torch.arange(n_classes)))
    assert torch.equal(cc.bank(labels), u)


# ---- float64 exactness near ties (known bugs) -----------------------------------------------------------


def _near_tie_queries() -> torch.Tensor:
    """Float32 z = (x, y) with (x - y)/sqrt(2) within a few float32 ulps of x: the vectors e_0 - e_1 and e_0
    (and e_1) are nearly tied. The exact winner is decided with rational arithmetic below."""
    rng = np.random.default_rng(0)
    out = []
    for x in rng.uniform(0.5, 2.0, 40).astype(np.float32):
        y = np.float32(-(math.sqrt(2) - 1) * float(x))
        for _ in range(3):
            y = np.nextafter(y, np.float32(-1))
        for _ in range(7):
            out.append((x, y))
            y = np.nextafter(y, np.float32(1))
    return torch.tensor(np.array(out, dtype=np.float32))


def _exact_winner(rows: torch.Tensor, vectors: list[tuple[int, int]]) -> torch.Tensor:
    """argmax_i cos(z, v_i) (first on ties) by exact rational comparison of sign(s) s^2 / |v|^2."""
    out = []
    for x, y in rows.tolist():
        zx, zy = Fraction(x), Fraction(y)
        keys = []
        for a, b in vectors:
            s = a * zx + b * zy
            keys.append((1 if s > 0 else -1 if s < 0 else 0) * s * s / (a * a + b * b))
        out.append(max(range(len(keys)), key=lambda i: (keys[i], -i)))
    return torch.tensor(out)


def test_a_np_near_ties_are_exact():
    # BUG (lsc/centers/systems.py:317, PositiveRootSystem.inv_norms): the float64 inverse norm of e_i - e_j is the
    # float32 value 0.70710677, so the exact float64 rescoring of scan_argmax under-scores the pair vector by
    # 1.7e-8 relative and returns e_0 (index 1) where e_0 - e_1 (index 0) has the larger cosine.
    s = make_system("a_np", 2)
    vecs = [tuple(int(x) for x in r) for r in s.vectors(torch.arange(3)).tolist()]
    assert sorted(vecs) == sorted([(1, -1), (1, 0), (0, 1)])
    z = _near_tie_queries()
    want = _exact_winner(z, vecs)
    assert torch.equal(s.nearest(z), want)
    cc = ClassCenters("a_np", 3, n_dim=2)
    assert torch.equal(cc.predict(z, "cossim"), want)
    assert torch.equal(cc.predict(z, "topk"), want)


def test_table_near_ties_are_exact():
    # BUG (lsc/centers/systems.py:355-359, TableSystem.__init__): the row norms are computed in float32 and only
    # then inverted in float64, so the inverse norm of (1, -1) is 1/fl32(sqrt 2) (1.2e-8 relative error) and the
    # float64 rescoring of the exact scan picks the wrong center on near ties.
    vecs = [(1, -1), (1, 0), (0, 1)]
    s = make_system("table", 2, vectors=torch.tensor(vecs, dtype=torch.float32))
    z = _near_tie_queries()
    want = _exact_winner(z, vecs)
    assert torch.equal(s.nearest(z), want)
    cc = ClassCenters("table", 3, table=torch.tensor(vecs, dtype=torch.float32))
    assert torch.equal(cc.predict(z, "cossim"), want)


def test_fast_systems_near_ties_are_exact():
    # the same near-tie queries on a_n (which contains e_0 - e_1, e_0 and e_1 at n_dim=2) resolve exactly
    s = make_system("a_n", 2)
    vecs = [tuple(int(x) for x in r) for r in s.vectors(torch.arange(s.count)).tolist()]
    z = _near_tie_queries()
    want = _exact_winner(z, vecs)
    assert torch.equal(s.nearest(z), want)
    assert torch.equal(s.scan(z), want)
    cc = ClassCenters("a_n", s.count, n_dim=2)
    assert torch.equal(cc.predict(z, "topk"), want)
    assert torch.equal(cc.predict(z, "cossim"), want)


# ---- CUDA (skipped without a GPU) -----------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["highest", "high"])
@pytest.mark.parametrize("cfg", [c for c in CONFIGS if c[0] != "table"], ids=_id)
def test_predict_on_cuda(cfg, precision):
    """The torch fast path and the scans on the GPU (TF32 matmuls with precision='high') stay exact."""
    name, n_dim, n_classes = cfg
    cc = make_cc(name, n_dim, n_classes, seed=7, shuffle=True)
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        for kind in ("gauss", "int"):
            z = queries(n_dim, 60 + n_dim, kind, rows=2000)
            want = ref_cossim(cc, z)
            zc = z.cuda()
            for method in ("topk", "cossim"):
                got = cc.predict(zc, method)
                assert got.device.type == "cuda"
                assert torch.equal(got.cpu(), want), (method, kind)
            assert torch.equal(cc.predict(zc, "euclidean").cpu(), ref_euclidean(cc, z))
            idx, label = cc.nearest(zc)
            assert torch.equal(idx.cpu(), cc.system.nearest(z))
            if name in FAST:
                lab, slow = kernels.fast_labels(cc, zc)
                want_lab, want_slow = ref_fast_labels(cc, z)
                assert torch.equal(slow.cpu(), want_slow) and torch.equal(lab.cpu(), want_lab)
    finally:
        torch.set_float32_matmul_precision(old)
