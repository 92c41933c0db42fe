"""Vector systems: counts, ranking, nearest vector, best-first order, max cosine and n_min.

Every expectation comes from an independent reference: itertools enumeration, closed-form counts, the reference
colex ranking of /work/shared/reference.md section 6.4, or an exact (rational) score.
"""

from __future__ import annotations

import itertools
import math
from functools import cache

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lsc.centers.systems as systems_mod
from lsc.centers import make_system, n_min, system_from_spec

V_SYSTEMS = {
    "v11": (1, 1),
    "v21": (2, 1),
    "v22": (2, 2),
    "v31": (3, 1),
    "v20": (2, 0),
    "v10": (1, 0),
    "v30": (3, 0),
    "v33": (3, 3),
}
P_SYSTEMS = {"v21p": (2, 1), "v22p": (2, 2), "v11p": (1, 1)}
A_SYSTEMS = ("a_n", "a_np", "a_n_interp")
ALL = [*V_SYSTEMS, *P_SYSTEMS, *A_SYSTEMS]
INTERP_SHAPES = {(-1, 1), (-1, -1, 2), (-2, 1, 1)}  # sorted nonzero values of a root / interpolation vector


# ---- independent references ------------------------------------------------------------------------------


def multinomial(n: int, m: int, k: int) -> int:
    return math.factorial(n) // (math.factorial(m) * math.factorial(k) * math.factorial(n - m - k))


