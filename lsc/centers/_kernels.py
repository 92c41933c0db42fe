"""The topk predictor's fast path: nearest vector, its index, pi^-1, labeled? -- three implementations.

* `fast_labels_torch`: batched tensor ops on any device (CUDA included); the reference.
* `_triton.fast_labels_triton`: the same outputs from one fused Triton kernel; the default on CUDA.
* `fast_labels_numba`: one fused loop per row for CPU tensors. Eager torch launches ~100 passes over [B, n_dim]
  and [B] tensors for this; the fused loop reads each embedding once, which is what makes the predictor run at
  memory-copy speed on a CPU. Used automatically when numba is installed; tests check both give the same.

Both return (labels [B] int64 with -1 where the row needs the slow path, slow [B] bool): a row is slow when the
nearest vector is unlabeled or when it is not unique (an exact tie).
"""

from __future__ import annotations

import os

import numpy as np
import torch

# numba's thread pool must not outnumber torch's: with OMP_NUM_THREADS=1 (parallel single-thread workers: sweeps,
# DDP on CPU, the experiment runner) a 2-thread pool per process oversubscribes the cores and halves training speed.
os.environ.setdefault("NUMBA_NUM_THREADS", str(max(1, torch.get_num_threads())))

try:  # optional: pure torch works everywhere, numba makes the CPU path ~10x faster
    import numba

    HAVE_NUMBA = os.environ.get("LSC_NO_NUMBA", "0") != "1"
except ImportError:  # pragma: no cover
    numba, HAVE_NUMBA = None, False


PARALLEL_ROWS = 1 << 15
TILE = 32  # rows per SIMD threshold pass in the fused kernel


def use_triton(device: torch.device | str) -> bool:
    """The fused Triton kernels (`_triton`) serve CUDA tensors when triton imports; LSC_NO_TRITON=1 turns them off.
    Imported lazily: CPU-only processes never import triton for this."""
    if torch.device(device).type != "cuda" or os.environ.get("LSC_NO_TRITON", "0") == "1":
        return False
    from . import _triton

    return _triton.HAVE_TRITON


