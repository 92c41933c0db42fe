"""LSC losses: pull each embedding to its class center (arXiv 2510.04090, section 3.3).

  cos       1 - mean cos(z, C_y)                              (eq. 11; the papers' default)
  dist      mean f_d(|z - C_y|, r_c), f_d(x, r) = exp(ReLU(x - r)) - 1   (eq. 6-7, raw center positions)
  dist_cos  their sum (Table 5, "dist + cos")
  softmax   cross-entropy of the softmax over EVERY vector of the system (exact, O(n_dim): lsc.centers.partition),
            logits scale * cos(z, v), CosFace margin on the target; no class parameters. `negatives: labeled`
            sums over the labeled centers only (CosFace whose class weights are the fixed centers: O(n_classes)
            per row, still no class parameters)
Centers are gathered per batch from the labels (Algorithm 1), so nothing of size n_classes is ever built.
Eq. 6 sums over the batch; we average, which only rescales the learning rate.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lsc.centers import ClassCenters
from lsc.centers.class_centers import check_scale


class CosineLoss(nn.Module):
    def forward(self, z: torch.Tensor, y: torch.Tensor, centers: ClassCenters) -> torch.Tensor:
        c = centers(y).to(z.device)  # (B, n_dim), unit
        return 1 - F.cosine_similarity(z.float(), c, dim=1).mean()


class DistanceLoss(nn.Module):
    def __init__(self, radius: float = 1.0):
        super().__init__()
        self.radius = radius

    def forward(self, z: torch.Tensor, y: torch.Tensor, centers: ClassCenters) -> torch.Tensor:
        c = centers.positions(y).to(z.device)  # (B, n_dim), raw +-1/0 vectors
        d = (z.float() - c).norm(dim=1)
        return (torch.exp(F.relu(d - self.radius)) - 1).mean()


class DistCosLoss(nn.Module):
    def __init__(self, radius: float = 1.0):
        super().__init__()
        self.dist, self.cos = DistanceLoss(radius), CosineLoss()

    def forward(self, z, y, centers):
        return self.dist(z, y, centers) + self.cos(z, y, centers)


class SoftmaxLoss(nn.Module):
    """Mean -log p(y | z) under the full-system softmax, logits s * cos(z, v) over every system vector (labeled or
    not: unlabeled vectors are negatives), with an additive cosine margin on the target (CosFace: s (cos_y - m)).

    Args:
        scale: s; with `learn_scale` a learned parameter starting there (logged as train/scale).
        margin: m in [0, 1).
        cos_weight: adds cos_weight * (1 - mean cos(z, C_y)), the cosine loss (0 = pure softmax).
    The predictor is unchanged: argmax of this softmax = argmax cosine = topk. `last_target_prob` holds the mean
    p(y | z) of the last batch (the margin-free probability), for logging.
    """

    def __init__(
        self,
        scale: float = 16.0,
        margin: float = 0.0,
        learn_scale: bool = False,
        cos_weight: float = 0.0,
        negatives: str = "system",
        chunk_size: int = 65536,
    ):
        super().__init__()
        if negatives not in ("system", "labeled"):
            raise ValueError(f"loss.negatives must be system (every vector) or labeled (the class centers), got "
                             f"{negatives!r}")  # fmt: skip
        self.negatives, self.chunk_size = negatives, int(chunk_size)
        check_scale(scale, "loss.scale")
        if not 0 <= margin < 1:
            raise ValueError(f"loss.margin must lie in [0, 1), got {margin!r}")
        if cos_weight < 0:
            raise ValueError(f"loss.cos_weight must be >= 0, got {cos_weight!r}")
        self.margin, self.cos_weight, self.learn_scale = float(margin), float(cos_weight), bool(learn_scale)
        self.fixed_scale = float(scale)
        if learn_scale:  # learned in log space: always positive
            self.log_scale = nn.Parameter(torch.tensor(float(scale)).log())
        self.last_target_prob = None

    @property
    def scale(self) -> torch.Tensor | float:
        return self.log_scale.exp() if self.learn_scale else self.fixed_scale

    def forward(self, z: torch.Tensor, y: torch.Tensor, centers: ClassCenters) -> torch.Tensor:
        z = z.float()
        s = self.scale
        cos_y = F.cosine_similarity(z, centers(y).to(z.device), dim=1)
        # no host read per step on CUDA (the NaN check runs on the device)
        log_z = (centers.log_partition(z, s, sync=False) if self.negatives == "system"
                 else self._labeled_log_z(z, s, centers))  # fmt: skip
        p = torch.exp(s * cos_y - log_z)  # p(y | z) without the margin
        self.last_target_prob = p.detach().mean()
        target = s * cos_y
        if self.margin:
            # the target logit is s (cos_y - m): Z' = Z - e^{s cos_y} (1 - e^{-s m}); -log p' = log Z' - s (cos_y - m)
            sm = s * self.margin
            shrink = -torch.expm1(-sm) if isinstance(sm, torch.Tensor) else -math.expm1(-sm)  # 1 - e^{-s m}
            log_z = log_z + torch.log1p(-(p * shrink).clamp(max=1 - 1e-7))
            target = target - sm
        loss = (log_z - target).mean()
        if self.cos_weight:
            loss = loss + self.cos_weight * (1 - cos_y.mean())
        return loss

    def _labeled_log_z(self, z: torch.Tensor, s, centers: ClassCenters) -> torch.Tensor:
        """log sum over the labeled centers of exp(s cos(z, C_c)) [B], chunk by chunk (the centers are constants:
        small label spaces keep them cached on z's device)."""
        zh = F.normalize(z, dim=1)
        key = (z.device, centers.spec.get("digest") if isinstance(centers.spec, dict) else None, id(centers))
        if getattr(self, "_bank_key", None) != key:
            n = centers.n_classes
            self._bank = centers.bank(device=z.device) if n * centers.n_dim <= 1 << 26 else None
            self._bank_key = key
        parts = []
        for a in range(0, centers.n_classes, self.chunk_size):
            b = min(a + self.chunk_size, centers.n_classes)
            bank = self._bank[a:b] if self._bank is not None else centers(torch.arange(a, b, device=z.device))
            parts.append(torch.logsumexp(s * (zh @ bank.to(z.device, z.dtype).T), dim=1))
        return torch.logsumexp(torch.stack(parts, 1), dim=1)
