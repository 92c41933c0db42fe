"""The nearest-free walk of `assignment.assign_nearest_free`, compiled (numba): the same rule, the same table.

Per class in the rule's order: take the precomputed nearest vector when free, else walk the class's vectors
best-first (arXiv 2604.00779, Algorithm 2, as `search.best_first`): states are the sorted-frame positions of an
orbit's nonzero entries, successors the adjacent swaps that move a larger value down the frame (each state pushed
by one parent: a spanning tree of the swaps, no set of seen states), scores the exact (Shewchuk, as math.fsum) sums
times the orbit's 1/|v|, popped from an array heap by (score, push order) and grouped into levels of equal score;
the lowest free index of the first level holding a free vector wins. A walk past `budget` pops hands
the class back to the caller (which scans the free vectors: the same answer). Taken vectors are a bitmap, 1 bit
per vector. Classes are processed in batches so the caller can report progress between them.
"""

from __future__ import annotations

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


def _rank(pos, val, sid, k, o, order, gval, gmul, ngroups, place, offsets, binom, buf, taken):
    """Global index of state sid (sorted-frame positions pos[sid, :k] holding val[sid, :k]) of orbit o
    (Orbit.rank_py)."""
    idx = 0
    nt = 0
    for g in range(ngroups[o]):
        v = gval[o, g]
        c = 0
        for j in range(k):
            if val[sid, j] == v:
                buf[c] = order[pos[sid, j]]
                c += 1
        for i in range(1, c):  # insertion sort (c is small; an array sort call costs more here)
            q = buf[i]
            m = i - 1
            while m >= 0 and buf[m] > q:
                buf[m + 1] = buf[m]
                m -= 1
            buf[m + 1] = q
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


def _is_taken(bits, j):
    return (bits[j >> 3] >> (j & 7)) & 1


def _walk(row, bits, budget, found, pos0, val0, nnz, gval, gmul, ngroups, place, inv_norm, offsets, binom):
    """(free vectors found, pops): the best free vectors of one prototype row in the rule's order (levels of equal
    score, lowest index first within a level) into found[:len(found)] (one for a class; a group's size for the
    bounded rule's group walk); fewer once a level ends past `budget` pops (-1: no budget).

    Each state is pushed once, by one parent, with no set of seen states: a state pushes the successor made by the
    swap at frame positions (lo, lo + 1) only when lo is that successor's lowest ascent (its first adjacent pair
    with the smaller value above the larger one), so a state's parent is the state that undoes its lowest ascent.
    Every state but an orbit's start (values non-increasing down the frame) has an ascent, so every state has
    exactly one parent, one inversion closer to the start, and a parent scores at least as high as its child (the
    larger value sits at the larger coordinate): the states are popped in the same order of scores as by a walk that
    pushes every swap and drops repeats, so the same levels, the same pops, the same answer. A state keeps its
    lowest ascent `asc`; the swap at lo is the successor's lowest ascent iff the state has no ascent below lo - 1
    (asc >= lo - 1) and the value above lo is at least the one moving up into lo."""
    n = row.shape[0]
    order = np.argsort(-row, kind="mergesort")  # stable: ties by lower coordinate, as sorted() in search.py
    zs = row[order]
    n_orb, kk = pos0.shape
    cap = 64
    s_pos = np.empty((cap, kk), np.int64)
    s_val = np.empty((cap, kk), np.int64)
    s_orb = np.empty(cap, np.int64)
    s_asc = np.empty(cap, np.int64)
    terms = np.empty(kk)
    partials = np.empty(kk + 1)
    buf = np.empty(kk, np.int64)
    tk = np.empty(kk, np.int64)
    h_key = np.empty(cap)  # the heap: (-score, state id), state ids growing with pushes (the push order)
    h_sid = np.empty(cap, np.int64)
    h_n = 0
    n_states = 0
    for o in range(n_orb):
        k = nnz[o]
        for j in range(k):
            terms[j] = val0[o, j] * zs[pos0[o, j]]
        score = _fsum(terms, k, partials) * inv_norm[o]
        s_pos[n_states, :k] = pos0[o, :k]
        s_val[n_states, :k] = val0[o, :k]
        s_orb[n_states], s_asc[n_states] = o, n  # a start state has no ascent
        _heap_push(h_key, h_sid, h_n, -score, n_states)
        h_n += 1
        n_states += 1
    pops = 0
    have_level = False
    level_score = 0.0
    want = found.shape[0]
    nf = 0  # vectors found so far
    lvl = np.empty(8, np.int64)  # the free vectors of the current level
    m = 0
    while h_n > 0:
        neg, sid = _heap_pop(h_key, h_sid, h_n)
        h_n -= 1
        score = -neg
        pops += 1
        if have_level and score < level_score:
            if m > 0:
                nf = _take_level(lvl, m, found, nf)
                m = 0
                if nf == want:
                    return nf, pops
            if budget >= 0 and pops > budget:
                return nf, pops
        level_score, have_level = score, True
        o = s_orb[sid]
        k = nnz[o]
        idx = _rank(s_pos, s_val, sid, k, o, order, gval, gmul, ngroups, place, offsets, binom, buf, tk)
        if not _is_taken(bits, idx):
            if m == lvl.shape[0]:
                lvl = _grow1(lvl, 2 * m)
            lvl[m] = idx
            m += 1
        asc = s_asc[sid]
        for a in range(k):  # successors: adjacent swaps moving a larger value down the frame
            p, va = s_pos[sid, a], s_val[sid, a]
            # the neighbouring entries (positions ascend): what the frame holds at p - 2 .. p + 1
            pp, pv = -3, 0
            if a > 0:
                pp, pv = s_pos[sid, a - 1], s_val[sid, a - 1]
            nxt = a + 1 < k and s_pos[sid, a + 1] == p + 1
            for side in range(2):
                if side == 0:  # swap (p, p + 1): entry a moves down, or trades values with entry a + 1
                    lo, vlo = p, va
                    vhi = s_val[sid, a + 1] if nxt else 0
                else:  # swap (p - 1, p) with an empty p - 1 (a nonzero there makes it that entry's side 0)
                    lo, vlo, vhi = p - 1, 0, va
                    if pp == lo:
                        continue
                hi = lo + 1
                if lo < 0 or hi >= n or asc < lo - 1 or vlo <= vhi:
                    continue
                if lo > 0 and (pv if pp == lo - 1 else 0) < vhi:
                    continue  # the successor would have an ascent at lo - 1: another state is its parent
                if n_states == cap:
                    cap *= 2
                    s_pos = _grow2(s_pos, cap)
                    s_val = _grow2(s_val, cap)
                    s_orb = _grow1(s_orb, cap)
                    s_asc = _grow1(s_asc, cap)
                    h_key = _grow1(h_key, cap)
                    h_sid = _grow1(h_sid, cap)
                t = n_states
                for j in range(k):
                    s_pos[t, j], s_val[t, j] = s_pos[sid, j], s_val[sid, j]
                if side == 0 and nxt:  # adjacent entries trade values: the positions stay
                    s_val[t, a], s_val[t, a + 1] = vhi, vlo
                else:  # entry a moves into the empty neighbouring slot: the positions stay ascending
                    s_pos[t, a] = hi if side == 0 else lo
                for j in range(k):
                    terms[j] = s_val[t, j] * zs[s_pos[t, j]]
                nscore = _fsum(terms, k, partials) * inv_norm[o]
                s_orb[t], s_asc[t] = o, lo
                _heap_push(h_key, h_sid, h_n, -nscore, t)
                h_n += 1
                n_states += 1
    if m > 0:
        nf = _take_level(lvl, m, found, nf)
    return nf, pops


