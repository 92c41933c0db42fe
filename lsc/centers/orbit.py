"""Permutation orbits: every distinct rearrangement of one base vector.

V_n^{mk} (m entries +1, k entries -1, the rest 0) is the orbit of (1^m, 0^{n-m-k}, (-1)^k) under the symmetric
group; the A_n-paper systems are unions of such orbits with other values (e.g. (2, -1, -1, 0, ...)). An orbit
is given by its *signature*: the nonzero values and how often each occurs.

Ranking: the groups of equal values, in canonical order (value descending), choose their positions one after
the other among the positions still free; the index is the mixed-radix number of the groups' colex ranks.

Nearest vector (arXiv 2604.00779, Theorem 1, generalized by the rearrangement inequality): <z, v> is largest
when the largest values of the base vector sit on the largest coordinates of z, i.e. the positive groups
take the top coordinates in order and the negative groups the bottom ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cached_property

import torch

from ._combinatorics import (
    INT64_MAX,
    binom_table,
    colex_rank,
    colex_rank_py,
    colex_unrank,
    colex_unrank_py,
    complement_index,
    from_complement_index,
)


class Orbit:
    """All distinct rearrangements in R^n of a base vector with the given nonzero values.

    Args:
        n: dimension.
        signature: (value, multiplicity) pairs of the nonzero values; values distinct integers.
    """

    def __init__(self, n: int, signature: Sequence[tuple[int, int]]):
        sig = sorted(((int(v), int(c)) for v, c in signature if c > 0), key=lambda t: -t[0])
        if any(v == 0 for v, _ in sig) or len({v for v, _ in sig}) != len(sig):
            raise ValueError(f"signature values must be distinct and nonzero, got {signature}")
        if not sig:
            raise ValueError("an orbit needs at least one nonzero value (the zero vector has no direction)")
        self.n = int(n)
        self.values = [v for v, _ in sig]
        self.mults = [c for _, c in sig]
        self.n_nonzero = sum(self.mults)
        if self.n_nonzero > self.n:
            raise ValueError(f"{self.n_nonzero} nonzero entries do not fit in n_dim={self.n}")
        self.n_pos = sum(c for v, c in sig if v > 0)
        self.n_neg = self.n_nonzero - self.n_pos
        # radix of each group: C(free positions, multiplicity)
        self.radix, free = [], self.n
        for c in self.mults:
            self.radix.append(math.comb(free, c))
            free -= c
        self.count = math.prod(self.radix)
        self.sq_norm = sum(c * v * v for v, c in sig)
        self.inv_norm = 1.0 / math.sqrt(self.sq_norm)
        self.vmax = max(abs(v) for v in self.values)
        self._tables: dict[torch.device, torch.Tensor] = {}

    @property
    def signature(self) -> tuple[tuple[int, int], ...]:
        return tuple(zip(self.values, self.mults, strict=True))

    def __repr__(self) -> str:
        return f"Orbit(n={self.n}, signature={self.signature})"

    @cached_property
    def _place(self) -> list[int]:
        """Place value of each group in the mixed-radix index (most significant group first)."""
        out, p = [], 1
        for r in reversed(self.radix):
            out.append(p)
            p *= r
        return out[::-1]

    def table(self, device: torch.device) -> torch.Tensor:
        if self.count > INT64_MAX:
            raise ValueError(f"{self!r} has {self.count:,} vectors, past int64 indexing; use a smaller n_dim")
        device = torch.device(device)
        if device not in self._tables:
            self._tables[device] = binom_table(self.n, max(self.mults), device)
        return self._tables[device]

    # ---- batched (torch) --------------------------------------------------------------------------------

    def rank_groups(self, groups: list[torch.Tensor]) -> torch.Tensor:
        """Index of the vectors whose group g sits at positions groups[g] ([B, c_g], any order)."""
        device = groups[0].device
        table = self.table(device)
        idx = torch.zeros(groups[0].shape[0], dtype=torch.int64, device=device)
        taken = groups[0][:, :0]
        for pos, place in zip(groups, self._place, strict=True):
            pos = pos.sort(1).values if pos.shape[1] > 1 else pos
            idx += colex_rank(complement_index(pos, taken), table) * place
            taken = torch.cat([taken, pos], 1)
        return idx

    def unrank_groups(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """Positions [B, c_g] (ascending) of each group for local indices idx [B]."""
        table = self.table(idx.device)
        groups, taken, free = [], idx[:, None][:, :0], self.n
        for c, place, radix in zip(self.mults, self._place, self.radix, strict=True):
            r = torch.div(idx, place, rounding_mode="floor") % radix
            q = colex_unrank(r, c, free, table)
            pos = from_complement_index(q, taken)
            groups.append(pos)
            taken = torch.cat([taken, pos], 1).sort(1).values
            free -= c
        return groups

    def vectors(self, idx: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        out = torch.zeros(idx.shape[0], self.n, dtype=dtype, device=idx.device)
        for pos, v in zip(self.unrank_groups(idx), self.values, strict=True):
            out.scatter_(1, pos, float(v))
        return out

    def member(self, v: torch.Tensor) -> torch.Tensor:
        """[B] bool: rows of v that belong to this orbit."""
        ok = (v != 0).sum(1) == self.n_nonzero
        for val, c in zip(self.values, self.mults, strict=True):
            ok &= (v == val).sum(1) == c
        return ok

    def index(self, v: torch.Tensor) -> torch.Tensor:
        """Local indices of rows of v, all members of this orbit."""
        groups = [
            (v == val).nonzero()[:, 1].view(v.shape[0], c) for val, c in zip(self.values, self.mults, strict=True)
        ]
        return self.rank_groups(groups)

    def split_selection(self, top: torch.Tensor, bottom: torch.Tensor) -> list[torch.Tensor]:
        """Group positions of the best vector, from top coordinate indices (descending) and bottom (ascending)."""
        groups, t, b = [], 0, 0
        neg = [(v, c) for v, c in zip(self.values, self.mults, strict=True) if v < 0]
        neg_start = {}
        for v, c in sorted(neg):  # most negative value takes the smallest coordinates
            neg_start[v] = b
            b += c
        for v, c in zip(self.values, self.mults, strict=True):
            if v > 0:
                groups.append(top[:, t : t + c])
                t += c
            else:
                groups.append(bottom[:, neg_start[v] : neg_start[v] + c])
        return groups

    def best_and_drop(self, top_v: torch.Tensor, bot_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Best dot product <z, v> and the drop to this orbit's runner-up, in float64.

        top_v: [B, >= n_pos + 1] largest coordinates, descending; bot_v: [B, >= n_neg + 1] smallest, ascending
        (one fewer each when the orbit has no zero entry). The runner-up is always one adjacent swap away from
        the best vector in the sorted frame (arXiv 2604.00779, Algorithm 2's basic permutations), so the drop is
        the smallest (value gap) x (coordinate gap) over the boundaries between value levels.
        """
        levels = self.sorted_frame_levels()  # [(value, count)] in sorted-frame order, zeros included
        # coordinates of the sorted frame we need: first n_pos + 1 and last n_neg + 1 (overlap handled below)
        best = top_v.new_zeros(top_v.shape[0], dtype=torch.float64)
        drop = torch.full_like(best, math.inf)
        top64, bot64 = top_v.double(), bot_v.double()

        def coord(i: int) -> torch.Tensor:  # i-th coordinate of the sorted frame (descending), 0-based
            return top64[:, i] if i <= self.n_pos else bot64[:, self.n - 1 - i]

        i = 0
        for li, (val, c) in enumerate(levels):
            if val != 0:
                for j in range(i, i + c):
                    best += val * coord(j)
            if li + 1 < len(levels):
                nxt = levels[li + 1][0]
                drop = torch.minimum(drop, (val - nxt) * (coord(i + c - 1) - coord(i + c)))
            i += c
        return best, drop

    def sorted_frame_levels(self) -> list[tuple[int, int]]:
        zeros = self.n - self.n_nonzero
        levels = [(v, c) for v, c in zip(self.values, self.mults, strict=True) if v > 0]
        if zeros:
            levels.append((0, zeros))
        levels += [(v, c) for v, c in zip(self.values, self.mults, strict=True) if v < 0]
        return levels

    # ---- scalar (Python) twins --------------------------------------------------------------------------

    def rank_py(self, groups: list[list[int]]) -> int:
        idx, taken = 0, []
        for pos, place in zip(groups, self._place, strict=True):
            pos = sorted(pos)
            q = [p - sum(t < p for t in taken) for p in pos]
            idx += colex_rank_py(q) * place
            taken += pos
        return idx

    def vector_py(self, idx: int) -> list[int]:
        out, taken, free = [0] * self.n, [], self.n
        for val, c, place, radix in zip(self.values, self.mults, self._place, self.radix, strict=True):
            q = colex_unrank_py((idx // place) % radix, c, free)
            free_pos = [p for p in range(self.n) if p not in taken]
            pos = [free_pos[x] for x in q]
            for p in pos:
                out[p] = val
            taken += pos
            free -= c
        return out
