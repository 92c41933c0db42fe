"""Small helpers the experiment scripts share: markdown tables, result files, the machine string."""

from __future__ import annotations

import json
import math
import os
import platform
import re
from pathlib import Path

import torch


def machine(device: str = "cpu") -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}"


def pyplot():
    """matplotlib.pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot().close(fig)


def md_table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def fmt_num(x, digits=3):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:.{digits}g}"


def fmt_bytes(x):
    if x is None:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(x) < 1024 or unit == "TiB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024


def write_results(out_dir: Path, name: str, markdown: str, raw) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.md").write_text(markdown + "\n")
    (out_dir / f"{name}.json").write_text(json.dumps(raw, indent=1, default=str) + "\n")


RESULT_BLOCK = re.compile(r"(<!-- RESULT (\S+) -->\n)(.*?)(<!-- /RESULT -->)", re.S)


def fill_results(text: str, base: Path) -> str:
    """Every `<!-- RESULT path -->` ... `<!-- /RESULT -->` block of `text` replaced by that table file (path
    relative to `base`), its own heading turned into a bold caption; a missing file says so in place."""

    def fill(m):
        src = base / m.group(2)
        body = src.read_text().strip() if src.exists() else f"(missing: {m.group(2)}: run the experiment)"
        body = re.sub(r"^###+ ", "**", body, count=1, flags=re.M)
        first, _, rest = body.partition("\n")
        if first.startswith("**"):
            body = first + "**\n" + rest
        return m.group(1) + body + "\n" + m.group(4)

    return RESULT_BLOCK.sub(fill, text)


def write_readme(exp_dir: Path, text: str) -> Path:
    """experiments/<name>/README.md: the experiment's own text (what it measures, how to run it, its readings) with
    its result tables filled in from the files it wrote next to its JSON. Written atomically (tmp + rename)."""
    exp_dir = Path(exp_dir)
    out = exp_dir / "README.md"
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text(fill_results(text.strip() + "\n", exp_dir))
    os.replace(tmp, out)
    return out


def plot_curves(curves: dict, path, style, title: str = "", ylabel: str = "training accuracy") -> None:
    """One panel per class count: the seed-mean curve of every config. curves: {(size, label): [per-seed curve]};
    style(label) -> matplotlib line style."""
    plt = pyplot()
    sizes = sorted({s for s, _ in curves})
    fig, axes = plt.subplots(1, len(sizes), figsize=(6.5 * len(sizes), 4.2), squeeze=False)
    for ax, size in zip(axes[0], sizes, strict=True):
        for (s, label), cs in curves.items():
            if s != size or not cs or not cs[0]:
                continue
            n = min(len(c) for c in cs)
            mean = [sum(c[i] for c in cs) / len(cs) for i in range(n)]
            ax.plot(range(1, n + 1), mean, style(label), label=label)
        ax.set(xlabel="epoch", ylabel=ylabel)
        ax.set_title(f"{size:,} instance classes" + (f"\n{title}" if title else ""), fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    save_figure(fig, path)