def _take_level(lvl, m, found, nf):
    """Append the level's free vectors lvl[:m], lowest index first, to found[:nf] while it has room."""
    lv = np.sort(lvl[:m])
    j = 0
    while j < m and nf < found.shape[0]:
        found[nf] = lv[j]
        nf += 1
        j += 1
    return nf


def _heap_push(key, sid, n, k, i):
    """Push (k, i) onto the binary min-heap key[:n], sid[:n] (ordered by key, then sid)."""
    j = n
    while j > 0:
        up = (j - 1) >> 1
        if key[up] < k or (key[up] == k and sid[up] < i):
            break
        key[j], sid[j] = key[up], sid[up]
        j = up
    key[j], sid[j] = k, i


def _heap_pop(key, sid, n):
    """Pop the smallest (key, sid) of the binary min-heap key[:n], sid[:n] (n - 1 entries are left)."""
    k0, i0 = key[0], sid[0]
    n -= 1
    k, i = key[n], sid[n]
    j = 0
    while True:
        c = 2 * j + 1
        if c >= n:
            break
        if c + 1 < n and (key[c + 1] < key[c] or (key[c + 1] == key[c] and sid[c + 1] < sid[c])):
            c += 1
        if key[c] > k or (key[c] == k and sid[c] > i):
            break
        key[j], sid[j] = key[c], sid[c]
        j = c
    key[j], sid[j] = k, i
    return k0, i0


def _grow2(a, cap):
    out = np.empty((cap, a.shape[1]), a.dtype)
    out[: a.shape[0]] = a
    return out


def _grow1(a, cap):
    out = np.empty(cap, a.dtype)
    out[: a.shape[0]] = a
    return out


