"""Many classes that generalize: printed Han characters, scored on type designs never trained on.

    python experiments/han_glyphs/run.py                  # the whole study (cached runs: resumes where it stopped)
    python experiments/han_glyphs/run.py --part sweep     # 5,000 classes: every lever, one seed
    python experiments/han_glyphs/run.py --part full      # every class (~20,900): the best LSC and Partial FC rows
    python experiments/han_glyphs/run.py --part report    # tables, plot and README from the runs done so far
    python experiments/han_glyphs/run.py --smoke          # seconds (CI): the three small CJK test fonts

Data: `data=han_glyphs` (`make data-han`): a class is a URO ideograph drawn by the 4 test designs (TW-Sung, TW-Kai,
WenQuanYi Zen Hei, HanaMinA) and by >= 5 training designs; training glyphs: the other designs (at most 3 weights
each), validation: 2 more held-out designs (model selection), 32 px, rendered `center` unless a row says otherwise.
Every row: the small conv encoder with a flat 4x4 head and a 512-wide hidden layer (encoder_small_flat, ~0.6M
parameters + whatever grows with the classes), AdamW lr 1e-3 with a cosine schedule, batch 128, bf16 autocast on
the CPU, the same epochs for every row of a class count. Held-out accuracy (top-1, top-5 on the test designs) is
logged after every epoch by `lsc.callbacks.HeldOutAccuracy`; the table's headline number is the last epoch's (no
selection on the test designs); `test@val` is the test split scored on the checkpoint validation chose. Baselines:
raw-pixel 1-NN (cosine) against every training glyph, and the nearest class centroid.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from lsc.centers import n_min
from lsc.study.report import fmt_bytes, machine, md_table, pyplot, save_figure, write_readme, write_results
from lsc.study.runs import run_many, wall_note

HERE = Path(__file__).parent
README = """
# Many classes that generalize: printed Han characters on type designs never trained on

Whether fixed class centers generalize to new images of known classes: a class is a printed Han character, a model
trains on its glyphs in up to 40 type designs and is scored on 4 designs it never saw (held-out top-1 / top-5), at
5,000 classes and at all 20,919. LSC against Partial FC on the same backbone and against raw-pixel 1-NN and
class-centroid baselines, and what each lever (hidden width, assignment, system width, negatives, learning rate,
augmentation) does.

```bash
make data-han                                          # the CJK font packages (~2 GB), once
python experiments/han_glyphs/run.py                   # the whole study (cached runs: resumes where it stopped)
python experiments/han_glyphs/run.py --part levers     # 5,000 classes, 3 epochs, one lever per row
python experiments/han_glyphs/run.py --part baselines  # raw-pixel 1-NN and class centroids (no training)
python experiments/han_glyphs/run.py --part sweep      # 5,000 classes, 10 epochs: every lever, one seed
python experiments/han_glyphs/run.py --part full       # every class (~20,900): the best LSC and Partial FC rows
python experiments/han_glyphs/run.py --part capacity   # 1,000 / 2,000 classes: hidden width 0.1-1.6 x the classes
python experiments/han_glyphs/run.py --part heads      # 1,000 classes: a bottleneck before the hidden layer, depth 2
python experiments/han_glyphs/run.py --part heads_full --workers 1 --threads 2  # the full set, the bottleneck head
python experiments/han_glyphs/run.py --part report --full-epochs 3  # tables, plot and this README from the runs done
python experiments/han_glyphs/run.py --smoke           # seconds (CI): the three small CJK test fonts
python experiments/han_glyphs/run.py --readme          # only this README, from the committed results
```

The memorization studies ([many_classes](../many_classes/README.md)) score one image per class, on itself. People
with many classes are judged on *new* images of known classes. `data=han_glyphs` asks that question on real data: a
class is a Han ideograph (code point), its images are its glyphs in Debian's CJK type designs, and the test images
are the glyphs of 4 designs held out of training (TW-Sung, TW-Kai, WenQuanYi Zen Hei, HanaMinA; 2 more, cwTeX Hei
Bold and Ume Mincho, for validation). `make data-han` installs the fonts (apt, as root); the catalog merges weights
of one design and duplicate designs by rendering them, and drops empty, .notdef-like and placeholder glyphs per
glyph (manifest: [`results/manifest.json`](results/manifest.json)). Default class set: every URO ideograph drawn by
the 4 test designs and by at least 5 training designs: **20,919 classes**, 631,802 training glyphs from 40 designs
(at most 3 weights each), 32 px.

```bash
make data-han                                          # the CJK font packages (~2 GB), once
python -m lsc.train +experiment=han_glyphs             # the LSC recipe below, every class
python -m lsc.train +experiment=han_glyphs data.n_classes=5000 trainer.max_epochs=3
python experiments/han_glyphs/run.py --part levers     # the study (cached runs, resumable)
```