def closed_form(name: str, n: int) -> int | None:
    """Closed-form count; None where the system is not defined (m + k > n)."""
    if name in V_SYSTEMS:
        m, k = V_SYSTEMS[name]
        return multinomial(n, m, k) if m + k <= n else None
    if name in P_SYSTEMS:
        # Dropping the last coordinate of V_{n+1}^{mk} is injective: the dropped value is whichever of
        # (+1, -1, 0) the projected vector is missing, so the count is that of V_{n+1}^{mk}.
        m, k = P_SYSTEMS[name]
        return multinomial(n + 1, m, k) if m + k <= n + 1 else None
    return {"a_n": n * (n + 1), "a_np": n * (n + 1) // 2, "a_n_interp": n * n * (n + 1)}[name]


def _vmk(n: int, m: int, k: int) -> set[tuple[int, ...]]:
    return {v for v in itertools.product((-1, 0, 1), repeat=n) if v.count(1) == m and v.count(-1) == k}


def _unit(i: int, dim: int) -> np.ndarray:
    e = np.zeros(dim, dtype=np.int64)
    e[i] = 1
    return e


@cache
def brute(name: str, n: int) -> frozenset[tuple[int, ...]]:
    """The system's vectors by direct enumeration (empty when the system is not defined)."""
    if name in V_SYSTEMS:
        return frozenset(_vmk(n, *V_SYSTEMS[name]))
    if name in P_SYSTEMS:
        return frozenset(v[:-1] for v in _vmk(n + 1, *P_SYSTEMS[name]))
    d = n + 1
    e = [_unit(i, d) for i in range(d)]
    if name == "a_np":
        full = [e[i] - e[j] for i, j in itertools.combinations(range(d), 2)]
    else:
        full = [e[i] - e[j] for i, j in itertools.permutations(range(d), 2)]
        if name == "a_n_interp":
            for i, j, k in itertools.permutations(range(d), 3):
                w = 2 * e[i] - e[j] - e[k]
                full += [w, -w]
    return frozenset(tuple(int(x) for x in v[:-1]) for v in full)


def is_member(name: str, n: int, v: tuple[int, ...]) -> bool:
    """Membership by the system's definition (no enumeration): works for any n."""
    if len(v) != n:
        return False
    if name in V_SYSTEMS:
        m, k = V_SYSTEMS[name]
        return v.count(1) == m and v.count(-1) == k and v.count(0) == n - m - k
    if name in P_SYSTEMS:
        m, k = P_SYSTEMS[name]
        return any(is_member_vmk(v + (last,), m, k) for last in (-1, 0, 1))
    full = v + (-sum(v),)  # roots and interpolation vectors sum to zero in R^{n+1}
    nz = tuple(sorted(x for x in full if x != 0))
    if name == "a_n":
        return nz == (-1, 1)
    if name == "a_np":
        return nz == (-1, 1) and full.index(1) < full.index(-1)
    return nz in INTERP_SHAPES


def is_member_vmk(v: tuple[int, ...], m: int, k: int) -> bool:
    return v.count(1) == m and v.count(-1) == k and v.count(0) == len(v) - m - k


def ref_rank(n: int, m: int, k: int, pos, neg) -> int:
    """Colex rank of a V_n^{mk} vector (reference.md section 6.4)."""

    def r(s):
        return sum(math.comb(c, i + 1) for i, c in enumerate(sorted(s)))

    comp = [i for i in range(n) if i not in pos]
    return r(pos) * math.comb(n - m, k) + r([comp.index(j) for j in neg])


def as_tuples(v: torch.Tensor) -> list[tuple[int, ...]]:
    vi = v.round().long()
    assert torch.equal(vi.to(v.dtype), v), "raw vectors must have integer entries"
    return [tuple(r) for r in vi.tolist()]


def sparse_rows(v: torch.Tensor) -> list[dict[int, int]]:
    """{position: value} of the nonzeros of each row (cheap for wide, sparse rows)."""
    out = [{} for _ in range(v.shape[0])]
    for r, c in v.nonzero().tolist():
        x = v[r, c].item()
        assert x == int(x)
        out[r][c] = int(x)
    return out


def first_argmax(scores: np.ndarray) -> np.ndarray:
    return np.argmax(scores, axis=1)  # numpy returns the first occurrence of the maximum


def exact_cos_key(z_int: np.ndarray, v_int: np.ndarray) -> np.ndarray:
    """A float64 key ordered exactly like cos(z, v) for integer z, v: sign(s) s^2 / |v|^2 with s = <z, v>.

    s^2 and |v|^2 are small integers, so equal cosines give bit-identical keys (same rational, correctly
    rounded) and different cosines give keys far apart: exact ties and exact order.
    """
    s = z_int.astype(np.int64) @ v_int.astype(np.int64).T
    q = (v_int.astype(np.int64) ** 2).sum(1)
    return np.sign(s) * (s * s).astype(np.float64) / q.astype(np.float64)


VALID = [(name, n) for name in ALL for n in range(1, 9) if closed_form(name, n) is not None]
INVALID = [(name, n) for name in ALL for n in range(1, 9) if closed_form(name, n) is None]
SMALL = [(name, n) for name in ALL for n in range(3, 8) if closed_form(name, n) is not None]


def _seed(name: str, n: int) -> int:
    return 1000 * ALL.index(name) + n


# ---- 1. counts ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,n", VALID)
def test_count_matches_closed_form_and_enumeration(name, n):
    s = make_system(name, n)
    assert s.count == closed_form(name, n) == len(brute(name, n))
    assert len(s) == s.count
    assert s.n_dim == n


@pytest.mark.parametrize("name,n", INVALID)
def test_undefined_systems_raise(name, n):
    assert not brute(name, n)  # the enumeration agrees: no vector fits
    with pytest.raises(ValueError):
        make_system(name, n)


@pytest.mark.parametrize("name,m,k,n", [("v10_1", 10, 1, 12), ("v1_10", 1, 10, 11), ("v10_10", 10, 10, 21)])
def test_two_digit_names(name, m, k, n):
    s = make_system(name, n)
    assert s.count == multinomial(n, m, k)
    v = s.vectors(torch.tensor([0, s.count - 1]))
    for row in as_tuples(v):
        assert is_member_vmk(row, m, k)
    with pytest.raises(ValueError):
        make_system(name, m + k - 1)


# ---- 2. ranking -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,n", VALID)
def test_ranking_is_a_bijection_onto_the_enumerated_set(name, n):
    s = make_system(name, n)
    ref = brute(name, n)
    idx = torch.arange(s.count)
    v = s.vectors(idx)
    assert v.shape == (s.count, n) and v.dtype == torch.float32
    rows = as_tuples(v)
    assert len(set(rows)) == s.count  # all distinct
    assert set(rows) == ref
    assert torch.equal(s.index(v), idx)
    ref_list = sorted(ref)
    for dtype in (torch.float32, torch.float64, torch.int64):
        got = s.index(torch.tensor(ref_list, dtype=dtype))
        assert sorted(got.tolist()) == list(range(s.count))
        assert as_tuples(s.vectors(got)) == ref_list


def _check_normalized(s):
    idx = torch.arange(s.count)
    raw = s.vectors(idx, dtype=torch.float64)
    unit32 = s.vectors(idx, normalize=True)
    ref = raw / raw.norm(dim=1, keepdim=True)
    torch.testing.assert_close(unit32, ref.float(), rtol=0, atol=1e-6)
    unit = s.vectors(idx, normalize=True, dtype=torch.float64)
    torch.testing.assert_close(unit, ref, rtol=0, atol=1e-14)
    inv = s.inv_norms(idx, torch.float64)
    torch.testing.assert_close(inv, 1 / raw.norm(dim=1), rtol=0, atol=1e-15)


# a_np has its own test below (known bug), so one failure is reported once, not per n
@pytest.mark.parametrize("name,n", [(nm, n) for nm, n in VALID if nm != "a_np"])
def test_normalized_vectors_are_unit_in_float64(name, n):
    _check_normalized(make_system(name, n))


def test_a_np_normalized_vectors_are_unit_in_float64():
    # BUG (lsc/centers/systems.py, PositiveRootSystem.inv_norms): torch.where(idx < n_pairs, 2**-0.5, 1.0) builds a
    # float32 tensor before .to(dtype), so the float64 inverse norm of e_i - e_j is 0.70710677 (float32), off by
    # 1.7e-8 relative. The float64 rescoring pass of the exact scan then uses a wrong cosine for a_np.
    for n in range(2, 9):
        _check_normalized(make_system("a_np", n))


@pytest.mark.parametrize("name,n", [(nm, n) for nm, n in VALID if nm in V_SYSTEMS])
def test_index_is_the_reference_colex_rank(name, n):
    m, k = V_SYSTEMS[name]
    s = make_system(name, n)
    ref = sorted(brute(name, n))
    got = s.index(torch.tensor(ref, dtype=torch.float32)).tolist()
    want = [
        ref_rank(n, m, k, [i for i, x in enumerate(v) if x == 1], [i for i, x in enumerate(v) if x == -1]) for v in ref
    ]
    assert got == want


@pytest.mark.parametrize("name,n", [("v22", 143), ("a_n_interp", 109), ("v11", 10001)])
def test_large_round_trip(name, n):
    s = make_system(name, n)
    assert s.count == closed_form(name, n)
    g = torch.Generator().manual_seed(n)
    idx = torch.cat([torch.randint(0, s.count, (1000,), generator=g), torch.tensor([0, s.count - 1])])
    v = s.vectors(idx)
    assert v.shape == (idx.numel(), n)
    assert torch.equal(s.index(v), idx)
    rows = sparse_rows(v)
    for sp in rows:
        dense = [0] * n
        for c, x in sp.items():
            dense[c] = x
        assert is_member(name, n, tuple(dense))
    # distinct indices <-> distinct vectors
    keys = [tuple(sorted(sp.items())) for sp in rows]
    assert len(set(keys)) == len(set(idx.tolist()))
    if name in V_SYSTEMS:
        m, k = V_SYSTEMS[name]
        want = [
            ref_rank(n, m, k, [c for c, x in sp.items() if x == 1], [c for c, x in sp.items() if x == -1])
            for sp in rows
        ]
        assert idx.tolist() == want


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(ALL), n=st.integers(1, 40), data=st.data())
def test_round_trip_property(name, n, data):
    if closed_form(name, n) is None:
        with pytest.raises(ValueError):
            make_system(name, n)
        return
    s = make_system(name, n)
    assert s.count == closed_form(name, n)
    idx = torch.tensor(data.draw(st.lists(st.integers(0, s.count - 1), min_size=1, max_size=20)))
    v = s.vectors(idx)
    assert torch.equal(s.index(v), idx)
    for row in as_tuples(v):
        assert is_member(name, n, row)


