"""Benchmarks at their smoke size, so none of them rots; their numbers are checked for internal consistency."""

from __future__ import annotations

import json

from lsc.bench import assign


def test_bench_assign_smoke(tmp_path):
    assign.main(["--smoke", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "bench_assign_smoke.json").read_text())["rows"]
    compiled, reference = rows  # the numba walk and the Python walk beside it, each in its own process
    assert (compiled["walk"], reference["walk"]) == ("numba", "python")
    assert compiled["digest"] == reference["digest"]  # the same table
    for r in rows:
        assert r["table_bytes"] == 16 * r["n_classes"] and 0 < r["walk_share"] < 1 and r["pops_per_walk"] >= 2
    assert compiled["taken_state_bytes"] == (compiled["count"] + 7) // 8  # 1 bit per vector
    assert compiled["walk_share"] == reference["walk_share"] and compiled["pops_per_walk"] == reference["pops_per_walk"]
    assert (tmp_path / "bench_assign_smoke.md").read_text().count("|") > 10


def test_bench_assign_per_cluster_smoke(tmp_path):
    """The README's reading of the clustered rows: a walk's length follows the classes per cluster (each walks past
    the vectors its cluster-mates took), not the class count: 10x the classes per cluster, >= 5x the vectors."""
    assign.main(["--per-cluster", "--smoke", "--out", str(tmp_path)])
    few, many = json.loads((tmp_path / "bench_assign_clusters_smoke.json").read_text())["rows"]
    assert (few["n_classes"], many["n_classes"]) == (5_000, 5_000) and (few["clusters"], many["clusters"]) == (50, 5)
    assert few["n_dim"] == many["n_dim"] and few["count"] == many["count"]
    assert many["pops_per_walk"] >= 5 * few["pops_per_walk"] and few["pops_per_walk"] >= 2
    assert "| 5,000 | 5 | 1,000 |" in (tmp_path / "bench_assign_clusters_smoke.md").read_text()


def test_bench_assign_pass_sums_smoke(tmp_path):
    """The two accumulators side by side: the on-disk one writes the float32 file it reports (sums + count column)
    and returns a memory-mapped result; the in-memory one holds no file."""
    assign.main(["--pass-sums", "--smoke", "--out", str(tmp_path)])
    mem, disk = json.loads((tmp_path / "bench_assign_pass_sums_smoke.json").read_text())["rows"]
    assert (mem["on_disk"], disk["on_disk"]) == (False, True) and mem["n_dim"] == disk["n_dim"] == 19
    assert disk["sums_file_bytes"] == 20_000 * 20 * 4 and mem["float64_sums_bytes"] == 20_000 * 19 * 8
    assert (mem["result"], disk["result"]) == ("tensor", "memmap") and disk["result_file_bytes"] == 20_000 * 19 * 4
    assert all(r["peak_rss_bytes"] >= r["rss_after_import_bytes"] > 0 for r in (mem, disk))


def test_bench_data_end_to_end_smoke(tmp_path):
    """The headline command trained on prepared chunks: the wait share it reports is the run's own DataWaitMonitor
    figure, the run took exactly the steps asked for, and copies made the epoch long enough not to end in it."""
    import csv

    from lsc.bench import data

    data.main(["--end-to-end", "--smoke", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path)])
    r = json.loads((tmp_path / "bench_data_end_to_end_smoke.json").read_text())
    run = json.loads((tmp_path / "cache" / r["run_dir"].rsplit("/", 1)[1] / "metrics.json").read_text())
    assert 0 < r["wait_share"] < 1 and r["wait_share"] == run["train/data_wait"]
    assert abs(r["end_to_end_vs_step"] + r["wait_share"] - 1) < 1e-12
    rows = list(csv.DictReader(open(next((tmp_path / "cache").rglob("metrics.csv")))))
    assert max(int(row["step"]) for row in rows) + 1 == r["steps"] == 6
    assert {row["epoch"] for row in rows} == {"0"}  # one epoch, not ended: no worker restart inside the run
    assert r["classes"] == r["copies"] * 200 and r["copies"] * 200 >= (r["steps"] + 2) * r["batch"]
    assert "data=streaming" in r["args"]
