"""How much of fmnist_grid's class structure do LSC's centers keep? (README "Centers that follow the classes")

A class is a tuple of k tile labels, so what a backbone can share between classes is per-tile: a target that is a
linear function of the tiles' labels is learnable from tile features, an arbitrary one has to be memorized class by
class. For each way of building the 10^4 centers (k = 4) this fits the unit centers by least squares from the 40-wide
one-hot of the tile labels (+ a bias) and reports R^2: 0 for unrelated points, 1 for centers that are a sum of
per-tile vectors. Rows: keyed (seeded order), and the data-aware assignment (`centers.assign=data`) from pixel
prototypes of 1 or 16 training grids per class (`data.prototype_draws`), onto V^22 and the denser V^44 at n_dim 16.

    python experiments/scale_1m/center_structure.py     # ~2 min on one core: results/center_structure.{md,json,png}
    python experiments/scale_1m/center_structure.py --plot   # only the PNG, from the committed JSON
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from lsc.data.fmnist_grid import FashionMNISTGridDataModule
from lsc.study.report import md_table, pyplot, save_figure
from lsc.train import build_centers

HERE = Path(__file__).resolve().parent
ROWS = [("v22", "keyed", 1), ("v22", "data", 1), ("v44", "data", 1), ("v22", "data", 16), ("v44", "data", 16)]


def tile_r2(centers: np.ndarray, k: int) -> float:
    """R^2 of the least-squares fit of the unit centers from the classes' tile-label one-hots (+ bias)."""
    n = len(centers)
    c = np.arange(n)
    x = np.zeros((n, 10 * k + 1))
    x[:, -1] = 1
    for j in range(k):
        x[c, 10 * j + (c // 10**j) % 10] = 1
    y = centers / np.linalg.norm(centers, axis=1, keepdims=True)
    w, *_ = np.linalg.lstsq(x, y, rcond=None)
    return float(1 - ((x @ w - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())


def plot(rows: list[dict], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    labels = [f"{r['system']} {r['assign']}" + (f", {r['prototype_draws']} grid(s)" if r["prototype_draws"] else "")
              for r in rows]  # fmt: skip
    ax.barh(range(len(rows)), [r["r2"] for r in rows], color="C0")
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="R^2 from the tile labels (1: a sum of per-tile vectors)",
           title="How linear in the tile labels are the 10^4 centers?")  # fmt: skip
    ax.grid(alpha=0.3, axis="x")
    save_figure(fig, path)


def main(k: int = 4, n_dim: int = 16) -> None:
    torch.set_num_threads(1)
    rows = []
    for system, assign, draws in ROWS:
        t0 = time.time()
        dm = FashionMNISTGridDataModule(k=k, seed=0, prototype_draws=draws)
        cfg = OmegaConf.create({"system": system, "n_dim": n_dim, "assign": assign, "prototype_cache": None})
        cc = build_centers(cfg, dm.num_classes, dm)
        r2 = tile_r2(cc.bank(torch.arange(dm.num_classes)).double().numpy(), k)
        draws = draws if assign == "data" else None
        rows.append({"system": cc.system.display, "assign": assign, "prototype_draws": draws, "r2": r2,
                     "seconds": round(time.time() - t0, 1)})  # fmt: skip
        print(rows[-1], flush=True)
    head = ["centers", "assignment", "grids per class in the prototype", "R^2 from the tile labels"]
    body = [[r["system"], r["assign"], r["prototype_draws"] or "—", f"{r['r2']:.2f}"] for r in rows]
    text = (f"### How linear in the tile labels are the centers? (fmnist_grid, 10^{k} classes, n_dim {n_dim})\n\n"
            + md_table(head, body))  # fmt: skip
    out = HERE / "results"
    (out / "center_structure.md").write_text(text + "\n")
    (out / "center_structure.json").write_text(json.dumps({"k": k, "n_dim": n_dim, "rows": rows}, indent=1) + "\n")
    plot(rows, out / "center_structure.png")
    print(text)


if __name__ == "__main__":
    import sys

    if "--plot" in sys.argv:
        plot(json.loads((HERE / "results" / "center_structure.json").read_text())["rows"],
             HERE / "results" / "center_structure.png")  # fmt: skip
    else:
        main()
