"""FAISS baselines of the label-search benchmark (lsc.bench.faiss_search, lsc.bench.predict), against brute force.

IVF recall is checked against what an inverted file must return with nprobe lists probed: the exact nearest
center when its list is among the query's nprobe nearest centroids (numpy argmax over the quantizer's
centroids), else a miss. Needs faiss-cpu (the `faiss` extra) except for the "not installed" test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lsc.bench import faiss_search as fs
from lsc.bench import predict
from lsc.centers import ClassCenters

needs_faiss = pytest.mark.skipif(not fs.available(), reason="faiss is not installed (pip install -e '.[faiss]')")


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def angles(deg):
    a = np.radians(np.asarray(deg, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], 1).astype(np.float32)


def fixed_ivf(centroids, xb):
    """IVF-Flat whose lists are given (no k-means): row i goes to argmax_j <xb_i, centroid_j>."""
    quantizer = fs.faiss.IndexFlatIP(centroids.shape[1])
    quantizer.add(centroids)
    index = fs.faiss.IndexIVFFlat(quantizer, centroids.shape[1], len(centroids), fs.faiss.METRIC_INNER_PRODUCT)
    assert index.is_trained
    index.add(xb)
    return index, quantizer


def ivf_recall_brute(centroids, xb, xq, nprobe):
    """Recall@1 an exact IVF search must reach: the true nearest row's list is among the nprobe probed ones."""
    exact = np.argmax(xq.astype(np.float64) @ xb.T.astype(np.float64), 1)
    list_of = np.argmax(xb.astype(np.float64) @ centroids.T.astype(np.float64), 1)
    probed = np.argsort(-(xq.astype(np.float64) @ centroids.T.astype(np.float64)), 1)[:, :nprobe]
    return float((probed == list_of[exact][:, None]).any(1).mean()), exact


@needs_faiss
def test_flat_cossim_topk_agree_on_a_small_system():
    n_classes, n_dim = 1000, 10
    cc = ClassCenters("v22", n_classes, n_dim=n_dim, seed=0)
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, n_classes, (4000,), generator=g)
    z = cc(labels) + 0.05 * torch.randn(len(labels), n_dim, generator=g)
    # float64 reference from the raw system vectors; near-ties (float32 may order them either way) are dropped
    ref_bank = cc.positions(torch.arange(n_classes)).double()
    scores = torch.nn.functional.normalize(z.double(), dim=1) @ torch.nn.functional.normalize(ref_bank, dim=1).T
    top2 = scores.topk(2, dim=1)
    keep = (top2.values[:, 0] - top2.values[:, 1]) > 1e-6
    assert keep.float().mean() > 0.99
    exact = top2.indices[:, 0][keep].numpy()
    index, _ = fs.build_flat(cc.bank().numpy(), n_dim)
    flat = fs.search_labels(index, z.numpy(), batch_size=1000)[keep.numpy()]  # several search calls
    np.testing.assert_array_equal(flat, exact)
    np.testing.assert_array_equal(cc.predict(z, "cossim")[keep].numpy(), exact)
    np.testing.assert_array_equal(cc.predict(z, "topk")[keep].numpy(), exact)
    assert fs.recall_at_1(flat, exact) == 1.0


@needs_faiss
def test_recall_counts_the_misses_of_a_one_list_probe():
    # two lists split at 45 degrees; centers at 30 (list 0) and 70 (list 1) degrees: a query at 46..49 degrees
    # is nearer centroid 1 but nearer center 30, so probing one list misses it
    centroids = angles([0, 90])
    xb = angles([5, 30, 70, 85])
    xq = angles([10, 43, 44, 47, 49, 52, 80, 88])
    index, _ = fixed_ivf(centroids, xb)
    index.nprobe = 1
    expected, exact = ivf_recall_brute(centroids, xb, xq, 1)
    assert expected == 6 / 8  # the two queries built to miss (47, 49 degrees), counted by hand
    assert fs.recall_at_1(fs.search_labels(index, xq), exact) == expected
    index.nprobe = 2
    assert fs.recall_at_1(fs.search_labels(index, xq), exact) == 1.0


