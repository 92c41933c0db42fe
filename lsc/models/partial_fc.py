"""Partial FC: the learned-weight baseline at many classes (An et al., arXiv 2010.05222; insightface arcface_torch).

What a user would otherwise train: an embedding network, class weights on the unit sphere, logits s * cos with
an additive margin (CosFace, arXiv 1801.09414; or ArcFace, arXiv 1801.07698), and, per step, only the batch's
positive classes plus a uniform random sample of the others (`sample_rate`). Under DDP the weights are sharded
by class range and the softmax is distributed: embeddings and labels are all-gathered, each rank scores its own
shard, and the row max and sum of exponentials are all-reduced (no rank ever holds all logits).

Memory of the class-dependent state: n_classes x embed_dim float32 weights plus AdamW's two moments, i.e.
12 * embed_dim bytes per class (564 B at embed_dim 47), against LSC's 0 (keyed) or 16 (data-assigned).

The LightningModule around the head, `lsc.models.PartialFCModule`, lives in module.py beside LSC's and CE's (this
file imports neither Lightning nor timm).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from lsc.utils import positive_int

MARGINS = ("cosface", "arcface")
INIT_ROWS = 1 << 14  # weights are initialized in seeded chunks of rows: a shard draws only its own chunks


def shard_range(n_classes: int, rank: int, world: int) -> tuple[int, int]:
    """[start, stop) of the classes rank `rank` owns: contiguous, sizes differ by at most one."""
    base, extra = divmod(n_classes, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def init_weight(start: int, stop: int, dim: int, seed: int) -> torch.Tensor:
    """Rows [start, stop) of the seeded N(0, 0.01) init of the full weight: the same rows on any sharding."""
    out = torch.empty(stop - start, dim)
    c0 = start // INIT_ROWS
    for c in range(c0, (stop - 1) // INIT_ROWS + 1):
        g = torch.Generator().manual_seed(seed * 1_000_003 + c)
        a = c * INIT_ROWS
        chunk = torch.normal(0.0, 0.01, (INIT_ROWS, dim), generator=g)  # always whole: draws depend on the size
        lo, hi = max(a, start), min(a + INIT_ROWS, stop)
        out[lo - start : hi - start] = chunk[lo - a : hi - a]
    return out


class _GatherWithGrad(torch.autograd.Function):
    """all_gather of [B, D] rows; backward sums every rank's gradient for this rank's rows, times the world size:
    DDP then averages the backbone's gradients over ranks, which gives exactly the single-process gradient of the
    mean loss over the global batch."""

    @staticmethod
    def forward(ctx, x):
        world = dist.get_world_size()
        out = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(out, x.contiguous())
        ctx.rank, ctx.world, ctx.b = dist.get_rank(), world, x.shape[0]
        return torch.cat(out)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.b : (ctx.rank + 1) * ctx.b] * ctx.world


class _DistSoftmaxCE(torch.autograd.Function):
    """Mean cross-entropy over rows whose logits are split by columns across ranks. logits [N, S_local], target
    [N] = column on this rank or -1. Backward: (softmax - onehot) / N on the local columns; no communication."""

    @staticmethod
    def forward(ctx, logits, target):
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        m = logits.max(1).values
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(m, dist.ReduceOp.MAX)
        e = torch.exp(logits - m[:, None])
        s = e.sum(1)
        own = target >= 0
        t = torch.zeros_like(m)
        t[own] = logits[own, target[own]]
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(s)
            dist.all_reduce(t)
        loss = (s.log() + m - t).mean()
        ctx.save_for_backward(e / s[:, None], target)
        return loss

    @staticmethod
    def backward(ctx, grad):
        p, target = ctx.saved_tensors
        own = (target >= 0).nonzero()[:, 0]
        p = p.clone()
        p[own, target[own]] -= 1
        return p * (grad / p.shape[0]), None


class PartialFCHead(nn.Module):
    """Class weights [n_classes (or this rank's shard), embed_dim] with a margin softmax over sampled classes.

    Args:
        n_classes: all classes (the shard is taken in `shard()` once the world size is known).
        embed_dim: width of the embeddings.
        scale: s; margin: m (CosFace: s (cos - m) for the target; ArcFace: s cos(theta + m)).
        sample_rate: share of this shard's classes scored per step (positives always included); 1.0 = all.
        seed: seed of the weight init.
    """

    def __init__(
        self,
        n_classes: int,
        embed_dim: int,
        scale: float = 32.0,
        margin: float = 0.2,
        margin_type: str = "cosface",
        sample_rate: float = 1.0,
        seed: int = 0,
    ):
        super().__init__()
        positive_int("model.embed_dim", embed_dim, hint="the embedding width")
        if margin_type not in MARGINS:
            raise ValueError(f"model.margin_type must be one of {', '.join(MARGINS)}, got {margin_type!r}")
        if not 0 < sample_rate <= 1:
            raise ValueError(f"model.sample_rate must lie in (0, 1], got {sample_rate}")
        if scale <= 0 or not 0 <= margin < 1:
            raise ValueError(f"model.scale must be > 0 and model.margin in [0, 1), got {scale}, {margin}")
        self.n_classes, self.embed_dim, self.scale, self.margin = n_classes, embed_dim, float(scale), float(margin)
        self.margin_type, self.sample_rate, self.seed = margin_type, float(sample_rate), seed
        self.start, self.stop, self.rank, self.world = 0, n_classes, 0, 1
        self.weight = nn.Parameter(init_weight(0, n_classes, embed_dim, seed))

    def shard(self, rank: int, world: int) -> None:
        """Keep only this rank's class range (called once the process group exists)."""
        self.start, self.stop = shard_range(self.n_classes, rank, world)
        self.rank, self.world = rank, world
        w = self.weight.data
        self.weight = nn.Parameter(w[self.start : self.stop].clone() if w.shape[0] == self.n_classes else w)

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def _sample(self, local: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(indices of the scored local classes, sorted, or None for all of them; targets remapped into them, -1
        elsewhere)."""
        n_local = self.stop - self.start
        own = local >= 0
        k = int(self.sample_rate * n_local)
        if self.sample_rate >= 1 or k >= n_local:
            return None, local  # every class: no gather of the weight (and no scatter-add of its gradient)
        positive = torch.unique(local[own])
        if k > positive.numel():
            score = torch.rand(n_local, device=local.device)
            score[positive] = 2.0  # positives always in
            index = score.topk(k).indices.sort().values
        else:
            index = positive
        target = torch.full_like(local, -1)
        target[own] = torch.searchsorted(index, local[own])
        return index, target

    def _logits(self, cos: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        own = (target >= 0).nonzero()[:, 0]
        t = cos[own, target[own]]
        if self.margin_type == "cosface":
            t = t - self.margin
        else:  # arcface, with the usual fallback where theta + m would pass pi
            th, mm = math.cos(math.pi - self.margin), math.sin(math.pi - self.margin) * self.margin
            sin = (1 - t * t).clamp_min(0).sqrt()
            t = torch.where(t > th, t * math.cos(self.margin) - sin * math.sin(self.margin), t - mm)
        cos = cos.index_put((own, target[own]), t)
        return cos * self.scale

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss for embeddings z [B, D] and labels [B] (gathered from every rank under DDP)."""
        z = F.normalize(z if z.dtype == torch.float64 else z.float(), dim=1)
        if self.distributed:
            z = _GatherWithGrad.apply(z)
            ys = [torch.empty_like(labels) for _ in range(self.world)]
            dist.all_gather(ys, labels)
            labels = torch.cat(ys)
        local = torch.where((labels >= self.start) & (labels < self.stop), labels - self.start, -1)
        index, target = self._sample(local)
        w = F.normalize((self.weight if index is None else self.weight[index]).to(z.dtype), dim=1)
        logits = self._logits((z @ w.T).clamp(-1, 1), target)  # [N, S]
        if not self.distributed:  # every target is a scored column: torch's fused log-softmax is the same loss
            return F.cross_entropy(logits, target)
        return _DistSoftmaxCE.apply(logits, target)

    @torch.no_grad()
    def predict(self, z: torch.Tensor, chunk: int = 1 << 16) -> torch.Tensor:
        """argmax cosine over all class weights (every shard under DDP): labels [B]."""
        z = F.normalize(z.float(), dim=1)
        b = z.shape[0]
        if self.distributed:  # every rank scores every rank's rows against its shard
            z = _gather_padded(z)
        best = torch.full((z.shape[0],), -math.inf, device=z.device)
        arg = torch.zeros(z.shape[0], dtype=torch.int64, device=z.device)
        for a in range(0, self.weight.shape[0], chunk):
            s = z @ F.normalize(self.weight[a : a + chunk].float(), dim=1).T
            v, i = s.max(1)
            win = v > best
            best, arg = torch.where(win, v, best), torch.where(win, i + a + self.start, arg)
        if self.distributed:
            bs = [torch.empty_like(best) for _ in range(self.world)]
            args = [torch.empty_like(arg) for _ in range(self.world)]
            dist.all_gather(bs, best)
            dist.all_gather(args, arg)
            w = torch.stack(bs).argmax(0)  # first rank wins ties: the lower labels
            arg = torch.stack(args).gather(0, w[None])[0]
            arg = arg.view(self.world, -1)[self.rank, :b]
        return arg


def _gather_padded(x: torch.Tensor) -> torch.Tensor:
    """all_gather of row blocks whose sizes may differ by rank: [world * max_rows, ...], each block padded."""
    world = dist.get_world_size()
    n = torch.tensor([x.shape[0]], device=x.device)
    ns = [torch.empty_like(n) for _ in range(world)]
    dist.all_gather(ns, n)
    m = int(max(t.item() for t in ns))
    pad = torch.zeros(m - x.shape[0], *x.shape[1:], dtype=x.dtype, device=x.device)
    out = [torch.empty(m, *x.shape[1:], dtype=x.dtype, device=x.device) for _ in range(world)]
    dist.all_gather(out, torch.cat([x, pad]))
    return torch.cat(out)
