"""Rewrite every experiment's README.md from its committed results, so every number there comes from a results file.

    python experiments/update_readme.py

Each experiment writes its own `experiments/<name>/README.md` (its text, with `<!-- RESULT results/x.md -->` blocks
filled from the tables it wrote next to its JSON) at the end of a full run; `--readme` does only that. This runs
`--readme` for every one: `experiments/<name>/run.py`, and `python -m lsc.bench.<x>` for `experiments/bench_<x>`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[list[str]]:
    cmds = []
    for d in sorted(p for p in (ROOT / "experiments").iterdir() if p.is_dir() and (p / "results").is_dir()):
        if (d / "run.py").is_file():
            cmds.append([sys.executable, str(d / "run.py"), "--readme"])
        elif d.name.startswith("bench_"):
            cmds.append([sys.executable, "-m", f"lsc.bench.{d.name.removeprefix('bench_')}", "--readme"])
    return cmds


def main() -> None:
    for cmd in readme_commands():
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        print("updated:", " ".join(cmd[1:]))


if __name__ == "__main__":
    main()
