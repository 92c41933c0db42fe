"""n_min and max_cos of every system for 1k .. 100M classes (arXiv 2512.07509's table at our scale).

    python experiments/nmin_table/run.py [--smoke]

Printed from the library (no training): n_min from `lsc.centers.n_min`, max_cos from the system itself (exact
best-first search), the papers' numbers beside ours where they exist.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lsc.centers import make_system, n_min
from lsc.study.report import md_table, pyplot, save_figure, write_readme, write_results

HERE = Path(__file__).parent
README = """
# n_min and max_cos per system

n_min is the smallest n_dim whose system holds n_classes vectors; max_cos the largest cosine between two of its
vectors (how close two class centers may sit). Printed from the library, no training: n_min from
`lsc.centers.n_min`, max_cos from the system itself (exact best-first search), the papers' numbers beside ours.

```bash
python experiments/nmin_table/run.py          # seconds; --smoke: three systems, three class counts (CI)
```

Every n_min the papers print is reproduced (V^22 for 1k…100M classes; A_n + interpolation 67/85/109).

<!-- RESULT results/nmin_table.md -->
<!-- /RESULT -->

![n_min vs n_classes](results/nmin_table.png)
"""

SYSTEMS = ["v11", "v21", "v22", "v31", "v32", "v33", "a_n", "a_np", "a_n_interp", "v21p", "v22p"]
CLASSES = [
    1_000,
    5_000,
    50_000,
    300_000,
    600_000,
    1_000_000,
    1_281_167,
    5_000_000,
    10_000_000,
    20_000_000,
    30_000_000,
    50_000_000,
    100_000_000,
]
# numbers printed in the papers: (system, n_classes) -> n_min
PAPER = {
    ("v22", 1_000): 10,
    ("v22", 50_000): 23,
    ("v22", 1_000_000): 47,
    ("v22", 5_000_000): 69,
    ("v22", 10_000_000): 82,
    ("v22", 20_000_000): 97,
    ("v22", 30_000_000): 107,
    ("v22", 50_000_000): 121,
    ("v22", 100_000_000): 143,  # arXiv 2604.00779 Tables 1-3
    ("a_n_interp", 300_000): 67,
    ("a_n_interp", 600_000): 85,
    ("a_n_interp", 1_281_167): 109,  # 2510.04090 5.4
}


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--smoke", action="store_true", help="three class counts, three systems (CI)")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--readme", action="store_true", help="only rewrite README.md from the committed results")
    args = p.parse_args(argv)
    if args.readme:
        return write_readme(HERE, README)
    systems, classes = (SYSTEMS[:3], CLASSES[:3]) if args.smoke else (SYSTEMS, CLASSES)
    t0 = time.time()
    raw, rows, mismatches = [], [], []
    for s in systems:
        row = [f"`{s}`"]
        for nc in classes:
            n = n_min(s, nc)
            sysm = make_system(s, n)
            paper = PAPER.get((s, nc))
            raw.append({"system": s, "n_classes": nc, "n_min": n, "count": sysm.count, "paper_n_min": paper})
            if paper is not None and paper != n:
                mismatches.append((s, nc, n, paper))
            row.append(f"{n} (paper {paper})" if paper is not None else str(n))
        row.insert(1, f"{make_system(s, 12).max_cos:.4f}")
        rows.append(row)
    header = ["system", "max_cos (n=12)"] + [f"{c:,}" for c in classes]
    md = (
        "### n_min (smallest n_dim holding n_classes vectors) and max_cos per system\n\n"
        + md_table(header, rows)
        + f"\n\nPaper values in parentheses; mismatches: {mismatches or 'none'}. Computed in {time.time() - t0:.1f} s."
        "\nmax_cos depends only on the system family (it is the same for every n large enough), shown at n = 12."
    )
    print(md)
    name = "nmin_table_smoke" if args.smoke else "nmin_table"
    write_results(Path(args.out), name, md, raw)
    plot(raw, Path(args.out) / f"{name}.png")
    if not args.smoke and Path(args.out) == HERE / "results":
        write_readme(HERE, README)
    if mismatches:
        raise SystemExit(f"n_min differs from the papers: {mismatches}")


def plot(raw, path: Path) -> None:
    """n_min vs n_classes per system (log x), the papers' values as black crosses."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, s in enumerate(dict.fromkeys(r["system"] for r in raw)):
        pts = [(r["n_classes"], r["n_min"]) for r in raw if r["system"] == s]
        ax.plot(*zip(*pts, strict=True), marker="o", ms=3, ls="-" if i < 10 else "--", label=s)  # 10 colors
    paper = [(r["n_classes"], r["paper_n_min"]) for r in raw if r["paper_n_min"] is not None]
    if paper:
        ax.scatter(*zip(*paper, strict=True), marker="x", color="black", zorder=3, label="papers")
    ax.set(xscale="log", yscale="log", xlabel="n_classes", ylabel="n_min (smallest n_dim)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    save_figure(fig, path)


if __name__ == "__main__":
    main()
