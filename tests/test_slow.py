"""Subprocess runs of `python -m lsc.train`: multirun sweeps, kill -9 + resume, resume determinism, DDP on CPU.

All slow-marked (`make test-fast` skips them). Every run writes under tmp_path (`paths.log_dir`, `hydra.run.dir`,
`hydra.sweep.dir`, cwd) with OMP_NUM_THREADS=1 (style.md trap 9) and WANDB_MODE=offline.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from helpers import lsc_train_cmd, run_ddp, run_lsc, subprocess_env
from omegaconf import OmegaConf

from lsc.centers import ClassCenters

pytestmark = pytest.mark.slow

QUIET = ["trainer=cpu", "~logger", "~callbacks.rich_progress_bar", "++trainer.enable_progress_bar=false"]
DIGITS_STEPS = 180  # ceil(1437 / 8): digits train split (80% of 1,797) at batch size 8


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _overrides(job: Path) -> dict[str, str]:
    items = OmegaConf.load(job / ".hydra" / "overrides.yaml")
    return dict(o.partition("=")[::2] for o in items)


# ---- multirun ------------------------------------------------------------------------------------------------


def test_multirun_2x2(tmp_path):
    sweep = tmp_path / "sweep"
    run_lsc(
        "-m",  # before the overrides (style.md trap 3)
        *QUIET,
        "data=synthetic",
        "model/backbone=encoder_small",
        "data.num_samples=32",
        "data.batch_size=8",
        "trainer.max_epochs=1",
        "centers.n_dim=8,16",
        "seed=0,1",
        f"hydra.sweep.dir={sweep}",
        f"paths.log_dir={tmp_path / 'logs'}",
        cwd=tmp_path,
    )
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    seen = set()
    for job in jobs:
        ovr = _overrides(job)
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["n_dim"] == int(ovr["centers.n_dim"]) and metrics["epochs"] == 1
        ckpt = _load(job / "checkpoints" / "last.ckpt")  # each job's outputs in its own dir
        assert ckpt["lsc_config"]["seed"] == int(ovr["seed"])
        assert ckpt["lsc_centers"]["system"]["n_dim"] == int(ovr["centers.n_dim"])
        seen.add((ovr["centers.n_dim"], ovr["seed"]))
    assert seen == set(itertools.product(["8", "16"], ["0", "1"]))


def test_sweep_ndim_nclasses_shrunk(tmp_path):
    # the sweep's own grid is 3 x 2 jobs of 30 epochs; command-line values replace its hydra.sweeper.params
    sweep = tmp_path / "sweep"
    run_lsc(
        "+sweep=ndim_nclasses",  # hydra.mode: MULTIRUN inside the file, so no -m
        *QUIET,
        "centers.n_dim=8",
        "data.limit=40,80",
        "data.val_size=16",
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={sweep}",
        f"paths.log_dir={tmp_path / 'logs'}",
        cwd=tmp_path,
    )
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 2
    for job in jobs:
        limit = int(_overrides(job)["data.limit"])
        ckpt = _load(job / "checkpoints" / "last.ckpt")
        assert ckpt["lsc_centers"]["n_classes"] == limit  # instance labels: one class per image
        assert ckpt["lsc_centers"]["system"] == {"name": "v21", "n_dim": 8}
        assert json.loads((job / "metrics.json").read_text())["n_dim"] == 8


# ---- kill -9 mid-epoch, then resume ------------------------------------------------------------------------


def test_kill_mid_epoch_then_resume(tmp_path):
    args = [
        *QUIET,
        "data=digits",
        "data.batch_size=8",
        "trainer.max_epochs=2",
        "callbacks.last_checkpoint.every_n_train_steps=5",
        f"paths.log_dir={tmp_path / 'logs'}",
    ]
    first, second = tmp_path / "first", tmp_path / "second"
    last = first / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(
        lsc_train_cmd(*args, f"hydra.run.dir={first}"),
        env=subprocess_env(),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed_at = None
    deadline = time.time() + 120
    try:
        while proc.poll() is None and time.time() < deadline:
            if last.exists():
                try:
                    step = _load(last)["global_step"]
                except Exception:  # being replaced right now: try again
                    step = None
                if step and step % DIGITS_STEPS and step < DIGITS_STEPS * 2 - 10:
                    os.kill(proc.pid, signal.SIGKILL)
                    killed_at = step
                    break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and killed_at is None:
            proc.kill()
        proc.wait(timeout=30)
    assert killed_at is not None, f"never saw a mid-epoch last.ckpt\n{proc.stderr.read()[-3000:]}"
    assert proc.returncode == -signal.SIGKILL
    assert not (first / "metrics.json").exists()  # it really died before finishing
    ckpt = _load(last)
    assert ckpt["global_step"] % DIGITS_STEPS != 0  # the file left behind is mid-epoch (and loadable)

    run_lsc(*args, f"ckpt_path={last}", f"hydra.run.dir={second}", cwd=tmp_path)
    metrics = json.loads((second / "metrics.json").read_text())
    assert metrics["epochs"] == 2
    assert metrics["val/acc_topk"] > 0.5
    final = _load(last)  # checkpoints continue in the folder of the checkpoint resumed from
    assert final["global_step"] >= ckpt["global_step"] and final["global_step"] % 5 == 0


# ---- resume at an epoch boundary == uninterrupted ------------------------------------------------------------


def test_resume_matches_uninterrupted(tmp_path):
    args = [*QUIET, "data=digits", "data.transforms=none", "model/backbone=encoder_small", "data.batch_size=64"]
    args += ["seed=3", f"paths.log_dir={tmp_path / 'logs'}"]
    a, b1, b2 = tmp_path / "a", tmp_path / "b1", tmp_path / "b2"
    run_lsc(*args, "trainer.max_epochs=4", f"hydra.run.dir={a}", cwd=tmp_path)
    run_lsc(*args, "trainer.max_epochs=2", f"hydra.run.dir={b1}", cwd=tmp_path)
    run_lsc(
        *args,
        "trainer.max_epochs=4",
        f"ckpt_path={b1 / 'checkpoints' / 'last.ckpt'}",
        f"hydra.run.dir={b2}",
        cwd=tmp_path,
    )
    # the resumed run's checkpoints continue in the folder it resumed from
    ca, cb = _load(a / "checkpoints" / "last.ckpt"), _load(b1 / "checkpoints" / "last.ckpt")
    assert (ca["epoch"], ca["global_step"]) == (cb["epoch"], cb["global_step"]) == (3, 4 * 23)
    assert ca["state_dict"].keys() == cb["state_dict"].keys()
    different = [k for k in ca["state_dict"] if not torch.equal(ca["state_dict"][k], cb["state_dict"][k])]
    assert not different, f"resumed run diverged in {different}"
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b2))
    assert ma["val/acc_topk"] == mb["val/acc_topk"] and ma["epochs"] == mb["epochs"] == 4


# ---- DDP on CPU (gloo) -------------------------------------------------------------------------------------------


def test_ddp_cpu_trains(tmp_path):
    run = tmp_path / "run"
    run_ddp(
        *QUIET,
        "trainer=ddp_cpu",
        "data=digits",
        "data.batch_size=32",
        "trainer.max_epochs=1",
        "++trainer.limit_train_batches=6",
        "++trainer.limit_val_batches=3",
        f"hydra.run.dir={run}",
        f"paths.log_dir={tmp_path / 'logs'}",
        cwd=tmp_path,
        timeout=400,
    )
    metrics = json.loads((run / "metrics.json").read_text())  # written by rank 0 only
    assert metrics["epochs"] == 1 and 0 <= metrics["val/acc_topk"] <= 1
    assert (run / "train_ddp_process_1.log").exists()  # a second rank really ran
    ckpt = _load(run / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 6  # limit_train_batches counts each rank's batches
    assert ckpt["lsc_config"]["trainer"]["devices"] == 2


RANK_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, os, sys
    import torch, torch.distributed as dist, torch.multiprocessing as mp
    from lsc.centers import ClassCenters

    CASES = [("v22", 1000, 3), ("a_nr", 500, 1), ("v21", 1_000_000, 7), ("v22p", 50_000, 0)]

    def worker(rank, world, port, out):
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        torch.set_num_threads(1)
        dist.init_process_group("gloo", rank=rank, world_size=world)
        torch.manual_seed(1000 + rank)  # the centers must not depend on the global RNG
        z = torch.randn(64, 8)          # differs per rank on purpose: used only for the negative control
        result = {}
        for system, n_classes, seed in CASES:
            cc = ClassCenters(system, n_classes, seed=seed)
            c = cc(torch.arange(100))
            h = hashlib.sha256(json.dumps(cc.spec, sort_keys=True).encode()).hexdigest()
            cs = [torch.empty_like(c) for _ in range(world)]
            dist.all_gather(cs, c)
            hs = [None] * world
            dist.all_gather_object(hs, h)
            assert all(torch.equal(cs[0], x) for x in cs), system
            assert len(set(hs)) == 1, (system, hs)
            result[system] = {"hash": h, "centers": c}
        zs = [torch.empty_like(z) for _ in range(world)]
        dist.all_gather(zs, z)
        assert not torch.equal(zs[0], zs[1])  # the gather really compares two processes
        if rank == 0:
            torch.save(result, out)
        dist.destroy_process_group()

    if __name__ == "__main__":
        mp.spawn(worker, args=(2, int(sys.argv[1]), sys.argv[2]), nprocs=2)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_ranks_agree_on_centers(tmp_path):
    script, out = tmp_path / "ranks.py", tmp_path / "ranks.pt"
    script.write_text(RANK_SCRIPT)
    p = subprocess.run(
        [sys.executable, str(script), str(_free_port()), str(out)],
        env=subprocess_env(),  # each spawned rank is a fresh interpreter with its own hash seed
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-4000:]
    result = torch.load(out, weights_only=True)
    # and the ranks agree with this (third) process
    for system, n_classes, seed in [("v22", 1000, 3), ("a_nr", 500, 1), ("v21", 1_000_000, 7), ("v22p", 50_000, 0)]:
        cc = ClassCenters(system, n_classes, seed=seed)
        assert torch.equal(result[system]["centers"], cc(torch.arange(100)))
        assert result[system]["hash"] == hashlib.sha256(json.dumps(cc.spec, sort_keys=True).encode()).hexdigest()


# ---- python -m lsc.eval ------------------------------------------------------------------------------------------


def test_eval_cli(tmp_path):
    train, ev, bad = tmp_path / "train", tmp_path / "eval", tmp_path / "bad"
    common = [f"paths.log_dir={tmp_path / 'logs'}"]
    run_lsc(*QUIET, "data=digits", "data.batch_size=64", "trainer.max_epochs=1", f"hydra.run.dir={train}", *common)
    ckpt = train / "checkpoints" / "last.ckpt"
    env, cmd = subprocess_env(), [sys.executable, "-m", "lsc.eval", f"ckpt_path={ckpt}"]
    p = subprocess.run([*cmd, f"hydra.run.dir={ev}", *common], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-4000:]
    want, got = (json.loads((d / "metrics.json").read_text()) for d in (train, ev))
    for k in ("acc_cossim", "acc_topk"):
        assert got[f"val/{k}"] == pytest.approx(want[f"val/{k}"], abs=1e-6)  # rebuilt from the stored config
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("lsc:")][-1]  # digits: no test split, val scored
    assert f"val/acc_topk={want['val/acc_topk']:.4f}" in line
    # a centers override on top of the stored config is refused
    p = subprocess.run(
        [*cmd, "centers.seed=1", f"hydra.run.dir={bad}", *common], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert p.returncode != 0 and "other class centers" in p.stderr
