"""Loss cost at 1k .. 100M classes: the full-system softmax vs the cosine loss vs a dense cross-entropy.

    python -m lsc.bench.loss                 # CPU, batch 256, v22 at n_min, one thread (what a training worker has)
    python -m lsc.bench.loss --device cuda   # GPU rows
    python -m lsc.bench.loss --smoke

Forward + backward of each loss on the same embeddings [256, n_dim] and labels, interleaved round-robin and
repeated (the minimum over repetitions is reported: this machine's timings are noisy; the ratios come from one
run, side by side). dense CE = logits s * cos against every labeled center materialized as a matrix (where that
fits the memory budget), i.e. what a softmax costs without the closed form. `encoder step` = one AdamW training
step of the small encoder (LSC, cosine loss) at the same batch on 32 px images: the budget the loss lives in.
Peak memory: the loss's own allocations (CUDA: max_memory_allocated; CPU: not measured per call, the softmax's
work arrays are 8 (n_dim + 1)(S + G + 1) bytes per row, independent of n_classes). Markdown + JSON under
experiments/bench_loss/results/.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from lsc.centers import ClassCenters, n_min
from lsc.losses import CosineLoss, SoftmaxLoss
from lsc.models import encoder_backbone
from lsc.study.report import fmt_bytes, machine, md_table, write_readme, write_results

HERE = Path(__file__).resolve().parents[2] / "experiments" / "bench_loss"
OUT = HERE / "results"
README = """
# Full-system softmax: exact cross-entropy over every vector, no class parameters

The cost of the loss at 1k-100M classes (batch 256, v22 at n_min, one thread, what a training worker has): the
forward and backward of the full-system softmax (`loss=softmax`) against the cosine loss and a dense cross-entropy
over a materialized center matrix (where it fits), beside one training step of the small encoder at the same batch,
and the memory the dense cross-entropy would need.

```bash
python -m lsc.bench.loss                 # CPU, batch 256, v22 at n_min, one thread (`make bench-loss`)
python -m lsc.bench.loss --device cuda   # GPU rows
python -m lsc.bench.loss --readme        # only this README, from the committed results
```

The cosine loss only pulls an embedding to its own center. `loss=softmax` is the cross-entropy of the softmax
over EVERY vector of the system (1M-100M of them, unlabeled ones included: they act as negatives), logits
s cos(z, v), with a CosFace margin on the target (`loss.margin`), a learnable scale (`loss.learn_scale=true`) and
an optional cosine term (`loss.cos_weight`). For a permutation orbit with values w_g repeated c_g times the partition
function is a polynomial coefficient, Z = [x_1^{c_1}..x_G^{c_G}] prod_i (1 + sum_g x_g e^{w_g u_i}) with
u = s z/|z|/|v|, so log Z costs O(n_dim x prod_g (c_g + 1)) per row (9 states for V^22), whatever n_classes is:

```python
from lsc.centers import ClassCenters
cc = ClassCenters("v22", 100_000_000)          # n_dim 143
lp = cc.log_prob(z, labels, scale=16.0)       # log p(y | z) under the softmax over all 1.07e8 vectors, exact
lz = cc.log_partition(z, 16.0)                # differentiable, batched, on z's device
```

Unions of orbits (a_n, a_n_interp, v{m}{k}p) take the logsumexp of their orbits, a_np a prefix logsumexp, a table
a plain one. On CPU the forward and backward run as one fused float64 numba kernel (normalization, the DP and its
adjoint, rows vectorized); elsewhere a log-space tree of batched truncated polynomial products (log2 n_dim levels;
the reference); on CUDA a Triton kernel. Tested against a brute-force logsumexp over the materialized system for
13 families (float64, random, tied and one-hot queries, scales up to 200), gradcheck, and stable at scale 64 and
n_dim 600. The predictor does not change: the argmax of this softmax is the argmax of cosine, i.e. `topk`. Scale
16 with no margin was the best of scale 8/16/32 x margin 0/0.2 on 5,000 instance classes (`many_classes --part
sweep`, its table in [many_classes](../many_classes/README.md)).

A batch's centers come from one fused kernel (`lsc::center_lookup`: the Feistel order or the data-aware table,
unranking and normalization per label; numba on CPU, Triton on CUDA) instead of ~180 tensor ops. Side by side on
this machine against the op-by-op path (the commit before it, same command): the cosine loss went from 0.59 / 0.68 /
0.82 ms to 0.22 / 0.33 / 0.47 ms at 1k / 1M / 100M classes (2.7x / 2.1x / 1.7x) and the softmax from 0.88 / 1.32 /
2.31 to 0.65 / 1.16 / 2.21 ms. The GPU rows (`--device cuda`) were not measured since: no GPU was lent.

