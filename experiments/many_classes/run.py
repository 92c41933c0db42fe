"""Many classes, learned fast: data-aware assignment vs the keyed order, against Partial FC and CE.

    python experiments/many_classes/run.py                 # 2,000 + 5,000 instance classes, every row, 3 seeds
    python experiments/many_classes/run.py --part full     # the whole 60,000-image training set as classes
    python experiments/many_classes/run.py --part ordinary # Fashion-MNIST's 10 classes: does assignment matter?
    python experiments/many_classes/run.py --smoke         # seconds (CI)

Fashion-MNIST training images with instance labels (every image its own class), the small conv encoder with a
flattened 7x7 head, AdamW lr 1e-3, batch 64, the same epochs for every row. Rows:
  LSC, cosine loss: v21, v22, a_nr at n_min and 2 x n_min, each with the keyed (random) class -> vector order
    and with `centers.assign=data` (each class takes the free vector nearest a random projection of its image);
  Partial FC (CosFace, s 32, m 0.2) at sample_rate 1.0 and 0.1, embedding width = V^22's n_min and 128;
  CE with the same backbone.
At 60,000 classes (--part full) every row's flat head is --full-hidden wide (1,024; 128 at 2,000/5,000 classes).
Training accuracy per epoch is the running accuracy of the epoch's steps (what the papers plot); the final one is
measured once, in eval mode, on a fixed 1,000-image training sample. Class-state memory: everything that grows
with n_classes, AdamW moments included. Runs are cached in their directories, so an interrupted study resumes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from lsc.centers import n_min
from lsc.study.report import fmt_bytes, machine, md_table, plot_curves, write_readme, write_results
from lsc.study.runs import final_validation, run_many, wall_note

HERE = Path(__file__).parent
README = r"""
# Many classes, learned fast: data-aware assignment

How fast a model learns to tell apart thousands of classes with one image each (Fashion-MNIST training images with
instance labels, 2,000 to 60,000 classes): LSC with the keyed (random) class -> vector order against data-aware
assignment, under the cosine loss and the full-system softmax, beside Partial FC and CE on the same backbone.
Measured: training accuracy per epoch, epochs to 50% / 90%, seconds per epoch, and the memory that grows with the
number of classes.

```bash
python experiments/many_classes/run.py                 # 2,000 + 5,000 instance classes, every row, 3 seeds
python experiments/many_classes/run.py --part sweep    # the full-system softmax's scale and margin, 5,000 classes
python experiments/many_classes/run.py --part full     # the whole 60,000-image training set as classes
python experiments/many_classes/run.py --smoke         # seconds (CI)
python experiments/many_classes/run.py --readme        # only this README, from the committed results
```

