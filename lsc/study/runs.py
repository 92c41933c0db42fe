"""Run many `python -m lsc.train` jobs in parallel single-threaded subprocesses and collect their results.

Experiments describe each run as a list of Hydra overrides. A run whose directory already holds metrics.json is
not run again, and one stopped after an epoch, or after a step when ckpt_every is set (its checkpoints/last.ckpt,
no metrics.json), resumes from that checkpoint, so an interrupted experiment resumes where it stopped; raw per-run
outputs (the run's config, metrics.json, the CSV log) stay in the run directory next to the published tables.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def run_dir(root: Path, name: str, overrides: list[str]) -> Path:
    h = hashlib.sha1(" ".join(overrides).encode()).hexdigest()[:8]
    return root / f"{name}-{h}"


def _run_module(module: str, args: list[str], d: Path, threads: int, timeout: float | None, what: str) -> None:
    """`python -m <module> <args> hydra.run.dir=<d>` single-threaded, offline, its output in <d>/stdout.log."""
    d.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "WANDB_MODE": "offline"}
    env.update({k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")})
    cmd = [sys.executable, "-m", module, *args, f"hydra.run.dir={d}"]
    with open(d / "stdout.log", "w") as log:
        p = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{what} failed ({p.returncode}); see {d / 'stdout.log'}")


def run_one(
    root: Path,
    name: str,
    overrides: list[str],
    threads: int = 1,
    timeout: float | None = None,
    ckpt_every: int | None = None,
) -> dict:
    """Run (or read back) one study run. ckpt_every: also write last.ckpt every that many optimizer steps, so that a
    long run killed mid-epoch resumes from its last such step (the train loader's position is in the checkpoint);
    it is not part of the run's key, like everything that does not change what is learned."""
    d = run_dir(root, name, overrides)
    done = d / "metrics.json"
    if not done.exists():
        t0 = time.time()
        args = [*overrides, "logger=csv", "~callbacks.rich_progress_bar", "~callbacks.embedding_plot"]
        if ckpt_every:
            args.append(f"callbacks.last_checkpoint.every_n_train_steps={ckpt_every}")
        last = d / "checkpoints" / "last.ckpt"  # a run stopped (killed): it resumes from there
        before = float((d / "wall_s.partial").read_text()) if last.exists() and (d / "wall_s.partial").exists() else 0
        if last.exists():
            args.append(f"ckpt_path={last}")
            if (d / "stdout.log").exists():
                (d / "stdout.log").replace(d / f"stdout.before-{int(time.time())}.log")
        try:
            _run_module("lsc.train", args, d, threads, timeout, what=f"run {name}")
        finally:  # the wall time so far survives a stop (KeyboardInterrupt, timeout; not kill -9 of this process)
            (d / "wall_s.partial").write_text(f"{before + time.time() - t0:.1f}\n")
        (d / "wall_s.partial").replace(d / "wall_s.txt")
    metrics = json.loads(done.read_text())
    wall = run_wall(d, metrics)
    return {
        "name": name,
        "overrides": overrides,
        "dir": str(d),
        "metrics": metrics,
        "wall_s": wall,
        "epochs": epochs(d),
    }


def run_wall(d: Path, metrics: dict | None = None) -> float | None:
    """A finished run's wall seconds: its wall_s.txt (all its invocations), else the metrics' time_s."""
    return float((d / "wall_s.txt").read_text()) if (d / "wall_s.txt").exists() else (metrics or {}).get("time_s")


def wall_note(t0: float, results) -> str:
    """A results header's time: this invocation's seconds (cached runs are only read back) and the summed wall time
    of the runs it reports (each run's wall_s.txt; a run without one counts 0)."""
    total = sum(float(r.get("wall_s") or 0) for r in results if r)
    return f"{time.time() - t0:.0f} s this invocation, {total / 3600:.1f} h of runs"


def final_validation(r: dict, threads: int = 1) -> dict:
    """A run stopped early (or validating every k epochs) last validated before its final epoch: score its last
    checkpoint on the validation split (`python -m lsc.eval split=val`, cached in <run>/final_eval/) and put that in
    r["metrics"] (the earlier value kept as "val/acc_logged"). Returns r."""
    d, rows = Path(r["dir"]), r["epochs"]
    validated = [e["epoch"] for e in rows if "val/acc" in e]
    if not rows or (validated and validated[-1] == rows[-1]["epoch"]):
        return r
    out = d / "final_eval"
    done = out / "metrics.json"
    if not done.exists():
        args = [f"ckpt_path={d / 'checkpoints' / 'last.ckpt'}", "split=val"]
        _run_module("lsc.eval", args, out, threads, None, what=f"final validation of {d}")
    final = json.loads(done.read_text())
    r["metrics"] = {**r["metrics"], "val/acc_logged": r["metrics"].get("val/acc"), **final}
    r["final_eval_epoch"] = rows[-1]["epoch"]
    return r


def epochs(d: Path) -> list[dict]:
    """Per-epoch rows of the CSV log (values merged per epoch), with the logs kept from before a resume into the
    same directory (metrics.1.csv, metrics.2.csv, ..., then metrics.csv; a later file wins)."""
    logs = [f for f in (d / "csv").glob("metrics.*.csv") if f.name.split(".")[1].isdigit()]
    logs.sort(key=lambda f: int(f.name.split(".")[1]))
    by_epoch: dict[int, dict] = {}
    for f in [*logs, d / "csv" / "metrics.csv"]:
        if not f.exists():
            continue
        with open(f) as fh:
            for row in csv.DictReader(fh):
                if not row.get("epoch"):
                    continue
                e = by_epoch.setdefault(int(row["epoch"]), {"epoch": int(row["epoch"])})
                for k, v in row.items():
                    if v not in ("", None) and k not in ("epoch", "step"):
                        e[k] = float(v)
    return [by_epoch[k] for k in sorted(by_epoch)]


def run_many(
    root: Path, jobs: list[tuple[str, list[str]]], workers: int = 2, threads: int = 1, ckpt_every: int | None = None
) -> list[dict]:
    """jobs: (name, overrides). Runs `workers` at a time; returns results in job order. ckpt_every: see run_one."""
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    def go(job):
        r = run_one(root, job[0], job[1], threads, ckpt_every=ckpt_every)
        m = r["metrics"]
        acc = m.get("test/acc_topk", m.get("val/acc_topk", m.get("test/acc", m.get("val/acc"))))
        print(f"  [{time.time() - t0:6.0f}s] {job[0]}: acc={acc} wall={r['wall_s']}s", flush=True)
        return r

    with ThreadPoolExecutor(max_workers=workers) as ex:
        return list(ex.map(go, jobs))
