"""Many classes that generalize: printed Han characters, tested on type designs never trained on.

    python experiments/han_glyphs/run.py --part explore    # 1,000 classes: rendering and augmentation
    python experiments/han_glyphs/run.py --smoke           # seconds (CI)

(work in progress)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lsc.bench.runs import run_many
from lsc.centers import n_min

HERE = Path(__file__).parent


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


def part_explore(a):
    size, epochs = 1000, a.epochs
    m = n_min("v22", size)
    lsc = ["centers=v22", f"centers.n_dim={m}"]
    pfc = ["model=partial_fc", "model.embed_dim=128"]
    aug = ["data.augment=[affine,stroke,blur]"]

    rows = [
        ("lsc center", lsc),
        ("pfc center", pfc),
        ("lsc v22@10 sm16", lsc + sm(16, 0)),
        ("lsc v22@10 sm32m0.2", lsc + sm(32, 0.2)),
        ("lsc v21@64 sm32m0.2", ["centers=v21", "centers.n_dim=64", *sm(32, 0.2)]),
        ("lsc v21@128 sm32m0.2", ["centers=v21", "centers.n_dim=128", *sm(32, 0.2)]),
        ("pfc center aug", pfc + aug),
    ]
    return [(f"explore-{size}-{lab.replace(' ', '_')}-s0", [*base_overrides(epochs), *ov, f"data.n_classes={size}",
                                                            "seed=0"]) for lab, ov in rows]  # fmt: skip


def sm(scale, margin, negatives="system"):
    out = ["loss=softmax", f"loss.scale={scale}", f"loss.margin={margin}"]
    return out + (["loss.negatives=labeled"] if negatives == "labeled" else [])


AUG = ["data.augment=[affine,stroke,blur]"]


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


def part_sweep(a):
    size = a.size
    return [(f"sweep-{size}-{lab.replace(' ', '_')}-s0", [*base_overrides(a.epochs), *ov, f"data.n_classes={size}",
                                                          "seed=0"]) for lab, ov in sweep_rows(size)]  # fmt: skip


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["explore", "sweep"], default="explore")
    p.add_argument("--size", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=str(HERE / "results"))
    a = p.parse_args(argv)
    t0 = time.time()
    jobs = {"explore": part_explore, "sweep": part_sweep}[a.part](a)
    run_many(Path(a.out) / "runs", jobs, workers=a.workers)
    print(f"done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
