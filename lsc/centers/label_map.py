"""Seeded bijections of [0, count) with O(1) memory: the class -> center-vector order.

The A_n paper's random order ("A_nr") is a random assignment of classes to vectors; the top-k paper keeps it
in a hash map `center_dict` of size n_classes. A keyed Feistel network gives the same thing from a few integers:
the same (count, seed) gives the same permutation in every process, rank and machine, and it does not depend on
n_classes, so growing n_classes never moves an existing class.

The network is mixed-radix (Black & Rogaway's generalized Feistel, as in FFX): x = L * b + R with L in [0, a),
R in [0, b), a * b >= count and a ~ b ~ sqrt(count); rounds alternate L = (L + F(R)) mod a and
R = (R + F(L)) mod b. Cycle-walking maps the a*b - count < a + b surplus values back into [0, count): a walk is
needed with probability ~ 2 / sqrt(count), so a batch almost never loops (a power-of-two domain would loop on
up to half the inputs, and on a GPU every loop is a device sync).
"""

from __future__ import annotations

import math

import torch

MAX_SHUFFLE_COUNT = 1 << 62
_M1 = 0x5BD1E995 & 0x7FFFFFFF  # odd multiplier < 2^31: its product with a 31-bit value fits in int64
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
    """Pseudo-random permutation of [0, count) (mixed-radix Feistel, 6 rounds, cycle-walking)."""

    rounds = 6

    def __init__(self, count: int, seed: int = 0):
        if count < 1:
            raise ValueError("count must be >= 1")
        if count > MAX_SHUFFLE_COUNT:
            raise ValueError(f"cannot shuffle {count:,} vectors (limit 2^62); use shuffle=False or a smaller n_dim")
        self.count, self.seed = count, seed
        self.a = max(2, math.isqrt(count - 1) + 1)  # ceil(sqrt(count)), both halves < 2^31
        self.b = max(2, -(-count // self.a))
        s = _splitmix64(seed * 0x100000001B3 ^ count)
        self.keys = []
        for _ in range(self.rounds):
            s = _splitmix64(s)
            self.keys.append(s & _MASK31)

    # Round function F(x) in [0, m): a 31-bit input times a 31-bit odd constant fits in int64 on every device
    # (no overflow); folding the high half onto the low one mixes every input bit, and the multiply-shift range
    # reduction (Lemire's fastrange) maps 31 bits onto [0, m) with no division. On a GPU every elementwise op is
    # a kernel launch, and on a CPU a 64-bit division costs ~30 cycles: the rounds dominate pi^-1.
    @staticmethod
    def _f(x, k, m):
        h = (x ^ k) * _M1
        return (((h ^ (h >> 31)) & _MASK31) * m) >> 31

    def _rounds(self, x, forward: bool):
        a, b = self.a, self.b
        lft, rgt = x // b, x % b
        sign = 1 if forward else -1
        for i in range(self.rounds) if forward else range(self.rounds - 1, -1, -1):
            if i % 2 == 0:
                lft = (lft + sign * self._f(rgt, self.keys[i], a)) % a
            else:
                rgt = (rgt + sign * self._f(lft, self.keys[i], b)) % b
        return lft * b + rgt

    def _walk(self, x: torch.Tensor, forward: bool) -> torch.Tensor:
        y = self._rounds(x, forward)
        out = y >= self.count
        while out.any():  # rare: the domain exceeds count by < a + b values
            i = out.nonzero()[:, 0]
            y[i] = self._rounds(y[i], forward)
            out = y >= self.count
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """pi(x) for x [B] int64 in [0, count)."""
        return self._walk(x, True)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return self._walk(y, False)

    def _walk_py(self, x: int, forward: bool) -> int:
        x = self._rounds(x, forward)
        while x >= self.count:
            x = self._rounds(x, forward)
        return x

    def forward_py(self, x: int) -> int:
        return self._walk_py(x, True)

    def inverse_py(self, y: int) -> int:
        return self._walk_py(y, False)