@needs_faiss
def test_recall_of_a_trained_ivf_matches_its_quantizer_assignment():
    rng = np.random.default_rng(0)
    xb = unit(rng.standard_normal((3000, 6)))
    xq = unit(xb[rng.integers(0, len(xb), 800)] + 0.3 * rng.standard_normal((800, 6)).astype(np.float32))
    index, _ = fs.build_ivf(xb, 6, nlist=32, train=xb)
    centroids = index.quantizer.reconstruct_n(0, index.nlist)
    for nprobe in (1, 3):
        index.nprobe = nprobe
        expected, exact = ivf_recall_brute(centroids, xb, xq, nprobe)
        assert 0 < expected < 1
        assert fs.recall_at_1(fs.search_labels(index, xq), exact) == pytest.approx(expected, abs=1e-12)


@needs_faiss
def test_choose_nprobe_is_the_smallest_doubling_that_reaches_the_target():
    rng = np.random.default_rng(1)
    centroids = unit(rng.standard_normal((64, 8)))
    xb = unit(rng.standard_normal((2000, 8)))
    xq = unit(xb[rng.integers(0, len(xb), 1000)] + 0.25 * rng.standard_normal((1000, 8)).astype(np.float32))
    index, _ = fixed_ivf(centroids, xb)
    seq = [1, 2, 4, 8, 16, 32, 64]
    recall = {p: ivf_recall_brute(centroids, xb, xq, p)[0] for p in seq}
    exact = ivf_recall_brute(centroids, xb, xq, 1)[1]
    assert recall[1] < 0.99 <= recall[64]
    for target in (0.99, recall[4], (recall[4] + recall[8]) / 2):  # -> 16, 4, 8
        want = next(p for p in seq if recall[p] >= target)
        nprobe, got, seconds = fs.choose_nprobe(index, xq, exact, target=target)
        assert (nprobe, got) == (want, pytest.approx(recall[want], abs=1e-12))
        assert index.nprobe == want and seconds > 0


@needs_faiss
def test_choose_ef_is_the_smallest_doubling_that_reaches_the_target():
    rng = np.random.default_rng(2)
    xb = unit(rng.standard_normal((4000, 12)))
    xq = unit(xb[rng.integers(0, len(xb), 500)] + 0.5 * rng.standard_normal((500, 12)).astype(np.float32))
    exact = np.argmax(xq.astype(np.float64) @ xb.T.astype(np.float64), 1)
    index, _ = fs.build_hnsw(xb, 12, m=4)  # a sparse graph, so that efSearch=16 misses some
    ef, got, _ = fs.choose_ef(index, xq, exact)
    index.hnsw.efSearch = ef
    assert got == fs.recall_at_1(fs.search_labels(index, xq), exact) >= 0.99
    if ef > 16:
        index.hnsw.efSearch = ef // 2
        assert fs.recall_at_1(fs.search_labels(index, xq), exact) < 0.99


@needs_faiss
def test_index_bytes_match_the_serialized_index_and_the_estimate():
    rng = np.random.default_rng(3)
    n, d, nlist = 5000, 16, 40
    xb = unit(rng.standard_normal((n, d)))
    built = {
        "flat": fs.build_flat(xb, d)[0],
        "ivf": fs.build_ivf(xb, d, nlist, xb)[0],
        "hnsw": fs.build_hnsw([xb[:2000], xb[2000:]], d)[0],  # chunks
    }
    for kind, index in built.items():
        assert index.ntotal == n
        b = fs.index_bytes(index)
        assert b == pytest.approx(fs.faiss.serialize_index(index).nbytes, rel=0.01), kind
        assert fs.estimate_bytes(kind, n, d, nlist) == pytest.approx(b, rel=0.02), kind


def tiny_args(*extra):
    return predict.parse_args(
        ["--classes", "1e3", "--queries", "3000", "--batch-size", "1024", "--repeat", "1", *extra]
    )


