"""Invalid input: every case raises ValueError with a message that says what to do."""

from __future__ import annotations

import math

import pytest
import torch

from lsc.centers import ClassCenters, check_embeddings, make_system, n_min


def v22_count(n: int) -> int:
    return n * (n - 1) * (n - 2) * (n - 3) // 4


def v22_n_min(n_classes: int) -> int:
    n = 4
    while v22_count(n) < n_classes:
        n += 1
    return n


# ---- sizes ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_classes,n_dim", [(2_000_000, 47), (1_281_167, 47), (1001, 9), (431, 8)])
def test_too_many_classes_suggests_n_min(n_classes, n_dim):
    assert v22_count(n_dim) < n_classes
    want = v22_n_min(n_classes)
    with pytest.raises(ValueError) as ei:
        ClassCenters("v22", n_classes, n_dim=n_dim)
    msg = str(ei.value)
    assert "n_min" in msg
    assert f"n_dim >= {want}" in msg
    assert f"{v22_count(n_dim):,}" in msg  # how many vectors there are


def test_too_many_classes_for_a_system_object():
    s = make_system("a_n_interp", 5)  # 150 vectors
    with pytest.raises(ValueError, match="n_min") as ei:
        ClassCenters(s, 151)
    assert "n_dim >= 6" in str(ei.value)  # 6^2 * 7 = 252 >= 151 > 150


def test_too_many_classes_for_a_table():
    with pytest.raises(ValueError, match="one table row per class"):
        ClassCenters("table", 5, table=torch.eye(4))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10", None])
def test_bad_n_classes(bad):
    with pytest.raises(ValueError, match="n_classes must be a positive integer"):
        ClassCenters("v22", bad, n_dim=8)


@pytest.mark.parametrize("bad", [0, -1, True])
def test_bad_n_classes_for_n_min(bad):
    with pytest.raises(ValueError, match="positive integer"):
        n_min("v22", bad)


def test_n_min_not_defined_for_table():
    with pytest.raises(ValueError, match="table"):
        n_min("table", 10)


# ---- system names and dimensions ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["v2", "w22", "a_m", "A_n", "v22q", "", "v1_"])
def test_unknown_system_lists_valid_names(name):
    for make in (lambda: make_system(name, 8), lambda: ClassCenters(name, 10, n_dim=8), lambda: n_min(name, 10)):
        with pytest.raises(ValueError) as ei:
            make()
        msg = str(ei.value)
        for valid in ("v22", "a_n_interp", "a_np", "table"):
            assert valid in msg, msg


def test_unknown_system_with_default_n_dim():
    with pytest.raises(ValueError, match="a_n_interp"):
        ClassCenters("bogus", 10)


@pytest.mark.parametrize("name,n_dim,need", [("v22", 3, 4), ("v21", 2, 3), ("v33", 5, 6), ("v31", 1, 4)])
def test_m_plus_k_exceeds_n_dim(name, n_dim, need):
    with pytest.raises(ValueError) as ei:
        make_system(name, n_dim)
    msg = str(ei.value)
    assert "m + k" in msg and f"n_dim >= {need}" in msg
    with pytest.raises(ValueError):
        ClassCenters(name, 1, n_dim=n_dim)


@pytest.mark.parametrize("name,n_dim", [("v22p", 2), ("v33p", 4)])
def test_projected_m_plus_k_exceeds_n_dim_plus_one(name, n_dim):
    with pytest.raises(ValueError, match="n_dim \\+ 1"):
        make_system(name, n_dim)


@pytest.mark.parametrize("name", ["v10p", "v01p"])
def test_projection_to_zero_vector(name):
    with pytest.raises(ValueError, match="zero vector"):
        make_system(name, 4)


def test_system_needs_a_nonzero():
    with pytest.raises(ValueError, match="m \\+ k >= 1"):
        make_system("v00", 4)


