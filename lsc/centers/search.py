"""Exact searches shared by the systems and the predictors.

`scan_argmax`: exact argmax of an affine score over a range of items (labels or vector indices), generated chunk
by chunk so memory stays bounded. A float32 pass certifies every row whose winner beats the runner-up by more
than a bound on float32 rounding; the remaining rows are rescored in float64. Ties go to the lowest item.

`best_first`: the vectors of a union of orbits in non-increasing cosine to a query, one at a time (arXiv
2604.00779, Algorithm 2: Dijkstra over adjacent swaps in the sorted frame, whose path weights telescope).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterator

import torch

# fetch(start, stop, dtype) -> (vectors [C, n] in dtype, column scale [C] or None, column bias [C] or None)
Fetch = Callable[[int, int, torch.dtype], tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]]

_MATMUL_EPS = {"highest": 2.0**-24, "high": 2.0**-11, "medium": 2.0**-8}


def f32_unit_roundoff(device: torch.device) -> float:
    """Unit roundoff of a float32 matmul on this device (TF32/bf16 when the user allowed them)."""
    if torch.device(device).type == "cuda":
        return _MATMUL_EPS.get(torch.get_float32_matmul_precision(), 2.0**-8)
    return 2.0**-24


def scan_argmax(
    z: torch.Tensor,
    n_items: int,
    fetch: Fetch,
    *,
    coef_bound: float,
    bias_bound: float = 0.0,
    chunk_size: int = 65536,
    block: tuple[int, int] = (256, 4096),
) -> torch.Tensor:
    """argmax_c (z @ v_c) * scale_c + bias_c over items c in [0, n_items); ties -> lowest c. Returns [B] int64.

    coef_bound bounds |v_ci * scale_c| over all items and coordinates, bias_bound bounds |bias_c|; together they
    bound float32 rounding, so rows with a larger margin are exact, and the others are rescored in float64.
    Items are fetched `chunk_size` at a time and scored in (rows, items) blocks of `block` that stay in cache.
    """
    B, n = z.shape
    z32 = z.float()
    best = torch.full((B,), -math.inf, device=z.device)
    second = torch.full((B,), -math.inf, device=z.device)
    arg = torch.zeros(B, dtype=torch.int64, device=z.device)
    rb, cb = block
    if z.device.type == "cuda":  # big blocks: one kernel launch each, and the GPU has the bandwidth
        rb, cb = max(rb, 4096), max(cb, 65536)
    for start in range(0, n_items, chunk_size):
        stop = min(start + chunk_size, n_items)
        v_all, scale_all, bias_all = fetch(start, stop, torch.float32)
        for c0 in range(0, stop - start, cb):
            v = v_all[c0 : c0 + cb]
            scale = None if scale_all is None else scale_all[c0 : c0 + cb]
            bias = None if bias_all is None else bias_all[c0 : c0 + cb]
            for r0 in range(0, B, rb):
                rows = slice(r0, r0 + rb)
                s = _affine(z32[rows] @ v.T, scale, bias)  # [b, c]
                c1v, c1i = s.max(1)
                if s.shape[1] > 1:
                    c2v = s.scatter_(1, c1i[:, None], -math.inf).amax(1)
                else:
                    c2v = torch.full_like(c1v, -math.inf)
                b, sec = best[rows], second[rows]
                win = c1v > b
                second[rows] = torch.where(win, torch.maximum(b, c2v), torch.maximum(sec, c1v))
                best[rows] = torch.where(win, c1v, b)
                arg[rows] = torch.where(win, c1i + (start + c0), arg[rows])
    # |fl(score) - score| <= (n + 2) u (coef_bound * |z|_1 + bias_bound); margins above twice that are exact
    u = f32_unit_roundoff(z.device)
    tol = 4 * (n + 4) * u * (coef_bound * z32.abs().sum(1) + bias_bound)
    unsure = (best - second <= tol).nonzero()[:, 0]
    if unsure.numel():
        arg[unsure] = _scan_f64(z[unsure].double(), n_items, fetch, chunk_size)
    return arg


def _affine(s: torch.Tensor, scale: torch.Tensor | None, bias: torch.Tensor | None) -> torch.Tensor:
    if scale is not None:
        s = s * scale
    if bias is not None:
        s = s + bias
    return s


def _scan_f64(z64: torch.Tensor, n_items: int, fetch: Fetch, chunk_size: int, rb: int = 1024) -> torch.Tensor:
    best = torch.full((z64.shape[0],), -math.inf, dtype=torch.float64, device=z64.device)
    arg = torch.zeros(z64.shape[0], dtype=torch.int64, device=z64.device)
    for start in range(0, n_items, chunk_size):
        stop = min(start + chunk_size, n_items)
        v, scale, bias = fetch(start, stop, torch.float64)
        for r0 in range(0, z64.shape[0], rb):
            rows = slice(r0, r0 + rb)
            cv, ci = _affine(z64[rows] @ v.T, scale, bias).max(1)  # first maximum within the chunk
            win = cv > best[rows]  # strict: earlier chunks keep ties
            best[rows] = torch.where(win, cv, best[rows])
            arg[rows] = torch.where(win, ci + start, arg[rows])
    return arg


def best_first(orbits, offsets: list[int], z: list[float]) -> Iterator[tuple[float, int]]:
    """Yield (cosine * |z|, global index) for every vector of the union, in non-increasing order.

    Scores are float64 sums of the query's float32 coordinates times small integers, so they are exact (and
    equal to the float64 scan's) unless the coordinates span ~2^26 in magnitude.
    """
    n = len(z)
    order = sorted(range(n), key=lambda i: -z[i])  # sorted frame: descending coordinates
    zs = [z[i] for i in order]
    heap, tick = [], 0
    seen: set[tuple[int, tuple[tuple[int, int], ...]]] = set()

    def push(o: int, state: tuple[tuple[int, int], ...]):
        nonlocal tick
        key = (o, state)
        if key in seen:
            return
        seen.add(key)
        score = math.fsum(v * zs[p] for p, v in state) * orbits[o].inv_norm
        heapq.heappush(heap, (-score, tick, o, state))
        tick += 1

    for o, orb in enumerate(orbits):
        state, i = [], 0
        for val, c in orb.sorted_frame_levels():
            if val != 0:
                state += [(p, val) for p in range(i, i + c)]
            i += c
        push(o, tuple(state))

    while heap:
        neg, _, o, state = heapq.heappop(heap)
        orb = orbits[o]
        groups = {v: [] for v in orb.values}
        for p, v in state:
            groups[v].append(order[p])
        yield -neg, offsets[o] + orb.rank_py([groups[v] for v in orb.values])
        at = dict(state)
        for p, _ in state:  # adjacent swaps that move a larger value down the sorted frame
            for lo, hi in ((p, p + 1), (p - 1, p)):
                if lo < 0 or hi >= n:
                    continue
                vlo, vhi = at.get(lo, 0), at.get(hi, 0)
                if vlo > vhi:
                    nxt = dict(at)
                    nxt.pop(lo, None)
                    nxt.pop(hi, None)
                    if vhi:
                        nxt[lo] = vhi
                    if vlo:
                        nxt[hi] = vlo
                    push(o, tuple(sorted(nxt.items())))
