"""Label-prediction benchmark: cossim vs topk vs a plain copy, n_classes 1e3 .. 1e8 (arXiv 2604.00779, Tables 2-3).

    python -m lsc.bench.predict                         # CPU, v22 at n_min, 1M queries
    python -m lsc.bench.predict --device cuda --queries 4194304
    python -m lsc.bench.predict --classes 1e3 1e6 --system v21 --json out.json

Queries are unit class centers plus Gaussian noise (known labels). Times are for all queries, in batches:
  tc      cossim against the materialized n_classes x n_dim center matrix (the paper's baseline); '—' where the
          matrix exceeds --mem-budget-gb. When a full run would exceed --time-budget-s, cossim is timed on a
          prefix of the queries and scaled (the `cossim queries` column says how many).
  tn      topk (Algorithm 1 + exact fallback), including the mapping to labels.
  t_copy  z.clone() of all query embeddings at once: a plain (allocating) copy, the DRAM-bandwidth floor of
          producing them; t_memcpy: the same copy into a preallocated, already-touched buffer (no page faults).
Peak memory is the peak RSS growth (CPU; /proc/self/clear_refs) or torch.cuda.max_memory_allocated (CUDA)
while each predictor runs; `map bytes` is all the state the class<->center mapping holds.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from lsc.bench.report import machine as report_machine
from lsc.centers import ClassCenters, n_min


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory growth over a block: CUDA allocator peak, or Linux peak RSS (reset via clear_refs)."""

    def __init__(self, device):
        self.device, self.peak = device, float("nan")

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        elif Path("/proc/self/clear_refs").exists():
            Path("/proc/self/clear_refs").write_text("5")
            self.base = _rss("VmRSS")
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
        elif Path("/proc/self/clear_refs").exists():
            self.peak = max(0, _rss("VmHWM") - self.base)  # pages freed earlier can make the raw delta negative


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def state_bytes(cc: ClassCenters) -> int:
    """Bytes of every tensor/array the mapping and the fast predictor keep (binomial tables, keys, plan)."""
    total = 0
    seen = set()

    def walk(obj, depth=0):
        nonlocal total
        if id(obj) in seen or depth > 8:
            return
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            total += obj.numel() * obj.element_size()
        elif isinstance(obj, np.ndarray):
            total += obj.nbytes
        elif isinstance(obj, dict):
            for v in obj.values():
                walk(v, depth + 1)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v, depth + 1)
        elif hasattr(obj, "__dict__"):
            for v in vars(obj).values():
                walk(v, depth + 1)

    walk(cc)
    return total