The keyed order gives every class a random vector of the system, so images that look alike are pulled to centers
far apart. `centers.assign=data` gives each class the free vector nearest to a prototype of its images instead
(default: a fixed seeded random projection of its mean image minus the dataset's mean image, no backbone;
`centers.prototype=checkpoint centers.prototype_ckpt=<ckpt>` uses a trained model's class-mean embeddings):

```bash
python -m lsc.train +experiment=fmnist_inst                          # 60,000 instance classes, the recipe below
python -m lsc.train data=fashion_mnist data.instance_labels=true data.limit=5000 centers=v22 centers.auto_min_dim=0 \
  centers.assign=data loss=softmax model/backbone=encoder_small_flat model.optimizer.lr=1e-3 data.batch_size=64
```

The assignment rule, its time and memory at 100,000-1M classes: [bench_assign](../bench_assign/README.md).

`model=partial_fc` is the peer a user would otherwise pick (Partial FC, arXiv 2010.05222): the same backbone to an
`embed_dim` embedding, learned class weights on the unit sphere, CosFace logits s (cos - m) (ArcFace with
`model.margin_type=arcface`), scored over the batch's classes plus a uniform sample of the others
(`model.sample_rate`); under DDP its weights shard by class range with a distributed softmax (all-gathered
embeddings, all-reduced max and sum of exponentials; checkpoints gather the full weight).

## 2,000 and 5,000 classes

**The study** (`python experiments/many_classes/run.py`; `--part full` for 60,000 classes, `--part sweep` for the
softmax's scale and margin): Fashion-MNIST training images with instance labels (every image its own class), the
small encoder with a flat head, AdamW 1e-3, batch 64, 20 epochs for every row; final training accuracy in eval
mode on a fixed 1,000-image sample; epochs to 50% / 90% on the running training accuracy.

<!-- RESULT results/many_classes.md -->
<!-- /RESULT -->

![training accuracy per epoch, 2,000 and 5,000 instance classes](results/many_classes.png)

What the tables show (one seed for every row, 3 seeds for the three headline rows of each size: the seeds
column):
- **2,000 classes are too easy to separate the recipes by final accuracy** (the 0.48M-parameter encoder fits 2,000
  images: almost every LSC and Partial FC row ends at 99.7-100%), but not by speed: data-aware assignment reaches 90%
  1-7 epochs before the keyed order (a_nr@45 softmax 12 vs 15, v22@12 softmax 13 vs 20, v21@17 softmax 13 vs never,
  v22@12 cosine 13 vs 17), and the best LSC row (a_nr@45 data softmax, 3 seeds: 100.0%, 90% at epoch 12) is 4 epochs
  ahead of the best Partial FC row (d12, every class scored, 3 seeds: 99.9 ± 0.1%, epoch 16), with 31 KiB of class state
  against 281 KiB. Where LSC loses at 2,000: a_nr@90 with data-aware assignment (90.8%, never 90% running) is again
  below its keyed twin (98.2%), as a_nr@142 at 5,000; Partial FC d128 at sample rate 1 (99.9%) is level with LSC there;
  CE ends at 18.8%.
- **Assignment is the lever.** With the same vectors, loss and seed, the data-aware order beats the keyed one at
  n_min for every system: cosine loss v21@23 86.0 -> 97.3%, v22@14 43.8 -> 96.7%, a_nr@71 53.3 -> 95.7%; full-system
  softmax v21@23 74.3 -> 99.8%, v22@14 57.4 -> 98.7%, a_nr@71 89.5 -> 99.6%. The keyed rows never reach 90% in 20
  epochs.
- **Best LSC vs best Partial FC (3 seeds each).** Data-aware assignment + full-system softmax at n_min: a_nr@71
  ends at 99.6 ± 0.1% and reaches 90% at epoch 15 (15, 15, 16), v21@23 at 98.5 ± 1.2% (epoch 15, 17, 18); Partial FC
  (CosFace s 32, m 0.2, every class scored, embedding 14) ends at 97.6 ± 3.8% and reaches 90% at epoch 18 and 19 in
  two seeds, never in the third (93.2% final). So LSC learns these classes at least as fast per epoch, and more
  reliably, with no learned class parameters: 78 KiB of assignment table against 820 KiB of weights + AdamW moments
  (10x; at the 47 dims of 1M classes it is 16 B against 564 B per class, 35x). Seeds 1-2 of these rows ran side by
  side in one session: 11.6-14.6 s per epoch for LSC, 11.9-12.5 s for Partial FC, i.e. level.
- **Where Partial FC and CE lose here:** Partial FC at sample rate 0.1 (what makes it scale to millions of
  classes) ends at 84.0% and never reaches 90% in 20 epochs; with a 128-d embedding it did not learn in 20 epochs at
  this learning rate (37.6% / 48.8%); CE (a 5,000-way linear head, one image per class) stays at 0%.
- **Where LSC loses / what did not work:** 2 x n_min is slower than n_min for every system (v21@46 93.4%, v22@28
  94.7%) and a_nr@142 with data-aware assignment (52.5%) is even worse than its keyed twin (69.5%), unexplained; the
  global greedy rule (all class-vector pairs, the prototype's) is no better than the scalable ordered walk (96.0%
  vs 96.7%). Re-assignment during training (from the network's class means after some epochs) was not tried.
- **Time per epoch:** compare rows of one session only: seed 0 of a_nr@71 data softmax 7.0 s, v22@14 data softmax
  7.4 s and Partial FC d14 7.1 s ran side by side (two runs sharing the 2 cores); the v21 and cosine-loss rows were
  cached from an earlier, slower day of this machine, and the seeds 1-2 runs shared the CPU with more jobs.
- `+experiment=fmnist_inst` is the recipe measured at 60,000 classes below (V^22 at n_min, data-aware, full-system
  softmax, a 1,024-wide flat head), not a_nr: at 60,000 classes n_min is 245 for a_n (a system 99.6% full) and 24
  for V^22.
- Partial FC's 5,000-class times predate two speed-ups of its head made for the 60,000-class run (no gather of the
  weight when every class is scored; torch's fused cross-entropy in a single process); its accuracy is unchanged
  (the same loss, `tests/test_partial_fc.py`).

## 60,000 classes

60,000 classes (the whole training set: `--part full`; every row with the same backbone, the flat head's hidden layer
1,024 wide, until 95% running training accuracy or 40 epochs; a row stopped at 95% is scored in eval mode on its last
checkpoint, `python -m lsc.eval split=val`, since it last validated up to 4 epochs earlier). The study's best LSC recipe
at 5,000 classes (v22 at n_min, data-aware assignment, full-system softmax s16 m0: v22@14 there, v22@24 here) reaches
50% in epoch 13, 90% in epoch 21 and 95.5% (running) in epoch 24, where it stopped: **97.7% final training accuracy
(eval mode) after 24 epochs, the >= 95% target met**, with 3.31M backbone parameters and no class parameter (938 KiB of
assignment table; assignment 219 s, the same table as every earlier 60,000-class run, hash 25621c35b646f971). Partial FC
with the same backbone (CosFace s 32, m 0.2, every class scored, embedding 24 = the LSC n_dim; 1.44M learned class
weights, 16.5 MiB with AdamW moments, 18x the table) starts later and ends higher: under 0.05% running accuracy for its
first 12 epochs, 50% in epoch 25, 90% in 32, 95.8% in 35 (stopped), **99.2%** final (eval). So at 60,000 classes LSC is
11 epochs ahead to 90% and 11 to 95%, and **1.9x faster per epoch on this CPU** (median 96 s against 182 s, the two runs
side by side, one core each: Partial FC scores 60,000 weights per sample, LSC's full-system softmax over 15.7M vectors
costs O(n_dim) per sample); wall time to 95% running: 38 min of training against 106 min (whole runs: 43 min with the
assignment, 115 min with Partial FC's epochs beside the CI suite). Where LSC loses: Partial FC's final accuracy is 1.5
points higher (99.2% after 35 epochs vs 97.7% after 24; the LSC row was stopped at the rule's 95% running, so neither is
at its ceiling), with one seed each.

How it got there, measured: capacity. With the 5,000-class study's 128-wide head (0.48M parameters, ~8 per class) the
same recipe ends at 32.6% after 40 epochs (running 8.7% in epoch 10, 28.3% in 40; 77 s per epoch on 2 cores;
[`runs/60000-v22@24_data_softmax-s0-d7a97fc0/`](results/runs/)); 512 wide (1.69M) at 93.7% after 40 epochs (50% in epoch
19, 90% in 39; [`probe_60k/hidden512/`](results/probe_60k/hidden512/), epochs 1-10 in `epochs_1-10.csv`); 1,024 wide
(3.31M) at 97.7% after 24. Same seed, same assignment, same loss: only the width of one hidden layer changes, and
nothing in the model grows with the number of classes. The A_n paper's 98.1% at 50,000 classes used a ViT-S (22M
parameters). CE (a 60,000-way last layer on the same backbone: 64.8M parameters, 61.5M of them per class, 704 MiB with
AdamW moments) was stopped in its first epoch: ~1.5 s per step beside two other jobs (LSC's whole step ~0.1 s), its
training loss still 11.27 after 700 steps (ln 60,000 = 11.00; at 5,000 classes CE stays at 0% for 20 epochs); its log is
in `runs_partial/60000-CE_h1024-s0/`. Not run to the end on this CPU: the v21@51 recipe (its first 4 epochs at 128 wide:
0.6-3.3%, `runs_partial/`), seeds 1-2 at 60,000 classes. `python experiments/many_classes/run.py --part full` runs the
rows (`--full-rows lsc pfc keyed ce`, `--full-hidden`; cached rows are reused).

<!-- RESULT results/many_classes_60k.md -->
<!-- /RESULT -->

![training accuracy per epoch, 60,000 instance classes](results/many_classes_60k.png)

## The full-system softmax's scale and margin

<!-- RESULT results/many_classes_sweep.md -->
<!-- /RESULT -->

![training accuracy per epoch, softmax scale and margin, 5,000 instance classes](results/many_classes_sweep.png)

## Does a bounded assignment cost learning?

The ordered rule (each class, most confident first, takes the free vector nearest its prototype) walks past every
vector its look-alikes took before it, ~C x K / 10 vectors for C classes in look-alike groups of K
([bench_assign](../bench_assign/README.md)): the wall at 10M tightly clustered classes. `centers.assign_rule=bounded`
caps each walk at `centers.assign_walk_max` vectors (64 by default); a class that runs past it is deferred, and the
deferred classes that share their prototype's largest and smallest coordinate share one walk from their mean, which
finds two free vectors per member; the members, in the rule's order, each take the nearest of those not yet taken.
`python experiments/many_classes/run.py --part bounded` trains the best 5,000-class recipe (V_14^22, the full-system
softmax) with each table:

<!-- RESULT results/many_classes_bounded.md -->
<!-- /RESULT -->

![training accuracy per epoch, bounded assignment, 5,000 instance classes](results/many_classes_bounded.png)

What it shows (3 seeds, training accuracy on these instance labels: memorization, the property this study
measures): every bounded table keeps nearly all of what data-aware assignment gives over the keyed order (98.0-98.3%
against the keyed order's 61.7%), but each ends about a point below the ordered rule's 99.0 +- 0.4: 98.0 +- 0.6 at
walk_max 64, 98.2 +- 0.2 at 8, 98.3 +- 1.0 at 0. That is a small loss, and the curves reach 50% and 90% in the same
epochs, but with every bounded row below the ordered mean it is more likely real than seed noise. The bound does not
order the rows: walk_max 64 changes 28% of the table and walk_max 0 81%, yet they train alike, so the point lost is not
proportional to how much of the table moves. At 5,000 classes the ordered rule costs under a second, so use it there;
the bounded rule is for where the ordered rule cannot finish (10M tightly clustered classes: 560 s against ~2 hours,
[bench_assign](../bench_assign/README.md)), where a point of accuracy against a start that never ends is the trade
on offer. Not measured: held-out accuracy with a bounded table (han_glyphs, scale_1m), and the loss at sizes where
the rule defers most classes.
"""
STOP_AT_95 = [  # --part full: stop a row once its running training accuracy reaches 95%
    "+callbacks.stop._target_=lightning.pytorch.callbacks.EarlyStopping",
    "+callbacks.stop.monitor=train/acc",
    "+callbacks.stop.mode=max",
    "+callbacks.stop.stopping_threshold=0.95",
    "+callbacks.stop.patience=1000",
    "+callbacks.stop.check_on_train_epoch_end=true",
]


SOFTMAX_DEFAULT = (16.0, 0.2)  # until --part sweep has chosen (scale, margin)


def softmax_choice(out: Path) -> tuple[float, float]:
    """(scale, margin) with the best final accuracy in the committed sweep (many_classes_sweep.json)."""
    f = out / "many_classes_sweep.json"
    if not f.exists():
        return SOFTMAX_DEFAULT
    rows = json.loads(f.read_text())
    top = max(rows, key=lambda r: statistics.mean(r["final_acc"]))
    return top["scale"], top["margin"]


def lsc_rows(n_classes: int, softmax: tuple[float, float] = SOFTMAX_DEFAULT) -> list[tuple[str, list[str]]]:
    rows = []
    for system in ("v21", "v22", "a_nr"):
        m = n_min("a_n" if system == "a_nr" else system, n_classes)
        for width in (m, 2 * m):
            for assign in ("keyed", "data"):
                label = f"{system}@{width} {assign}"
                rows.append((label, [f"centers={system}", f"centers.n_dim={width}", f"centers.assign={assign}"]))
    s, mg = softmax
    sm = ["loss=softmax", f"loss.scale={s:g}", f"loss.margin={mg:g}"]
    for system in ("v21", "v22", "a_nr"):  # the full-system softmax, at n_min: keyed and data-assigned
        m = n_min("a_n" if system == "a_nr" else system, n_classes)
        for assign in ("keyed", "data"):
            label = f"{system}@{m} {assign} softmax"
            rows.append((label, [f"centers={system}", f"centers.n_dim={m}", f"centers.assign={assign}", *sm]))
    # the prototype's rule (all class-vector pairs, descending cosine) against the scalable ordered walk
    m = n_min("v22", n_classes)
    rows.append((f"v22@{m} data-global", ["centers=v22", f"centers.n_dim={m}", "centers.assign=data",
                                          "centers.assign_rule=global"]))  # fmt: skip
    return rows


def pfc_rows(n_classes: int) -> list[tuple[str, list[str]]]:
    rows = []
    for width in (n_min("v22", n_classes), 128):
        for rate in ("1.0", "0.1"):
            rows.append(
                (f"PFC d{width} r{rate}", ["model=partial_fc", f"model.embed_dim={width}", f"model.sample_rate={rate}"])
            )
    return rows


CE_ROW = ("CE", ["model=ce"])


def first_epoch(curve, level):
    for e in curve:
        if e.get("train/acc", 0) >= level:
            return e["epoch"] + 1
    return None


def epoch_seconds(r: dict) -> float:
    times = [e["train/epoch_s"] for e in r["epochs"] if "train/epoch_s" in e]
    return statistics.median(times) if times else float("nan")


def summarize(by: dict, n_epochs: int) -> tuple[list[list], list[dict], dict]:
    rows, raw, curves = [], [], {}
    for (size, label), rs in by.items():
        finals = [r["metrics"].get("val/acc", float("nan")) for r in rs]
        e50 = [first_epoch(r["epochs"], 0.5) for r in rs]
        e90 = [first_epoch(r["epochs"], 0.9) for r in rs]
        done = [len(r["epochs"]) or n_epochs for r in rs]
        # median training time of an epoch (validation and start-up excluded), from the run's CSV log
        per_epoch = [
            statistics.median([e["train/epoch_s"] for e in r["epochs"] if "train/epoch_s" in e] or [0]) for r in rs
        ]
        state = rs[0]["metrics"].get("class_state_bytes")
        curves[(size, label)] = [[e.get("train/acc", float("nan")) for e in r["epochs"]] for r in rs]

        def med(xs, rs=rs):
            xs = [x for x in xs if x is not None]
            if not xs:
                return "—"
            return f"{statistics.median(xs):g}" + ("" if len(xs) == len(rs) else f" ({len(xs)}/{len(rs)})")

        sd = statistics.stdev(finals) if len(rs) > 1 else 0.0
        rows.append(
            [f"{size:,}", label, len(rs), f"{100 * statistics.mean(finals):.1f} ± {100 * sd:.1f}", med(e50), med(e90),
             f"{statistics.mean(per_epoch):.1f}", fmt_bytes(state)]
        )  # fmt: skip
        raw.append(
            {
                "size": size,
                "config": label,
                "final_acc": finals,
                "epochs_to_50": e50,
                "epochs_to_90": e90,
                "epochs_run": done,
                "s_per_epoch": per_epoch,
                "class_state_bytes": state,
                "assign_s": [r["metrics"].get("assign_s") for r in rs],
                "curves": curves[(size, label)],
                "dirs": [r["dir"] for r in rs],
            }
        )
    return rows, raw, curves


HEADER = [
    "classes",
    "config",
    "seeds",
    "final train acc % (eval, mean ± sd)",
    "epochs to 50% (median)",
    "epochs to 90% (median)",
    "s / epoch",
    "class state",
]


def base_overrides(epochs: int, val_every: int) -> list[str]:
    return [
        "data=fashion_mnist",
        "data.instance_labels=true",
        "data.val_size=1000",
        "data.batch_size=64",
        "model/backbone=encoder_small_flat",
        "model.optimizer.lr=1e-3",
        "test=false",
        "callbacks.predictor_accuracy.unlabeled_share=false",
        "centers.auto_min_dim=0",
        f"trainer.max_epochs={epochs}",
        f"trainer.check_val_every_n_epoch={val_every}",  # accuracy per epoch comes from the training steps
        "trainer=cpu",
    ]


def best(raw: list[dict], size: int, prefix: str) -> dict:
    """The row of `size` whose name starts with prefix with the best mean final accuracy (then fewest epochs)."""
    rows = [r for r in raw if r["size"] == size and r["config"].startswith(prefix)]
    return max(rows, key=lambda r: (statistics.mean(r["final_acc"]), -statistics.mean(r["s_per_epoch"])))


def part_sweep(a, out: Path):
    """The softmax's scale and margin: 5,000 classes, V^22 at n_min, data-assigned, one seed (the prototype saw
    scale 16 > 32 and a margin helping)."""
    size, seeds, epochs = (200, [0], 2) if a.smoke else (5000, [0], a.epochs)
    m = n_min("v22", size)
    jobs, keys = [], []
    for scale in (8, 16, 32):
        for margin in (0.0, 0.2):
            label = f"v22@{m} data softmax s{scale} m{margin:g}"
            ov = ["centers=v22", f"centers.n_dim={m}", "centers.assign=data", "loss=softmax", f"loss.scale={scale}",
                  f"loss.margin={margin}"]  # fmt: skip
            jobs.append((f"sweep-{size}-s{scale}-m{margin:g}-s0", [*base_overrides(epochs, epochs), *ov,
                                                                  f"data.limit={size}", "seed=0"]))  # fmt: skip
            keys.append((size, label))
    return jobs, keys, epochs


def part_small(a, out: Path):
    sizes, seeds, epochs = ([200], [0], 2) if a.smoke else (a.sizes, a.seeds, a.epochs)
    jobs, keys = [], []
    for s in seeds:  # seed-major: every row has one seed early (runs are cached; the order only matters if cut)
        for size in sorted(sizes, reverse=True):
            cfgs = lsc_rows(size, softmax_choice(out)) + pfc_rows(size) + [CE_ROW]
            if a.smoke:
                cfgs = [cfgs[2], cfgs[3], cfgs[13], cfgs[-2], CE_ROW]
            for label, ov in cfgs:
                if a.later_seeds_only and s != seeds[0] and label not in a.later_seeds_only:
                    continue
                name = f"{size}-{label.replace(' ', '_')}-s{s}"
                jobs.append((name, [*base_overrides(epochs, epochs), *ov, f"data.limit={size}", f"seed={s}"]))
                keys.append((size, label))
    return jobs, keys, epochs  # the tables list rows by first appearance: 5,000 classes first


def part_full(a, out: Path):
    """60,000 classes: the best LSC and Partial FC recipes of the 5,000-class study (the same system, width rule and
    assignment, at the new n_min), the keyed twin of the LSC one, and CE."""
    epochs = 2 if a.smoke else a.full_epochs
    size = 300 if a.smoke else 60000
    sm = softmax_choice(out)
    small_rows, full_rows = lsc_rows(5000, sm) + pfc_rows(5000), lsc_rows(size, sm) + pfc_rows(size)
    at = {label: i for i, (label, _) in enumerate(small_rows)}
    if a.smoke:
        picks = ["v21@46 data", "PFC d14 r1.0"]
    else:
        f = out / "many_classes.json"
        if not f.exists():
            raise SystemExit("run the 2,000/5,000-class study first: --part full takes its best rows")
        small = json.loads(f.read_text())
        picks = [best(small, 5000, "v")["config"], best(small, 5000, "PFC")["config"]]
        twin = picks[0].replace(" data", " keyed")  # the same recipe with the random order: the gap
        picks = [p for p, kind in zip([*picks, twin], ("lsc", "pfc", "keyed"), strict=True) if kind in a.full_rows]
    jobs, keys = [], []
    # the flat head's hidden width (encoder_small's "a" layer), the same for every row: 128 (the 5,000-class study's)
    # holds 60,000 instances to 32.6% in 40 epochs, 512 to 93.7% (probe_60k/); the capacity lever, not a class parameter
    wide = [f"model.backbone.hidden={a.full_hidden}"] if a.full_hidden != 128 else []
    tag = f" h{a.full_hidden}" if wide else ""
    for label, ov in [*(full_rows[at[p]] for p in picks), *([CE_ROW] if "ce" in a.full_rows else [])]:
        n = min(epochs, a.ce_full_epochs) if label == "CE" else epochs
        base = base_overrides(n, n if a.smoke else 5)
        name = f"{size}-{(label + tag).replace(' ', '_')}-s0"
        jobs.append((name, [*base, *ov, *wide, *STOP_AT_95, f"data.limit={size}", "seed=0"]))
        keys.append((size, label + tag))
    return jobs, keys, epochs


def part_ordinary(a, out: Path):
    """10 Fashion-MNIST classes (class-mean prototypes): test accuracy, keyed vs data, the lsc_vs_ce budget."""
    limit, epochs, seeds = (300, 1, [0]) if a.smoke else (10000, 4, a.seeds)
    base = [
        "data=fashion_mnist",
        "trainer=cpu",
        "model/backbone=encoder_small",
        "data.batch_size=128",
        "model.optimizer.lr=1e-3",
        "model.scheduler.cosine=true",
        f"trainer.max_epochs={epochs}",
        f"trainer.check_val_every_n_epoch={epochs}",
        f"data.limit={limit}",
    ] + (["data.val_limit=500"] if a.smoke else [])
    jobs, keys = [], []
    for system, width in (("v21", 16), ("v22", 16), ("v21", 4)):
        for assign in ("keyed", "data"):
            label = f"{system}@{width} {assign}"
            for s in seeds:
                ov = [f"centers={system}", f"centers.n_dim={width}", f"centers.assign={assign}", f"seed={s}"]
                jobs.append((f"ord-{label.replace(' ', '_')}-s{s}", [*base, *ov]))
                keys.append((10, label))
    return jobs, keys, epochs


BOUNDED_WALKS = (64, 8, 0)  # --part bounded: centers.assign_walk_max of the bounded rule's rows


def bounded_rows(size: int, softmax: tuple[float, float]) -> list[tuple[str, list[str]]]:
    """The best 5,000-class LSC recipe (V^22 at n_min, the full-system softmax) with the ordered rule, the bounded
    rule at BOUNDED_WALKS and the keyed order: the ordered and keyed rows are the small study's runs (cached)."""
    m = n_min("v22", size)
    rows = dict(lsc_rows(size, softmax))
    ordered, keyed = f"v22@{m} data softmax", f"v22@{m} keyed softmax"
    out = [(ordered, rows[ordered])]
    for w in BOUNDED_WALKS:
        out.append((f"{ordered} bounded{w}", [*rows[ordered], "centers.assign_rule=bounded",
                                               f"centers.assign_walk_max={w}"]))  # fmt: skip
    return out + [(keyed, rows[keyed])]


def part_bounded(a, out: Path):
    """The bounded rule's effect on learning: the rows of `bounded_rows` at 5,000 instance classes."""
    size, epochs = (200, 2) if a.smoke else (5000, a.epochs)
    seeds = [0] if a.smoke else a.seeds
    jobs, keys = [], []
    for s in seeds:
        for label, ov in bounded_rows(size, softmax_choice(out)):
            name = f"{size}-{label.replace(' ', '_')}-s{s}"
            jobs.append((name, [*base_overrides(epochs, epochs), *ov, f"data.limit={size}", f"seed={s}"]))
            keys.append((size, label))
    return jobs, keys, epochs


def bounded_tables(size: int) -> tuple[str, list[dict]]:
    """What each rule does to the table of these classes (no training): classes deferred to a group walk, vectors
    enumerated, the share of classes on the ordered rule's vector, mean cosine between prototype and vector."""
    from lsc.bench.assign import mean_cosine
    from lsc.centers import make_system
    from lsc.centers.assignment import assign_bounded, assign_nearest_free
    from lsc.centers.prototypes import class_prototypes
    from lsc.data import FashionMNISTDataModule

    m = n_min("v22", size)
    system = make_system("v22", m)
    dm = FashionMNISTDataModule(instance_labels=True, limit=size, val_size=1000)
    dm.prepare_data()
    dm.setup("fit")
    p = class_prototypes(dm, m, seed=0, cache_dir=None)
    rows, raw, ref = [], [], None
    for w in (None, *BOUNDED_WALKS):  # None: the ordered rule, the reference
        if w is None:
            idx, st = assign_nearest_free(system, p, progress=False)
            ref = idx
        else:
            idx, st = assign_bounded(system, p, w, progress=False)
        same, cos = 100 * float((idx == ref).double().mean()), mean_cosine(system, p, idx)
        pops = (st["pops"] + st.get("group_pops", 0)) / size
        rows.append([f"bounded ({w})" if w is not None else "ordered", f"{st['walks']:,}",
                     f"{st.get('deferred', 0):,}", f"{pops:.1f}", f"{same:.1f}", f"{cos:.3f}"])  # fmt: skip
        raw.append({"rule": f"bounded{w}" if w is not None else "ordered", **st, "same_as_ordered": same,
                    "mean_cos": cos})  # fmt: skip
    head = ["rule (walk_max)", "classes walked", "deferred", "vectors / class", "same vector as ordered %",
            "mean cosine"]  # fmt: skip
    return md_table(head, rows), raw


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["sweep", "small", "full", "ordinary", "bounded"], default="small")
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--full-epochs", type=int, default=40)
    p.add_argument("--full-hidden", type=int, default=1024, help="--part full: the flat head's hidden width, every row")
    p.add_argument("--ce-full-epochs", type=int, default=5, help="CE at 60k classes: ~5 min per epoch on 2 cores")
    p.add_argument(
        "--later-seeds-only",
        nargs="+",
        default=None,
        metavar="LABEL",
        help="run the seeds after the first only for these rows (e.g. 'v21@23 data softmax')",
    )
    p.add_argument("--full-rows", nargs="+", default=["lsc", "pfc", "keyed", "ce"],
                   choices=["lsc", "pfc", "keyed", "ce"], help="--part full: the best LSC / Partial FC row, the "
                   "LSC row's keyed twin, CE")  # fmt: skip
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--readme", action="store_true", help="only rewrite README.md from the committed results")
    a = p.parse_args(argv)
    if a.readme:
        return write_readme(HERE, README)
    out, t0 = Path(a.out), time.time()
    parts = {"sweep": part_sweep, "small": part_small, "full": part_full, "ordinary": part_ordinary,
             "bounded": part_bounded}  # fmt: skip
    jobs, keys, epochs = parts[a.part](a, out)
    results = run_many(out / ("runs_smoke" if a.smoke else "runs"), jobs, workers=a.workers)
    if a.part == "full":  # a row stopped at 95% last validated up to 4 epochs earlier: score its last checkpoint
        results = [final_validation(r) for r in results]
    by: dict = {}
    for key, r in zip(keys, results, strict=True):
        by.setdefault(key, []).append(r)
    name = {"sweep": "many_classes_sweep", "small": "many_classes", "full": "many_classes_60k",
            "ordinary": "many_classes_10", "bounded": "many_classes_bounded"}[a.part]  # fmt: skip
    name += "_smoke" if a.smoke else ""
    if a.part == "ordinary":
        rows, raw = [], []
        for (_, label), rs in by.items():
            acc = [r["metrics"].get("test/acc_topk") for r in rs]
            cos = [r["metrics"].get("test/acc_cossim") for r in rs]
            sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
            rows.append([label, f"{100 * statistics.mean(acc):.2f} ± {100 * sd:.2f}", "yes" if acc == cos else "NO"])
            raw.append({"config": label, "test_acc": acc, "dirs": [r["dir"] for r in rs]})
        limit = 300 if a.smoke else 10000
        text = (
            f"### Fashion-MNIST, 10 classes: keyed vs data-aware assignment ({machine()}; encoder_small, first "
            f"{limit:,} training images, {epochs} epochs, seeds {[0] if a.smoke else a.seeds}; "
            f"{time.time() - t0:.0f} s)\n\n" + md_table(["config", "test acc % (mean ± sd)", "topk == cossim"], rows)
        )
        print(text)
        write_results(out, name, text, raw)
        if not a.smoke and out == HERE / "results":
            write_readme(HERE, README)
        return
    rows, raw, curves = summarize(by, epochs)
    if a.part == "sweep":
        for r in raw:
            words = r["config"].split()
            r["scale"], r["margin"] = float(words[-2][1:]), float(words[-1][1:])
    what = "until 95% or" if a.part == "full" else "for"
    text = (
        f"### Training accuracy, Fashion-MNIST instance labels ({machine()}; encoder_small_flat, AdamW 1e-3, batch 64, "
        f"{what} {epochs} epochs; {wall_note(t0, results)})\n\n"
        + md_table(HEADER, rows)
        + "\n\nEpochs counted on the running training accuracy; '—' = not reached; (k/n) = reached by k seeds. "
        "Class state: what grows with n_classes (LSC keyed: nothing; data-assigned: its 16-byte-per-class table; "
        "Partial FC: weights + AdamW moments; CE: the last layer + AdamW moments). s / epoch: each run's median, "
        "two runs sharing the 2 cores; runs cached from another day of this machine are not side by side (the "
        "JSON lists each run's directory; its wall_s.txt and train.log carry the date)."
    )
    if a.part == "bounded":
        size = 200 if a.smoke else 5000
        tab, rules = bounded_tables(size)
        text += (
            f"\n\n**The tables themselves** ({size:,} classes, V_{n_min('v22', size)}^22, the same pixel prototypes; "
            "no training): classes whose walk ran past walk_max pops are deferred to their group's shared walk; "
            "mean cosine between a class's prototype and its vector (a random table: ~0).\n\n" + tab
        )
        raw = {"rows": raw, "rules": rules}
    print(text)
    write_results(out, name, text, raw)
    plot_curves(curves, out / f"{name}.png", _style, "dotted: keyed order, solid: data-aware, dashed: learned weights",
                "training accuracy (running)")  # fmt: skip
    if not a.smoke and out == HERE / "results":
        write_readme(HERE, README)


def _style(label: str) -> str:
    return ":" if "keyed" in label else ("--" if ("PFC" in label or label == "CE") else "-")


if __name__ == "__main__":
    main()
