"""The class <-> center map: Feistel permutation (bijection, inverse, determinism) and ClassCenters' label map."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lsc.centers import ClassCenters, FeistelPermutation, IdentityPermutation, make_system
from lsc.centers.label_map import MAX_SHUFFLE_COUNT

# ---- FeistelPermutation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 987_654_321])
def test_forward_is_a_bijection_for_every_small_count(seed):
    for count in range(1, 301):
        p = FeistelPermutation(count, seed)
        x = torch.arange(count)
        y = p.forward(x)
        assert torch.equal(x, torch.arange(count))  # input untouched
        assert y.dtype == torch.int64
        assert torch.equal(y.sort().values, x), count
        assert torch.equal(p.inverse(y), x), count
        assert torch.equal(p.forward(p.inverse(x)), x), count


@settings(max_examples=25, deadline=None)
@given(count=st.integers(1, 200_000), seed=st.integers(0, 2**63 - 1))
def test_forward_is_a_bijection_property(count, seed):
    p = FeistelPermutation(count, seed)
    x = torch.arange(count)
    y = p.forward(x)
    assert torch.equal(torch.bincount(y, minlength=count), torch.ones(count, dtype=torch.int64))
    assert torch.equal(p.inverse(y), x)


@pytest.mark.parametrize("count", [1 << 16, (1 << 16) - 1, (1 << 16) + 1, 1 << 17])
def test_bijection_at_power_of_two_boundaries(count):
    p = FeistelPermutation(count, 3)
    y = p.forward(torch.arange(count))
    assert torch.equal(y.sort().values, torch.arange(count))


LARGE_COUNTS = [10**8, 100_222_170, (1 << 40) - 1, 1 << 40, (1 << 40) + 1, 3 * (1 << 39) + 17, MAX_SHUFFLE_COUNT]


@pytest.mark.parametrize("count", LARGE_COUNTS)
@pytest.mark.parametrize("seed", [0, 12345])
def test_inverse_round_trip_large(count, seed):
    p = FeistelPermutation(count, seed)
    g = torch.Generator().manual_seed(count % 1000 + seed)
    x = torch.cat([torch.randint(0, count, (3000,), generator=g), torch.tensor([0, 1, count - 1])])
    y = p.forward(x)
    assert int(y.min()) >= 0 and int(y.max()) < count
    assert torch.equal(p.inverse(y), x)
    assert torch.equal(p.forward(p.inverse(x)), x)
    # injective on the sample
    assert y.unique().numel() == x.unique().numel()
    # Python-int twins agree with the tensor versions
    for a, b in zip(x[:50].tolist(), y[:50].tolist(), strict=True):
        assert p.forward_py(a) == b
        assert p.inverse_py(b) == a
    yi = p.inverse(x)
    for a, b in zip(x[-50:].tolist(), yi[-50:].tolist(), strict=True):
        assert p.inverse_py(a) == b


@pytest.mark.parametrize("count", [1, 2, 3, 300, 1000])
def test_python_twins_match_tensor_versions_small(count):
    p = FeistelPermutation(count, 42)
    x = torch.arange(count)
    assert p.forward(x).tolist() == [p.forward_py(i) for i in range(count)]
    assert p.inverse(x).tolist() == [p.inverse_py(i) for i in range(count)]


def test_different_seeds_give_different_permutations():
    count = 1000
    perms = {tuple(FeistelPermutation(count, s).forward(torch.arange(count)).tolist()) for s in range(10)}
    assert len(perms) == 10
    assert tuple(range(count)) not in perms  # and none of them is the identity
    # the same seed always gives the same permutation
    a = FeistelPermutation(count, 4).forward(torch.arange(count))
    b = FeistelPermutation(count, 4).forward(torch.arange(count))
    assert torch.equal(a, b)


def test_different_seeds_differ_for_large_counts():
    x = torch.arange(100)
    for count in (10**8, 1 << 40):
        a = FeistelPermutation(count, 0).forward(x)
        b = FeistelPermutation(count, 1).forward(x)
        assert not torch.equal(a, b)


_CHILD = """
import json, torch
from lsc.centers import ClassCenters, FeistelPermutation
out = {}
for count, seed in [(1000, 0), (1000, 5), (10**8, 3), (1 << 40, 7)]:
    p = FeistelPermutation(count, seed)
    x = [0, 1, 2, 17, count // 3, count - 1]
    out[f"{count}-{seed}"] = [p.forward(torch.tensor(x)).tolist(), [p.inverse_py(v) for v in x]]
cc = ClassCenters("v22", 5000, seed=11)
out["cc"] = cc.index_of(torch.arange(40)).tolist()
print(json.dumps(out))
"""


def test_mapping_is_identical_in_a_fresh_process():
    env = dict(os.environ, PYTHONHASHSEED="12345", OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    child = json.loads(res.stdout.strip().splitlines()[-1])
    for count, seed in [(1000, 0), (1000, 5), (10**8, 3), (1 << 40, 7)]:
        p = FeistelPermutation(count, seed)
        x = [0, 1, 2, 17, count // 3, count - 1]
        assert child[f"{count}-{seed}"] == [p.forward(torch.tensor(x)).tolist(), [p.inverse_py(v) for v in x]]
    assert child["cc"] == ClassCenters("v22", 5000, seed=11).index_of(torch.arange(40)).tolist()


def test_identity_permutation():
    p = IdentityPermutation(10)
    x = torch.arange(10)
    assert torch.equal(p.forward(x), x) and torch.equal(p.inverse(x), x)
    assert p.forward_py(7) == 7 and p.inverse_py(7) == 7


def test_feistel_rejects_bad_counts():
    with pytest.raises(ValueError):
        FeistelPermutation(0)
    with pytest.raises(ValueError, match="2\\^62"):
        FeistelPermutation(MAX_SHUFFLE_COUNT + 1)


# ---- ClassCenters' label map ----------------------------------------------------------------------------

# (system, n_dim, n_classes, shuffle)
SMALL_MAPS = [
    ("v22", 6, 37, None),
    ("v21", 7, 100, None),
    ("v11", 9, 72, None),
    ("a_n_interp", 4, 50, None),
    ("v22p", 5, 61, None),
    ("a_n", 6, 20, True),
    ("a_np", 8, 20, True),
    ("a_np", 8, 36, None),
    ("v33", 7, 139, None),
]


@pytest.mark.parametrize("name,n_dim,n_classes,shuffle", SMALL_MAPS)
@pytest.mark.parametrize("seed", [0, 9])
def test_label_of_is_minus_one_exactly_off_the_labeled_set(name, n_dim, n_classes, shuffle, seed):
    cc = ClassCenters(name, n_classes, n_dim=n_dim, seed=seed, shuffle=shuffle)
    count = make_system(name, n_dim).count
    assert cc.system.count == count
    mapped = cc.index_of(torch.arange(n_classes)).tolist()
    assert len(set(mapped)) == n_classes  # injective
    assert all(0 <= i < count for i in mapped)
    expected = [-1] * count
    for c, i in enumerate(mapped):
        expected[i] = c
    assert cc.label_of(torch.arange(count)).tolist() == expected
    labels = torch.randint(0, n_classes, (500,), generator=torch.Generator().manual_seed(seed))
    assert torch.equal(cc.label_of(cc.index_of(labels)), labels)


@pytest.mark.parametrize(
    "name,n_dim,n_classes", [("v22", 47, 1_000_000), ("a_n_interp", 109, 1_281_167), ("v11", 1001, 10**6)]
)
def test_label_round_trip_large(name, n_dim, n_classes):
    cc = ClassCenters(name, n_classes, n_dim=n_dim, seed=3)
    labels = torch.cat([torch.randint(0, n_classes, (2000,)), torch.tensor([0, n_classes - 1])])
    idx = cc.index_of(labels)
    assert int(idx.min()) >= 0 and int(idx.max()) < cc.system.count
    assert torch.equal(cc.label_of(idx), labels)
    # distinct labels -> distinct vectors
    assert idx.unique().numel() == labels.unique().numel()


# n_dim 8 where the system holds >= 100 vectors there, else the smallest that does
@pytest.mark.parametrize(
    "name,n_dim", [("v22", 8), ("v21", 8), ("v11", 11), ("a_n_interp", 8), ("a_nr", 10), ("v22p", 8), ("a_np", 14)]
)
@pytest.mark.parametrize("seed", [0, 5])
def test_growing_n_classes_never_moves_a_class(name, n_dim, seed):
    small = ClassCenters(name, 50, n_dim=n_dim, seed=seed, shuffle=True)
    big = ClassCenters(name, 100, n_dim=n_dim, seed=seed, shuffle=True)
    full = ClassCenters(name, big.system.count, n_dim=n_dim, seed=seed, shuffle=True)
    labels = torch.arange(50)
    assert torch.equal(small.index_of(labels), big.index_of(labels))
    assert torch.equal(small.index_of(labels), full.index_of(labels))
    assert torch.equal(big.index_of(torch.arange(100)), full.index_of(torch.arange(100)))


@pytest.mark.parametrize(
    "name,n_dim,n_classes", [("v22", 7, 150), ("a_n", 6, 30), ("a_n_interp", 4, 70), ("a_np", 8, 36)]
)
def test_shuffle_false_is_the_identity(name, n_dim, n_classes):
    cc = ClassCenters(name, n_classes, n_dim=n_dim, shuffle=False)
    count = cc.system.count
    assert torch.equal(cc.index_of(torch.arange(n_classes)), torch.arange(n_classes))
    all_idx = torch.arange(count)
    assert torch.equal(cc.label_of(all_idx), torch.where(all_idx < n_classes, all_idx, -1))


def test_shuffle_defaults():
    assert ClassCenters("v22", 100, n_dim=8).shuffle
    assert not ClassCenters("a_n", 100, n_dim=12).shuffle
    assert not ClassCenters("a_np", 50, n_dim=12).shuffle
    table = torch.eye(4)
    assert not ClassCenters("table", 4, table=table).shuffle
    nr = ClassCenters("a_nr", 100, n_dim=12, seed=2)
    assert nr.shuffle and nr.system.name == "a_n"
    # a_nr is the shuffled a_n: the same Feistel order as asking for it explicitly
    explicit = ClassCenters("a_n", 100, n_dim=12, seed=2, shuffle=True)
    assert torch.equal(nr.index_of(torch.arange(100)), explicit.index_of(torch.arange(100)))
    # a shuffled map is not the identity, and follows FeistelPermutation(count, seed)
    cc = ClassCenters("v22", 100, n_dim=8, seed=4)
    got = cc.index_of(torch.arange(100))
    assert not torch.equal(got, torch.arange(100))
    assert torch.equal(got, FeistelPermutation(cc.system.count, 4).forward(torch.arange(100)))


def test_seed_changes_the_map():
    a = ClassCenters("v22", 200, n_dim=8, seed=0).index_of(torch.arange(200))
    b = ClassCenters("v22", 200, n_dim=8, seed=1).index_of(torch.arange(200))
    assert not torch.equal(a, b)


def test_n_dim_defaults_to_n_min():
    cc = ClassCenters("v22", 1000)
    assert cc.n_dim == 10 and cc.system.count == 10 * 9 * 8 * 7 // 4


def _same_mapping(a: ClassCenters, b: ClassCenters):
    assert (a.n_classes, a.n_dim, a.seed, a.shuffle, a.system.count) == (
        b.n_classes,
        b.n_dim,
        b.seed,
        b.shuffle,
        b.system.count,
    )
    labels = torch.arange(a.n_classes)
    assert torch.equal(a.index_of(labels), b.index_of(labels))
    assert torch.equal(a(labels), b(labels))
    idx = torch.arange(a.system.count)
    assert torch.equal(a.label_of(idx), b.label_of(idx))


def _int_table(rows: int, n_dim: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    t = np.unique(rng.integers(-2, 3, size=(rows * 3, n_dim)), axis=0)
    t = t[np.abs(t).sum(1) > 0]
    rng.shuffle(t)
    return torch.tensor(t[:rows], dtype=torch.float32)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(system="v22", n_classes=300, n_dim=9, seed=17),
        dict(system="a_n_interp", n_classes=100, n_dim=5, seed=2),
        dict(system="a_n", n_classes=40, n_dim=8),
        dict(system="a_nr", n_classes=40, n_dim=8, seed=1),
        dict(system="v21p", n_classes=60, n_dim=6, seed=3, shuffle=False),
    ],
)
def test_spec_round_trip(kwargs):
    cc = ClassCenters(**kwargs)
    spec = json.loads(json.dumps(cc.spec))
    assert spec == cc.spec
    _same_mapping(cc, ClassCenters.from_spec(spec))


def test_spec_round_trip_table(tmp_path):
    table = _int_table(30, 5, 0)
    cc = ClassCenters("table", 30, table=table, seed=5, shuffle=True)
    spec = json.loads(json.dumps(cc.spec))
    _same_mapping(cc, ClassCenters.from_spec(spec))
    for suffix in (".pt", ".npy"):
        path = tmp_path / f"centers{suffix}"
        if suffix == ".pt":
            torch.save(table, path)
        else:
            np.save(path, table.numpy())
        cc = ClassCenters("table", 20, table=str(path))
        spec = json.loads(json.dumps(cc.spec))
        assert spec["system"]["path"] == str(path)
        back = ClassCenters.from_spec(spec)
        _same_mapping(cc, back)
        assert torch.equal(back.positions(torch.arange(20)), table[:20])


def test_mapping_keeps_label_shapes():
    cc = ClassCenters("v22", 300, n_dim=9, seed=1)
    labels = torch.randint(0, 300, (4, 5))
    idx = cc.index_of(labels)
    assert idx.shape == (4, 5)
    assert torch.equal(idx.reshape(-1), cc.index_of(labels.reshape(-1)))
    assert torch.equal(cc.label_of(idx), labels)
    assert cc(labels).shape == (4, 5, 9)
    assert torch.equal(cc(labels).reshape(-1, 9), cc(labels.reshape(-1)))
    assert cc.index_of(torch.zeros(0, dtype=torch.long)).shape == (0,)


def test_index_of_accepts_python_lists():
    # BUG (lsc/centers/class_centers.py:103, ClassCenters.index_of): `_check_labels` converts the labels with
    # torch.as_tensor, but the result is reshaped with `labels.shape` of the *original* argument, so a Python
    # list raises AttributeError("'list' object has no attribute 'shape'"). label_of accepts lists.
    cc = ClassCenters("v22", 300, n_dim=9, seed=1)
    want = cc.index_of(torch.tensor([3, 1, 4]))
    assert cc.label_of(want.tolist()).tolist() == [3, 1, 4]
    assert cc.index_of([3, 1, 4]).tolist() == want.tolist()