@pytest.mark.parametrize("name,n", [("v22", 6), ("a_n_interp", 4), ("a_np", 5), ("v21p", 5)])
def test_spec_round_trip(name, n):
    s = make_system(name, n)
    t = system_from_spec(s.spec)
    assert (t.name, t.n_dim, t.count) == (s.name, s.n_dim, s.count)
    idx = torch.arange(s.count)
    assert torch.equal(t.vectors(idx), s.vectors(idx))


# ---- 3. nearest -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,n", SMALL)
def test_nearest_gaussian(name, n):
    s = make_system(name, n)
    v = torch.tensor(sorted(brute(name, n)), dtype=torch.float64)
    order = s.index(v)  # enumeration row -> system index (validated by the ranking tests)
    v_sys = torch.empty_like(v)
    v_sys[order] = v
    g = torch.Generator().manual_seed(_seed(name, n))
    z = torch.randn(300, n, generator=g)
    scores = z.double() @ (v_sys / v_sys.norm(dim=1, keepdim=True)).T
    want = torch.from_numpy(first_argmax(scores.numpy()))
    assert torch.equal(s.nearest(z), want)
    assert torch.equal(s.scan(z), want)


def _check_integer_ties(name, n, rows):
    s = make_system(name, n)
    v_sys = s.vectors(torch.arange(s.count), dtype=torch.float64)
    assert set(as_tuples(v_sys)) == brute(name, n)
    g = torch.Generator().manual_seed(_seed(name, n) + 7)
    z = torch.randint(-2, 3, (rows, n), generator=g)
    key = exact_cos_key(z.numpy(), v_sys.long().numpy())
    want = torch.from_numpy(first_argmax(key))
    n_tied = int(((key == key.max(1, keepdims=True)).sum(1) > 1).sum())
    assert n_tied > 0 or s.count == 1  # the case is meant to exercise ties
    assert torch.equal(s.nearest(z.float()), want)
    assert torch.equal(s.nearest(z), want)  # integer dtype is accepted
    assert torch.equal(s.nearest(z.double()), want)