`lsc.predict` on such a checkpoint writes each image's character in `class_name` (`字 U+5B57`), and `lsc.eval
ckpt_path=<ckpt> data.test_designs=[/path/a.ttf]` scores the checkpoint's classes in any installed font (classes
the font lacks are skipped and counted).

## Results

Every row uses the same small conv encoder with a flat 4x4 head (`encoder_small_flat`, hidden 512 or 2,048: the row
says), AdamW 1e-3 with a cosine schedule, batch 128, bf16 autocast on the CPU (an Intel Xeon with native bf16; the
capacity rows, `fp32`, ran in float32 on a later AMD EPYC, where bf16 autocast convolutions are ~8x slower); Partial
FC is CosFace (s 32, m 0.2) over an embedding of 128 on that same backbone; held-out accuracy is scored after every
epoch on the test designs.

<!-- RESULT results/han_glyphs.md -->
<!-- /RESULT -->

![held-out top-1 per epoch](results/han_glyphs.png)

**Reading: LSC still loses here, by less.** On new glyphs of known characters Partial FC is the more accurate model
at every class count measured. At 5,000 classes, 3 epochs, the gap is 1.3 points: LSC with an 8,192-wide hidden
layer scores 98.3% held-out top-1 against Partial FC's 99.6% on the same backbone (it was 92.5% against 99.6% with
hidden 2,048). Both beat the raw-pixel 1-NN (82.8%) and class-centroid (66.9%) baselines. At all 20,919 classes,
3 epochs, LSC (V_256^21, data-aware) with 32,768 hidden units behind a 128-wide bottleneck (below) scores **98.85 +-
0.08% held-out top-1** (3 seeds: 98.90 / 98.76 / 98.89; top-5 99.9%) against Partial FC's **99.28 +- 0.05%** (3
seeds: 99.23 / 99.33 / 99.29) in float32: a 0.43-point gap in the means, larger than either row's seed spread, and
every Partial FC seed above every LSC seed (98.1% with 16,384 hidden units, the recipe's; 82.6% with a plain
4,096-wide hidden layer, 64.9% with 2,048), far above the raw-pixel 1-NN (71.6%). The acceptance target (LSC >= 95%
and >= Partial FC at the full set, 3-seed means) is **half met**: above 95%, below Partial FC by 0.4 points.

What each lever did (5,000 classes, 3 epochs, one seed, held-out top-1; LSC V_128^21, full-system softmax s 32
m 0.2, keyed, hidden 512 = 48.3%):
- **the hidden layer's width, the lever that counts**: keyed 48.3% at 512 -> 89.6% at 2,048; data-aware 66.1% at
  512 -> 92.5% at 2,048 -> **97.6% at 4,096 -> 98.3% at 8,192** (training accuracy 98.3%, as Partial FC's 98.6%).
  LSC was *underfitting*: with fixed centers the last learned map is the hidden layer -> n_dim projection, and each
  class's weight in hidden space is a difference of two of its columns (V^21: +1 at i, -1 at j), shared with every
  class that uses i or j; a wider hidden layer lets those shared columns separate more classes. Partial FC gains
  nothing from width (99.6% at 512 and at 2,048): its 5,000 x 128 learned class weights already give it that room.
  The width costs parameters that do not grow with the classes (h8192: 9.5M parameters in all at 5,000 classes, the
  same at 100M) and time (246-302 s per epoch vs 139 for h2048, runs sharing the 2 cores).
- **data-aware assignment** (classes' mean glyphs, projected): 66.1% (+18 over keyed at hidden 512), 92.5% with
  hidden 2,048 (+3): characters that look alike share a coordinate of their centers, so each coordinate stands for
  coherent shapes instead of ~78 random characters.
- **re-assignment** from the trained model's class-mean embeddings (`centers.prototype=checkpoint` on the data-aware
  run's checkpoint, then trained from scratch; the A_n paper's idea): 94.2% at hidden 2,048 (+1.7), 97.6% at 4,096
  (+0.0): once the head is wide enough, which classes share a coordinate no longer matters.
- a wider system: V_512^21 59.5% keyed at hidden 512 (+11), but 89.2% data-aware at hidden 2,048 (-3.3 against
  V_128^21); V_2048^21 (data, h2048) was stopped after one epoch, behind V_128^21 (58.4% vs 64.6%) and 2x slower per
  epoch. Fewer classes per coordinate is not what LSC lacks here; capacity before the projection is.
- negatives = the labeled centers only (`loss.negatives=labeled`, CosFace over the classes, no unlabeled vectors):
  50.2% (+2).
- learning rate 3e-3: 46.9% (-1); augmentation (affine, stroke, blur): 17.9% (-30 at 3 epochs: it slows fitting,
  which is LSC's problem here; at 1,000 classes and 10 epochs it cost both models 0.2-1 points).
- earlier, at 1,000 classes, 10 epochs (`runs/explore-1000-*`): V_128^21 softmax 99.1%, V_64^21 98.2%, V_10^22
  (n_min) cosine loss 74.6% and softmax 64.7%: the systems at n_min, the papers' setting, generalize worst; every
  LSC row above is far wider than n_min (n_min is 72 for V^21 at 5,000 classes).

## Why it falls short: the hidden layer holds what learned class weights hold

`python experiments/han_glyphs/run.py --part capacity` trains LSC (data-aware V_128^21, softmax s 32 m 0.2) and
Partial FC with a hidden layer of 0.1 to 1.6 x the number of classes, 3 epochs, at 1,000 classes (3 seeds at 0.8)
and 2,000 classes (a check), set beside the 5,000-class and full-set rows above (the table at the end of the results):

![held-out top-1 vs hidden width per class](results/han_glyphs_capacity.png)

LSC's held-out accuracy is set by the hidden width **per class**, at every class count measured: at 0.1 hidden units
per class 57-66% (1,000 / 2,000 / 5,000 / 20,919 classes), at 0.2 73-83%, at 0.4 88-93%, at 0.8 96.2 +- 0.3% (1,000,
3 seeds), 95.6% (2,000) and 97.6% (5,000), at 1.6 97.6-98.3%. Partial FC does not care: 99.7% at 0.1 (1,000 and
2,000 classes) and 99.6 +- 0.3% at 0.8 (1,000 classes, 3 seeds), 99.4% at 0.1 on the full set. Why: with fixed
centers, class c (V^21: +1 at i, -1 at j) is predicted when coordinate i is the largest and j the smallest, so each
of the n_dim coordinates must fire for a union of ~2C / n_dim unrelated characters and for no other; a linear map
from the hidden layer can carve such a union only if the hidden layer already separates the characters, which takes
on the order of one hidden unit per class (Cover's count: a random split of C clusters is linearly separable in ~C/2
dimensions). Data-aware assignment makes the unions less arbitrary (+3 to +18 points) but does not remove the count.
Partial FC puts that per-class capacity in its class weights (128 numbers per class); LSC has to put it in the
hidden layer (1,025 + n_dim weights per hidden unit). So the class-count-free model is, for new images, a model
whose width must grow with the classes: at the full set, LSC's 97% regime (0.8 per class) needs a hidden layer of
~16,700, ~21M parameters, against Partial FC's 5.1M in all (2.7M of them class weights) for 99.4%; at equal
parameters (LSC hidden 4,096: 5.3M) LSC scores 82.6%; the same width per class is much cheaper through a bottleneck
(next section).

## A cheaper head: the width through a bottleneck

If width per class is what LSC needs, the width need not cost 1,025 + n_dim weights per hidden unit. `python
experiments/han_glyphs/run.py --part heads` puts a bias-free linear bottleneck of 128 before the hidden layer
(`model.backbone.bottleneck=128`: a rank-128 first layer, 128 + n_dim weights per hidden unit) or stacks two hidden
layers (`model.backbone.depth=2`), at 1,000 classes, 3 epochs, float32 (the heads table at the end of the results):
- bottleneck 128: 95.3% at 800 hidden units (plain 96.2 +- 0.3, 3 seeds) and **98.0% at 1,600 (plain 97.6)**, with
  0.34M / 0.54M head parameters instead of 0.92M / 1.84M. The width per class is the lever, not the parameters: the
  bottleneck keeps the accuracy at a third of the weights.
- two hidden layers: 91.8% at 400 + 400 (one layer of 400: 88.1), 96.2% at 800 + 800 (one layer of 800: 96.2): depth
  helps the narrow head a little and costs more weights than width.

`python experiments/han_glyphs/run.py --part heads_full` then trains the full set with 16,384 hidden units (0.78 per
class) behind the 128 bottleneck (V_256^21, data-aware, 3 epochs, float32, one seed; 6.5M parameters in all, Partial
FC's row has 5.0M of which 2.7M are class weights): held-out top-1 90.3 -> 97.3 -> **98.1%** per epoch (top-5
99.8%), against 82.6% for the plain 4,096-wide head (5.3M parameters) and 99.4% for Partial FC (bf16); training accuracy
97.5% (Partial FC 97.9%), ~29 minutes per epoch here (one run on both cores). Twice the width, **32,768 hidden units
(1.57 per class, as 1,600 at 1,000 classes and 8,192 at 5,000)** behind the same bottleneck (12.8M parameters):
92.9 -> 98.4 -> **98.9%** per epoch (top-5 99.9%), training accuracy 98.4%, ~42 minutes per
epoch. Doubling the width per class gained 0.8 points at the full set (1,000 classes: 95.3 -> 98.0; 5,000:
97.6 -> 98.3 with plain heads), and the gap to Partial FC narrowed from 1.3 to 0.5 points; `+experiment=han_glyphs`
keeps 16,384 (the CI trains it on a small class set; add `model.backbone.hidden=32768` for this row).

**The acceptance target is not met in full**: LSC is above 95% at the full set (98.9%) but below Partial FC, and at
every class count and width measured LSC's held-out top-1 stays under Partial FC's (best 98.3% vs 99.6% at 5,000
classes, 98.0% vs 99.6 +- 0.3% at 1,000, 98.9% vs 99.2% at the full set); each doubling of the width per class has
closed part of the gap, never all of it.

Partial FC in float32 on this machine, the same 3 epochs and seed as the LSC row
(`python experiments/han_glyphs/run.py --part full_seeds --workers 1 --threads 2`, which goes on to seeds 1 and 2 of
both rows, resuming from a checkpoint every 500 steps): held-out top-1 91.6 -> 98.9 -> **99.2%** per epoch (top-5
99.97%; the test designs on the checkpoint validation chose: 99.23%), against LSC's 92.9 -> 98.4 -> 98.9%. LSC leads
after the first epoch and trails after the second and third, by 0.3 points at the end. Partial FC's seeds 1 and 2:
93.0 -> 99.1 -> **99.3%** and 92.3 -> 99.0 -> **99.3%**; LSC's seeds 1 and 2: 93.1 -> 98.3 -> **98.8%** and 93.5 ->
98.4 -> **98.9%**. Over 3 seeds each: LSC 98.85 +- 0.08%, Partial FC 99.28 +- 0.05% (the table's rows). LSC leads
after the first epoch on every seed (92.9-93.5% vs 91.6-93.0%, seed for seed) and trails after the second and third.
Its s / epoch in the table counts the hours the runs were paused (SIGSTOP) or shared the cores with benchmarks, CI or
the other seed; alone a run did ~17-25 minutes an epoch on this session's Intel machine (~25-42 on the earlier AMD
one; Partial FC's seeds 0-1 and LSC's seed 0 ran there, the rest here, all in float32 with the same code). Not run
yet: 3.1 hidden units per class (65,536) there, and longer schedules.
"""
SEEDS = (0, 1, 2)
AUG = ["data.augment=[affine,stroke,blur]"]
SMOKE_FONTS = (
    "/usr/share/fonts/opentype/ipaexfont-gothic/ipaexg.ttf",
    "/usr/share/fonts/opentype/ipaexfont-mincho/ipaexm.ttf",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
)
SMOKE_DATA = [f"data.font_dirs=[{','.join(SMOKE_FONTS)}]", "data.test_designs=[WenQuanYi Micro Hei]",
              "data.val_designs=[]", "data.min_designs=2", "data.max_faces=null"]  # fmt: skip


def base_overrides(epochs: int, hidden: int = 512) -> list[str]:
    return [
        "data=han_glyphs",
        "data.max_faces=3",
        "model/backbone=encoder_small_flat",
        "model.backbone.flat_size=4",
        f"model.backbone.hidden={hidden}",
        "model.optimizer.lr=1e-3",
        "model.scheduler.cosine=true",
        "trainer=cpu",
        "trainer.precision=bf16-mixed",
        "model.channels_last=true",
        "+callbacks.heldout._target_=lsc.callbacks.HeldOutAccuracy",
        "callbacks.predictor_accuracy.unlabeled_share=false",
        "centers.auto_min_dim=0",
        f"trainer.max_epochs={epochs}",
    ]


def sm(scale, margin, negatives="system") -> list[str]:
    out = ["loss=softmax", f"loss.scale={scale}", f"loss.margin={margin}"]
    return out + (["loss.negatives=labeled"] if negatives == "labeled" else [])


def lsc(system: str, n_dim: int, *extra) -> list[str]:
    return [f"centers={system}", f"centers.n_dim={n_dim}", *extra]


def pfc(dim: int, rate: float = 1.0, margin_type: str = "cosface", *extra) -> list[str]:
    m = ["model.margin_type=arcface", "model.margin=0.5"] if margin_type == "arcface" else []
    return ["model=partial_fc", f"model.embed_dim={dim}", f"model.sample_rate={rate}", *m, *extra]


def sweep_rows(size: int) -> list[tuple[str, list[str]]]:
    """Every lever at one class count, most telling first (an interrupted sweep has the key rows)."""
    m22, m21 = n_min("v22", size), n_min("v21", size)
    return [
        ("LSC v21@128 sm32 m0.2 keyed", lsc("v21", 128, *sm(32, 0.2))),
        ("PFC cosface d128 r1.0", pfc(128)),
        ("LSC v21@128 lsm32 m0.2 keyed", lsc("v21", 128, *sm(32, 0.2, "labeled"))),
        ("LSC v21@128 sm32 m0.2 data", lsc("v21", 128, *sm(32, 0.2), "centers.assign=data")),
        ("LSC v21@128 sm32 m0.2 keyed aug", lsc("v21", 128, *sm(32, 0.2), *AUG)),
        ("PFC cosface d128 r1.0 aug", pfc(128, 1.0, "cosface", *AUG)),
        ("LSC v21@64 sm32 m0.2 keyed", lsc("v21", 64, *sm(32, 0.2))),
        (f"LSC v21@{m21} sm32 m0.2 keyed", lsc("v21", m21, *sm(32, 0.2))),
        (f"LSC v22@{m22} sm16 data", lsc("v22", m22, *sm(16, 0), "centers.assign=data")),
        (f"LSC v22@{m22} cos keyed", lsc("v22", m22)),
        ("PFC cosface d128 r0.1", pfc(128, 0.1)),
        ("PFC arcface d128 r1.0", pfc(128, 1.0, "arcface")),
        (f"PFC cosface d{m21} r1.0", pfc(m21)),
        ("LSC v22@64 sm32 m0.2 keyed", lsc("v22", 64, *sm(32, 0.2))),
        ("LSC v21@128 sm48 m0.3 keyed", lsc("v21", 128, *sm(48, 0.3))),
        ("LSC v21@128 sm32 m0.2 keyed em", lsc("v21", 128, *sm(32, 0.2), "data.render=em")),
        ("LSC v21@128 sm32 m0.2 keyed fit", lsc("v21", 128, *sm(32, 0.2), "data.render=fit")),
        ("CE", ["model=ce"]),
    ]


def small_rows(size: int) -> list[tuple[str, list[str]]]:
    """1,000 classes: the sweep's main rows (each costs ~4 minutes)."""
    keep = ("LSC v21@128 sm32 m0.2 keyed", "LSC v21@128 lsm32 m0.2 keyed", "LSC v21@128 sm32 m0.2 data",
            "PFC cosface d128 r1.0", "PFC cosface d128 r0.1", "PFC arcface d128 r1.0", "CE")  # fmt: skip
    rows = [r for r in sweep_rows(size) if r[0] in keep]
    m22 = n_min("v22", size)
    return rows + [(f"LSC v22@{m22} cos keyed", lsc("v22", m22))]


def lever_rows(runs: Path | None = None, size: int = 5000, epochs: int = 3) -> list[tuple[str, list[str]]]:
    """Short runs (3 epochs at 5,000 classes): which lever closes LSC's gap to Partial FC, in the order tried.
    `reassigned`: the data-aware assignment from the class-mean embeddings of an earlier row's trained model (its
    last checkpoint under `runs`: the A_n paper's re-assignment), then trained from scratch."""
    base = lsc("v21", 128, *sm(32, 0.2))
    H2048, H4096 = "model.backbone.hidden=2048", "model.backbone.hidden=4096"
    data = [*base, "centers.assign=data"]

    def reassigned(hidden: str, label: str) -> list[str]:
        """Data-aware from the class means of the row `label` (data, `hidden`), trained with `hidden`."""
        ckpt = "missing.ckpt"
        if runs is not None:
            from lsc.study.runs import run_dir

            jobs, _ = jobs_for(size, [(label, [*data, hidden])], [0], epochs, prefix="levers")
            ckpt = str(run_dir(runs, *jobs[0]) / "checkpoints" / "last.ckpt")
        return [*data, "centers.prototype=checkpoint", f"centers.prototype_ckpt={ckpt}", hidden]

    return [
        ("LSC v21@128 sm32 m0.2 keyed", base),
        ("PFC cosface d128 r1.0", pfc(128)),
        ("LSC v21@512 sm32 m0.2 keyed", lsc("v21", 512, *sm(32, 0.2))),
        ("LSC v21@128 sm32 m0.2 keyed h2048", [*base, H2048]),
        ("LSC v21@128 lsm32 m0.2 keyed", lsc("v21", 128, *sm(32, 0.2, "labeled"))),
        ("LSC v21@128 sm32 m0.2 data", data),
        ("LSC v21@128 sm32 m0.2 keyed lr3e-3", [*base, "model.optimizer.lr=3e-3"]),
        ("LSC v21@128 sm32 m0.2 keyed aug", [*base, *AUG]),
        ("LSC v21@128 sm32 m0.2 data h2048", [*data, H2048]),
        ("PFC cosface d128 r1.0 h2048", [*pfc(128), H2048]),
        ("LSC v21@512 sm32 m0.2 data h2048", lsc("v21", 512, *sm(32, 0.2), "centers.assign=data", H2048)),
        ("LSC v21@128 sm32 m0.2 data h4096", [*data, H4096]),
        ("LSC v21@128 sm32 m0.2 reassigned h2048", reassigned(H2048, "LSC v21@128 sm32 m0.2 data h2048")),
        ("LSC v21@128 sm32 m0.2 data h8192", [*data, "model.backbone.hidden=8192"]),
        ("LSC v21@128 sm32 m0.2 reassigned h4096", reassigned(H4096, "LSC v21@128 sm32 m0.2 data h4096")),
    ]


CAPACITY_SIZE = 1000
CAPACITY_HIDDEN = (100, 200, 400, 800, 1600)  # hidden / classes = 0.1 .. 1.6 at 1,000 classes
CAPACITY_CHECK = (2000, (200, 800, 1600))  # the same ratios (0.1, 0.4, 0.8) at twice the classes
FP32 = "trainer.precision=32-true"  # bf16 autocast convolutions are ~8x slower than float32 on CPUs without AVX-512


def capacity_rows(hidden=CAPACITY_HIDDEN, pfc_hidden=None) -> list[tuple[str, list[str]]]:
    """3 epochs, float32: LSC (data-aware V_128^21) at each width in `hidden`, Partial FC at each in `pfc_hidden`
    (default: the narrowest); 0.1-1.6 x the classes at 1,000, a check at 2,000, beside the 5,000-class lever rows and
    the full set: is LSC's held-out accuracy a function of hidden width / classes?"""
    data = lsc("v21", 128, *sm(32, 0.2), "centers.assign=data", FP32)
    rows = [(f"LSC v21@128 sm32 m0.2 data h{h} fp32", [*data, f"model.backbone.hidden={h}"]) for h in hidden]
    return rows + [(f"PFC cosface d128 r1.0 h{h} fp32", [*pfc(128), FP32, f"model.backbone.hidden={h}"])
                   for h in (pfc_hidden or hidden[:1])]  # fmt: skip


def capacity_jobs(epochs: int) -> tuple[list, list]:
    """1,000 classes: every width, Partial FC at 0.1 and 0.8, 3 seeds of both at 0.8; 2,000 classes: 3 widths."""
    rows = capacity_rows(CAPACITY_HIDDEN, (CAPACITY_HIDDEN[0], CAPACITY_HIDDEN[-2]))
    jobs, keys = jobs_for(CAPACITY_SIZE, rows, [0], epochs, prefix="capacity")
    seeded = [r for r in rows if r[0].split()[-2] == f"h{CAPACITY_HIDDEN[-2]}"]  # LSC and PFC at 0.8: 3 seeds
    j, k = jobs_for(CAPACITY_SIZE, seeded, SEEDS[1:], epochs, prefix="capacity")
    j2, k2 = jobs_for(CAPACITY_CHECK[0], capacity_rows(CAPACITY_CHECK[1]), [0], epochs, prefix="capacity")
    return jobs + j + j2, keys + k + k2


HEAD_ROWS = ((800, 1, 128), (1600, 1, 128), (400, 2, None), (800, 2, None))  # (hidden, depth, bottleneck)


HEAD_FULL = ((16384, 1, 128), (32768, 1, 128))  # the full set: 0.8 and 1.6 hidden units per class, bottleneck 128
PFC_FULL_FP32 = ("PFC cosface d128 r1.0 h2048 fp32", [*pfc(128), FP32, "model.backbone.hidden=2048"])


def full_seed_jobs(seeds, epochs: int) -> tuple[list, list]:
    """The full set's headline rows for every seed (3 epochs, float32): Partial FC at 2,048 hidden units (its first
    row, in bf16, ran on an Intel machine with AVX-512; bf16 convolutions are ~8x slower on this one), then LSC with
    32,768 behind the 128 bottleneck (seed 0 is the heads_full run). Partial FC first: it is the cheaper."""
    j, k = jobs_for(None, [PFC_FULL_FP32], seeds, epochs)
    j2, k2 = jobs_for(None, head_rows(HEAD_FULL[-1:], 256), seeds, epochs)
    return j + j2, k + k2


def head_rows(heads=HEAD_ROWS, n_dim: int = 128) -> list[tuple[str, list[str]]]:
    """1,000 classes, 3 epochs, float32: LSC (as the capacity rows) with cheaper or deeper heads than one wide hidden
    layer: a linear bottleneck before it (`b128`: 128 + n_dim weights per hidden unit instead of 1,025 + n_dim), or two
    hidden layers (`d2`). Does LSC need width per class, or parameters, or depth?"""
    data = lsc("v21", n_dim, *sm(32, 0.2), "centers.assign=data", FP32)
    rows = []
    for h, depth, b in heads:
        label = f"LSC v21@{n_dim} sm32 m0.2 data h{h}" + (f" d{depth}" if depth > 1 else "") + (f" b{b}" if b else "")
        ov = [f"model.backbone.hidden={h}", f"model.backbone.depth={depth}", f"model.backbone.bottleneck={b or 'null'}"]
        rows.append((label + " fp32", [*data, *ov]))
    return rows


def headline_rows() -> list[tuple[str, list[str]]]:
    """5,000 classes, 3 epochs, float32, 3 seeds: the best LSC lever row (hidden 8,192) and Partial FC."""
    data = lsc("v21", 128, *sm(32, 0.2), "centers.assign=data", FP32, "model.backbone.hidden=8192")
    return [("LSC v21@128 sm32 m0.2 data h8192 fp32", data), ("PFC cosface d128 r1.0 fp32", [*pfc(128), FP32])]


def _token(config: str, prefix: str, default: int | None) -> int | None:
    """The number after `prefix` in a row label's word (`h4096` -> 4096 for "h"), else `default`."""
    return next((int(w[len(prefix) :]) for w in config.split() if w.startswith(prefix) and w[len(prefix) :].isdigit()),
                default)  # fmt: skip


def hidden_of(config: str) -> int:
    """The hidden width of a row, from its label (`... h4096`; encoder_small_flat's 512 when it names none)."""
    return _token(config, "h", 512)


def _merge(base: list[str], ov: list[str]) -> list[str]:
    """base overrides, minus the keys a row sets itself (Hydra refuses a key given twice)."""
    keys = {o.split("=", 1)[0] for o in ov}
    return [b for b in base if b.split("=", 1)[0] not in keys] + list(ov)


def jobs_for(size: int | None, rows, seeds, epochs: int, extra=(), prefix: str = "sweep") -> tuple[list, list]:
    tag = "full" if size is None else str(size)
    cls = [] if size is None else [f"data.n_classes={size}"]
    jobs, keys = [], []
    for s in seeds:  # seed-major: every row has its first seed early
        for label, ov in rows:
            name = f"{prefix}-{tag}-{label.replace(' ', '_')}-s{s}"
            jobs.append((name, [*_merge(base_overrides(epochs), ov), *cls, *extra, f"seed={s}"]))
            keys.append((tag if prefix == "sweep" else f"{tag} ({prefix})", label))
    return jobs, keys


# ---- baselines --------------------------------------------------------------------------------------------------


def pixel_baselines(dm, k: int = 5, chunk: int = 1024) -> dict:
    """Raw-pixel 1-NN (cosine, against every training glyph; a class scores its best glyph) and nearest class
    centroid (cosine to the class's mean training glyph): top-1 and top-k on the test designs."""
    dm.setup("fit")
    tr = dm.train_set.images.reshape(len(dm.train_set), -1)
    ytr, te, yte = dm.train_set.labels, dm.test_set.images.reshape(len(dm.test_set), -1), dm.test_set.labels
    trn = torch.nn.functional.normalize(tr.float(), dim=1).to(torch.bfloat16)
    c = dm.num_classes
    nn1 = nnk = cen1 = cenk = 0
    cent = torch.zeros(c, tr.shape[1]).index_add_(0, ytr, tr.float())
    cent = torch.nn.functional.normalize(cent, dim=1)
    t0 = time.time()
    for a in range(0, len(te), chunk):
        q = torch.nn.functional.normalize(te[a : a + chunk].float(), dim=1)
        y = yte[a : a + chunk]
        s = (q.to(torch.bfloat16) @ trn.T).float()  # bf16 scores: AMX; ranks agree with fp32 but for near-ties
        best = torch.full((len(q), c), -2.0).scatter_reduce_(1, ytr.expand(len(q), -1), s, reduce="amax")
        top = best.topk(k, dim=1).indices
        nn1 += int((top[:, 0] == y).sum())
        nnk += int((top == y[:, None]).any(1).sum())
        top = (q @ cent.T).topk(k, dim=1).indices
        cen1 += int((top[:, 0] == y).sum())
        cenk += int((top == y[:, None]).any(1).sum())
    n = len(te)
    out = {"classes": c, "train_glyphs": len(tr), "test_glyphs": n, "seconds": round(time.time() - t0, 1)}
    return {**out, "nn_top1": nn1 / n, f"nn_top{k}": nnk / n, "centroid_top1": cen1 / n, f"centroid_top{k}": cenk / n}


def part_baselines(a, out: Path) -> dict:
    from lsc.data.han_glyphs import HanGlyphsDataModule

    f = out / ("baselines_smoke.json" if a.smoke else "baselines.json")
    done = json.loads(f.read_text()) if f.exists() else {}
    sizes = ["smoke"] if a.smoke else [str(s) for s in a.sizes] + (["full"] if a.full_baselines else [])
    for tag in sizes:
        if tag in done:
            continue
        kw = dict(cache_dir="data/han_glyphs", max_faces=3, render_workers=2)
        if a.smoke:
            kw = dict(cache_dir=str(out / "glyphs"), font_dirs=list(SMOKE_FONTS), test_designs=["WenQuanYi Micro Hei"],
                      val_designs=[], min_designs=2, n_classes=50)  # fmt: skip
        elif tag != "full":
            kw["n_classes"] = int(tag)
        dm = HanGlyphsDataModule(**kw)
        done[tag] = pixel_baselines(dm)
        if tag == "full" or a.smoke:
            dm.write_manifest(out / ("manifest_smoke.json" if a.smoke else "manifest.json"))
        f.write_text(json.dumps(done, indent=1))
        print(f"  baselines {tag}: {done[tag]}", flush=True)
    return done


# ---- summaries ----------------------------------------------------------------------------------------------------


def curve(r: dict, key: str = "heldout/acc1") -> list[float]:
    return [e[key] for e in r["epochs"] if key in e]


def summarize(by: dict) -> list[dict]:
    raw = []
    for (tag, label), rs in by.items():
        rs = list({r["dir"]: r for r in rs}.values())  # a run two parts share (heads_full's seed 0) counts once
        top1 = [curve(r)[-1] if curve(r) else float("nan") for r in rs]
        top5 = [curve(r, "heldout/acc5")[-1] if curve(r, "heldout/acc5") else float("nan") for r in rs]
        sec = [statistics.median([e["train/epoch_s"] for e in r["epochs"] if "train/epoch_s" in e] or [0]) for r in rs]
        tr = [[e["train/acc"] for e in r["epochs"] if "train/acc" in e][-1:] or [float("nan")] for r in rs]
        e90 = [next((i + 1 for i, v in enumerate(curve(r)) if v >= 0.9), None) for r in rs]
        raw.append({
            "size": tag, "config": label, "seeds": len(rs), "heldout_top1": top1, "heldout_top5": top5,
            "test_at_best_val": [r["metrics"].get("test/acc") for r in rs],
            "val_acc": [r["metrics"].get("val/acc") for r in rs], "train_acc": [t[0] for t in tr],
            "s_per_epoch": sec, "epochs_to_90": e90, "class_state_bytes": rs[0]["metrics"].get("class_state_bytes"),
            "curves": [curve(r) for r in rs], "curves_top5": [curve(r, "heldout/acc5") for r in rs],
            "dirs": [r["dir"] for r in rs], "epochs": len(curve(rs[0])),
        })  # fmt: skip
    return raw


def _pm(xs, digits=1) -> str:
    xs = [x for x in xs if x is not None and x == x]
    if not xs:
        return "—"
    m = 100 * statistics.mean(xs)
    return f"{m:.{digits}f}" + (f" ± {100 * statistics.stdev(xs):.{digits}f}" if len(xs) > 1 else "")


HEADER = ["classes", "config", "seeds", "held-out top-1 %", "held-out top-5 %", "test@val top-1 %", "train acc %",
          "epochs to 90%", "s / epoch", "class state"]  # fmt: skip


def table(raw: list[dict], baselines: dict, n_full: int | None) -> str:
    out = []
    for tag in dict.fromkeys(r["size"] for r in raw):
        rows = sorted((r for r in raw if r["size"] == tag), key=lambda r: -statistics.mean(r["heldout_top1"]))
        n = n_full if tag == "full" else int(tag) if tag.isdigit() else None
        cls = f"{n:,}" if n else tag
        lines = []
        for r in rows:
            e90 = [e for e in r["epochs_to_90"] if e is not None]
            lines.append([cls, r["config"], r["seeds"], _pm(r["heldout_top1"]), _pm(r["heldout_top5"]),
                          _pm(r["test_at_best_val"]), _pm(r["train_acc"]),
                          f"{statistics.median(e90):g}" + ("" if len(e90) == len(r["epochs_to_90"]) else
                                                           f" ({len(e90)}/{len(r['epochs_to_90'])})") if e90 else "—",
                          f"{statistics.mean(r['s_per_epoch']):.0f}", fmt_bytes(r["class_state_bytes"])])  # fmt: skip
        b = baselines.get(tag)
        if b:
            lines.append([cls, "raw-pixel 1-NN (cosine)", "—", f"{100 * b['nn_top1']:.1f}", f"{100 * b['nn_top5']:.1f}",
                          "—", "—", "—", "—", f"{fmt_bytes(b['train_glyphs'] * 1024)} (glyphs)"])  # fmt: skip
            lines.append([cls, "class centroid (cosine)", "—", f"{100 * b['centroid_top1']:.1f}",
                          f"{100 * b['centroid_top5']:.1f}", "—", "—", "—", "—",
                          fmt_bytes(b["classes"] * 1024 * 4)])  # fmt: skip
        epochs = max(r["epochs"] for r in rows)
        out.append(f"#### {cls} classes, {epochs} epochs\n\n" + md_table(HEADER, lines))
    return "\n\n".join(out)


def plot(raw: list[dict], path: Path, n_full: int | None) -> None:
    plt = pyplot()
    tags = list(dict.fromkeys(r["size"] for r in raw))
    fig, axes = plt.subplots(1, len(tags), figsize=(6.5 * len(tags), 4.4), squeeze=False)
    for ax, tag in zip(axes[0], tags, strict=True):
        for r in (r for r in raw if r["size"] == tag):
            cs = [c for c in r["curves"] if c]
            if not cs:
                continue
            m = min(len(c) for c in cs)
            mean = [sum(c[i] for c in cs) / len(cs) for i in range(m)]
            style = "--" if r["config"].startswith(("PFC", "CE")) else "-"
            ax.plot(range(1, m + 1), mean, style, label=f"{r['config']} ({len(cs)})")
        n = n_full if tag == "full" else tag
        ax.set(xlabel="epoch", ylabel="held-out top-1 (test designs)", ylim=(0, 1.01),
               title=f"{n:,} classes" if isinstance(n, int) else f"{n} classes")  # fmt: skip
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    save_figure(fig, path)


def capacity(raw: list[dict], n_full: int | None) -> list[dict]:
    """Data-aware LSC (V^21, softmax s 32 m 0.2, not re-assigned) and Partial FC CosFace d128 rows at 3 epochs,
    by hidden width / classes: 1,000 (capacity), 5,000 (levers) and the full set."""
    sizes = {f"{n} (capacity)": n for n in (CAPACITY_SIZE, CAPACITY_CHECK[0])}
    sizes.update({"5000 (levers)": 5000, "full": n_full})
    out = []
    for r in raw:
        n, words = sizes.get(r["size"]), [w for w in r["config"].split() if w != "fp32"]
        lsc_row = words[0] == "LSC" and words[1] in ("v21@128", "v21@256") and words[2:5] == ["sm32", "m0.2", "data"]
        pfc_row = words[:4] == ["PFC", "cosface", "d128", "r1.0"]
        if not n or r["epochs"] != 3 or not (lsc_row and len(words) <= 6 or pfc_row and len(words) <= 5):
            continue
        h = hidden_of(r["config"])
        out.append({"model": words[0], "classes": n, "hidden": h, "ratio": h / n, "config": r["config"],
                    "precision": "fp32" if "fp32" in r["config"].split() else "bf16", "seeds": r["seeds"],
                    "heldout_top1": statistics.mean(r["heldout_top1"]), "heldout_top1_seeds": r["heldout_top1"],
                    "train_acc_seeds": r["train_acc"]})  # fmt: skip
    return sorted(out, key=lambda c: (c["model"], c["classes"], c["hidden"]))


def capacity_table(cap: list[dict]) -> str:
    head = ["model", "classes", "hidden", "hidden / classes", "seeds", "held-out top-1 %", "train acc %",
            "precision", "config"]  # fmt: skip
    lines = [[c["model"], f"{c['classes']:,}", f"{c['hidden']:,}", f"{c['ratio']:.2f}", c["seeds"],
              _pm(c["heldout_top1_seeds"]), _pm(c["train_acc_seeds"]), c["precision"], c["config"]]
             for c in cap]  # fmt: skip
    return md_table(head, lines)


def capacity_plot(cap: list[dict], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.4))
    for model, style in (("LSC", "o-"), ("PFC", "s--")):
        for n in sorted({c["classes"] for c in cap if c["model"] == model}):
            pts = [c for c in cap if c["model"] == model and c["classes"] == n]
            ax.plot([c["ratio"] for c in pts], [c["heldout_top1"] for c in pts], style,
                    label=f"{'LSC data-aware' if model == 'LSC' else 'Partial FC'}, {n:,} classes")  # fmt: skip
    ax.set(xscale="log", xlabel="hidden width / classes", ylabel="held-out top-1 (3 epochs)", ylim=(0, 1.01),
           title="Held-out accuracy vs the hidden layer's width per class")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def head_params(config: str, n_classes: int, feats: int = 64 * 4 * 4) -> int:
    """Weights of everything after the conv trunk, by the closed form: the head (bottleneck, hidden layers, the map
    to n_dim or to Partial FC's 128-d embedding) plus Partial FC's class weights."""
    pfc = config.startswith("PFC")  # its `d128` is the embedding, not the head's depth
    h, depth, b = hidden_of(config), 1 if pfc else _token(config, "d", 1), _token(config, "b", None)
    out = 128 if pfc else int(config.split()[1].split("@")[1])
    n = (feats * b if b else 0) + ((b or feats) + 1) * h + (depth - 1) * (h + 1) * h + (h + 1) * out
    return n + (n_classes * 128 if pfc else 0)


def heads(raw: list[dict], n_full: int | None) -> list[dict]:
    """LSC data-aware rows with one wide hidden layer, a bottleneck or two hidden layers, at 1,000 classes (widths
    400-1,600) and the full set, beside Partial FC there: held-out top-1 against the head's parameters."""
    sizes = {f"{CAPACITY_SIZE} (capacity)": CAPACITY_SIZE, "full": n_full}
    out = []
    for r in raw:
        n, words = sizes.get(r["size"]), r["config"].split()
        lsc_row = words[0] == "LSC" and words[2:5] == ["sm32", "m0.2", "data"]
        pfc_row = words[:4] == ["PFC", "cosface", "d128", "r1.0"]
        if not n or r["epochs"] != 3 or not (lsc_row or pfc_row) or n == CAPACITY_SIZE and hidden_of(r["config"]) < 400:
            continue
        h, depth = hidden_of(r["config"]), 1 if pfc_row else _token(r["config"], "d", 1)
        out.append({"model": words[0], "classes": n, "hidden": h, "depth": depth,
                    "bottleneck": _token(r["config"], "b", None), "params": head_params(r["config"], n),
                    "config": r["config"], "seeds": r["seeds"], "heldout_top1_seeds": r["heldout_top1"],
                    "train_acc_seeds": r["train_acc"], "s_per_epoch": statistics.mean(r["s_per_epoch"])})  # fmt: skip
    return sorted(out, key=lambda c: (c["classes"], c["model"], c["hidden"], c["depth"], c["bottleneck"] or 0))


def heads_table(rows: list[dict]) -> str:
    head = ["classes", "model", "hidden", "layers", "bottleneck", "head + class weights", "hidden / classes", "seeds",
            "held-out top-1 %", "train acc %", "s / epoch", "config"]  # fmt: skip
    lines = [[f"{c['classes']:,}", c["model"], f"{c['hidden']:,}", c["depth"], c["bottleneck"] or "—",
              f"{c['params'] / 1e6:.2f}M", f"{c['hidden'] / c['classes']:.2f}", c["seeds"],
              _pm(c["heldout_top1_seeds"]), _pm(c["train_acc_seeds"]), f"{c['s_per_epoch']:.0f}", c["config"]]
             for c in rows]  # fmt: skip
    return md_table(head, lines)


# ---- main ---------------------------------------------------------------------------------------------------------


LSC_ROW, PFC_ROW = "LSC v21@128 sm32 m0.2 keyed", "PFC cosface d128 r1.0"


def best(rows: list[dict], prefix: str) -> str:
    rows = [r for r in rows if r["config"].startswith(prefix)]
    return max(rows, key=lambda r: statistics.mean(r["heldout_top1"]))["config"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parts = ["all", "baselines", "levers", "capacity", "heads", "heads_full", "full_seeds", "headline", "small",
             "sweep", "seeds", "full", "report"]  # fmt: skip
    p.add_argument("--part", choices=parts, default="all")
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lever-epochs", type=int, default=3)
    p.add_argument("--full-epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, default=3, help="seeds of the headline rows (seeds and full parts)")
    p.add_argument("--full-rows", nargs="+", default=["lsc", "pfc", "ce"], choices=["lsc", "pfc", "ce", "lsc2"])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (2 for one run alone on 2 cores)")
    p.add_argument("--ckpt-every", type=int, default=500, help="last.ckpt every N steps too: a killed run loses less")
    p.add_argument("--no-full-baselines", dest="full_baselines", action="store_false",
                   help="baselines at --sizes only (the full set's 1-NN takes minutes)")  # fmt: skip
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--readme", action="store_true", help="only rewrite README.md from the committed results")
    a = p.parse_args(argv)
    if a.readme:
        return write_readme(HERE, README)
    out, t0 = Path(a.out), time.time()
    out.mkdir(parents=True, exist_ok=True)
    runs = out / ("runs_smoke" if a.smoke else "runs")
    parts = parts[1:-1] if a.part == "all" else [a.part]  # every part but all and report
    if a.smoke:
        parts = ["baselines", "smoke"]
    baselines = part_baselines(a, out) if "baselines" in parts or a.part in ("all", "report") else {}
    jobs, keys = [], []
    if "smoke" in parts:
        extra = [*SMOKE_DATA, f"data.cache_dir={out / 'glyphs'}", "data.n_classes=50", "trainer.precision=32-true",
                 "model.channels_last=false"]  # fmt: skip
        rows = [r for r in sweep_rows(50) if r[0] in ("LSC v21@128 sm32 m0.2 keyed", "PFC cosface d128 r1.0")]
        j, k = jobs_for(None, rows, [0], 2, extra)
        jobs, keys = j, [("smoke", lab) for _, lab in k]
    small = [1000] if 1000 in a.sizes else []
    sweep_size = max(s for s in a.sizes) if a.sizes else 5000
    levers = lever_rows(runs, sweep_size, a.lever_epochs)
    lever_jobs = jobs_for(sweep_size, levers, [0], a.lever_epochs, prefix="levers") if not a.smoke else ([], [])
    if "levers" in parts or a.part == "report":
        jobs, keys = jobs + lever_jobs[0], keys + lever_jobs[1]
    if ("capacity" in parts or a.part == "report") and not a.smoke:
        j, k = capacity_jobs(a.lever_epochs)
        jobs, keys = jobs + j, keys + k
    if ("heads" in parts or a.part == "report") and not a.smoke:
        j, k = jobs_for(CAPACITY_SIZE, head_rows(), [0], a.lever_epochs, prefix="capacity")
        jobs, keys = jobs + j, keys + k
    if ("heads_full" in parts or a.part == "report") and not a.smoke:  # V_128^21 holds 16,256 classes: V_256^21
        j, k = jobs_for(None, head_rows(HEAD_FULL, 256), [0], a.lever_epochs)
        jobs, keys = jobs + j, keys + k
    if ("full_seeds" in parts or a.part == "report") and not a.smoke:
        j, k = full_seed_jobs(SEEDS[: a.seeds], a.lever_epochs)
        jobs, keys = jobs + j, keys + k
    if ("headline" in parts or a.part == "report") and not a.smoke:
        j, k = jobs_for(sweep_size, headline_rows(), SEEDS[: a.seeds], a.lever_epochs, prefix="headline")
        jobs, keys = jobs + j, keys + k
    if "small" in parts:
        for size in small:
            j, k = jobs_for(size, small_rows(size), [0], a.epochs)
            jobs, keys = jobs + j, keys + k
    if "sweep" in parts or a.part == "report":
        j, k = jobs_for(sweep_size, sweep_rows(sweep_size), [0], a.epochs)
        jobs, keys = jobs + j, keys + k

    def go(jobs):  # run (cached runs are read back), or for the report only read what has run
        return run_many(runs, jobs, a.workers, a.threads, a.ckpt_every) if a.part != "report" else _cached(runs, jobs)

    by: dict = {}
    if jobs:
        done = go(jobs)
        for key, r in zip(keys, done, strict=True):
            if r is not None:
                by.setdefault(key, []).append(r)
    if {"seeds", "full"} & set(parts) and "levers" not in parts:  # the picks come from the lever runs done so far
        for key, r in zip(lever_jobs[1], _cached(runs, lever_jobs[0]), strict=True):
            if r is not None:
                by.setdefault(key, []).append(r)
    raw = summarize(by)
    more_parts = {"seeds", "full"} & set(parts) or a.part == "report"
    if more_parts and not a.smoke:
        tag = str(sweep_size)
        # the headline rows: the best LSC and Partial FC rows of the lever runs (same short budget), else the sweep's
        pool = [r for r in raw if r["size"] == f"{tag} (levers)"] or [r for r in raw if r["size"] == tag]
        picks = [best(pool, "LSC"), best(pool, "PFC")] if pool else [LSC_ROW, PFC_ROW]
        every = dict(sweep_rows(sweep_size) + levers)
        seeds = SEEDS[: a.seeds]
        # the headline rows' seeds at the lever budget (seed 0 is the lever run itself)
        jobs, keys = jobs_for(sweep_size, [(p, every[p]) for p in picks], seeds, a.lever_epochs, prefix="levers")
        if "seeds" in parts or a.part == "report":
            res = go(jobs)
            by = {k: v for k, v in by.items() if k[1] not in picks or k[0] != f"{tag} (levers)"}
            for key, r in zip(keys, res, strict=True):
                if r is not None:
                    by.setdefault(key, []).append(r)
        want = {"lsc": picks[0], "pfc": picks[1], "ce": "CE"}
        jobs, keys = [], []
        labels = [want[x] for x in a.full_rows if x in want]
        if a.part == "report":  # every full-set run done so far (the picks move as lever rows are added)
            labels += list(every)
        for label in dict.fromkeys(labels):
            ov = every[label]
            if "centers.n_dim=128" in ov:  # V_128^21 holds 16,256 classes: the full set (~20,900) takes V_256^21
                label, ov = label.replace("@128", "@256"), [o.replace("=128", "=256") for o in ov]
            j, k = jobs_for(None, [(label, ov)], [0] if label == "CE" else seeds, a.full_epochs)
            jobs, keys = jobs + j, keys + k
        if "full" in parts or a.part == "report":
            res = go(jobs)
            for key, r in zip(keys, res, strict=True):
                if r is not None:
                    by.setdefault(key, []).append(r)
        raw = summarize(by)
    if not raw:
        print("no runs yet")
        return
    n_full = (baselines.get("full") or {}).get("classes")
    name = "han_glyphs_smoke" if a.smoke else "han_glyphs"
    text = (f"### Held-out type designs: top-1 / top-5 on glyphs of designs never trained on ({machine()}; "
            f"{wall_note(t0, [r for rs in by.values() for r in rs])})\n\n" + table(raw, baselines, n_full) +
            "\n\nHeld-out: the last epoch's accuracy on the 4 test designs (no selection on them); test@val: the test "
            "designs scored on the checkpoint the validation designs chose; train acc: running, last epoch (with "
            "augmentation: on augmented glyphs). s / epoch: median, two runs sharing the 2 cores. Class state: what "
            "grows with the classes (Partial FC / CE: weights + AdamW moments; LSC keyed: nothing; data-assigned: its "
            "table). Baselines: memory is the glyphs (1-NN) or centroids they keep.")  # fmt: skip
    cap = [] if a.smoke else capacity(raw, n_full)
    if cap:
        text += (
            "\n\n### Held-out top-1 vs hidden width per class (3 epochs)\n\n"
            + capacity_table(cap)
            + "\n\nLSC: V_128^21 (V_256^21 at the full set), data-aware, full-system softmax s 32 m 0.2; "
            "Partial FC: CosFace d128, sample rate 1.0; the same encoder_small_flat, the hidden width shown."
        )
        capacity_plot(cap, out / f"{name}_capacity.png")
        (out / f"{name}_capacity.json").write_text(json.dumps(cap, indent=1) + "\n")
    hd = [] if a.smoke else heads(raw, n_full)
    if any(c["depth"] > 1 or c["bottleneck"] for c in hd):
        text += (
            "\n\n### Cheaper heads: a bottleneck before the wide hidden layer, or two hidden layers (3 epochs)\n\n"
            + heads_table(hd)
            + "\n\nhead + class weights: the weights after the conv trunk (64 x 4 x 4 = 1,024 features): bottleneck, "
            "hidden layers and the map to n_dim (LSC) or to the 128-d embedding plus 128 per class (Partial FC)."
        )
        (out / f"{name}_heads.json").write_text(json.dumps(hd, indent=1) + "\n")
    print(text)
    write_results(out, name, text, raw)
    plot(raw, out / f"{name}.png", n_full)
    if not a.smoke and out == HERE / "results":  # every part, report included
        write_readme(HERE, README)


def _cached(runs: Path, jobs) -> list:
    """Finished runs only (report): None for a job that has not run."""
    from lsc.study.runs import epochs, run_dir, run_wall

    res = []
    for name, ov in jobs:
        d = run_dir(runs, name, ov)
        if not (d / "metrics.json").exists():
            res.append(None)
            continue
        m = json.loads((d / "metrics.json").read_text())
        res.append({"name": name, "overrides": ov, "dir": str(d), "metrics": m, "wall_s": run_wall(d, m),
                    "epochs": epochs(d)})  # fmt: skip
    return res


if __name__ == "__main__":
    main()