@pytest.mark.parametrize("n_dim", [0, -2])
def test_n_dim_below_one(n_dim):
    with pytest.raises(ValueError, match="n_dim must be >= 1"):
        make_system("v22", n_dim)
    with pytest.raises(ValueError, match="n_dim"):
        ClassCenters("v22", 5, n_dim=n_dim)


@pytest.mark.parametrize("n_dim", [7.5, "8", math.nan, True])
def test_n_dim_not_an_integer(n_dim):
    with pytest.raises(ValueError, match="n_dim must be a positive integer"):
        make_system("v22", n_dim)
    with pytest.raises(ValueError, match="n_dim"):
        ClassCenters("v22", 5, n_dim=n_dim)


def test_integral_float_n_dim_is_accepted():
    s = make_system("v22", 8.0)
    assert s.n_dim == 8 and isinstance(s.n_dim, int) and s.count == v22_count(8)


def test_n_dim_mismatch_with_a_system_object():
    with pytest.raises(ValueError, match="does not match"):
        ClassCenters(make_system("v22", 8), 10, n_dim=9)


# ---- embeddings -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cc():
    return ClassCenters("v22", 300, n_dim=8, seed=1)


@pytest.mark.parametrize("method", ["topk", "cossim", "euclidean"])
@pytest.mark.parametrize("shape", [(4, 9), (4, 7), (8,), (2, 4, 8)])
def test_wrong_embedding_shape(cc, method, shape):
    with pytest.raises(ValueError) as ei:
        cc.predict(torch.randn(*shape), method)
    msg = str(ei.value)
    assert "n_dim=8" in msg and "[batch, 8]" in msg


def test_wrong_embedding_shape_nearest(cc):
    with pytest.raises(ValueError, match="n_dim=8"):
        cc.nearest(torch.randn(3, 9))
    with pytest.raises(ValueError, match="n_dim=8"):
        cc.system.nearest(torch.randn(3, 9))


def test_embeddings_must_be_a_tensor(cc):
    with pytest.raises(ValueError, match="torch.Tensor"):
        cc.predict([[0.0] * 8])
    with pytest.raises(ValueError, match="torch.Tensor"):
        check_embeddings(torch.randn(2, 8).numpy(), 8)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("method", ["topk", "cossim", "euclidean", "nearest", "system"])
def test_non_finite_embeddings(cc, bad, method):
    z = torch.randn(5, 8)
    z[3, 2] = bad
    with pytest.raises(ValueError) as ei:
        if method == "nearest":
            cc.nearest(z)
        elif method == "system":
            cc.system.nearest(z)
        else:
            cc.predict(z, method)
    msg = str(ei.value)
    assert "NaN/inf" in msg and "1 row(s)" in msg and "first row 3" in msg


def test_non_finite_embeddings_other_systems():
    z = torch.randn(4, 6, dtype=torch.float64)
    z[1, 0] = math.nan
    z[2, 5] = math.inf
    for c in (ClassCenters("a_np", 10, n_dim=6), ClassCenters("a_n_interp", 100, n_dim=6)):
        with pytest.raises(ValueError, match="2 row\\(s\\), first row 1"):
            c.predict(z)
        with pytest.raises(ValueError, match="NaN/inf"):
            c.nearest(z)


def test_unknown_predictor(cc):
    with pytest.raises(ValueError, match="cossim, topk, euclidean"):
        cc.predict(torch.randn(2, 8), "knn")


# ---- labels ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("labels", [[-1], [300], [0, 5, 301], [-7, 2]])
def test_labels_out_of_range(cc, labels):
    t = torch.tensor(labels)
    for f in (cc, cc.index_of, cc.positions):
        with pytest.raises(ValueError) as ei:
            f(t)
        msg = str(ei.value)
        assert "[0, 300)" in msg
        assert f"[{min(labels)}, {max(labels)}]" in msg


def test_float_labels(cc):
    for f in (cc, cc.index_of, cc.positions):
        with pytest.raises(ValueError, match="integers"):
            f(torch.tensor([1.0, 2.0]))


