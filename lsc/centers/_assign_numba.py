"""The nearest-free walk of `assignment.assign_nearest_free`, compiled (numba): the same rule, the same table.

Per class in the rule's order: take the precomputed nearest vector when free, else walk the class's vectors
best-first (arXiv 2604.00779, Algorithm 2, as `search.best_first`): states are the sorted-frame positions of an
orbit's nonzero entries, successors the adjacent swaps that move a larger value down the frame, scores the exact
(Shewchuk, as math.fsum) sums times the orbit's 1/|v|, popped by (score, push order) and grouped into levels of
equal score; the lowest free index of the first level holding a free vector wins. A walk past `budget` pops hands
the class back to the caller (which scans the free vectors: the same answer). Taken vectors are a bitmap, 1 bit
per vector. Classes are processed in batches so the caller can report progress between them.
"""

from __future__ import annotations

import heapq
import math
import os

import numpy as np

try:
    import numba

    HAVE_NUMBA = os.environ.get("LSC_NO_NUMBA", "0") != "1"
except ImportError:  # pragma: no cover
    numba, HAVE_NUMBA = None, False


def system_arrays(system) -> tuple:
    """The orbits of a system as arrays: (start state positions [O, K], values [O, K], nonzeros [O], group
    values [O, G], group sizes [O, G], groups [O], place values [O, G], 1/|v| [O], offsets [O], binomials)."""
    orbits, n = system.orbits, system.n_dim
    n_orb = len(orbits)
    k_max = max(o.n_nonzero for o in orbits)
    g_max = max(len(o.values) for o in orbits)
    pos0 = np.zeros((n_orb, k_max), np.int64)
    val0 = np.zeros((n_orb, k_max), np.int64)
    nnz = np.zeros(n_orb, np.int64)
    gval = np.zeros((n_orb, g_max), np.int64)
    gmul = np.zeros((n_orb, g_max), np.int64)
    ngroups = np.zeros(n_orb, np.int64)
    place = np.zeros((n_orb, g_max), np.int64)
    for o, orb in enumerate(orbits):
        i = k = 0
        for val, c in orb.sorted_frame_levels():
            if val != 0:
                pos0[o, k : k + c] = np.arange(i, i + c)
                val0[o, k : k + c] = val
                k += c
            i += c
        nnz[o], ngroups[o] = k, len(orb.values)
        gval[o, : len(orb.values)] = orb.values
        gmul[o, : len(orb.values)] = orb.mults
        place[o, : len(orb.values)] = orb._place
    inv_norm = np.array([o.inv_norm for o in orbits], np.float64)
    offsets = np.array(system.offsets, np.int64)
    binom = np.zeros((n + 1, k_max + 1), np.int64)
    for a in range(n + 1):
        for b in range(k_max + 1):
            binom[a, b] = math.comb(a, b)
    if val0.min() < -8 or val0.max() > 7:
        raise ValueError(f"{system.display}: entries outside [-8, 7] are not supported by the compiled walk")
    return pos0, val0, nnz, gval, gmul, ngroups, place, inv_norm, offsets, binom


def _fsum(x, m, p):
    """math.fsum of x[:m] (CPython's algorithm: Shewchuk partials in p, then a correctly rounded total)."""
    n = 0
    for k in range(m):
        v = x[k]
        i = 0
        for j in range(n):
            y = p[j]
            if abs(v) < abs(y):
                v, y = y, v
            hi = v + y
            lo = y - (hi - v)
            if lo != 0.0:
                p[i] = lo
                i += 1
            v = hi
        n = i
        if v != 0.0:
            p[n] = v
            n += 1
    hi = 0.0
    lo = 0.0
    if n > 0:
        n -= 1
        hi = p[n]
        while n > 0:
            v = hi
            n -= 1
            y = p[n]
            hi = v + y
            lo = y - (hi - v)
            if lo != 0.0:
                break
        if n > 0 and ((lo < 0.0 and p[n - 1] < 0.0) or (lo > 0.0 and p[n - 1] > 0.0)):
            y = lo * 2.0
            v = hi + y
            if y == v - hi:
                hi = v
    return hi


