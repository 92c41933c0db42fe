"""Binomial tables and batched colex ranking of k-subsets, in int64 tensors.

A k-subset {q_0 < q_1 < ... < q_{k-1}} of [0, n) has colex rank sum_i C(q_i, i + 1): the combinatorial
number system. Ranking is a gather-and-sum; unranking is greedy, one `searchsorted` per element. Both
run batched on the tensors' device with no Python loop over rows.
"""

from __future__ import annotations

from math import comb

import torch

INT64_MAX = (1 << 63) - 1


def binom_rows(n: int, kmax: int) -> list[list[int]]:
    """C(c, j) for c in [0, n], j in [0, kmax] as Python ints, saturated at INT64_MAX.

    Saturation is safe: a saturated entry is larger than any valid rank, so `searchsorted` never lands on it
    and ranking never gathers it (ranks are bounded by the orbit's count, which is checked to fit in int64).
    """
    return [[min(comb(c, j), INT64_MAX) for j in range(kmax + 1)] for c in range(n + 1)]


def binom_table(n: int, kmax: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[n + 1, kmax + 1] int64 tensor of saturated binomials C(c, j)."""
    return torch.tensor(binom_rows(n, kmax), dtype=torch.int64, device=device)


def colex_rank(q: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Colex rank of sorted subsets. q: [B, k] int64, ascending per row -> [B] int64."""
    k = q.shape[1]
    if k == 0:
        return torch.zeros(q.shape[0], dtype=torch.int64, device=q.device)
    cols = torch.arange(1, k + 1, device=q.device).expand_as(q)
    return table[q, cols].sum(1)


def colex_unrank(r: torch.Tensor, k: int, n: int, table: torch.Tensor) -> torch.Tensor:
    """Inverse of `colex_rank`: ranks [B] in [0, C(n, k)) -> ascending subsets [B, k] of [0, n)."""
    out = torch.empty(r.shape[0], k, dtype=torch.int64, device=r.device)
    r = r.clone()
    for j in range(k, 0, -1):
        col = table[:n, j].contiguous()  # non-decreasing in c
        # largest c < n with C(c, j) <= r
        c = torch.searchsorted(col, r, right=True) - 1
        out[:, j - 1] = c
        r -= col[c]
    return out


def complement_index(pos: torch.Tensor, taken: torch.Tensor) -> torch.Tensor:
    """Index of each position among the positions not in `taken`. pos: [B, k], taken: [B, s] (any order)."""
    if taken.shape[1] == 0:
        return pos
    return pos - (taken[:, None, :] < pos[:, :, None]).sum(-1)


def from_complement_index(q: torch.Tensor, taken_sorted: torch.Tensor) -> torch.Tensor:
    """Inverse of `complement_index`: q-th free position. taken_sorted: [B, s] ascending per row."""
    a = q.clone()
    for j in range(taken_sorted.shape[1]):
        a += (taken_sorted[:, j : j + 1] <= a).long()
    return a


# ---- scalar (Python int) twins, used by the per-row best-first search --------------------------------------


def colex_rank_py(q: list[int]) -> int:
    return sum(comb(c, i + 1) for i, c in enumerate(q))


def colex_unrank_py(r: int, k: int, n: int) -> list[int]:
    out = [0] * k
    c = n - 1
    for j in range(k, 0, -1):
        while comb(c, j) > r:
            c -= 1
        out[j - 1] = c
        r -= comb(c, j)
        c -= 1
    return out