<!-- RESULT results/bench_loss.md -->
<!-- /RESULT -->
"""


class DenseCE(torch.nn.Module):
    """Cross-entropy of s * cos against a materialized [n_classes, n_dim] center matrix."""

    def __init__(self, centers: ClassCenters, scale: float, device):
        super().__init__()
        self.bank = centers.bank(device=device)
        self.scale = scale

    def forward(self, z, y, centers):
        return F.cross_entropy(self.scale * F.normalize(z.float(), dim=1) @ self.bank.T, y)


def timeit(fns: dict, reps: int, sync) -> dict[str, float]:
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            sync()
            t0 = time.perf_counter()
            f()
            sync()
            times[k].append(time.perf_counter() - t0)
    return {k: min(v[2:] if len(v) > 3 else v) for k, v in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--classes", type=float, nargs="+", default=[1e3, 1e5, 1e6, 1e7, 1e8])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--reps", type=int, default=60)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--scale", type=float, default=16.0)
    p.add_argument("--dense-gb", type=float, default=4.0, help="dense CE only where its matrices fit in this")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--readme", action="store_true", help="only rewrite README.md from the committed results")
    a = p.parse_args(argv)
    if a.readme:
        return write_readme(HERE, README)
    if a.smoke:
        a.classes, a.reps = [1e3, 1e5], 5
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.manual_seed(0)
    # the budget: one training step of the small encoder at this batch
    net = encoder_backbone(16, size="small").to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    cc16, x = ClassCenters("v22", 1000, n_dim=16), torch.randn(a.batch, 3, 32, 32, device=dev)
    y16 = torch.randint(0, 1000, (a.batch,), device=dev)

    def step():
        loss = CosineLoss()(net(x), y16, cc16)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step_s = timeit({"step": step}, max(5, a.reps // 6), sync)["step"]
    rows, raw, t0 = [], [], time.time()
    for nc in map(int, a.classes):
        cc = ClassCenters("v22", nc, n_dim=n_min("v22", nc))
        z = torch.randn(a.batch, cc.n_dim, device=dev, requires_grad=True)
        y = torch.randint(0, nc, (a.batch,), device=dev)
        losses = {"cosine": CosineLoss(), "softmax": SoftmaxLoss(a.scale, 0.2)}
        dense_bytes = nc * cc.n_dim * 4 + 3 * a.batch * nc * 4  # bank + logits, their softmax and gradient
        if dense_bytes <= a.dense_gb * 2**30:
            losses["dense CE"] = DenseCE(cc, a.scale, dev)

        def run(f, z=z, y=y, cc=cc):
            return lambda: f(z, y, cc).backward()

        fns = {k: run(f) for k, f in losses.items()}
        for f in fns.values():  # warm-up: numba compiles, caches fill
            f()
        dense = fns.pop("dense CE", None)
        t = timeit(fns, a.reps, sync)
        if dense is not None:  # seconds per call at 1M classes: a few repetitions, not interleaved
            t["dense CE"] = timeit({"dense CE": dense}, 3, sync)["dense CE"]
        peak = None
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fns["softmax"]()
            sync()
            peak = torch.cuda.max_memory_allocated() - base
        r = {
            "n_classes": nc,
            "n_dim": cc.n_dim,
            "cosine_ms": 1e3 * t["cosine"],
            "softmax_ms": 1e3 * t["softmax"],
            "dense_ce_ms": 1e3 * t["dense CE"] if "dense CE" in t else None,
            "softmax_over_cosine": t["softmax"] / t["cosine"],
            "softmax_share_of_step": t["softmax"] / step_s,
            "softmax_peak_bytes": peak,
            "dense_ce_bytes": dense_bytes,
        }
        raw.append(r)
        rows.append(
            [f"{nc:,}", cc.n_dim, f"{r['cosine_ms']:.3f}", f"{r['softmax_ms']:.3f}",
             "—" if r["dense_ce_ms"] is None else f"{r['dense_ce_ms']:.1f}", f"{r['softmax_over_cosine']:.2f}",
             f"{100 * r['softmax_share_of_step']:.1f}%", fmt_bytes(peak) if peak is not None else "—",
             fmt_bytes(dense_bytes)]
        )  # fmt: skip
        print("  ", rows[-1], flush=True)
    head = f"batch {a.batch}, v22 at n_min, scale {a.scale:g}, margin 0.2, {a.threads} thread(s)"
    text = (
        f"### Loss forward + backward, ms ({machine(a.device)}; {head}; encoder step {1e3 * step_s:.1f} ms; "
        f"{time.time() - t0:.0f} s)\n\n"
        + md_table(
            [
                "n_classes",
                "n_dim",
                "cosine",
                "softmax (full system)",
                "dense CE",
                "softmax / cosine",
                "softmax / encoder step",
                "softmax peak mem",
                "dense CE memory",
            ],
            rows,
        )  # fmt: skip
        + "\n\ndense CE '—': its [n_classes, n_dim] matrix and [batch, n_classes] logits do not fit the budget."
    )
    print(text)
    name = "bench_loss" + ("_smoke" if a.smoke else "") + ("_cuda" if cuda else "")
    meta = {"machine": machine(a.device), "batch": a.batch, "encoder_step_s": step_s, "rows": raw}
    write_results(Path(a.out), name, text, meta)
    if not a.smoke and Path(a.out).resolve() == OUT:
        write_readme(HERE, README)


if __name__ == "__main__":
    main()