def _rank(pos, val, k, o, order, gval, gmul, ngroups, place, offsets, binom, buf, taken):
    """Global index of the state (sorted-frame positions pos[:k] holding val[:k]) of orbit o (Orbit.rank_py)."""
    idx = 0
    nt = 0
    for g in range(ngroups[o]):
        v = gval[o, g]
        c = 0
        for j in range(k):
            if val[j] == v:
                buf[c] = order[pos[j]]
                c += 1
        buf[:c].sort()
        r = 0
        for i in range(c):
            p = buf[i]
            below = 0
            for t in range(nt):
                if taken[t] < p:
                    below += 1
            r += binom[p - below, i + 1]
        idx += r * place[o, g]
        for i in range(c):
            taken[nt] = buf[i]
            nt += 1
    return offsets[o] + idx


def _key(pos, val, k, o, pbits, vshift):
    """A state's identity as one int64: its orbit, then each entry's position and value."""
    key = o
    for j in range(k):
        key = (key << pbits) | pos[j]
        key = (key << 4) | (val[j] + vshift)
    return key


def _is_taken(bits, j):
    return (bits[j >> 3] >> (j & 7)) & 1


def _walk(row, bits, budget, pos0, val0, nnz, gval, gmul, ngroups, place, inv_norm, offsets, binom):
    """(best free vector of one prototype row, pops); (-1, pops) once a level ends past `budget` pops."""
    n = row.shape[0]
    pbits = 1
    while (1 << pbits) < n:
        pbits += 1
    obits = 1
    while (1 << obits) < pos0.shape[0]:
        obits += 1
    vshift = 8  # values lie in [-8, 7] (checked by system_arrays)
    packed = obits + pos0.shape[1] * (pbits + 4) <= 62  # states keyed by their packed entries, ranked when popped
    order = np.argsort(-row, kind="mergesort")  # stable: ties by lower coordinate, as sorted() in search.py
    zs = row[order]
    n_orb, kk = pos0.shape
    cap = 64
    s_pos = np.empty((cap, kk), np.int64)
    s_val = np.empty((cap, kk), np.int64)
    s_orb = np.empty(cap, np.int64)
    s_idx = np.empty(cap, np.int64)
    terms = np.empty(kk)
    partials = np.empty(kk + 1)
    buf = np.empty(kk, np.int64)
    tk = np.empty(kk, np.int64)
    seen = set()
    heap = [(0.0, np.int64(0))]
    heap.pop()
    n_states = 0
    cand_pos = np.empty(kk, np.int64)
    cand_val = np.empty(kk, np.int64)
    for o in range(n_orb):
        k = nnz[o]
        idx = _rank(pos0[o], val0[o], k, o, order, gval, gmul, ngroups, place, offsets, binom, buf, tk)
        seen.add(_key(pos0[o], val0[o], k, o, pbits, vshift) if packed else idx)
        for j in range(k):
            terms[j] = val0[o, j] * zs[pos0[o, j]]
        score = _fsum(terms, k, partials) * inv_norm[o]
        s_pos[n_states, :k] = pos0[o, :k]
        s_val[n_states, :k] = val0[o, :k]
        s_orb[n_states], s_idx[n_states] = o, idx
        heapq.heappush(heap, (-score, np.int64(n_states)))  # state ids grow with pushes: the push order (tick)
        n_states += 1
    pops = 0
    have_level = False
    level_score = 0.0
    best = -1  # lowest free index of the current level
    while len(heap) > 0:
        neg, sid = heapq.heappop(heap)
        score = -neg
        pops += 1
        if have_level and score < level_score:
            if best >= 0:
                return best, pops
            if budget >= 0 and pops > budget:
                return -1, pops
        level_score, have_level = score, True
        o = s_orb[sid]
        k = nnz[o]
        idx = s_idx[sid]
        if idx < 0:  # keyed by its entries: ranked now
            idx = _rank(s_pos[sid], s_val[sid], k, o, order, gval, gmul, ngroups, place, offsets, binom, buf, tk)
        if not _is_taken(bits, idx) and (best < 0 or idx < best):
            best = idx
        for a in range(k):  # successors: adjacent swaps moving a larger value down the frame, in search.py's order
            p = s_pos[sid, a]
            for side in range(2):
                lo = p if side == 0 else p - 1
                hi = lo + 1
                if lo < 0 or hi >= n:
                    continue
                vlo = 0
                vhi = 0
                for j in range(k):
                    if s_pos[sid, j] == lo:
                        vlo = s_val[sid, j]
                    elif s_pos[sid, j] == hi:
                        vhi = s_val[sid, j]
                if vlo <= vhi:
                    continue
                for j in range(k):  # swap the entries at lo and hi, keep positions ascending
                    q = s_pos[sid, j]
                    cand_pos[j] = hi if q == lo else (lo if q == hi else q)
                    cand_val[j] = s_val[sid, j]
                for j in range(1, k):  # insertion sort by position (k is small)
                    q, w = cand_pos[j], cand_val[j]
                    m = j - 1
                    while m >= 0 and cand_pos[m] > q:
                        cand_pos[m + 1] = cand_pos[m]
                        cand_val[m + 1] = cand_val[m]
                        m -= 1
                    cand_pos[m + 1], cand_val[m + 1] = q, w
                if packed:  # rank only when popped
                    nidx = -1
                    key = _key(cand_pos, cand_val, k, o, pbits, vshift)
                else:
                    nidx = _rank(cand_pos, cand_val, k, o, order, gval, gmul, ngroups, place, offsets, binom, buf, tk)
                    key = nidx
                if key in seen:
                    continue
                seen.add(key)
                for j in range(k):
                    terms[j] = cand_val[j] * zs[cand_pos[j]]
                nscore = _fsum(terms, k, partials) * inv_norm[o]
                if n_states == cap:
                    cap *= 2
                    s_pos = _grow2(s_pos, cap)
                    s_val = _grow2(s_val, cap)
                    s_orb = _grow1(s_orb, cap)
                    s_idx = _grow1(s_idx, cap)
                s_pos[n_states, :k] = cand_pos[:k]
                s_val[n_states, :k] = cand_val[:k]
                s_orb[n_states], s_idx[n_states] = o, nidx
                heapq.heappush(heap, (-nscore, np.int64(n_states)))
                n_states += 1
    return best, pops


