"""LSC vs CE on Fashion-MNIST (10 classes): the same encoder, epochs and schedule; each LSC system, 3 seeds.

    python experiments/lsc_vs_ce/run.py            # CPU (about 25 min: first 10k training images, 4 epochs)
    python experiments/lsc_vs_ce/run.py --smoke    # seconds (CI)
    python experiments/lsc_vs_ce/run.py --limit 0 --epochs 10   # the full 60k training set

Test accuracy (10k test images) under topk and cossim (they agree), mean ± sd over seeds, and wall time per run.
V^21 at n_dim 4 (its n_min for 10 classes), 8, 16, 32 decides what `n_dim: auto` means for few classes.
Reference line: the public Fashion-MNIST benchmark (2-conv nets 91.6-93.4%, ResNet18 94.9%, full training set).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from lsc.study.report import machine, md_table, pyplot, save_figure, write_readme, write_results
from lsc.study.runs import run_many

HERE = Path(__file__).parent
README = """
# LSC systems vs CE on Fashion-MNIST

Fashion-MNIST (10 classes) test accuracy of each LSC system against CE with the same encoder, data, epochs and
schedule, 3 seeds each: accuracy on the 10k test images under `topk` and `cossim` (they agree), mean ± sd over
seeds, and wall time per run. V^21 at n_dim 4 (its n_min for 10 classes), 8, 16 and 32 decides what `n_dim: auto`
means for few classes.

```bash
make lsc_vs_ce                                             # CPU, about 25 min: first 10k training images, 4 epochs
python experiments/lsc_vs_ce/run.py --limit 0 --epochs 10  # the full 60k training set
python experiments/lsc_vs_ce/run.py --smoke                # seconds (CI)
python experiments/lsc_vs_ce/run.py --readme               # only this README, from the committed results
```

