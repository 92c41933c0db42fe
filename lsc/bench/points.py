"""Run `lsc.bench.train_step` probes: one subprocess per point on CPU (its own peak RSS), in-process on CUDA."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ADAM_BYTES_PER_PARAM = 16  # fp32 weight + grad + two AdamW moments


def head_params(method: str, n_classes: int, features: int, n_dim: int) -> int:
    """Parameters that depend on the method: CE's last layer, LSC's n_dim-wide one, Partial FC's embedding layer
    plus its n_classes x 128 class weights."""
    if method.startswith("pfc"):
        from lsc.bench.train_step import PFC_EMBED

        return (features + 1) * PFC_EMBED + n_classes * PFC_EMBED
    return (features + 1) * (n_classes if method == "ce" else n_dim)


def run_probe(method, n_classes, batch, device="cpu", backbone="encoder", img=32, steps=3, threads=2, dtype=None):
    if device.startswith("cuda"):
        import torch

        from lsc.bench.train_step import probe

        try:
            return probe(method, n_classes, batch, backbone, img, steps, device, dtype)
        except torch.OutOfMemoryError:
            return None
        finally:
            torch.cuda.empty_cache()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    # glibc's adaptive mmap threshold keeps freed tensors in the heap, so RSS would lag behind live memory; a fixed
    # threshold returns every large tensor to the OS when freed and peak RSS tracks what is alive
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(1 << 17))
    cmd = [
        sys.executable,
        "-m",
        "lsc.bench.train_step",
        "--method",
        method,
        "--classes",
        str(n_classes),
        "--batch",
        str(batch),
        "--backbone",
        backbone,
        "--img",
        str(img),
        "--steps",
        str(steps),
    ]
    if dtype:
        cmd += ["--dtype", dtype]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        if out.returncode in (-9, 137):  # OOM-killed
            return None
        raise RuntimeError(f"probe failed: {' '.join(cmd)}\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
