"""Per-class prototype embeddings in R^n_dim, the input of the data-aware assignment (`lsc.centers.assignment`).

  pixels      a fixed seeded Gaussian projection of the class's mean image minus the dataset's mean image
              (images at the eval transform, average-pooled to at most `size` x `size`): no backbone, one pass
  checkpoint  the class-mean embedding of a trained LSC checkpoint (its backbone; `ckpt=` path), e.g. to re-assign
              after a first run, or from a self-supervised backbone saved as an LSC checkpoint (A_n paper, 6.6)
The projection is linear, so the mean of the projected images is the projection of the mean image: the pass keeps
an [n_classes, n_dim] float64 sum, never a [n_classes, pixels] one (1M classes at n_dim 47: 376 MB).
"""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

log = logging.getLogger("lsc.data")
PROTOTYPES = ("pixels", "checkpoint")


def class_prototypes(
    dm,
    n_dim: int,
    kind: str = "pixels",
    seed: int = 0,
    size: int = 32,
    ckpt: str | None = None,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """[num_classes, n_dim] float64 prototypes from the DataModule's training images (eval transform)."""
    if kind not in PROTOTYPES:
        raise ValueError(f"centers.prototype must be one of {', '.join(PROTOTYPES)}, got {kind!r}")
    dm.setup("fit")
    ds = dm.prototype_set()
    n_classes = dm.num_classes
    embed = _pixel_embedder(n_dim, seed, size, dm.channels) if kind == "pixels" else _ckpt_embedder(ckpt, n_dim, dm)
    sums = torch.zeros(n_classes, n_dim, dtype=torch.float64)
    counts = torch.zeros(n_classes, dtype=torch.float64)
    total = torch.zeros(n_dim, dtype=torch.float64)
    loader = DataLoader(ds, batch_size=batch_size, num_workers=dm.num_workers, shuffle=False)
    t0 = time.perf_counter()
    with torch.no_grad():
        for x, y in loader:
            e = embed(x.to(device)).double().cpu()  # [B, n_dim]
            sums.index_add_(0, y, e)
            counts.index_add_(0, y, torch.ones_like(y, dtype=torch.float64))
            total += e.sum(0)
    missing = (counts == 0).nonzero()[:, 0]
    if missing.numel():
        raise ValueError(
            f"{missing.numel():,} class(es) have no training image (first: {missing[0].item()}); a data-aware "
            "assignment needs images of every class"
        )
    proto = sums / counts[:, None]
    if kind == "pixels":
        proto -= total / counts.sum()  # centred: the shared mean image carries no class information
    dt = time.perf_counter() - t0
    log.info(f"prototypes ({kind}): {n_classes:,} classes from {int(counts.sum()):,} images in {dt:.1f} s")
    return proto


def _pixel_embedder(n_dim: int, seed: int, size: int, channels: int):
    g = torch.Generator().manual_seed(1_000_003 * seed + 7)
    cache: dict = {}

    def embed(x: torch.Tensor) -> torch.Tensor:
        x = x.double()
        if x.shape[-1] > size or x.shape[-2] > size:
            x = F.adaptive_avg_pool2d(x, (min(size, x.shape[-2]), min(size, x.shape[-1])))
        x = x.flatten(1)  # [B, d]
        d = x.shape[1]
        if d not in cache:  # a fixed projection per input width, scaled so coordinates are O(1)
            cache[d] = (torch.randn(d, n_dim, generator=g, dtype=torch.float64) / d**0.5).to(x.device)
        return x @ cache[d]

    return embed


def _ckpt_embedder(path: str | None, n_dim: int, dm):
    if not path:
        raise ValueError("centers.prototype=checkpoint needs centers.prototype_ckpt=<an LSC checkpoint>")
    import hydra
    from omegaconf import OmegaConf

    from lsc.models.backbones import build_backbone
    from lsc.runconfig import CENTERS_KEY, CONFIG_KEY, INPUT_KEY, load_checkpoint

    ckpt = load_checkpoint(path, "centers.prototype_ckpt")
    stored, spec = ckpt.get(CONFIG_KEY), ckpt.get(CENTERS_KEY)
    if not stored or not spec:
        raise ValueError(f"centers.prototype_ckpt={path} is not an LSC checkpoint (no run config or centers)")
    if spec["system"]["n_dim"] != n_dim:
        raise ValueError(
            f"centers.prototype_ckpt={path} embeds in {spec['system']['n_dim']} dims but these centers live in "
            f"n_dim={n_dim}; use a checkpoint trained at the same n_dim"
        )
    cfg = OmegaConf.create(stored)
    seen = ckpt.get(INPUT_KEY)  # the images its backbone was trained on (older checkpoints: its data config)
    if seen:
        trained = SimpleNamespace(channels=seen["channels"], out_size=seen["size"])
    else:
        trained = hydra.utils.instantiate(cfg.data)
    if (trained.channels, trained.out_size) != (dm.channels, dm.out_size):
        raise ValueError(
            f"centers.prototype_ckpt={path} was trained on {trained.out_size} px images with {trained.channels} "
            f"channel(s), but this data gives {dm.out_size} px with {dm.channels}; use a checkpoint trained on "
            "images like these (same channels and size), or centers.prototype=pixels"
        )
    backbone = build_backbone(cfg, trained, n_dim)
    backbone.load_state_dict(
        {k[len("backbone.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("backbone.")}
    )
    backbone.eval()
    return backbone
