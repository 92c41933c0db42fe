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
