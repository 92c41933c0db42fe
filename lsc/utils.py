"""Run plumbing: config resolvers, seeding, metrics.json and the one-line run summary."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import warnings
from pathlib import Path

import torch
from omegaconf import OmegaConf

log = logging.getLogger("lsc")


def positive_int(name: str, value, allow_none: bool = False, hint: str = ""):
    """value, if it is an int >= 1 (or None where allowed); else a ValueError naming the setting."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        what = " or null" if allow_none else ""
        raise ValueError(f"{name} must be a positive integer{what}{f' ({hint})' if hint else ''}, got {value!r}")
    return value


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


# the environments that choose the rendezvous themselves (a launcher, a scheduler, or a rank started by Lightning)
_RENDEZVOUS_SET = ("MASTER_PORT", "LOCAL_RANK", "WORLD_SIZE", "SLURM_PROCID", "TORCHELASTIC_RUN_ID")


def set_local_rendezvous_port() -> int | None:
    """For a single-node DDP run that Lightning launches itself: MASTER_PORT = a free port BELOW the kernel's
    ephemeral range. Lightning's default is a free ephemeral port, closed and bound again by rank 0 only after rank
    1 has started connecting to it; under load, rank 1's retried connect can be given that very port as its own
    source port (TCP self-connect), and rank 0 fails with EADDRINUSE. A port outside the ephemeral range is never a
    source port. Returns the port, or None where the environment sets the rendezvous (or no port was free)."""
    import random
    import socket

    if any(k in os.environ for k in _RENDEZVOUS_SET):
        return None
    lo = 32768
    with contextlib.suppress(OSError, ValueError):
        lo = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    for _ in range(64):
        port = rng.randrange(20000, max(20001, lo))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("", port))
            except OSError:
                continue
        os.environ["MASTER_PORT"] = str(port)
        return port
    return None
