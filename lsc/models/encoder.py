"""Convolutional encoders: the A_n paper's "modified UNET encoder" stand-in, and a small CPU variant.

arXiv 2510.04090 (section 4.1) uses the UNET [Ronneberger 2015] encoder of arXiv 2402.08441 with its final linear
layers resized to n_dim, about 9M parameters. Its layer table is not public, so this is the standard UNET
contracting path (double 3x3 conv + BN + ReLU per level, max-pool between levels) with widths
64-128-256-512-512 (9.4M parameters), global average pooling and two linear layers ("a" and "b") to n_dim.
Pooling stops once the feature map is 1x1, so any input size works (8x8 digits up to 224x224 ImageNet).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class Encoder(nn.Module):
    """UNET-style encoder -> (B, out_dim).

    Args:
        out_dim: embedding width (n_dim for LSC; the CE baseline puts its classifier on top).
        in_chans: image channels.
        widths: channels per level.
        hidden: width of the first linear layer ("a"); the last ("b") maps it to out_dim.
        depth: hidden layers of width `hidden` (each Linear + ReLU) before "b"; 1 is the paper's head.
        bottleneck: if set, a linear map to this width before the first hidden layer (no nonlinearity: a rank-
            `bottleneck` factorization of "a", so a wide hidden layer costs bottleneck + out_dim weights per unit
            instead of the flattened features' + out_dim).
    """

    def __init__(
        self,
        out_dim: int,
        in_chans: int = 3,
        widths: Sequence[int] = (64, 128, 256, 512, 512),
        hidden: int = 512,
        head: str = "gap",
        flat_size: int = 4,
        depth: int = 1,
        bottleneck: int | None = None,
    ):
        super().__init__()
        if head not in ("gap", "flat"):
            raise ValueError(f"encoder head must be 'gap' (global average pool) or 'flat', got {head!r}")
        if depth < 1 or (bottleneck is not None and bottleneck < 1):
            raise ValueError(f"encoder head needs depth >= 1 and bottleneck >= 1 (or null), got {depth}, {bottleneck}")
        self.levels = nn.ModuleList()
        c = in_chans
        for w in widths:
            self.levels.append(double_conv(c, w))
            c = w
        self.pool = nn.MaxPool2d(2)
        # gap: global average pooling (size-free, few parameters); flat: the last feature map pooled to
        # flat_size x flat_size and flattened,
        # like a classic CNN classifier -- it keeps the spatial detail that telling images apart needs
        self.squash = nn.AdaptiveAvgPool2d(1 if head == "gap" else flat_size)
        feats = c * (1 if head == "gap" else flat_size**2)
        layers: list[nn.Module] = []
        if bottleneck is not None:
            layers.append(nn.Linear(feats, bottleneck, bias=False))
            feats = bottleneck
        for _ in range(depth):
            layers += [nn.Linear(feats, hidden), nn.ReLU(inplace=True)]
            feats = hidden
        self.head = nn.Sequential(*layers, nn.Linear(hidden, out_dim))
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, level in enumerate(self.levels):
            if i > 0 and min(x.shape[-2:]) >= 2:
                x = self.pool(x)
            x = level(x)
        return self.head(self.squash(x).flatten(1))  # (B, out_dim)


def encoder_small(out_dim: int, in_chans: int = 3, head: str = "gap", flat_size: int = 4, hidden: int = 128,
                  depth: int = 1, bottleneck: int | None = None) -> Encoder:  # fmt: skip
    """A ~0.1M-parameter variant that trains in minutes on a CPU (more with head='flat' or a wider `hidden`)."""
    return Encoder(out_dim, in_chans, (16, 32, 64), hidden, head, flat_size, depth, bottleneck)