def fast_labels(cc, z: torch.Tensor, backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """backend: `auto` = triton on CUDA (when importable), numba on CPU (when installed), else torch; or one of
    "torch", "numba", "triton" (CPU tensors under "triton" need the Triton interpreter, see `_triton`)."""
    if backend == "auto":
        if use_triton(z.device):
            backend = "triton"
        else:
            backend = "numba" if (HAVE_NUMBA and z.device.type == "cpu") else "torch"
    if backend == "triton":
        from ._triton import fast_labels_triton, triton_topk_covers

        return fast_labels_triton(cc, z) if triton_topk_covers(cc) else fast_labels_torch(cc, z)
    if backend == "numba":
        return fast_labels_numba(cc, z)
    if backend != "torch":
        raise ValueError(f"unknown fast_labels backend {backend!r}; choose auto, torch, numba or triton")
    return fast_labels_torch(cc, z)


def fast_labels_torch(cc, z: torch.Tensor, row_block: int = 1 << 18):
    labels = torch.empty(z.shape[0], dtype=torch.int64, device=z.device)
    slow = torch.empty(z.shape[0], dtype=torch.bool, device=z.device)
    for a in range(0, z.shape[0], row_block):
        idx, best, runner = cc.system.fast_nearest(z[a : a + row_block])
        tied = runner >= best
        lab = cc.perm.inverse(idx)
        s = tied | (lab >= cc.n_classes)
        labels[a : a + row_block] = torch.where(s, -1, lab)
        slow[a : a + row_block] = s
    return labels, slow


# ---- numba ------------------------------------------------------------------------------------------------


class _Plan:
    """Flat arrays describing a ClassCenters' system and permutation, for the fused kernel."""

    def __init__(self, cc):
        sysm = cc.system
        orbs = sysm.orbits
        kmax = max(max(o.mults) for o in orbs)
        n = sysm.n_dim
        self.table = np.array([[min(v, (1 << 63) - 1) for v in row] for row in _binom(n, kmax)], dtype=np.int64)
        gv, gm, gp, gs, ng, npos, nneg, off, inv = [], [], [], [], [], [], [], [], []
        for o, o_off in zip(orbs, sysm.offsets, strict=True):
            gs.append(len(gv))
            ng.append(len(o.values))
            gv += o.values
            gm += o.mults
            gp += o._place
            npos.append(o.n_pos)
            nneg.append(o.n_neg)
            off.append(o_off)
            inv.append(o.inv_norm)
        self.g_value = np.array(gv, dtype=np.int64)
        self.g_mult = np.array(gm, dtype=np.int64)
        self.g_place = np.array(gp, dtype=np.int64)
        self.o_gstart = np.array(gs, dtype=np.int64)
        self.o_ngroups = np.array(ng, dtype=np.int64)
        self.o_npos = np.array(npos, dtype=np.int64)
        self.o_nneg = np.array(nneg, dtype=np.int64)
        self.o_offset = np.array(off, dtype=np.int64)
        self.o_inv = np.array(inv, dtype=np.float64)
        # coordinates selected from the top and the bottom: the nearest vector and its runner-up need one beyond
        # the largest orbit's nonzeros on each side, the second-best check one more
        mp, mn = max(o.n_pos for o in orbs), max(o.n_neg for o in orbs)
        self.sizes = np.array([min(n, mp + 2), min(n, mn + 2)], dtype=np.int64)
        p = cc.perm
        # an explicit assignment (data-aware) is applied after the kernel: the kernel reports every vector index
        # (identity order, all "labeled") and `fast_labels_numba` maps indices to labels by binary search
        self.explicit = getattr(p, "explicit", False)
        self.shuffle = hasattr(p, "keys")
        self.keys = np.array(p.keys if self.shuffle else [0] * 6, dtype=np.int64)
        self.pa = p.a if self.shuffle else 1
        self.pb = p.b if self.shuffle else 1
        self.count = sysm.count
        self.n_classes = sysm.count if self.explicit else cc.n_classes


def _binom(n, kmax):
    from math import comb

    return [[comb(c, j) for j in range(kmax + 1)] for c in range(n + 1)]


def fast_labels_numba(cc, z: torch.Tensor):
    plan = getattr(cc, "_plan", None)
    if plan is None:
        plan = cc._plan = _Plan(cc)
    zn = z.detach().float().contiguous().numpy()
    labels = np.empty(zn.shape[0], dtype=np.int64)
    slow = np.empty(zn.shape[0], dtype=np.bool_)
    # Small batches (and single-thread processes) run a serial kernel on the calling thread: numba's thread pool is
    # never launched there. Waking the pool right after a torch op costs milliseconds (torch's OpenMP threads
    # spin-wait), and an idle pool beside single-thread workers (sweeps, DDP on CPU) halves their speed.
    parallel = zn.shape[0] >= PARALLEL_ROWS and torch.get_num_threads() > 1
    (_kernel if parallel else _kernel_serial)(
        zn, labels, slow, plan.table, plan.g_value, plan.g_mult, plan.g_place, plan.o_gstart, plan.o_ngroups,
        plan.o_npos, plan.o_nneg, plan.o_offset, plan.o_inv, plan.sizes, plan.shuffle, plan.keys, plan.pa,
        plan.pb, plan.count, plan.n_classes,
    )  # fmt: skip
    labels, slow = torch.from_numpy(labels), torch.from_numpy(slow)
    if plan.explicit:
        lab = cc.perm.inverse(labels.clamp(min=0))
        unowned = (lab >= cc.n_classes) & ~slow
        slow |= unowned
        labels = torch.where(slow, -1, lab)
    return labels, slow


if HAVE_NUMBA:
    _M1 = 0x5BD1E995 & 0x7FFFFFFF

    @numba.njit(inline="always", cache=True)
    def _f(x, k, m):  # FeistelPermutation._f
        h = (x ^ k) * _M1
        return (((h ^ (h >> 31)) & 0x7FFFFFFF) * m) >> 31

    @numba.njit(inline="always", cache=True)
    def _inverse(y, k0, k1, k2, k3, k4, k5, a, b, count):
        """FeistelPermutation.inverse for one value: rounds in reverse, cycle-walking; no division in the rounds
        (0 <= l < a and 0 <= F < a, so (l - F) mod a is one conditional add). Scalars only: an array argument
        would cost an atomic reference-count update per call."""
        while True:
            lft = y // b
            rgt = y - lft * b
            rgt -= _f(lft, k5, b)
            rgt += b if rgt < 0 else 0
            lft -= _f(rgt, k4, a)
            lft += a if lft < 0 else 0
            rgt -= _f(lft, k3, b)
            rgt += b if rgt < 0 else 0
            lft -= _f(rgt, k2, a)
            lft += a if lft < 0 else 0
            rgt -= _f(lft, k1, b)
            rgt += b if rgt < 0 else 0
            lft -= _f(rgt, k0, a)
            lft += a if lft < 0 else 0
            y = lft * b + rgt
            if y < count:
                return y

    @numba.njit(parallel=True, cache=True)
    def _kernel(
        z, labels, slow, table, g_value, g_mult, g_place, o_gstart, o_ngroups, o_npos, o_nneg, o_offset, o_inv,
        sizes, shuffle, keys, pa, pb, count, n_classes,
    ):  # fmt: skip
        B = z.shape[0]
        block = 2048
        for blk in numba.prange((B + block - 1) // block):
            _rows(
                z, labels, slow, blk * block, min(B, (blk + 1) * block), table, g_value, g_mult, g_place, o_gstart,
                o_ngroups, o_npos, o_nneg, o_offset, o_inv, sizes, shuffle, keys, pa, pb, count, n_classes,
            )  # fmt: skip

    @numba.njit(cache=True)
    def _kernel_serial(
        z, labels, slow, table, g_value, g_mult, g_place, o_gstart, o_ngroups, o_npos, o_nneg, o_offset, o_inv,
        sizes, shuffle, keys, pa, pb, count, n_classes,
    ):  # fmt: skip
        """`_kernel` on the calling thread (its own function, so that each keeps its own numba cache entry)."""
        _rows(
            z, labels, slow, 0, z.shape[0], table, g_value, g_mult, g_place, o_gstart, o_ngroups, o_npos, o_nneg,
            o_offset, o_inv, sizes, shuffle, keys, pa, pb, count, n_classes,
        )  # fmt: skip

    @numba.njit(inline="always")
    def _pick(k, a1, a2, a3, a4, none):
        if k == 1:
            return a1
        if k == 2:
            return a2
        if k == 3:
            return a3
        if k == 4:
            return a4
        return none

    @numba.njit(cache=True)
    def _rows(
        z, labels, slow, r0, r1, table, g_value, g_mult, g_place, o_gstart, o_ngroups, o_npos, o_nneg, o_offset,
        o_inv, sizes, shuffle, keys, pa, pb, count, n_classes,
    ):  # fmt: skip
        """Labels of rows r0..r1-1: the closest labeled center of each, or -1 where the slow path must decide.

        The nearest vector (rearrangement inequality, best orbit by cosine) when it is unique and labeled; when it
        is unique but unlabeled, `_second` tries the second-best vector. The per-row work is written out here, in
        one function: numba updates an array's reference count (an atomic instruction) whenever one is passed to a
        helper, inlined or not, and ~50 such updates per row took over half the time. Helpers called per row take
        scalars only; `_second` (a few percent of rows) takes arrays.
        """
        n = z.shape[1]
        n_orb = o_offset.shape[0]
        sel_top = sizes[0]  # coordinates selected from each side (see _Plan.sizes); both lists are always full
        sel_bottom = sizes[1]
        tv = np.empty(sel_top, np.float64)
        ti = np.empty(sel_top, np.int64)
        bv = np.empty(sel_bottom, np.float64)
        bi = np.empty(sel_bottom, np.int64)
        taken = np.empty(sel_top + sel_bottom, np.int64)
        pos = np.empty(sel_top + sel_bottom, np.int64)
        osc = np.empty(n_orb, np.float64)
        odot = np.empty(n_orb, np.float64)
        odrop = np.empty(n_orb, np.float64)
        cand_top = np.empty(n + 1, np.int64)
        cand_bottom = np.empty(n + 1, np.int64)
        k0, k1, k2, k3, k4, k5 = keys[0], keys[1], keys[2], keys[3], keys[4], keys[5]
        lo = z.dtype.type(-np.inf)
        hi = z.dtype.type(np.inf)
        # per tile of TILE rows, transposed, so that the threshold pass runs across rows in SIMD lanes
        zt = np.empty((n, TILE), z.dtype)
        p1 = np.empty(TILE, z.dtype)
        p2 = np.empty(TILE, z.dtype)
        p3 = np.empty(TILE, z.dtype)
        p4 = np.empty(TILE, z.dtype)
        s1 = np.empty(TILE, z.dtype)
        s2 = np.empty(TILE, z.dtype)
        s3 = np.empty(TILE, z.dtype)
        s4 = np.empty(TILE, z.dtype)
        for r_tile in range(r0, r1, TILE):
            m = min(TILE, r1 - r_tile)
            # Selection of the sel_top largest (value desc, index asc) and sel_bottom smallest (value asc, index
            # desc) coordinates -- one total order, so the two lists never disagree on ties. A branch-free pass
            # finds the sel_top-th largest and sel_bottom-th smallest values of each row (four running extremes a
            # side, one SIMD lane per row); per row, a branch-free compaction then keeps the coordinates at or beyond
            # them (as many as selected, more only on ties), and only those go through the ordered insertion, whose
            # data-dependent branches cost ~5x more over a whole row.
            for lane in range(m):
                for j in range(n):
                    zt[j, lane] = z[r_tile + lane, j]
            p1[:] = lo
            p2[:] = lo
            p3[:] = lo
            p4[:] = lo
            s1[:] = hi
            s2[:] = hi
            s3[:] = hi
            s4[:] = hi
            for j in range(n):
                for lane in range(m):
                    x = zt[j, lane]
                    y = x
                    a1 = p1[lane]
                    a2 = p2[lane]
                    a3 = p3[lane]
                    p1[lane] = max(a1, x)
                    x = min(a1, x)
                    p2[lane] = max(a2, x)
                    x = min(a2, x)
                    p3[lane] = max(a3, x)
                    p4[lane] = max(p4[lane], min(a3, x))
                    b1 = s1[lane]
                    b2 = s2[lane]
                    b3 = s3[lane]
                    s1[lane] = min(b1, y)
                    y = max(b1, y)
                    s2[lane] = min(b2, y)
                    y = max(b2, y)
                    s3[lane] = min(b3, y)
                    s4[lane] = min(s4[lane], max(b3, y))
            for lane in range(m):
                r = r_tile + lane
                # past 4 selected: no filtering, every coordinate is a candidate
                t_top = _pick(sel_top, p1[lane], p2[lane], p3[lane], p4[lane], lo)
                t_bottom = _pick(sel_bottom, s1[lane], s2[lane], s3[lane], s4[lane], hi)
                kt = 0
                kb = 0
                for j in range(n):
                    x = z[r, j]
                    cand_top[kt] = j
                    cand_bottom[kb] = j
                    kt += x >= t_top
                    kb += x <= t_bottom
                nt = 0
                for c in range(kt):
                    j = cand_top[c]
                    x = np.float64(z[r, j])
                    if nt < sel_top or x > tv[nt - 1]:
                        p = nt if nt < sel_top else sel_top - 1
                        while p > 0 and x > tv[p - 1]:
                            tv[p] = tv[p - 1]
                            ti[p] = ti[p - 1]
                            p -= 1
                        tv[p] = x
                        ti[p] = j
                        if nt < sel_top:
                            nt += 1
                nb = 0
                for c in range(kb):
                    j = cand_bottom[c]
                    x = np.float64(z[r, j])
                    if nb < sel_bottom or x <= bv[nb - 1]:
                        p = nb if nb < sel_bottom else sel_bottom - 1
                        while p > 0 and x <= bv[p - 1]:
                            bv[p] = bv[p - 1]
                            bi[p] = bi[p - 1]
                            p -= 1
                        bv[p] = x
                        bi[p] = j
                        if nb < sel_bottom:
                            nb += 1
                best = -np.inf
                second = -np.inf
                win = 0
                win_runner = -np.inf
                for o in range(o_offset.shape[0]):
                    npos = o_npos[o]
                    nneg = o_nneg[o]
                    g0 = o_gstart[o]
                    ng = o_ngroups[o]
                    s = 0.0
                    drop = np.inf
                    # positive groups take sorted-frame coordinates 0..npos-1, in canonical (value desc) order
                    i = 0
                    prev_val = 0
                    for g in range(ng):
                        v = g_value[g0 + g]
                        if v < 0:
                            break
                        c = g_mult[g0 + g]
                        if i > 0:
                            drop = min(drop, (prev_val - v) * (tv[i - 1] - tv[i]))
                        for t in range(i, i + c):
                            s += v * tv[t]
                        i += c
                        prev_val = v
                    zeros = n - npos - nneg
                    if npos > 0 and npos < n:  # boundary after the positives: with a zero, or the first negative
                        nxt = 0
                        if zeros == 0:
                            for g in range(ng):
                                if g_value[g0 + g] < 0:
                                    nxt = g_value[g0 + g]
                                    break
                        after = tv[npos] if npos < sel_top else bv[n - 1 - npos]
                        drop = min(drop, (prev_val - nxt) * (tv[npos - 1] - after))
                    # negative groups: frame coordinates n-nneg..n-1, least negative first; bottom index = n-1-frame
                    i = n - nneg
                    first_neg = True
                    prev_val = 0
                    for g in range(ng):
                        v = g_value[g0 + g]
                        if v > 0:
                            continue
                        c = g_mult[g0 + g]
                        if first_neg:
                            if zeros > 0:
                                before = bv[n - i] if n - i < sel_bottom else tv[i - 1]
                                drop = min(drop, (0 - v) * (before - bv[n - 1 - i]))
                            first_neg = False
                        else:
                            drop = min(drop, (prev_val - v) * (bv[n - i] - bv[n - 1 - i]))
                        for t in range(i, i + c):
                            s += v * bv[n - 1 - t]
                        i += c
                        prev_val = v
                    sc = s * o_inv[o]
                    rn = (s - drop) * o_inv[o]
                    if sc > best:
                        second = best
                        best = sc
                        win = o
                        win_runner = rn
                    elif sc > second:
                        second = sc
                if max(win_runner, second) >= best:
                    labels[r] = -1
                    slow[r] = True
                    continue
                # rank the winner: groups in canonical order choose among the positions still free (what `_rank(win, -1,
                # ...)` computes, written out here because a call with array arguments costs ~40 atomic updates per row)
                g0 = o_gstart[win]
                ng = o_ngroups[win]
                nt_ = 0
                idx = 0
                t = 0
                nneg_after = o_nneg[win]
                for g in range(ng):
                    v = g_value[g0 + g]
                    c = g_mult[g0 + g]
                    if v > 0:
                        for a in range(c):
                            pos[a] = ti[t + a]
                        t += c
                    else:
                        nneg_after -= c  # groups after this one are more negative and take smaller coordinates
                        for a in range(c):
                            pos[a] = bi[nneg_after + a]
                    for a in range(1, c):  # insertion sort, c is tiny
                        x = pos[a]
                        b = a
                        while b > 0 and pos[b - 1] > x:
                            pos[b] = pos[b - 1]
                            b -= 1
                        pos[b] = x
                    rk = 0
                    for a in range(c):
                        q = pos[a]
                        for b in range(nt_):
                            if taken[b] < pos[a]:
                                q -= 1
                        rk += table[q, a + 1]
                    for a in range(c):
                        taken[nt_] = pos[a]
                        nt_ += 1
                    idx += rk * g_place[g0 + g]
                idx += o_offset[win]
                lab = _inverse(idx, k0, k1, k2, k3, k4, k5, pa, pb, count) if shuffle else idx
                if lab >= n_classes:
                    lab = _second(
                        n, nt, nb, tv, ti, bv, bi, taken, pos, osc, odot, odrop, table, g_value, g_mult, g_place,
                        o_gstart, o_ngroups, o_npos, o_nneg, o_offset, o_inv, shuffle, keys, pa, pb, count, n_classes,
                    )  # fmt: skip
                labels[r] = lab
                slow[r] = lab < 0

    @numba.njit(cache=True, inline="always")
    def _coord(k, n, ti, bi, nt):
        """Coordinate of the z at sorted-frame position k (0 = largest), from the top or the bottom list."""
        return ti[k] if k < nt else bi[n - 1 - k]

    @numba.njit(cache=True, inline="always")
    def _zval(k, n, tv, bv, nt):
        return tv[k] if k < nt else bv[n - 1 - k]

    @numba.njit(cache=True)
    def _rank(o, swap, n, ti, bi, nt, taken, pos, table, g_value, g_mult, g_place, o_gstart, o_ngroups, o_nneg,
              o_offset):  # fmt: skip
        """Global index of orbit o's best arrangement (its levels in sorted-frame order), with frame positions
        swap and swap + 1 exchanged when swap >= 0 (a "basic permutation" of arXiv 2604.00779, Alg. 2)."""
        g0 = o_gstart[o]
        ng = o_ngroups[o]
        n_taken = 0
        idx = 0
        fpos = 0  # next frame position of the positive groups
        fneg = n - o_nneg[o]  # next frame position of the negative groups (least negative first)
        for g in range(ng):
            v = g_value[g0 + g]
            c = g_mult[g0 + g]
            start = fpos if v > 0 else fneg
            for a in range(c):
                f = start + a
                if f == swap:
                    f = swap + 1
                elif swap >= 0 and f == swap + 1:
                    f = swap
                pos[a] = _coord(f, n, ti, bi, nt)
            if v > 0:
                fpos += c
            else:
                fneg += c
            for a in range(1, c):  # insertion sort, c is tiny
                x = pos[a]
                b = a
                while b > 0 and pos[b - 1] > x:
                    pos[b] = pos[b - 1]
                    b -= 1
                pos[b] = x
            rk = 0
            for a in range(c):
                q = pos[a]
                for b in range(n_taken):
                    if taken[b] < pos[a]:
                        q -= 1
                rk += table[q, a + 1]
            for a in range(c):
                taken[n_taken] = pos[a]
                n_taken += 1
            idx += rk * g_place[g0 + g]
        return idx + o_offset[o]

    @numba.njit(cache=True)
    def _second(
        n, nt, nb, tv, ti, bv, bi, taken, pos, osc, odot, odrop, table, g_value, g_mult, g_place, o_gstart, o_ngroups,
        o_npos, o_nneg, o_offset, o_inv, shuffle, keys, pa, pb, count, n_classes,
    ):  # fmt: skip
        """For a row whose nearest vector is unique but unlabeled: the second-best vector's label when that vector is
        unique and labeled and the coordinates near the level boundaries are distinct, else -1 (slow path).

        Every vector but the nearest lies below one of the winner's basic permutations or one of the other
        orbits' best vectors along a non-increasing path (Lemma 1 of arXiv 2604.00779), so the best of those
        candidates is the second-best vector; distinct coordinates rule out zero-weight edges (exact ties) below it.
        """
        best = -np.inf
        second = -np.inf
        win = 0
        for o in range(o_offset.shape[0]):
            g0 = o_gstart[o]
            ng = o_ngroups[o]
            s = 0.0
            drop = np.inf
            # levels in sorted-frame order: positive groups (value desc), zeros, negative groups (value desc)
            f = 0
            prev_val = 0
            first = True
            for part in range(3):
                for g in range(ng if part != 1 else 1):
                    if part == 1:
                        c = n - o_npos[o] - o_nneg[o]
                        if c == 0:
                            continue
                        v = 0
                    else:
                        v = g_value[g0 + g]
                        if (part == 0 and v < 0) or (part == 2 and v > 0):
                            continue
                        c = g_mult[g0 + g]
                    if not first:
                        gap = _zval(f - 1, n, tv, bv, nt) - _zval(f, n, tv, bv, nt)
                        drop = min(drop, (prev_val - v) * gap)
                    if v != 0:
                        for t in range(f, f + c):
                            s += v * _zval(t, n, tv, bv, nt)
                    f += c
                    prev_val = v
                    first = False
            odot[o] = s
            odrop[o] = drop
            sc = s * o_inv[o]
            osc[o] = sc
            if sc > best:
                second = best
                best = sc
                win = o
            elif sc > second:
                second = sc
        for k in range(1, nt):
            if not tv[k] < tv[k - 1]:
                return -1
        for k in range(1, nb):
            if not bv[k] > bv[k - 1]:
                return -1
        c_best = -np.inf
        c_second = -np.inf
        c_orb = -1
        c_swap = -1
        for o in range(o_offset.shape[0]):
            if o != win:
                if osc[o] > c_best:
                    c_second = c_best
                    c_best = osc[o]
                    c_orb = o
                    c_swap = -1
                elif osc[o] > c_second:
                    c_second = osc[o]
        # the winner's basic permutations: one adjacent swap at each boundary between value levels
        g0 = o_gstart[win]
        ng = o_ngroups[win]
        f = 0
        prev_val = 0
        first = True
        for part in range(3):
            for g in range(ng if part != 1 else 1):
                if part == 1:
                    c = n - o_npos[win] - o_nneg[win]
                    if c == 0:
                        continue
                    v = 0
                else:
                    v = g_value[g0 + g]
                    if (part == 0 and v < 0) or (part == 2 and v > 0):
                        continue
                    c = g_mult[g0 + g]
                if not first:
                    w = (prev_val - v) * (_zval(f - 1, n, tv, bv, nt) - _zval(f, n, tv, bv, nt))
                    sc = (odot[win] - w) * o_inv[win]
                    if sc > c_best:
                        c_second = c_best
                        c_best = sc
                        c_orb = win
                        c_swap = f - 1
                    elif sc > c_second:
                        c_second = sc
                f += c
                prev_val = v
                first = False
        if c_orb < 0 or not c_best > c_second:
            return -1
        if c_orb != win and not odrop[c_orb] > 0:
            return -1
        idx = _rank(c_orb, c_swap, n, ti, bi, nt, taken, pos, table, g_value, g_mult, g_place, o_gstart, o_ngroups,
                    o_nneg, o_offset)  # fmt: skip
        if shuffle:
            idx = _inverse(idx, keys[0], keys[1], keys[2], keys[3], keys[4], keys[5], pa, pb, count)
        return idx if idx < n_classes else -1