def _assign_range(
    protos, order, near, bits, out, start, stop, budget, stats, deferred,
    pos0, val0, nnz, gval, gmul, ngroups, place, inv_norm, offsets, binom,
):  # fmt: skip
    """Classes order[start:stop] in turn; returns the position of a class whose walk ran past the budget (the
    caller scans for it and continues after it), or stop. With a `deferred` array (the bounded rule, len > 0)
    such a class is appended to it instead (out = -1) and the range goes on. stats: [walks, pops, deferred]."""
    found = np.empty(1, np.int64)
    for i in range(start, stop):
        c = order[i]
        v = near[c]
        if _is_taken(bits, v):
            stats[0] += 1
            row = _row64(protos[c])
            nf, k = _walk(row, bits, budget, found, pos0, val0, nnz, gval, gmul, ngroups, place, inv_norm, offsets,
                          binom)  # fmt: skip
            stats[1] += k
            if nf == 0:
                if deferred.shape[0] == 0:
                    return i
                deferred[stats[2]] = c
                stats[2] += 1
                out[c] = -1
                continue
            v = found[0]
        out[c] = v
        bits[v >> 3] |= np.uint8(1 << (v & 7))
    return stop


def _row64(r):
    """A prototype row as float64 (numba has no float16: a float16 array comes in as its uint16 bits, see
    `assign_range`)."""
    return r.astype(np.float64)


def _half_bits_to_f64(r):
    """float16 bit patterns (uint16) -> float64, exactly (finite values: the prototypes were checked)."""
    out = np.empty(r.shape[0], np.float64)
    for i in range(r.shape[0]):
        h = np.int64(r[i])
        e, m = (h >> 10) & 0x1F, h & 0x3FF
        v = m * 2.0**-24 if e == 0 else (1024 + m) * 2.0 ** (e - 25)
        out[i] = -v if h >> 15 else v
    return out


def _pick_greedy(scores, picks):
    """Rows of scores [members, candidates] in turn, each the best candidate no earlier row took (ties: the
    candidate found first) into picks."""
    used = np.zeros(scores.shape[1], np.bool_)
    for i in range(scores.shape[0]):
        best, bj = -np.inf, -1
        for j in range(scores.shape[1]):
            if not used[j] and (bj < 0 or scores[i, j] > best):
                best, bj = scores[i, j], j
        used[bj] = True
        picks[i] = bj


if HAVE_NUMBA:
    from numba.extending import overload

    _half_bits_to_f64 = numba.njit(cache=True)(_half_bits_to_f64)

    @overload(_row64, inline="always")
    def _row64_numba(r):
        if r.dtype == numba.types.uint16:
            return lambda r: _half_bits_to_f64(r)
        return lambda r: r.astype(np.float64)

    _fsum = numba.njit(cache=True, inline="always")(_fsum)
    _rank = numba.njit(cache=True, inline="always")(_rank)
    _is_taken = numba.njit(cache=True, inline="always")(_is_taken)
    _heap_push = numba.njit(cache=True, inline="always")(_heap_push)
    _heap_pop = numba.njit(cache=True, inline="always")(_heap_pop)
    _grow1 = numba.njit(cache=True)(_grow1)
    _grow2 = numba.njit(cache=True)(_grow2)
    _take_level = numba.njit(cache=True)(_take_level)
    _walk = numba.njit(cache=True)(_walk)
    _assign_range = numba.njit(cache=True)(_assign_range)
    _pick_greedy = numba.njit(cache=True)(_pick_greedy)


def assign_range(protos, order, near, bits, out, start, stop, budget, stats, arrays, deferred=None) -> int:
    if deferred is None:
        deferred = np.empty(0, np.int64)
    if HAVE_NUMBA and protos.dtype == np.float16:  # numba has no float16: its bits, decoded per row (_row64)
        protos = protos.view(np.uint16)
    return int(_assign_range(protos, order, near, bits, out, start, stop, budget, stats, deferred, *arrays))


def walk_free(row, bits, want: int, arrays) -> tuple[np.ndarray, int]:
    """The first `want` free vectors of a walk from row (float64), in the walk's order (fewer only when the system
    has fewer free), and the pops."""
    found = np.empty(want, np.int64)
    nf, pops = _walk(np.ascontiguousarray(row, np.float64), bits, -1, found, *arrays)
    return found[:nf], int(pops)


def pick_greedy(scores: np.ndarray) -> np.ndarray:
    picks = np.empty(scores.shape[0], np.int64)
    _pick_greedy(np.ascontiguousarray(scores, np.float64), picks)
    return picks


def set_taken(bits: np.ndarray, idx) -> None:
    idx = np.asarray(idx, np.int64)
    np.bitwise_or.at(bits, idx >> 3, (1 << (idx & 7)).astype(np.uint8))


def taken_mask(bits: np.ndarray, count: int) -> np.ndarray:
    return np.unpackbits(bits, bitorder="little")[:count].astype(bool)
