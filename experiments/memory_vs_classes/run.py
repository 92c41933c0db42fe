"""arXiv 2510.04090 Tables 9 and 10: parameters, peak training-step memory and the largest batch under a memory
cap, LSC vs CE (the same backbone with an n_classes-wide last layer), at 1k .. 100M classes; and Partial FC
(128-dim embedding, learned class weights, sample_rate 1.0 and 0.1: the peer a user would pick) from 1M classes.

    python experiments/memory_vs_classes/run.py                # CPU: conv encoder (9.7M) at 32 px, 16 GiB cap
    python experiments/memory_vs_classes/run.py --device cuda  # GPU: ViT-S/16 at 224 px, 40 GiB cap (the A100's)
    python experiments/memory_vs_classes/run.py --smoke

Peak memory: peak RSS growth of a subprocess running AdamW training steps (CPU), or
torch.cuda.max_memory_allocated (CUDA). Largest batch: the cap minus the batch-independent part, divided by the
per-image part, both from a linear fit of the forward + backward peak at two batch sizes (the optimizer step's
peak, measured apart, does not grow with the batch; a point whose optimizer step alone exceeds the cap gets 0).
A point is "OOM" without running when its weights, gradients and AdamW moments alone (16 bytes a parameter)
exceed the cap.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lsc.bench.train_step import ADAM_BYTES_PER_PARAM, head_params, run_probe
from lsc.centers import n_min
from lsc.study.report import fmt_bytes, machine, md_table, pyplot, save_figure, write_readme, write_results

HERE = Path(__file__).parent
README = """
# Memory vs n_classes, the A_n paper's Tables 9 and 10

Parameters, peak training-step memory and the largest batch under a memory cap (16 GiB on CPU, 40 GiB on GPU: the
paper's A100) for LSC vs CE (the same backbone with an n_classes-wide last layer) at 1k .. 100M classes (arXiv
2510.04090 Tables 9 and 10), and Partial FC (128-dim embedding, learned class weights, sample rate 1.0 and 0.1)
from 1M classes. Peak memory is the peak RSS growth of a subprocess running AdamW steps (CPU) or
torch.cuda.max_memory_allocated (CUDA); a point whose weights, gradients and AdamW moments alone exceed the cap is
"OOM" without running.

```bash
make memory_vs_classes                                     # CPU: conv encoder (9.7M) at 32 px, 16 GiB cap
python experiments/memory_vs_classes/run.py --device cuda  # GPU: ViT-S/16 at 224 px, 40 GiB cap (the A100's)
python experiments/memory_vs_classes/run.py --smoke        # seconds (CI)
python experiments/memory_vs_classes/run.py --readme       # only this README, from the committed results
make gpu-checks                                            # every GPU figure at once, this one included
```

Reading: LSC's parameters, step memory and largest batch do not depend on n_classes (the last layer grows only with
n_dim ~ n_classes^{1/4}): ~7,300 images under 16 GiB on CPU at every class count, 704 under 40 GiB for ViT-S on the
H200. CE's grow linearly: its largest batch falls to 6,979 at 100k and 1,436 at 1M classes (CPU), 540 at 1M (GPU), and
it does not fit at 10M, the same shape as the paper's Table 10 (386 → 374 → 154 → —). Partial FC (128-d learned
weights + AdamW; largest batch 5,175 / 6,239 at 1M classes with sample rate 1.0 / 0.1) needs 525 MiB of class state at
1M classes and does not fit a 16 GiB budget at 10M (≥ 19 GiB: it is sharded over GPUs for that), where LSC's step still
takes 258 MiB. The largest batch comes from a linear fit of the forward+backward peak at two batches, with the optimizer
step's peak measured apart.

## GPU: ViT-S/16 at 224 px, 40 GiB cap

<!-- RESULT results/memory_vs_classes_cuda.md -->
<!-- /RESULT -->

![peak step memory and largest batch vs n_classes, GPU](results/memory_vs_classes_cuda.png)

## CPU: conv encoder at 32 px, 16 GiB cap

<!-- RESULT results/memory_vs_classes.md -->
<!-- /RESULT -->

