"""LSC losses: pull each embedding to its class center (arXiv 2510.04090, section 3.3).

  cos       1 - mean cos(z, C_y)                              (eq. 11; the papers' default)
  dist      mean f_d(|z - C_y|, r_c), f_d(x, r) = exp(ReLU(x - r)) - 1   (eq. 6-7, raw center positions)
  dist_cos  their sum (Table 5, "dist + cos")
Centers are gathered per batch from the labels (Algorithm 1), so nothing of size n_classes is ever built.
Eq. 6 sums over the batch; we average, which only rescales the learning rate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lsc.centers import ClassCenters


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
