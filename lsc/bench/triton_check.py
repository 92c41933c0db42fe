"""The Triton kernels against the torch paths on a GPU: topk fast path and the full-system softmax loss.

    python -m lsc.bench.triton_check            # needs CUDA; on a CPU-only machine it says so and exits 0

topk: `_kernels.fast_labels` (nearest vector, index, pi^-1, flags) with backend torch vs triton, v22 at n_min for
1M classes, queries = unit centers of random labels + Gaussian noise, batches 256 and 262,144; `agree` checks
that both return the same labels and slow flags. loss: forward + backward at batch 256, n_dim 143 (v22, 1M
classes): SoftmaxLoss (log Z by the Triton kernel, and by the torch tree with LSC_NO_TRITON=1) vs CosineLoss.
Median of --reps timed calls after warm-up (the first calls compile the kernels). Writes
experiments/bench_predict/results/triton_check_cuda.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from lsc.centers import ClassCenters, n_min
from lsc.centers import _kernels as kernels
from lsc.losses import CosineLoss, SoftmaxLoss
from lsc.study.report import machine, md_table

OUT = Path(__file__).resolve().parents[2] / "experiments" / "bench_predict" / "results" / "triton_check_cuda.json"


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, reps: int, device="cuda") -> float:
    """Median seconds per call (synchronized), after two warm-up calls."""
    for _ in range(2):
        fn()
    sync(device)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def queries(cc: ClassCenters, rows: int, noise: float, g: torch.Generator, device="cuda") -> torch.Tensor:
    y = torch.randint(0, cc.n_classes, (rows,), generator=g)
    z = cc(y)
    return (z + noise * torch.randn(z.shape, generator=g) / cc.n_dim**0.5).to(device)


def bench_topk(reps: int, classes: int, batches: list[int], device="cuda") -> list[dict]:
    cc = ClassCenters("v22", classes, n_dim=n_min("v22", classes))
    g = torch.Generator().manual_seed(0)
    rows = []
    for b in batches:
        z = queries(cc, b, 0.5, g, device)
        out = {be: kernels.fast_labels(cc, z, backend=be) for be in ("torch", "triton")}
        agree = all(torch.equal(x, y) for x, y in zip(out["torch"], out["triton"], strict=True))
        t = {be: timed(lambda be=be, z=z: kernels.fast_labels(cc, z, backend=be), reps, device) for be in out}
        rows.append({"what": "topk fast_labels", "system": cc.system.display, "batch": b, "torch_s": t["torch"],
                     "triton_s": t["triton"], "agree": agree, "slow_rows": int(out["triton"][1].sum())})  # fmt: skip
    return rows


def bench_loss(reps: int, classes: int, batch: int, n_dim: int, device="cuda") -> list[dict]:
    cc = ClassCenters("v22", classes, n_dim=n_dim)
    g = torch.Generator().manual_seed(1)
    z0 = torch.randn(batch, n_dim, generator=g).to(device)
    y = torch.randint(0, classes, (batch,), generator=g).to(device)

    def step(loss):
        z = z0.clone().requires_grad_(True)
        loss(z, y, cc).backward()
        return z.grad

    def softmax_torch():
        os.environ["LSC_NO_TRITON"] = "1"  # read per call by _kernels.use_triton
        try:
            return step(SoftmaxLoss(scale=16.0))
        finally:
            del os.environ["LSC_NO_TRITON"]

    fns = {"softmax (triton)": lambda: step(SoftmaxLoss(scale=16.0)), "softmax (torch tree)": softmax_torch}
    fns["cosine"] = lambda: step(CosineLoss())
    d = (fns["softmax (triton)"]() - fns["softmax (torch tree)"]()).abs().max().item()
    return [
        {"what": f"loss fwd+bwd: {k}", "system": cc.system.display, "batch": batch, "seconds": timed(f, reps, device),
         "max_grad_diff_vs_tree": d if k.startswith("softmax") else None}
        for k, f in fns.items()
    ]  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--classes", type=int, default=1_000_000)
    p.add_argument("--out", default=str(OUT))
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("triton_check: no CUDA device here; nothing to measure (run it on a GPU machine)")
        return 0
    if not kernels.use_triton("cuda"):
        print("triton_check: triton is not importable (or LSC_NO_TRITON=1); nothing to compare")
        return 0
    topk = bench_topk(a.reps, a.classes, [256, 262_144])
    loss = bench_loss(a.reps, a.classes, 256, 143)
    ms = lambda s: f"{1e3 * s:.3f}"  # noqa: E731
    print(machine("cuda"))
    print(md_table(["topk", "batch", "torch ms", "triton ms", "speed-up", "agree", "slow rows"],
                   [[r["system"], f"{r['batch']:,}", ms(r["torch_s"]), ms(r["triton_s"]),
                     f"{r['torch_s'] / r['triton_s']:.1f}x", r["agree"], r["slow_rows"]] for r in topk]))  # fmt: skip
    print()
    print(md_table(["loss (batch 256, n_dim 143)", "ms", "max |grad diff| vs tree"],
                   [[r["what"], ms(r["seconds"]), r["max_grad_diff_vs_tree"]] for r in loss]))  # fmt: skip
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine("cuda"), "topk": topk, "loss": loss}, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