@needs_faiss
def test_benchmark_row_has_consistent_faiss_fields():
    args = tiny_args()
    row = predict.bench_one(1000, args, torch.device("cpu"))
    f = row["faiss"]
    assert set(f) == {"flat", "ivf", "hnsw"}
    assert f["flat"]["recall"] == 1.0 and f["flat"]["bytes"] == 1000 * row["n_dim"] * 4
    assert f["ivf"]["nlist"] == round(4 * 1000**0.5) and f["ivf"]["train_points"] == 1000
    assert f["ivf"]["param"] in (1, 2, 4, 8, 16, 32, 64, 126) and f["hnsw"]["param"] >= 16
    for kind in f:
        assert f[kind]["timed_queries"] == 3000 and f[kind]["qps"] == pytest.approx(3000 / f[kind]["t"])
        assert f[kind]["recall"] >= 0.99 and f[kind]["build_s"] >= 0 and not f[kind]["gpu"]
    assert row["tc_faiss_flat"] == f["flat"]["t"]
    fastest = min(row["tc"], f["flat"]["t"])
    assert row["ks_fastest_exact"] == pytest.approx(fastest / row["tn"])
    assert row["fastest_exact"] == ("cossim" if row["tc"] <= f["flat"]["t"] else "faiss flat")
    md = predict.markdown([row], "#")
    assert "| tc faiss flat |" in md and "| Ks vs fastest exact |" in md and "not installed" not in md
    assert f"| 1,000 | faiss IVF-Flat | nlist=126, nprobe={f['ivf']['param']} |" in md
    # an index over the memory budget is skipped with the memory it would need
    row = predict.bench_one(1000, tiny_args("--mem-budget-gb", "1e-5", "--faiss-indexes", "flat"), torch.device("cpu"))
    assert row["tc"] is None and row["faiss"]["flat"]["need"] == 40_000 and row["ks_fastest_exact"] is None
    assert "— (needs 39.1 KiB)" in predict.markdown([row], "#")


def test_build_extrapolation_is_n_d_log_n():
    assert predict.extrapolated_build_s(None, 10**7, 82) is None
    # 10x the classes, 2x the width, log(1e7)/log(1e6) = 7/6 deeper: 100 s -> 100 * 10 * 2 * 7/6
    assert predict.extrapolated_build_s((10**6, 41, 100.0), 10**7, 82) == pytest.approx(100 * 10 * 2 * 7 / 6)


@needs_faiss
def test_index_past_the_build_budget_is_skipped_with_its_estimate():
    args = tiny_args("--faiss-indexes", "flat", "hnsw", "--build-budget-s", "50")
    prev = {"hnsw": (100, 10, 1.0), "flat": (100, 10, 1e-4)}  # hnsw: 1 s at 100 x 10 -> 15 s at 1,000 x 10
    row = predict.bench_one(1000, args, torch.device("cpu"), prev)
    est = 1.0 * 10 * math.log(1000) / math.log(100)
    assert est < 50 and row["faiss"]["hnsw"]["recall"] >= 0.99  # under the budget: built and searched
    assert row["faiss"]["flat"]["recall"] == 1.0
    args = tiny_args("--faiss-indexes", "hnsw", "--build-budget-s", "10")
    row = predict.bench_one(1000, args, torch.device("cpu"), prev)
    assert row["faiss"]["hnsw"]["est_build_s"] == pytest.approx(est) and "build_s" not in row["faiss"]["hnsw"]
    assert "| 1,000 | faiss HNSW | not built | — | — | — (~15.0 s extrapolated) |" in predict.markdown([row], "#")


def test_benchmark_without_faiss_says_not_installed(monkeypatch, capsys):
    monkeypatch.setattr(fs, "faiss", None)
    row = predict.bench_one(1000, tiny_args(), torch.device("cpu"))
    assert row["faiss"] == "not installed" and row["tc_faiss_flat"] is None
    assert row["fastest_exact"] == "cossim" and row["ks_fastest_exact"] == pytest.approx(row["tc"] / row["tn"])
    md = predict.markdown([row], "#").splitlines()
    main_row = next(line for line in md if line.startswith("| 1,000 | 10 |"))
    assert main_row.split(" | ")[3] == "not installed"
    assert sum("| faiss " in line and line.count("not installed") == 6 for line in md) == 3
    with pytest.raises(SystemExit):
        predict.parse_args(["--faiss-gpu"])
    assert "--faiss-gpu: faiss is not installed" in capsys.readouterr().err


@needs_faiss
def test_faiss_gpu_flag_refuses_without_a_gpu(capsys):
    if fs.faiss.get_num_gpus() > 0:
        pytest.skip("a GPU faiss is present")
    with pytest.raises(SystemExit):
        predict.parse_args(["--faiss-gpu"])
    assert "--faiss-gpu needs a faiss build with GPU support that sees a GPU" in capsys.readouterr().err
