"""One training step of LSC vs CE at a given class count: parameters, peak memory, time per step; `run_probe`
runs it in its own subprocess per point (CPU), in-process on CUDA.

    python -m lsc.bench.train_step --method lsc --classes 1e6 --batch 32 [--backbone encoder --img 32] [--device cuda]

Prints one JSON line. Used by experiments/memory_vs_classes and experiments/train_speed_vs_classes, one
subprocess per point on CPU so that peak RSS (VmHWM) belongs to that point alone.
LSC: backbone -> n_dim (V^22 at n_min), cosine loss to centers gathered per batch (no n_classes-sized tensor).
CE: the same backbone whose last layer outputs n_classes logits, cross-entropy.
Partial FC (`pfc<sample_rate>`, e.g. pfc1.0, pfc0.1): backbone -> 128-dim embedding, n_classes x 128 learned class
weights, CosFace over the batch's classes plus a sample of the others. All: AdamW.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from lsc.centers import ClassCenters, n_min
from lsc.losses import CosineLoss
from lsc.models import PartialFCHead, encoder_backbone, timm_backbone

PFC_EMBED = 128  # Partial FC's embedding width in the probes (insightface uses 512; 128 is kinder to it)
METHODS = ("lsc", "ce", "pfc1.0", "pfc0.1")


def rss(field="VmHWM") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def reset_peak(cuda: bool) -> int:
    """Start a new peak-memory window; returns the current usage (the window's baseline)."""
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    return rss("VmRSS")


def peak_now(cuda: bool) -> int:
    if cuda:
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    return rss("VmHWM")


def build(method: str, n_classes: int, backbone: str, img: int, device):
    if method == "lsc":
        cc = ClassCenters("v22", n_classes, n_dim=n_min("v22", n_classes))
        out = cc.n_dim
    elif method.startswith("pfc"):
        cc, out = PartialFCHead(n_classes, PFC_EMBED, sample_rate=float(method[3:])).to(device), PFC_EMBED
    else:
        cc, out = None, n_classes
    if backbone == "vit_s":
        net = timm_backbone("vit_small_patch16_224", out_dim=out, img_size=img, patch_size=16 if img >= 64 else 4)
    else:
        net = encoder_backbone(out, size=backbone.removeprefix("encoder_") if "_" in backbone else "base")
    return net.to(device), cc


def probe(
    method, n_classes, batch, backbone="encoder", img=32, steps=3, device="cpu", dtype=None, compile=False
) -> dict:
    device = torch.device(device)
    torch.manual_seed(0)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = rss("VmRSS")
    net, cc = build(method, n_classes, backbone, img, device)
    params_of = net
    if compile:  # model.compile: backbone and loss (compiled in the untimed first step)
        net = torch.compile(net)
    params = list(params_of.parameters()) + (list(cc.parameters()) if isinstance(cc, torch.nn.Module) else [])
    n_params = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-5)
    loss_fn = torch.compile(CosineLoss()) if compile else CosineLoss()
    x = torch.randn(batch, 3, img, img, device=device)
    y = torch.randint(0, n_classes, (batch,), device=device)
    times = []
    for _ in range(steps + 1):  # the first step allocates optimizer state; not timed
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = _loss(net, loss_fn, cc, x, y, device, dtype)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak = peak_now(cuda) - base
    # One more step in two peak windows: forward + backward (grows with the batch: activations, logits) and the
    # optimizer step (does not: AdamW's temporaries are parameter-sized). The whole-step peak is the larger of the
    # two, so it is not linear in the batch; the largest batch under a cap needs them apart.
    peak_mem = _phases(net, opt, loss_fn, cc, x, y, device, dtype, cuda, base) if _windows_ok(cuda) else None
    t = min(times[1:]) if len(times) > 1 else times[0]
    return {
        "method": method,
        "n_classes": n_classes,
        "batch": batch,
        "backbone": backbone,
        "img": img,
        "params": n_params,
        "peak_bytes": peak,
        "peak_fwd_bwd_bytes": peak_mem[0] if peak_mem else None,
        "peak_opt_bytes": peak_mem[1] if peak_mem else None,
        "step_s": t,
        "images_per_s": batch / t,
        "loss": float(loss.detach()),
        "compiled": bool(compile),
    }


def _loss(net, loss_fn, cc, x, y, device, dtype):
    """LSC: cosine loss to the gathered centers; CE: cross-entropy over the n_classes logits; PFC: its head."""
    with torch.autocast(device.type, torch.bfloat16, enabled=dtype == "bf16"):
        out = net(x)
        if isinstance(cc, PartialFCHead):
            return cc(out, y)
        return loss_fn(out, y, cc) if cc is not None else F.cross_entropy(out.float(), y)


def _windows_ok(cuda: bool) -> bool:
    return cuda or Path("/proc/self/clear_refs").exists()


def _phases(net, opt, loss_fn, cc, x, y, device, dtype, cuda, base):
    opt.zero_grad(set_to_none=True)
    reset_peak(cuda)
    loss = _loss(net, loss_fn, cc, x, y, device, dtype)
    loss.backward()
    fwd_bwd = peak_now(cuda) - base
    del loss
    reset_peak(cuda)
    opt.step()
    return fwd_bwd, peak_now(cuda) - base


ADAM_BYTES_PER_PARAM = 16  # fp32 weight + grad + two AdamW moments


def head_params(method: str, n_classes: int, features: int, n_dim: int) -> int:
    """Parameters that depend on the method: CE's last layer, LSC's n_dim-wide one, Partial FC's embedding layer
    plus its n_classes x 128 class weights."""
    if method.startswith("pfc"):
        return (features + 1) * PFC_EMBED + n_classes * PFC_EMBED
    return (features + 1) * (n_classes if method == "ce" else n_dim)


def run_probe(
    method, n_classes, batch, device="cpu", backbone="encoder", img=32, steps=3, threads=2, dtype=None, compile=False
):
    if device.startswith("cuda"):
        try:
            return probe(method, n_classes, batch, backbone, img, steps, device, dtype, compile)
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
    if compile:
        cmd += ["--compile"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        if out.returncode in (-9, 137):  # OOM-killed
            return None
        raise RuntimeError(f"probe failed: {' '.join(cmd)}\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--method", choices=METHODS, required=True)
    p.add_argument("--classes", type=float, required=True)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--backbone", default="encoder")
    p.add_argument("--img", type=int, default=32)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None)
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone and the loss")
    a = p.parse_args(argv)
    r = probe(a.method, int(a.classes), a.batch, a.backbone, a.img, a.steps, a.device, a.dtype, a.compile)
    print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