![peak step memory and largest batch vs n_classes, CPU](results/memory_vs_classes.png)
"""

NAMES = {"lsc": "LSC", "ce": "CE", "pfc1.0": "Partial FC r1.0", "pfc0.1": "Partial FC r0.1"}
PAPER_T10 = {
    "LSC": (943, 386),
    1_000: (943, 386),
    10_000: (973, 386),
    100_000: (1237, 374),
    1_000_000: (3873, 154),
    10_000_000: (30281, None),
}  # ViT-B, A100 40 GB: model MB, max batch


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--classes", type=float, nargs="+", default=[1e3, 1e5, 1e6, 1e7, 1e8])
    p.add_argument("--cap-gb", type=float, default=None, help="memory cap; default 16 (CPU), 40 (CUDA)")
    p.add_argument("--batches", type=int, nargs=2, default=None, help="two batch sizes for the linear fit")
    p.add_argument("--pfc-from", type=float, default=1e6, help="Partial FC rows from this many classes")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--readme", action="store_true", help="only rewrite README.md from the committed results")
    a = p.parse_args(argv)
    if a.readme:
        return write_readme(HERE, README)
    cuda = a.device.startswith("cuda")
    backbone, img, feats = ("vit_s", 224, 384) if cuda else ("encoder", 32, 512)
    cap = (a.cap_gb or (40.0 if cuda else 16.0)) * 2**30
    b1, b2 = a.batches or ((32, 128) if cuda else (8, 32))
    if a.smoke:
        a.classes, b1, b2, backbone, a.pfc_from = [1e4], 2, 4, "encoder_small", 1e4  # every method, 8 probes
        feats = 128
    t0 = time.time()
    rows, raw = [], []
    for nc in map(int, a.classes):
        for method in ("lsc", "ce", "pfc1.0", "pfc0.1") if nc >= a.pfc_from else ("lsc", "ce"):
            n_dim = n_min("v22", nc)
            static = ADAM_BYTES_PER_PARAM * head_params(method, nc, feats, n_dim)
            if static > cap:
                r = {
                    "method": method,
                    "n_classes": nc,
                    "oom": True,
                    "params_head": head_params(method, nc, feats, n_dim),
                }
                raw.append(r)
                rows.append([NAMES[method], f"{nc:,}", "—", f"OOM (≥ {fmt_bytes(static)})", "—", "OOM", "—", "—"])
                continue
            lo = run_probe(method, nc, b1, a.device, backbone, img, steps=1)
            hi = run_probe(method, nc, b2, a.device, backbone, img, steps=1)
            if lo is None or hi is None:
                rows.append([NAMES[method], f"{nc:,}", "—", "OOM", "—", "OOM", "—", "—"])
                continue
            # forward + backward is linear in the batch; the optimizer step's peak does not depend on it
            fb = "peak_fwd_bwd_bytes" if hi.get("peak_fwd_bwd_bytes") is not None else "peak_bytes"
            per_img = max(1.0, (hi[fb] - lo[fb]) / (b2 - b1))
            fixed = lo[fb] - per_img * b1
            opt_peak = max(lo.get("peak_opt_bytes") or 0, hi.get("peak_opt_bytes") or 0)
            bmax = int((cap - fixed) // per_img) if cap > fixed and cap > opt_peak else 0
            r = {
                "method": method,
                "n_classes": nc,
                "n_dim": n_dim if method == "lsc" else None,
                "params": hi["params"],
                "peak_b1": lo["peak_bytes"],
                "peak_b2": hi["peak_bytes"],
                "b1": b1,
                "b2": b2,
                "fixed_bytes": fixed,
                "opt_step_peak_bytes": opt_peak,
                "per_image_bytes": per_img,
                "max_batch": bmax,
                "model_bytes": hi["params"] * 4,
            }
            raw.append(r)
            rows.append(
                [
                    NAMES[method],
                    f"{nc:,}",
                    f"{hi['params'] / 1e6:.2f}M",
                    fmt_bytes(hi["params"] * 4),
                    fmt_bytes(hi["peak_bytes"]),
                    f"{bmax:,}",
                    fmt_bytes(per_img),
                    n_dim if method == "lsc" else "—",
                ]
            )
            print("  ", rows[-1], flush=True)
    hdr = [
        "method",
        "n_classes",
        "params",
        "model size",
        f"peak memory, batch {b2}",
        f"max batch under {cap / 2**30:g} GiB",
        "memory per image",
        "n_dim (V^22 n_min)",
    ]
    paper = md_table(
        ["", "LSC (any)", "CE 1k", "CE 10k", "CE 100k", "CE 1M", "CE 10M"],
        [["model MB", 943, 943, 973, 1237, 3873, 30281], ["max batch", 386, 386, 386, 374, 154, "—"]],
    )
    text = (
        f"### Parameters and training-step memory vs n_classes, LSC vs CE ({machine(a.device)}; "
        f"{'ViT-S/16 224 px' if cuda else backbone + ' at 32 px'}; AdamW; {time.time() - t0:.0f} s)\n\n"
        + md_table(hdr, rows)
        + "\n\nPaper (arXiv 2510.04090 Table 10, ViT-B on a 40 GB A100):\n\n"
        + paper
    )
    print(text)
    name = "memory_vs_classes" + ("_smoke" if a.smoke else "") + ("_cuda" if cuda else "")
    out = Path(a.out)
    write_results(out, name, text, {"machine": machine(a.device), "cap_bytes": cap, "rows": raw})
    plot(raw, out / f"{name}.png")
    if not a.smoke and out == HERE / "results":
        write_readme(HERE, README)


def plot(raw, path):
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    for m, style in (("lsc", "o-"), ("ce", "s--"), ("pfc1.0", "^:"), ("pfc0.1", "v:")):
        pts = [r for r in raw if r["method"] == m and not r.get("oom")]
        ax1.plot([r["n_classes"] for r in pts], [r["peak_b2"] / 2**20 for r in pts], style, label=NAMES[m])
        ax2.plot([r["n_classes"] for r in pts], [max(r["max_batch"], 1) for r in pts], style, label=NAMES[m])
    ax1.set(xscale="log", yscale="log", xlabel="n_classes", ylabel="peak MiB (one step)")
    ax2.set(xscale="log", yscale="log", xlabel="n_classes", ylabel="largest batch under cap")
    for ax in (ax1, ax2):
        ax.legend()
        ax.grid(alpha=0.3)
    save_figure(fig, path)


if __name__ == "__main__":
    main()
