"""Benchmarks at their smoke size, so none of them rots; their numbers are checked for internal consistency."""

from __future__ import annotations

import json

from lsc.bench import assign


def test_bench_assign_smoke(tmp_path):
    assign.main(["--smoke", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "bench_assign_smoke.json").read_text())["rows"]
    (r,) = rows
    assert r["table_bytes"] == 16 * r["n_classes"] and r["taken_state_bytes"] == r["count"]
    assert 0 < r["walk_share"] < 1 and r["pops_per_walk"] >= 2  # a walk pops the taken nearest vector, then more
    assert (tmp_path / "bench_assign_smoke.md").read_text().count("|") > 10
