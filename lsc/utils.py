"""Run plumbing: config resolvers, seeding, metrics.json and the one-line run summary."""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from pathlib import Path

import torch
from omegaconf import OmegaConf

log = logging.getLogger("lsc")


def register_resolvers() -> None:
    # wandb never prompts: offline unless the user asked for online (WANDB_MODE=online)
    if not OmegaConf.has_resolver("lsc_wandb_offline"):
        OmegaConf.register_new_resolver("lsc_wandb_offline", lambda: os.environ.get("WANDB_MODE", "") != "online")


def quiet_lightning() -> None:
    """A first run shows the progress bar and the result line: drop Lightning's tips, device banners and a
    deprecation warning raised inside Lightning itself (nothing a user can act on). Warnings stay on."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*'set_vital' is deprecated.*")


def to_float_dict(metrics: dict) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
            out[k] = float(v)
    return dict(sorted(out.items()))


def save_json(path: str | Path, obj) -> None:
    """Write JSON atomically (temp file + rename), so a killed run never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


SUMMARY_KEYS = ("val/acc_cossim", "val/acc_topk", "val/acc", "test/acc_cossim", "test/acc_topk", "test/acc")


def summary_line(metrics: dict[str, float], extra: dict | None = None) -> str:
    """`lsc: key=value ...` with the headline metrics first."""
    keys = [k for k in SUMMARY_KEYS if k in metrics] + [
        k for k in ("val/loss", "train/acc_topk", "train/acc", "val/agreement") if k in metrics
    ]
    parts = [f"{k}={metrics[k]:.4f}" for k in keys]
    parts += [f"{k}={v}" for k, v in (extra or {}).items()]
    return "lsc: " + " ".join(parts)