def _grow2(a, cap):
    out = np.empty((cap, a.shape[1]), a.dtype)
    out[: a.shape[0]] = a
    return out


def _grow1(a, cap):
    out = np.empty(cap, a.dtype)
    out[: a.shape[0]] = a
    return out


def _assign_range(
    protos, order, near, bits, out, start, stop, budget, stats,
    pos0, val0, nnz, gval, gmul, ngroups, place, inv_norm, offsets, binom,
):  # fmt: skip
    """Classes order[start:stop] in turn; returns the position of a class whose walk ran past the budget (the
    caller scans for it and continues after it), or stop. stats: [walks, pops]."""
    for i in range(start, stop):
        c = order[i]
        v = near[c]
        if _is_taken(bits, v):
            stats[0] += 1
            row = protos[c].astype(np.float64)
            v, k = _walk(row, bits, budget, pos0, val0, nnz, gval, gmul, ngroups, place, inv_norm, offsets, binom)
            stats[1] += k
            if v < 0:
                return i
        out[c] = v
        bits[v >> 3] |= np.uint8(1 << (v & 7))
    return stop


if HAVE_NUMBA:
    _fsum = numba.njit(cache=True)(_fsum)
    _rank = numba.njit(cache=True)(_rank)
    _is_taken = numba.njit(cache=True)(_is_taken)
    _key = numba.njit(cache=True)(_key)
    _grow1 = numba.njit(cache=True)(_grow1)
    _grow2 = numba.njit(cache=True)(_grow2)
    _walk = numba.njit(cache=True)(_walk)
    _assign_range = numba.njit(cache=True)(_assign_range)


def assign_range(protos, order, near, bits, out, start, stop, budget, stats, arrays) -> int:
    return int(_assign_range(protos, order, near, bits, out, start, stop, budget, stats, *arrays))


def set_taken(bits: np.ndarray, idx) -> None:
    idx = np.asarray(idx, np.int64)
    np.bitwise_or.at(bits, idx >> 3, (1 << (idx & 7)).astype(np.uint8))


def taken_mask(bits: np.ndarray, count: int) -> np.ndarray:
    return np.unpackbits(bits, bitorder="little")[:count].astype(bool)
