"""Seeded bijections of [0, count) with O(1) memory: the class -> center-vector order.

The A_n paper's random order ("A_nr") is a random assignment of classes to vectors; the top-k paper keeps it
in a hash map `center_dict` of size n_classes. A keyed Feistel network on the smallest power-of-two domain that
holds `count`, with cycle-walking back into [0, count), gives the same thing from a few integers: the same
(count, seed) gives the same permutation in every process, rank and machine, and it does not depend on
n_classes, so growing n_classes never moves an existing class.
"""

from __future__ import annotations

import torch

MAX_SHUFFLE_COUNT = 1 << 62
_M1, _M2 = 0x5BD1E995 & 0x7FFFFFFF, 0x27D4EB2D  # odd multipliers < 2^31: products of 31-bit values fit in int64
_MASK31 = (1 << 31) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & ((1 << 64) - 1)
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & ((1 << 64) - 1)
    return x ^ (x >> 31)


class IdentityPermutation:
    def __init__(self, count: int):
        self.count = count

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def forward_py(self, x: int) -> int:
        return x

    def inverse_py(self, y: int) -> int:
        return y


class FeistelPermutation:
    """Pseudo-random permutation of [0, count) (unbalanced Feistel, 6 rounds, cycle-walking)."""

    rounds = 6

    def __init__(self, count: int, seed: int = 0):
        if count < 1:
            raise ValueError("count must be >= 1")
        if count > MAX_SHUFFLE_COUNT:
            raise ValueError(f"cannot shuffle {count:,} vectors (limit 2^62); use shuffle=False or a smaller n_dim")
        self.count, self.seed = count, seed
        w = max(2, (count - 1).bit_length())
        self.bits_l, self.bits_r = (w + 1) // 2, w // 2  # domain 2^w < 2 * count: < 2 walks on average
        self.mask_l, self.mask_r = (1 << self.bits_l) - 1, (1 << self.bits_r) - 1
        s = _splitmix64(seed * 0x100000001B3 ^ count)
        self.keys = []
        for _ in range(self.rounds):
            s = _splitmix64(s)
            self.keys.append(s & _MASK31)

    # round function: 31-bit values only, so every product fits in int64 (no overflow on any device)
    @staticmethod
    def _f(x, k):
        h = ((x ^ k) * _M1) & ((1 << 62) - 1)
        h = (h ^ (h >> 29)) & _MASK31
        h = h * _M2
        return h ^ (h >> 31)

    def _rounds(self, x, order):
        lft, rgt = x >> self.bits_r, x & self.mask_r
        for i in order:
            if i % 2 == 0:
                lft = lft ^ (self._f(rgt, self.keys[i]) & self.mask_l)
            else:
                rgt = rgt ^ (self._f(lft, self.keys[i]) & self.mask_r)
        return (lft << self.bits_r) | rgt

    def _walk(self, x: torch.Tensor, order) -> torch.Tensor:
        y = self._rounds(x, order)
        out = y >= self.count
        while out.any():
            i = out.nonzero()[:, 0]
            y[i] = self._rounds(y[i], order)
            out = y >= self.count
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """pi(x) for x [B] int64 in [0, count)."""
        return self._walk(x, range(self.rounds))

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return self._walk(y, range(self.rounds - 1, -1, -1))

    def _walk_py(self, x: int, order) -> int:
        x = self._rounds(x, order)
        while x >= self.count:
            x = self._rounds(x, order)
        return x

    def forward_py(self, x: int) -> int:
        return self._walk_py(x, range(self.rounds))

    def inverse_py(self, y: int) -> int:
        return self._walk_py(y, range(self.rounds - 1, -1, -1))