# ---- vector indices -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,n_dim", [("v22", 6), ("a_n_interp", 4), ("a_np", 5), ("v21p", 5)])
def test_vectors_out_of_range(name, n_dim):
    s = make_system(name, n_dim)
    for idx in ([-1], [s.count], [0, s.count + 5]):
        with pytest.raises(ValueError, match=f"\\[0, {s.count:,}\\)"):
            s.vectors(torch.tensor(idx))
    with pytest.raises(ValueError, match="integers"):
        s.vectors(torch.tensor([0.0, 1.0]))


def test_label_of_out_of_range(cc):
    with pytest.raises(ValueError, match="vector indices"):
        cc.label_of(torch.tensor([cc.system.count]))


@pytest.mark.parametrize(
    "name,n_dim,row",
    [
        ("v22", 6, [1, 1, 1, -1, 0, 0]),  # three +1
        ("v22", 6, [1, 1, -1, 0, 0, 0]),  # too few -1
        ("v22", 6, [1, 1, -1, -1, 0.5, 0]),
        ("v22", 6, [2, 1, -1, -1, 0, 0]),
        ("v11", 5, [0, 0, 0, 0, 0]),
        ("a_np", 5, [-1, 1, 0, 0, 0]),  # e_1 - e_0 is a negative root
        ("a_np", 5, [0, 0, -1, 0, 0]),
        ("a_n", 5, [1, 1, 0, 0, 0]),
        ("a_n_interp", 4, [2, 2, 0, 0]),
        ("v21p", 5, [1, 1, 1, 0, 0]),
    ],
)
def test_index_of_a_foreign_vector(name, n_dim, row):
    s = make_system(name, n_dim)
    with pytest.raises(ValueError, match="not a vector of"):
        s.index(torch.tensor([row], dtype=torch.float32))


def test_index_of_a_foreign_row_reports_it():
    s = make_system("v22", 6)
    good = s.vectors(torch.tensor([0, 1]))
    bad = torch.cat([good, torch.tensor([[1.0, 1, 1, -1, 0, 0]])])
    with pytest.raises(ValueError, match="row 2"):
        s.index(bad)


def test_index_wrong_shape():
    s = make_system("v22", 6)
    with pytest.raises(ValueError, match="\\[batch, 6\\]"):
        s.index(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="\\[batch, 6\\]"):
        s.index(torch.zeros(6))


def test_index_of_a_foreign_table_row():
    s = make_system("table", 3, vectors=torch.eye(3))
    with pytest.raises(ValueError, match="not a row of the table"):
        s.index(torch.tensor([[1.0, 1.0, 0.0]]))


# ---- table ----------------------------------------------------------------------------------------------


def test_table_without_vectors():
    with pytest.raises(ValueError, match="vectors="):
        make_system("table", 4)
    with pytest.raises(ValueError, match="table="):
        ClassCenters("table", 3)
    with pytest.raises(ValueError, match="table="):
        ClassCenters("table", 3, n_dim=4)


def test_vectors_only_for_table():
    with pytest.raises(ValueError, match="only for the 'table' system"):
        make_system("v22", 6, vectors=torch.eye(6))


@pytest.mark.parametrize(
    "table,match",
    [
        (torch.tensor([[1.0, 0.0], [math.nan, 1.0]]), "NaN/inf"),
        (torch.tensor([[1.0, 0.0], [0.0, 0.0]]), "row 1 is the zero vector"),
        (torch.zeros(0, 3), "\\[count, n_dim\\]"),
        (torch.ones(3), "\\[count, n_dim\\]"),
    ],
)
def test_bad_tables(table, match):
    with pytest.raises(ValueError, match=match):
        make_system("table", table.shape[-1] if table.dim() == 2 else 3, vectors=table)


def test_table_width_mismatch():
    with pytest.raises(ValueError, match="width 3 but n_dim=4"):
        make_system("table", 4, vectors=torch.eye(3))


def test_missing_table_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_system("table", 3, vectors=str(tmp_path / "nope.pt"))