def timed(fn, device, repeat=1):
    best = math.inf
    out = None
    for _ in range(repeat):
        _sync(device)
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench_one(n_classes, args, device) -> dict:
    n_dim = n_min(args.system, n_classes) if args.n_dim is None else args.n_dim
    cc = ClassCenters(args.system, n_classes, n_dim=n_dim, seed=0)
    dtype = getattr(torch, args.dtype)
    g = torch.Generator(device="cpu").manual_seed(0)
    labels = torch.randint(0, n_classes, (args.queries,), generator=g)
    z = (cc(labels) + args.noise * torch.randn(args.queries, n_dim, generator=g)).to(device, dtype)
    labels = labels.to(device)
    bs = args.batch_size
    batches = [z[a : a + bs] for a in range(0, args.queries, bs)]

    def run(method, qs=None, **kw):
        outs = [cc.predict(b, method, **kw) for b in (qs if qs is not None else batches)]
        return torch.cat(outs)

    # warm-up (numba compile, CUDA context, caches)
    cc.predict(batches[0][:64], "topk")
    t_copy, _ = timed(lambda: z.clone(), device, args.repeat)
    buf = torch.empty_like(z)
    t_memcpy, _ = timed(lambda: buf.copy_(z), device, args.repeat)
    buf = None
    with PeakMemory(device) as mem_n:
        t_n, pred_n = timed(lambda: run("topk"), device, args.repeat)
    row = {
        "system": cc.system.display,
        "n_classes": n_classes,
        "n_dim": n_dim,
        "queries": args.queries,
        "batch_size": bs,
        "t_copy": t_copy,
        "t_memcpy": t_memcpy,
        "tn": t_n,
        "queries_per_s_topk": args.queries / t_n,
        "acc_topk": (pred_n == labels).float().mean().item(),
        "peak_mem_topk": mem_n.peak,
        "map_bytes": state_bytes(cc),
        "tc": None,
        "acc_cossim": None,
        "agreement": None,
        "peak_mem_cossim": None,
        "cossim_queries": 0,
    }
    bank_bytes = n_classes * n_dim * 4
    if bank_bytes > args.mem_budget_gb * 2**30:
        row["cossim_skipped"] = f"center matrix {bank_bytes / 2**30:.1f} GiB > budget {args.mem_budget_gb} GiB"
        return row
    t0 = time.perf_counter()
    bank = torch.empty(n_classes, n_dim, device=device)
    for a in range(0, n_classes, 1 << 20):
        bank[a : a + (1 << 20)] = cc.bank(torch.arange(a, min(a + (1 << 20), n_classes), device=device))
    row["bank_build_s"] = time.perf_counter() - t0
    # probe the rate, then time as many queries as the time budget allows
    probe = batches[0][: min(bs, 256)]
    tp, _ = timed(lambda: cc.predict(probe, "cossim", bank=bank), device)
    per_q = tp / probe.shape[0]
    n_q = min(args.queries, max(probe.shape[0], int(args.time_budget_s / max(per_q, 1e-12))))
    n_q = (n_q // probe.shape[0]) * probe.shape[0] if n_q < args.queries else n_q
    qs = [z[a : min(a + bs, n_q)] for a in range(0, n_q, bs)]
    with PeakMemory(device) as mem_c:
        t_c, pred_c = timed(lambda: run("cossim", qs, bank=bank), device)
    row.update(
        tc=t_c * args.queries / n_q,
        cossim_queries=n_q,
        acc_cossim=(pred_c == labels[:n_q]).float().mean().item(),
        agreement=(pred_c == pred_n[:n_q]).float().mean().item(),
        peak_mem_cossim=mem_c.peak + bank_bytes,  # the center matrix is part of cossim's memory
    )
    return row


def _fmt_t(x):
    return "—" if x is None else (f"{x * 1e3:.1f} ms" if x < 10 else f"{x:.1f} s")


def _fmt_b(x):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(x) < 1024 or unit == "GiB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024


def markdown(rows, header) -> str:
    cols = [
        "n_classes",
        "n_dim",
        "tc",
        "tn",
        "Ks = tc/tn",
        "tn/t_copy",
        "tn/t_memcpy",
        "topk q/s",
        "acc cossim",
        "acc topk",
        "agreement",
        "cossim queries",
        "peak mem cossim",
        "peak mem topk",
        "map bytes",
    ]
    out = [header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        ks = "—" if r["tc"] is None else f"{r['tc'] / r['tn']:.1f}"
        pct = lambda v: "—" if v is None else f"{100 * v:.2f}%"  # noqa: E731
        out.append(
            "| "
            + " | ".join(
                [
                    f"{r['n_classes']:,}",
                    str(r["n_dim"]),
                    _fmt_t(r["tc"]),
                    _fmt_t(r["tn"]),
                    ks,
                    f"{r['tn'] / r['t_copy']:.2f}",
                    f"{r['tn'] / r['t_memcpy']:.1f}",
                    f"{r['queries_per_s_topk'] / 1e6:.2f}M",
                    pct(r["acc_cossim"]),
                    pct(r["acc_topk"]),
                    pct(r["agreement"]),
                    f"{r['cossim_queries']:,}",
                    _fmt_b(r["peak_mem_cossim"]),
                    _fmt_b(r["peak_mem_topk"]),
                    _fmt_b(r["map_bytes"]),
                ]
            )
            + " |"
        )
    return "\n".join(out)


def machine() -> str:
    return f"{report_machine('cpu')}, {torch.get_num_threads()} threads"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", type=float, nargs="+", default=[1e3, 1e5, 1e6, 1e7, 1e8])
    p.add_argument("--system", default="v22")
    p.add_argument("--n-dim", type=int, default=None, help="default: n_min of the system for each n_classes")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--queries", type=int, default=1 << 20)
    p.add_argument("--batch-size", type=int, default=1 << 16)
    p.add_argument("--noise", type=float, default=0.1, help="per-coordinate Gaussian noise added to the centers")
    p.add_argument("--mem-budget-gb", type=float, default=6.0, help="largest center matrix cossim may use")
    p.add_argument("--time-budget-s", type=float, default=20.0, help="cossim time per row before subsampling")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", default=None, help="write the rows here (default: bench_predict_<device>.json)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    rows = []
    for nc in args.classes:
        r = bench_one(int(nc), args, device)
        rows.append(r)
        print(f"  done n_classes={int(nc):,}: tn={r['tn']:.3f}s tc={r['tc']}", flush=True)
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = machine()
    header = (
        f"### Label prediction, {args.system} at n_min, {args.queries:,} queries "
        f"(batch {args.batch_size:,}, {args.dtype}, noise {args.noise}), {where}"
    )
    md = markdown(rows, header)
    print(md)
    out = Path(args.json or f"bench_predict_{device.type}.json")
    out.write_text(json.dumps({"machine": where, "args": vars(args), "rows": rows}, indent=1))
    out.with_suffix(".md").write_text(md + "\n")
    print(f"\nwrote {out} and {out.with_suffix('.md').name}")
    return rows


if __name__ == "__main__":
    main()