@pytest.mark.parametrize("name,n", SMALL)
def test_nearest_integer_ties_lowest_index(name, n):
    _check_integer_ties(name, n, 400)


@pytest.mark.parametrize("name", ALL)
def test_nearest_ties_scan_fallback(name, monkeypatch):
    # TIE_BUDGET=1: tied rows give up the best-first enumeration of ties and are resolved by the exact scan
    monkeypatch.setattr(systems_mod, "TIE_BUDGET", 1)
    _check_integer_ties(name, 6, 60)


@pytest.mark.parametrize("name,n", [("v22", 6), ("v21", 6), ("a_n_interp", 4), ("v22p", 5), ("a_n", 5), ("v33", 7)])
def test_best_first_enumerates_by_decreasing_cosine(name, n):
    s = make_system(name, n)
    v = s.vectors(torch.arange(s.count), dtype=torch.float64)
    unit = v / v.norm(dim=1, keepdim=True)
    g = torch.Generator().manual_seed(_seed(name, n))
    for z in (torch.randn(n, generator=g), torch.randint(-2, 3, (n,), generator=g).float()):
        out = list(s.best_first(z))
        scores = [sc for sc, _ in out]
        idx = [i for _, i in out]
        assert sorted(idx) == list(range(s.count))
        assert all(a >= b for a, b in itertools.pairwise(scores))
        ref = (unit @ z.double()).numpy()
        np.testing.assert_allclose(scores, ref[idx], rtol=0, atol=1e-9)


# ---- 4. max cosine --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,n", SMALL)
def test_max_cos_brute_force(name, n):
    s = make_system(name, n)
    if s.count == 1:
        assert math.isnan(s.max_cos)
        return
    v = torch.tensor(sorted(brute(name, n)), dtype=torch.float64)
    u = v / v.norm(dim=1, keepdim=True)
    gram = u @ u.T
    gram.fill_diagonal_(-math.inf)
    assert s.max_cos == pytest.approx(gram.max().item(), abs=1e-12)


@pytest.mark.parametrize(
    "name,n",
    [(nm, n) for nm in V_SYSTEMS for n in (7, 8, 20, 143)] + [("v10_1", 12), ("v1_10", 13), ("v10_10", 25)],
)
def test_max_cos_closed_form(name, n):
    if name in V_SYSTEMS:
        m, k = V_SYSTEMS[name]
    else:
        m, k = (int(x) for x in name[1:].split("_"))
    assert n > m + k
    assert make_system(name, n).max_cos == pytest.approx((m + k - 1) / (m + k), abs=1e-12)


# ---- 5. n_min -------------------------------------------------------------------------------------------

V22_TABLE = [
    (1000, 10),
    (50_000, 23),
    (1_000_000, 47),
    (5_000_000, 69),
    (10_000_000, 82),
    (20_000_000, 97),
    (30_000_000, 107),
    (50_000_000, 121),
    (100_000_000, 143),
]
INTERP_TABLE = [(300_000, 67), (600_000, 85), (1_281_167, 109)]


def _check_minimal(name: str, n_classes: int, n: int):
    assert closed_form(name, n) >= n_classes
    prev = closed_form(name, n - 1) if n > 1 else None
    assert prev is None or prev < n_classes


@pytest.mark.parametrize(
    "name,n_classes,expected", [("v22", N, e) for N, e in V22_TABLE] + [("a_n_interp", N, e) for N, e in INTERP_TABLE]
)
def test_n_min_tables(name, n_classes, expected):
    _check_minimal(name, n_classes, expected)  # the table itself agrees with the closed form
    assert n_min(name, n_classes) == expected


@settings(max_examples=50, deadline=None)
@given(name=st.sampled_from(["v21", "v22", "a_n", "v11"]), n_classes=st.integers(1, 10**9))
def test_n_min_is_smallest_sufficient_n(name, n_classes):
    _check_minimal(name, n_classes, n_min(name, n_classes))


@pytest.mark.parametrize("name", ["v21", "v22", "a_n", "v11", "v33", "v22p", "a_np", "a_n_interp"])
def test_n_min_at_count_boundaries(name):
    for n in range(1, 30):
        c = closed_form(name, n)
        if c is None:
            continue
        _check_minimal(name, c, n_min(name, c))
        _check_minimal(name, c + 1, n_min(name, c + 1))
