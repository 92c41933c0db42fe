"""Training-step throughput (images/s), LSC vs CE, at 1k .. 100M classes: same backbone and batch, side by side.

    python experiments/train_speed_vs_classes/run.py               # CPU: conv encoder at 32 px, batch 32
    python experiments/train_speed_vs_classes/run.py --device cuda # GPU: ViT-S/16 at 224 px, batch 128, bf16
    python experiments/train_speed_vs_classes/run.py --smoke

Each point is one AdamW step timed after a warm-up step (best of --steps), in a fresh subprocess on CPU.
CE points whose weights + gradients + AdamW moments (16 bytes a parameter) exceed the memory cap are "OOM".
`--data prepared` also times the fast input path once (data=streaming over chunks from `python -m lsc.prepare`:
raw 32 px on the CPU, JPEG decoded on the GPU with cuda; 2 loader workers) and adds its images/s and the LSC rate it
allows, min(LSC step, loading): the steps themselves run on random tensors.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lsc.bench.train_step import ADAM_BYTES_PER_PARAM, head_params, run_probe
from lsc.centers import n_min
from lsc.study.report import machine, md_table, pyplot, save_figure, write_readme, write_results

HERE = Path(__file__).parent
README = """
# Training throughput vs n_classes

Training-step throughput (images/s), LSC vs CE on the same backbone and batch, at 1k .. 100M classes: one AdamW step
timed after a warm-up step (best of `--steps`), in a fresh subprocess on CPU. CE points whose weights + gradients +
AdamW moments (16 bytes a parameter) exceed the memory cap are "OOM".

```bash
make train_speed_vs_classes                                       # CPU: conv encoder at 32 px, batch 32
python experiments/train_speed_vs_classes/run.py --device cuda    # GPU: ViT-S/16 at 224 px, batch 128, bf16
python experiments/train_speed_vs_classes/run.py --data prepared  # adds the fast input path's images/s
python experiments/train_speed_vs_classes/run.py --smoke          # seconds (CI)
python experiments/train_speed_vs_classes/run.py --readme         # only this README, from the committed results
make gpu-checks                                                   # every GPU figure at once, this one included
```

Reading: LSC's step time is flat in n_classes; CE falls behind from 100k classes (CPU) / 1M (GPU) and cannot
train at 10M.

## GPU: ViT-S/16 at 224 px, bf16, batch 128

<!-- RESULT results/train_speed_vs_classes_cuda.md -->
<!-- /RESULT -->

![training images/s vs n_classes, GPU](results/train_speed_vs_classes_cuda.png)

## CPU: conv encoder at 32 px, fp32, batch 32

<!-- RESULT results/train_speed_vs_classes.md -->
<!-- /RESULT -->

![training images/s vs n_classes, CPU](results/train_speed_vs_classes.png)
"""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--classes", type=float, nargs="+", default=[1e3, 1e5, 1e6, 1e7, 1e8])
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--cap-gb", type=float, default=None)
    p.add_argument("--data", choices=["synthetic", "prepared"], default="synthetic", help="see above")
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone and the loss (model.compile)")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--readme", action="store_true", help="only rewrite README.md from the committed results")
    a = p.parse_args(argv)
    if a.readme:
        return write_readme(HERE, README)
    cuda = a.device.startswith("cuda")
    backbone, img, feats = ("vit_s", 224, 384) if cuda else ("encoder", 32, 512)
    batch = a.batch or (128 if cuda else 32)
    cap = (a.cap_gb or (40.0 if cuda else 16.0)) * 2**30
    if a.smoke:
        a.classes, batch, backbone, feats, a.steps = [1e3, 1e5], 4, "encoder_small", 128, 1
    t0 = time.time()
    load = prepared_rate(a, img, batch) if a.data == "prepared" else None
    rows, raw = [], []
    for nc in map(int, a.classes):
        res = {}
        for method in ("lsc", "ce"):
            static = ADAM_BYTES_PER_PARAM * head_params(method, nc, feats, n_min("v22", nc))
            res[method] = (
                None
                if static > cap
                else run_probe(
                    method,
                    nc,
                    batch,
                    a.device,
                    backbone,
                    img,
                    a.steps,
                    dtype="bf16" if cuda else None,
                    compile=a.compile,
                )  # fmt: skip
            )
            raw.append({"method": method, "n_classes": nc, "result": res[method]})
        lsc, ce = res["lsc"], res["ce"]
        ratio = "—" if ce is None else f"{lsc['images_per_s'] / ce['images_per_s']:.2f}"
        rows.append(
            [
                f"{nc:,}",
                n_min("v22", nc),
                f"{lsc['images_per_s']:.1f}",
                "OOM" if ce is None else f"{ce['images_per_s']:.1f}",
                ratio,
            ]
            + ([f"{load:.0f}", f"{min(lsc['images_per_s'], load):.1f}"] if load else [])
        )
        print("  ", rows[-1], flush=True)
    text = (
        f"### Training throughput vs n_classes, LSC vs CE ({machine(a.device)}; "
        f"{'ViT-S/16 224 px, bf16' if cuda else backbone + ' at 32 px, fp32'}; batch {batch}; AdamW; "
        f"{'torch.compile (backbone and loss); ' if a.compile else ''}"
        f"{time.time() - t0:.0f} s)\n\n"
        + md_table(
            ["n_classes", "n_dim (LSC)", "LSC images/s", "CE images/s", "LSC / CE"]
            + (["loading images/s (prepared)", "LSC with loading"] if load else []),
            rows,
        )
    )
    print(text)
    name = "train_speed_vs_classes" + ("_prepared" if load else "") + ("_compiled" if a.compile else "")
    name += "_smoke" if a.smoke else ""
    name += "_cuda" if cuda else ""
    out = Path(a.out)
    raw_out = {"machine": machine(a.device), "batch": batch, "rows": raw, **({"loading": load} if load else {})}
    write_results(out, name, text, raw_out)
    plot(raw, out / f"{name}.png")
    if not a.smoke and out == HERE / "results":
        write_readme(HERE, README)


# ---- --data prepared: the fast input path's images/s at this batch and image size -----------------------------


def prepared_rate(a, img, batch) -> float:
    from lsc.bench.data import fast_path, measure

    n = 256 if a.smoke else 2048
    dm = fast_path(a.device, n, img, min(batch, n // 2), workers=2)
    return measure(dm, a.device)["images_per_s"]


def plot(raw, path):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for m, style in (("lsc", "o-"), ("ce", "s--")):
        pts = [r for r in raw if r["method"] == m and r["result"]]
        ax.plot([r["n_classes"] for r in pts], [r["result"]["images_per_s"] for r in pts], style, label=m.upper())
    ax.set(xscale="log", yscale="log", xlabel="n_classes", ylabel="training images/s")
    ax.legend()
    ax.grid(alpha=0.3)
    save_figure(fig, path)


if __name__ == "__main__":
    main()