Reading: with the same encoder, data (the first 10k training images, 10% of them held out for model selection), 4 epochs
and schedule, and the test split scored once, every LSC system at n_dim 16 is at or above CE (V^21 85.9%, V^11 85.9%,
A_nr 85.4%, V^22 84.9%; CE 84.8% ± 1.1), `topk` equals `cossim` in every run, and V^21's n_min (4) costs 7.5 points: the
rule behind `n_dim: auto`. The full-system softmax (scale 16) changes nothing here (85.97% vs 85.86% at 16, 78.3% vs
78.4% at n_min): with 10 classes there are almost no confusable negatives. These numbers replace ones selected on the
test split (V^21 86.4%, CE 85.6% before). The full-data runs (8 epochs, medium encoder, `+experiment=fmnist_enc`) give
LSC 93.45% vs CE 93.39% (table under [Training](../../README.md#training)), at the top of the public 2-conv-net range
(91.6–93.4%).

<!-- RESULT results/lsc_vs_ce.md -->
<!-- /RESULT -->

![test accuracy per config, mean ± sd over seeds](results/lsc_vs_ce.png)
"""

CONFIGS = [
    ("v21 @ 4 (n_min)", ["centers=v21", "centers.n_dim=4"]),
    ("v21 @ 8", ["centers=v21", "centers.n_dim=8"]),
    ("v21 @ 16", ["centers=v21", "centers.n_dim=16"]),
    ("v21 @ 32", ["centers=v21", "centers.n_dim=32"]),
    ("v22 @ 16", ["centers=v22", "centers.n_dim=16"]),
    ("v11 @ 16", ["centers=v11", "centers.n_dim=16"]),
    ("a_nr @ 16", ["centers=a_nr", "centers.n_dim=16"]),
    ("v21 @ 4 (n_min) softmax", ["centers=v21", "centers.n_dim=4", "loss=softmax"]),
    ("v21 @ 16 softmax", ["centers=v21", "centers.n_dim=16", "loss=softmax"]),
    ("CE", ["model=ce"]),
]


def _slug(label: str) -> str:
    """v21 @ 16 -> v2116, v21 @ 4 (n_min) softmax -> v214-softmax (the run directory names)."""
    words = label.replace("(n_min)", "").split()
    return "".join(words[:1] + words[2:3]) + ("-softmax" if "softmax" in words else "")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=10000, help="first N training images (0 = all 60k)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--backbone", default="encoder_small")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--readme", action="store_true", help="only rewrite README.md from the committed results")
    a = p.parse_args(argv)
    if a.readme:
        return write_readme(HERE, README)
    cfgs = CONFIGS
    if a.smoke:
        a.limit, a.epochs, a.seeds, cfgs = 300, 1, [0], [CONFIGS[2], CONFIGS[-2], CONFIGS[-1]]
    base = [
        "data=fashion_mnist",
        "trainer=cpu",
        f"model/backbone={a.backbone}",
        "data.batch_size=128",
        "model.optimizer.lr=1e-3",
        "model.scheduler.cosine=true",
        f"trainer.max_epochs={a.epochs}",
        f"trainer.check_val_every_n_epoch={a.epochs}",  # the test split is evaluated once, at the end
    ]
    if a.limit:
        base.append(f"data.limit={a.limit}")
    if a.smoke:
        base += ["data.val_limit=500"]  # score 500 test images, not 10k
    jobs = [(f"{_slug(label)}-s{s}", [*base, *ov, f"seed={s}"]) for label, ov in cfgs for s in a.seeds]
    t0 = time.time()
    results = run_many(Path(a.out) / ("runs_smoke" if a.smoke else "runs"), jobs, workers=a.workers)
    rows, raw = [], []
    for i, (label, _) in enumerate(cfgs):
        rs = results[i * len(a.seeds) : (i + 1) * len(a.seeds)]
        acc = [r["metrics"].get("test/acc_topk", r["metrics"].get("test/acc")) for r in rs]
        cos = [r["metrics"].get("test/acc_cossim", r["metrics"].get("test/acc")) for r in rs]
        wall = [r["wall_s"] for r in rs]
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        rows.append(
            [
                label,
                f"{100 * statistics.mean(acc):.2f} ± {100 * sd:.2f}",
                "—" if "CE" in label else ("yes" if acc == cos else "NO"),
                f"{statistics.mean(wall):.0f}",
            ]
        )
        raw.append(
            {
                "config": label,
                "test_acc_topk": acc,
                "test_acc_cossim": cos,
                "wall_s": wall,
                "dirs": [r["dir"] for r in rs],
            }
        )
    data = f"first {a.limit:,} training images" if a.limit else "all 60,000 training images"
    text = (
        f"### Fashion-MNIST test accuracy, LSC systems vs CE ({machine()}; {a.backbone}, {data}, {a.epochs} epochs, "
        f"AdamW 1e-3 + cosine schedule, batch 128, seeds {a.seeds}; {time.time() - t0:.0f} s)\n\n"
        + md_table(["config", "test acc % (mean ± sd)", "topk == cossim", "s / run"], rows)
        + "\n\nReference (public benchmark, full training set): 2-conv nets 91.6-93.4%, ResNet18 94.9%."
    )
    print(text)
    name = "lsc_vs_ce" + ("_smoke" if a.smoke else "")
    write_results(Path(a.out), name, text, raw)
    plot(raw, Path(a.out) / f"{name}.png")
    if not a.smoke and Path(a.out) == HERE / "results":
        write_readme(HERE, README)


def plot(raw, path):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    labels = [r["config"] for r in raw]
    means = [100 * statistics.mean(r["test_acc_topk"]) for r in raw]
    sds = [100 * (statistics.stdev(r["test_acc_topk"]) if len(r["test_acc_topk"]) > 1 else 0) for r in raw]
    ax.bar(range(len(raw)), means, yerr=sds, color=["C1" if "CE" in lab else "C0" for lab in labels])
    ax.set_xticks(range(len(raw)), labels, rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="test accuracy %", ylim=(min(means) - 3, max(means) + 2))
    ax.grid(alpha=0.3, axis="y")
    save_figure(fig, path)


if __name__ == "__main__":
    main()
