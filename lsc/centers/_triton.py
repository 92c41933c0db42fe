"""GPU hot paths as fused Triton kernels: the topk fast path and the orbit log-partition (forward + backward).

* `fast_labels_triton(cc, z)`: `_kernels.fast_labels_torch` in one kernel (one program per block of rows): the
  largest / smallest coordinates by an in-register selection, per-orbit best score and runner-up in float64 (the
  torch path's operations in its order, FMA contraction off, so the tie flags agree bit for bit), the winner's
  index by colex ranking (binomial table in global memory), pi^-1 through the Feistel rounds with cycle-walking,
  and the labeled / unique flags. Where the nearest vector is unique but unlabeled, the numba kernel's second-best
  check (`_kernels._second`: the winner's basic permutations and the other orbits' best, ranked the same way) labels
  the row in the kernel, so few rows are left for the slow path. It returns what `fast_labels_numba` returns
  (labels, -1 where slow; slow): `fast_labels_torch`'s label on every row that one decides, and fewer slow rows.
  Every `OrbitSystem` (v{m}{k}, v{m}{k}p, a_n, a_n_interp) runs in the kernel; it falls back to
  `fast_labels_torch` for n_dim > MAX_DIM or an orbit with more than MAX_SLOTS nonzeros (register pressure),
  and an explicit (data-aware) assignment maps the index to its label in the kernel (binary search of its table).
* `OrbitLogZTriton`: log Z of one orbit with at most two value groups (`_partition_numba.MAX_GROUPS`), the DP of
  `_partition_numba` over the prod_g (c_g + 1) states, in float32 *log space* with the numba kernel's per-group
  max shifts (a_ig = w_g u_i - M_g <= 0): a state is log F, a step a three-term logsumexp. Linear space in float32
  runs out of range: the best monomial can be exp(-scale |w| sqrt(sum_g (c_g - 1)^2) / |v|), ~1e-33 for V^33 at
  scale 64 and below float32's 1e-38 past it (learned scales grow); the log form is safe at any scale, so there
  is no `fits` check and no fallback. The shifts keep log F between log(best monomial) and log(count), so a step
  rounds it by ~1e-6 even where log Z is ~100 (v22, n_dim 600, scale 64: 1.4e-5 from float64). The backward is
  the adjoint (suffix) DP in log space against the forward states, stored as n_dim * S float32 per row:
  E[v_i] = sum_g w_g P(v_i = w_g).

Block sizes and warp counts are first guesses, not tuned on a GPU.

CPU tensors run the same kernels under the Triton interpreter (tests; slow), which is a per-process choice:
triton 3.8 reads TRITON_INTERPRET (`triton.knobs.runtime.interpret`) inside `@triton.jit`, and triton.language's
own helpers (tl.sum, tl.max, tl.zeros are @jit functions) are decorated when triton is first imported, so the
variable must be set before that import (lightning and torch.compile import triton). A process without it
compiles, and CPU tensors get a RuntimeError here; `tests/test_triton.py` runs its interpreter cases in a
spawned worker process started with the variable set.
"""

from __future__ import annotations

import contextlib

import torch

try:  # optional: without triton the torch (CUDA) and numba (CPU) paths are used
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except ImportError:  # pragma: no cover
    triton, tl, HAVE_TRITON = None, None, False

MAX_DIM = 4096  # the selection holds a whole row (padded to a power of two) in registers
MAX_SLOTS = 32  # nonzeros of the largest orbit: the rank is unrolled over them
_BIG_GROUP = 1 << 20  # group id of a padding slot: never "earlier" and never "same group" as a real one


def _pow2(x: int) -> int:
    return 1 << max(0, int(x) - 1).bit_length()


def interpreting() -> bool:
    """True when this process runs Triton kernels in the interpreter: TRITON_INTERPRET=1 was set before triton was
    imported (triton.language's own @jit functions, tl.sum, tl.max, tl.zeros, are decorated at its import)."""
    if not HAVE_TRITON:
        return False
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.sum, InterpretedFunction) and isinstance(_topk_kernel, InterpretedFunction)


def _check_device(device: torch.device) -> None:
    if device.type == "cpu" and not interpreting():
        raise RuntimeError(
            "the Triton kernels take CUDA tensors; CPU tensors need the Triton interpreter (TRITON_INTERPRET=1 in "
            "the environment before triton is first imported)"
        )


def _on(device: torch.device):
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


if HAVE_TRITON:

    @triton.jit
    def _pick(tile, cols, c):
        """tile[:, c] for a scalar c or a [R, 1] column of per-row indices (a masked sum: exact, it adds zeros)."""
        return tl.sum(tl.where(cols[None, :] == c, tile, 0), axis=1)

    @triton.jit
    def _feistel_f(x, k, m):  # FeistelPermutation._f: every product fits in int64
        h = (x ^ k) * 1540483477
        return (((h ^ (h >> 31)) & 2147483647) * m) >> 31

    @triton.jit
    def _feistel_rounds_inv(y, keys_ptr, a, b, ROUNDS: tl.constexpr):
        """FeistelPermutation._rounds(y, forward=False); 0 <= l < a and 0 <= F < a, so a mod is one add."""
        lft = y // b
        rgt = y - lft * b
        for r in tl.static_range(ROUNDS):
            k = tl.load(keys_ptr + (ROUNDS - 1 - r))
            if (ROUNDS - 1 - r) % 2 == 0:
                lft = lft - _feistel_f(rgt, k, a)
                lft = tl.where(lft < 0, lft + a, lft)
            else:
                rgt = rgt - _feistel_f(lft, k, b)
                rgt = tl.where(rgt < 0, rgt + b, rgt)
        return lft * b + rgt

    @triton.jit
    def _feistel_inverse(idx, keys_ptr, a, b, count, ROUNDS: tl.constexpr):
        y = _feistel_rounds_inv(idx, keys_ptr, a, b, ROUNDS)
        # cycle-walking: rare (the domain exceeds count by < a + b values); the block loops while any row is out
        while tl.max((y >= count).to(tl.int32), axis=0) > 0:
            y = tl.where(y >= count, _feistel_rounds_inv(y, keys_ptr, a, b, ROUNDS), y)
        return y

    @triton.jit
    def _feistel_rounds_fwd(x, keys_ptr, a, b, ROUNDS: tl.constexpr):
        """FeistelPermutation._rounds(x, forward=True); 0 <= l < a and 0 <= F < a, so a mod is one subtract."""
        lft = x // b
        rgt = x - lft * b
        for r in tl.static_range(ROUNDS):
            k = tl.load(keys_ptr + r)
            if r % 2 == 0:
                lft = lft + _feistel_f(rgt, k, a)
                lft = tl.where(lft >= a, lft - a, lft)
            else:
                rgt = rgt + _feistel_f(lft, k, b)
                rgt = tl.where(rgt >= b, rgt - b, rgt)
        return lft * b + rgt

    @triton.jit
    def _lookup_kernel(
        labels_ptr, out_ptr, flag_ptr, B, n, p_ptr, binom_ptr, inv_ptr, vtab_ptr, sidx_ptr, pos_ptr,
        BLOCK_B: tl.constexpr, NPAD: tl.constexpr, KIND: tl.constexpr, ORDER: tl.constexpr, LOG: tl.constexpr,
    ):  # fmt: skip
        """`_lookup._kernel` for a block of rows: the unit centers of labels, one [BLOCK_B, NPAD] tile in registers.
        An orbit's group takes its positions among those earlier groups left free: the c-th free position is where
        the running count of free columns reaches c (a cumsum per group, no sorting)."""
        rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
        rmask = rows < B
        cols = tl.arange(0, NPAD)
        cmask = cols < n
        lab = tl.load(labels_ptr + rows, mask=rmask, other=0)
        bad = rmask & ((lab < 0) | (lab >= tl.load(p_ptr + 5)))
        tl.store(flag_ptr + rows * 0, 1, mask=bad)  # every writer stores the same 1: no atomics needed
        lab = tl.where(bad | ~rmask, 0, lab)
        if ORDER == 1:
            pa, pb, count = tl.load(p_ptr + 2), tl.load(p_ptr + 3), tl.load(p_ptr + 4)
            idx = _feistel_rounds_fwd(lab, p_ptr + 6, pa, pb, 6)
            while tl.max((idx >= count).to(tl.int32), axis=0) > 0:  # cycle-walking: rare
                idx = tl.where(idx >= count, _feistel_rounds_fwd(idx, p_ptr + 6, pa, pb, 6), idx)
        elif ORDER == 2:
            idx = tl.load(sidx_ptr + tl.load(pos_ptr + lab).to(tl.int64))
        else:
            idx = lab
        if KIND == 2:  # table rows
            v = tl.load(vtab_ptr + idx[:, None] * n + cols[None, :], mask=cmask[None, :], other=0.0)
            out = v * tl.load(inv_ptr + idx).to(tl.float32)[:, None]
        elif KIND == 1:  # a_np
            n_pairs = tl.load(p_ptr + 13)
            pair = idx < n_pairs
            j = ((tl.sqrt(8.0 * idx.to(tl.float64) + 1.0) + 1.0) / 2.0).to(tl.int64)
            j = tl.where(j * (j - 1) // 2 > idx, j - 1, j)
            j = tl.where((j + 1) * j // 2 <= idx, j + 1, j)
            i = tl.where(pair, idx - j * (j - 1) // 2, idx - n_pairs)
            s_pair = tl.load(inv_ptr).to(tl.float32)
            s_one = tl.load(inv_ptr + 1).to(tl.float32)
            out = tl.where(cols[None, :] == i[:, None], tl.where(pair, s_pair, s_one)[:, None], 0.0)
            out = tl.where(pair[:, None] & (cols[None, :] == j[:, None]), -s_pair, out)
        else:  # orbits
            out = tl.zeros([BLOCK_B, NPAD], dtype=tl.float32)
            kc = tl.load(p_ptr + 14)
            g_base = tl.load(p_ptr + 15)
            for o in range(tl.load(p_ptr + 12)):
                off = tl.load(p_ptr + 16 + 4 * o)
                in_o = (idx >= off) & (idx < off + tl.load(p_ptr + 17 + 4 * o))
                loc = tl.where(in_o, idx - off, 0)
                g0 = tl.load(p_ptr + 18 + 4 * o)
                tile = tl.zeros([BLOCK_B, NPAD], dtype=tl.float32)
                free_n = off * 0 + n  # int64, as the groups' multiplicities it is reduced by
                for g in range(g0, g0 + tl.load(p_ptr + 19 + 4 * o)):
                    gq = g_base + 4 * g
                    val = tl.load(p_ptr + gq).to(tl.float32)
                    c = tl.load(p_ptr + gq + 1)
                    rr = (loc // tl.load(p_ptr + gq + 2)) % tl.load(p_ptr + gq + 3)
                    free = (tile == 0.0) & cmask[None, :]
                    rank = tl.cumsum(free.to(tl.int32), axis=1) - 1  # index of each free column among the free
                    hi = tl.zeros_like(rr) + free_n
                    for jj in range(c):
                        j = c - jj
                        lo = tl.zeros_like(rr) + (j - 1)
                        top = hi - 1
                        for _ in tl.static_range(LOG):  # largest x in [j - 1, hi) with C(x, j) <= rr
                            mid = (lo + top + 1) >> 1
                            ok = tl.load(binom_ptr + mid * kc + j) <= rr
                            active = lo < top
                            lo = tl.where(active & ok, mid, lo)
                            top = tl.where(active & ~ok, mid - 1, top)
                        rr = rr - tl.load(binom_ptr + lo * kc + j)
                        hi = lo
                        tile = tl.where(free & (rank == lo[:, None]), val, tile)
                    free_n = free_n - c
                out = tl.where(in_o[:, None], tile * tl.load(inv_ptr + o).to(tl.float32), out)
        tl.store(out_ptr + rows[:, None] * n + cols[None, :], out, mask=rmask[:, None] & cmask[None, :])

    @triton.jit
    def _rank_best(orb, swap_a, swap_b, sel_i, sc, slot_src, slot_grp, slot_place, table_ptr, KC, offset, rmask, n,
                   BLOCK_B: tl.constexpr, SPAD: tl.constexpr, ST: tl.constexpr):  # fmt: skip
        """Global index of orbit orb's best vector (per row), with the coordinates at sorted-frame positions swap_a
        and swap_b exchanged (a basic permutation; -1: none). A frame position below ST is read from the top list,
        else from the bottom list (where the two lists overlap, both hold it). Orbit.rank_groups: slot s of the
        vector holds selected column src[s] and belongs to group grp[s]; a slot's colex term is C(q, a + 1), a = its
        rank within its group, q = its position among those earlier groups left free; the index is the sum of the
        terms times their group's place value."""
        sp = tl.arange(0, SPAD)
        w2 = orb[:, None] * SPAD + sp[None, :]
        src = tl.load(slot_src + w2)
        f = tl.where(src < ST, src, n - 1 - (src - ST))  # selected column -> frame position
        f = tl.where(f == swap_a[:, None], swap_b[:, None], tl.where(f == swap_b[:, None], swap_a[:, None], f))
        src = tl.where(f < ST, f, ST + (n - 1 - f))
        grp = tl.load(slot_grp + w2)
        plc = tl.load(slot_place + w2)
        pos = tl.zeros([BLOCK_B, SPAD], dtype=tl.int32)
        for k in tl.static_range(SPAD):
            p = _pick(sel_i, sc, _pick(src, sp, k)[:, None])
            pos = tl.where(sp[None, :] == k, p[:, None], pos)
        idx = tl.zeros([BLOCK_B], dtype=tl.int64)
        for k in tl.static_range(SPAD):
            ps = _pick(pos, sp, k)
            gs = _pick(grp, sp, k)
            pl = _pick(plc, sp, k)
            less = pos < ps[:, None]
            a = tl.sum((less & (grp == gs[:, None])).to(tl.int32), axis=1)
            q = ps - tl.sum((less & (grp < gs[:, None])).to(tl.int32), axis=1)
            ok = (pl > 0) & (q >= 0) & rmask  # tied rows may select overlapping positions: never read past the table
            idx += tl.load(table_ptr + q.to(tl.int64) * KC + a + 1, ok, 0) * pl
        return idx + tl.load(offset + orb)

    @triton.jit
    def _index_label(idx, keys_ptr, pa, pb, count, n_classes, sidx_ptr, lab_at_ptr, n_assigned,
                     SHUFFLE: tl.constexpr, ROUNDS: tl.constexpr, EXPLICIT: tl.constexpr,
                     LOG_C: tl.constexpr):  # fmt: skip
        """The label of vector index idx (>= n_classes: unlabeled): the Feistel order's inverse, the data-aware table
        (Assignment.inverse: binary search of the sorted assigned indices) or the identity."""
        if SHUFFLE:
            lab = _feistel_inverse(idx, keys_ptr, pa, pb, count, ROUNDS)
        elif EXPLICIT:
            lo = tl.zeros_like(idx)
            hi = lo + n_assigned
            for _ in tl.static_range(LOG_C):  # lower bound: the first position holding an index >= idx
                mid = (lo + hi) >> 1
                active = lo < hi
                less = tl.load(sidx_ptr + tl.minimum(mid, n_assigned - 1)) < idx
                lo = tl.where(active & less, mid + 1, lo)
                hi = tl.where(active & ~less, mid, hi)
            at = tl.minimum(lo, n_assigned - 1)
            hit = tl.load(sidx_ptr + at) == idx
            lab = tl.where(hit, tl.load(lab_at_ptr + at).to(tl.int64), n_classes)
        else:
            lab = idx
        return lab

    @triton.jit
    def _topk_kernel(
        z_ptr, stride, B, n, table_ptr, KC, n_orb,
        dot_val, dot_src, n_dot, drop_val, drop_a, drop_b, n_drop, inv_norm, offset, slot_src, slot_grp, slot_place,
        keys_ptr, pa, pb, count, n_classes, labels_ptr, slow_ptr, sidx_ptr, lab_at_ptr, n_assigned,
        BLOCK_B: tl.constexpr, NPAD: tl.constexpr, ST: tl.constexpr, SB: tl.constexpr, SELPAD: tl.constexpr,
        DPAD: tl.constexpr, LPAD: tl.constexpr, SPAD: tl.constexpr, UPCAST: tl.constexpr, SHUFFLE: tl.constexpr,
        ROUNDS: tl.constexpr, EXPLICIT: tl.constexpr, LOG_C: tl.constexpr, SECOND: tl.constexpr,
    ):  # fmt: skip
        rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
        rmask = rows < B
        cols = tl.arange(0, NPAD)
        cmask = cols < n
        x = tl.load(z_ptr + rows.to(tl.int64)[:, None] * stride + cols[None, :], rmask[:, None] & cmask[None, :], 0)
        if UPCAST == 1:
            x = x.to(tl.float32)
        elif UPCAST == 2:  # bfloat16 -> float32 is a 16-bit shift (the interpreter's cast mangles subnormals)
            x = (x.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(tl.float32, bitcast=True)
        # a row with NaN/inf is left slow (the caller reports it: `ClassCenters._topk`)
        bad = tl.max(tl.where(cmask[None, :] & ~((x == x) & (tl.abs(x) < float("inf"))), 1, 0), axis=1) > 0
        # selection: ST largest (value desc, index asc) then SB smallest (value asc, index desc), one total order;
        # columns 0..ST-1 of sel_* hold the top list, ST..ST+SB-1 the bottom list
        xt = tl.where(cmask[None, :], x, float("-inf"))
        xb = tl.where(cmask[None, :], x, float("inf"))
        sc = tl.arange(0, SELPAD)
        sel_v = tl.zeros([BLOCK_B, SELPAD], dtype=x.dtype)
        sel_i = tl.zeros([BLOCK_B, SELPAD], dtype=tl.int32)
        for t in tl.static_range(ST):
            mx = tl.max(xt, axis=1)
            j = tl.min(tl.where(xt == mx[:, None], cols[None, :], NPAD), axis=1)
            sel_v = tl.where(sc[None, :] == t, mx[:, None], sel_v)
            sel_i = tl.where(sc[None, :] == t, j[:, None], sel_i)
            xt = tl.where(cols[None, :] == j[:, None], float("-inf"), xt)
        for t in tl.static_range(SB):
            mn = tl.min(xb, axis=1)
            j = tl.max(tl.where(xb == mn[:, None], cols[None, :], -1), axis=1)
            sel_v = tl.where(sc[None, :] == ST + t, mn[:, None], sel_v)
            sel_i = tl.where(sc[None, :] == ST + t, j[:, None], sel_i)
            xb = tl.where(cols[None, :] == j[:, None], float("inf"), xb)
        # per orbit (Orbit.best_and_drop, same terms, same order): best <z, v> and the drop to its runner-up; the
        # three best orbits are kept, and for the best one its two smallest drops and the boundary of the smallest
        # (the second-best check below: `_kernels._second`)
        best = tl.full([BLOCK_B], float("-inf"), tl.float64)
        second = tl.full([BLOCK_B], float("-inf"), tl.float64)
        third = tl.full([BLOCK_B], float("-inf"), tl.float64)
        win_runner = tl.full([BLOCK_B], float("-inf"), tl.float64)
        win = tl.zeros([BLOCK_B], dtype=tl.int32)
        sec_orb = tl.zeros([BLOCK_B], dtype=tl.int32)
        win_s = tl.zeros([BLOCK_B], dtype=tl.float64)
        win_drop = tl.full([BLOCK_B], float("inf"), tl.float64)
        win_d2 = tl.full([BLOCK_B], float("inf"), tl.float64)
        win_a = tl.full([BLOCK_B], -1, tl.int32)
        win_b = tl.full([BLOCK_B], -1, tl.int32)
        sec_drop = tl.zeros([BLOCK_B], dtype=tl.float64)
        for o in range(n_orb):
            s = tl.zeros([BLOCK_B], dtype=tl.float64)
            for d in range(tl.load(n_dot + o)):
                v = tl.load(dot_val + o * DPAD + d)
                s += v * _pick(sel_v, sc, tl.load(dot_src + o * DPAD + d)).to(tl.float64)
            drop = tl.full([BLOCK_B], float("inf"), tl.float64)
            drop2 = tl.full([BLOCK_B], float("inf"), tl.float64)
            da = tl.full([BLOCK_B], -1, tl.int32)
            db = tl.full([BLOCK_B], -1, tl.int32)
            for d in range(tl.load(n_drop + o)):
                v = tl.load(drop_val + o * LPAD + d)
                ca = tl.load(drop_a + o * LPAD + d)
                cb = tl.load(drop_b + o * LPAD + d)
                w = v * (_pick(sel_v, sc, ca).to(tl.float64) - _pick(sel_v, sc, cb).to(tl.float64))
                less = w < drop
                drop2 = tl.where(less, drop, tl.minimum(drop2, w))
                da = tl.where(less, tl.where(ca < ST, ca, n - 1 - (ca - ST)), da)  # as frame positions
                db = tl.where(less, tl.where(cb < ST, cb, n - 1 - (cb - ST)), db)
                drop = tl.minimum(drop, w)
            invn = tl.load(inv_norm + o)
            score = s * invn
            runner = (s - drop) * invn
            upd = score > best
            upd2 = ~upd & (score > second)
            third = tl.where(upd | upd2, second, tl.maximum(third, score))
            sec_orb = tl.where(upd, win, tl.where(upd2, o, sec_orb))
            sec_drop = tl.where(upd, win_drop, tl.where(upd2, drop, sec_drop))
            second = tl.where(upd, best, tl.maximum(second, score))
            win_runner = tl.where(upd, runner, win_runner)
            win = tl.where(upd, o, win)
            best = tl.where(upd, score, best)
            win_s = tl.where(upd, s, win_s)
            win_drop = tl.where(upd, drop, win_drop)
            win_d2 = tl.where(upd, drop2, win_d2)
            win_a = tl.where(upd, da, win_a)
            win_b = tl.where(upd, db, win_b)
        tied = tl.maximum(win_runner, second) >= best
        none = tl.full([BLOCK_B], -1, tl.int32)
        idx = _rank_best(win, none, none, sel_i, sc, slot_src, slot_grp, slot_place, table_ptr, KC, offset, rmask,
                         n, BLOCK_B, SPAD, ST)  # fmt: skip
        idx = tl.where(tied | (rows >= B), 0, idx)  # as fast_nearest: tied rows hold index 0
        lab = _index_label(idx, keys_ptr, pa, pb, count, n_classes, sidx_ptr, lab_at_ptr, n_assigned, SHUFFLE,
                           ROUNDS, EXPLICIT, LOG_C)  # fmt: skip
        # the nearest vector is unique but unlabeled: the second-best vector when it is unique and labeled and the
        # selected coordinates are distinct (`_kernels._second`, the same candidates: every vector but the nearest
        # lies below one of the winner's basic permutations -- one adjacent swap at a level boundary, its score
        # (s - drop) / |v| -- or below another orbit's best). Else the row stays slow.
        if SECOND:
            distinct = rmask
            for t in tl.static_range(1, ST):
                distinct &= _pick(sel_v, sc, t) < _pick(sel_v, sc, t - 1)
            for t in tl.static_range(1, SB):
                distinct &= _pick(sel_v, sc, ST + t) > _pick(sel_v, sc, ST + t - 1)
            invw = tl.load(inv_norm + win)
            c1 = win_runner  # the best basic permutation of the winner
            c2 = (win_s - win_d2) * invw
            from_win = c1 > second
            c_best = tl.maximum(c1, second)
            c_second = tl.where(from_win, tl.maximum(c2, second), tl.maximum(c1, third))
            ok = (~tied & ~bad & (lab >= n_classes) & distinct & (c_best > c_second) & (c_best > float("-inf"))
                  & (from_win | (sec_drop > 0)))  # fmt: skip
            idx2 = _rank_best(tl.where(from_win, win, sec_orb), tl.where(from_win, win_a, none),
                              tl.where(from_win, win_b, none), sel_i, sc, slot_src, slot_grp, slot_place, table_ptr,
                              KC, offset, rmask & ok, n, BLOCK_B, SPAD, ST)  # fmt: skip
            idx2 = tl.where(ok, idx2, 0)
            lab2 = _index_label(idx2, keys_ptr, pa, pb, count, n_classes, sidx_ptr, lab_at_ptr, n_assigned, SHUFFLE,
                                ROUNDS, EXPLICIT, LOG_C)  # fmt: skip
            lab = tl.where(ok, lab2, lab)
        slow = tied | bad | (lab >= n_classes)
        tl.store(labels_ptr + rows, tl.where(slow, -1, lab), rmask)
        tl.store(slow_ptr + rows, slow.to(tl.int8), rmask)

    @triton.jit
    def _lse3(a, b, c):
        """log(e^a + e^b + e^c) with -inf allowed everywhere (no inf - inf, no log 0 evaluated)."""
        m = tl.maximum(tl.maximum(a, b), c)
        empty = m == float("-inf")
        ms = tl.where(empty, 0.0, m)
        tot = tl.where(empty, 1.0, tl.exp(a - ms) + tl.exp(b - ms) + tl.exp(c - ms))
        return tl.where(empty, float("-inf"), ms + tl.log(tot))

    @triton.jit
    def _row_stats(z_ptr, roff, rmask, n, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr):
        """|z|, max_i z_i and min_i z_i of each row."""
        acc = tl.zeros([BLOCK_B], dtype=tl.float32)
        hi = tl.full([BLOCK_B], float("-inf"), tl.float32)
        lo = tl.full([BLOCK_B], float("inf"), tl.float32)
        cn = tl.arange(0, BLOCK_N)
        for c0 in range(0, n, BLOCK_N):
            cc = c0 + cn
            m = rmask[:, None] & (cc[None, :] < n)
            x = tl.load(z_ptr + roff[:, None] + cc[None, :], m, 0.0)
            acc += tl.sum(x * x, axis=1)
            hi = tl.maximum(hi, tl.max(tl.where(m, x, float("-inf")), axis=1))
            lo = tl.minimum(lo, tl.min(tl.where(m, x, float("inf")), axis=1))
        return tl.sqrt(acc), hi, lo

    @triton.jit
    def _scale(scale_ptr, scale_val, SCALE_PTR: tl.constexpr):
        if SCALE_PTR:
            return tl.load(scale_ptr).to(tl.float32)
        else:
            return scale_val

    @triton.jit
    def _shift(W: tl.constexpr, coef, hi, lo):
        """M = max_i W coef z_i."""
        if W > 0:
            return W * coef * hi
        else:
            return W * coef * lo

    @triton.jit
    def _logz_fwd_kernel(
        z_ptr, stride, B, n, scale_ptr, scale_val, inv_norm, logz_ptr, aux_ptr, f_ptr,
        W0: tl.constexpr, W1: tl.constexpr, C0: tl.constexpr, C1: tl.constexpr, S: tl.constexpr,
        SPAD: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, SCALE_PTR: tl.constexpr,
        STORE: tl.constexpr,
    ):  # fmt: skip
        """log F_{i+1}[k] = logsumexp(log F_i[k], log F_i[k - e_0] + a_i0, log F_i[k - e_1] + a_i1) over states
        s = k_0 + (C0 + 1) k_1, with a_ig = w_g u_i - M_g, u = scale * inv_norm * z / |z|, M_g = max_i w_g u_i;
        log Z = log F_n[c] + sum_g c_g M_g (c: s = S - 1). The shifts keep log F between log(best monomial) and
        log(count), so its float32 rounding (relative to |log F|) stays ~1e-6 per step even where log Z is ~100.
        aux[:, row] = (|z|, M_0, M_1, log F_n[c]); with STORE, the states before coordinate i go to f[i, s, row]."""
        rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
        rmask = rows < B
        roff = rows.to(tl.int64) * stride
        norm, hi, lo = _row_stats(z_ptr, roff, rmask, n, BLOCK_B, BLOCK_N)
        coef = _scale(scale_ptr, scale_val, SCALE_PTR) * inv_norm / tl.maximum(norm, 1e-12)  # F.normalize's eps
        m0 = tl.where(rmask, _shift(W0, coef, hi, lo), 0.0)
        if C1 > 0:
            m1 = tl.where(rmask, _shift(W1, coef, hi, lo), 0.0)
        else:
            m1 = tl.zeros([BLOCK_B], dtype=tl.float32)
        s = tl.arange(0, SPAD)
        k0 = s % (C0 + 1)
        k1 = s // (C0 + 1)
        valid = s < S
        src0 = tl.broadcast_to(tl.where(k0 > 0, s - 1, 0)[None, :], [BLOCK_B, SPAD])
        src1 = tl.broadcast_to(tl.where(k1 > 0, s - (C0 + 1), 0)[None, :], [BLOCK_B, SPAD])
        has0 = (valid & (k0 > 0))[None, :]
        has1 = (valid & (k1 > 0))[None, :]
        F = tl.zeros([BLOCK_B, SPAD], dtype=tl.float32) + tl.where(s == 0, 0.0, float("-inf"))[None, :]
        none = tl.full([BLOCK_B, SPAD], float("-inf"), tl.float32)
        smask = rmask[:, None] & valid[None, :]
        for i in range(n):
            u = coef * tl.load(z_ptr + roff + i, rmask, 0.0)
            if STORE:
                tl.store(f_ptr + (i * S + s[None, :]).to(tl.int64) * B + rows[:, None], F, smask)
            g0 = tl.where(has0, tl.gather(F, src0, 1) + (W0 * u - m0)[:, None], none)
            if C1 > 0:
                g1 = tl.where(has1, tl.gather(F, src1, 1) + (W1 * u - m1)[:, None], none)
            else:
                g1 = none
            F = tl.where(valid[None, :], _lse3(F, g0, g1), none)
        lzs = tl.sum(tl.where(s[None, :] == S - 1, F, 0.0), axis=1)
        tl.store(logz_ptr + rows, lzs + (C0 * m0 + C1 * m1), rmask)
        tl.store(aux_ptr + rows, norm, rmask)
        tl.store(aux_ptr + B + rows, m0, rmask)
        tl.store(aux_ptr + 2 * B + rows, m1, rmask)
        tl.store(aux_ptr + 3 * B + rows, lzs, rmask)

    @triton.jit
    def _logz_bwd_kernel(
        z_ptr, stride, B, n, scale_ptr, scale_val, inv_norm, aux_ptr, f_ptr, g_ptr, dz_ptr, dcoef_ptr, proj_ptr,
        W0: tl.constexpr, W1: tl.constexpr, C0: tl.constexpr, C1: tl.constexpr, S: tl.constexpr,
        SPAD: tl.constexpr, BLOCK_B: tl.constexpr, SCALE_PTR: tl.constexpr,
    ):  # fmt: skip
        """The adjoint: log B_i[k] = logsumexp(log B_{i+1}[k], a_ig + log B_{i+1}[k + e_g]), B_n = [k == c];
        e_i = d log Z / d u_i = sum_g w_g sum_k exp(log F_i[k] + a_ig + log B_{i+1}[k + e_g] - log F_n[c]) (the
        shifts cancel). Writes dz_i = g coef_s / |z| e_i (the part along e), dcoef = sum_i e_i zh_i (d log Z /
        d (scale inv_norm)) and proj = -g coef_s dcoef / |z|^2: the caller adds proj * z (the part along z / |z|),
        so no element is written by one thread and read back by another."""
        rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
        rmask = rows < B
        roff = rows.to(tl.int64) * stride
        norm = tl.load(aux_ptr + rows, rmask, 1.0)
        m0 = tl.load(aux_ptr + B + rows, rmask, 0.0)
        m1 = tl.load(aux_ptr + 2 * B + rows, rmask, 0.0)
        lz = tl.load(aux_ptr + 3 * B + rows, rmask, 0.0)[:, None]
        g = tl.load(g_ptr + rows, rmask, 0.0)
        nc = tl.maximum(norm, 1e-12)
        coef_s = _scale(scale_ptr, scale_val, SCALE_PTR) * inv_norm
        coef = coef_s / nc
        s = tl.arange(0, SPAD)
        k0 = s % (C0 + 1)
        k1 = s // (C0 + 1)
        valid = s < S
        out0 = valid & (k0 < C0)
        out1 = valid & (k1 < C1)
        dst0 = tl.broadcast_to(tl.where(out0, s + 1, 0)[None, :], [BLOCK_B, SPAD])
        dst1 = tl.broadcast_to(tl.where(out1, s + C0 + 1, 0)[None, :], [BLOCK_B, SPAD])
        out0 = out0[None, :]
        out1 = out1[None, :]
        none = tl.full([BLOCK_B, SPAD], float("-inf"), tl.float32)
        Bt = tl.zeros([BLOCK_B, SPAD], dtype=tl.float32) + tl.where(s == S - 1, 0.0, float("-inf"))[None, :]
        smask = rmask[:, None] & valid[None, :]
        dot = tl.zeros([BLOCK_B], dtype=tl.float32)
        for j in range(n):
            i = n - 1 - j
            zi = tl.load(z_ptr + roff + i, rmask, 0.0)
            u = coef * zi
            Fi = tl.load(f_ptr + (i * S + s[None, :]).to(tl.int64) * B + rows[:, None], smask, float("-inf"))
            b0 = tl.where(out0, tl.gather(Bt, dst0, 1), none) + (W0 * u - m0)[:, None]
            e = W0 * tl.sum(tl.exp(Fi + b0 - lz), axis=1)
            if C1 > 0:
                b1 = tl.where(out1, tl.gather(Bt, dst1, 1), none) + (W1 * u - m1)[:, None]
                e += W1 * tl.sum(tl.exp(Fi + b1 - lz), axis=1)
            else:
                b1 = none
            Bt = tl.where(valid[None, :], _lse3(Bt, b0, b1), none)
            dot += e * (zi / nc)
            tl.store(dz_ptr + roff + i, g * coef * e, rmask)
        tl.store(dcoef_ptr + rows, dot, rmask)
        proj = tl.where(norm > 1e-12, -g * coef_s * dot / (nc * nc), 0.0)  # below eps, normalize is z / eps
        tl.store(proj_ptr + rows, proj, rmask)


# ---- topk fast path ----------------------------------------------------------------------------------------


class _TopkPlan:
    """Flat tables describing a ClassCenters' orbits and order for `_topk_kernel`, on one device."""

    def __init__(self, cc, device: torch.device):
        sysm = cc.system
        orbs, n = sysm.orbits, sysm.n_dim
        # the nearest vector and its runner-up read n_pos + 1 top and n_neg + 1 bottom coordinates; the second-best
        # check one more on each side (`_kernels._Plan.sizes`)
        st, sb = min(n, sysm.n_top + 1), min(n, sysm.n_bottom + 1)
        self.st, self.sb, self.selpad = st, sb, _pow2(st + sb)
        kmax = max(max(o.mults) for o in orbs)
        from ._combinatorics import binom_table

        self.table = binom_table(n, kmax, device)
        self.kc = kmax + 1
        dots, drops, slots = [], [], []
        for o in orbs:

            def col(i, o=o):  # Orbit.best_and_drop's coord(i): the top list up to n_pos, then the bottom list
                c = i if i <= o.n_pos else st + (n - 1 - i)
                assert (i <= o.n_pos and i < st) or (i > o.n_pos and n - 1 - i < sb), (o, i)
                return c

            dot, drop, i = [], [], 0
            levels = o.sorted_frame_levels()
            for li, (val, c) in enumerate(levels):
                if val != 0:
                    dot += [(float(val), col(j)) for j in range(i, i + c)]
                if li + 1 < len(levels):
                    drop.append((float(val - levels[li + 1][0]), col(i + c - 1), col(i + c)))
                i += c
            dots.append(dot)
            drops.append(drop)
            # Orbit.split_selection: positive groups take the top list in order; the most negative group takes
            # the smallest coordinates
            neg_start, b = {}, 0
            for v, c in sorted((v, c) for v, c in zip(o.values, o.mults, strict=True) if v < 0):
                neg_start[v], b = b, b + c
            t, sl = 0, []
            for g, (v, c) in enumerate(zip(o.values, o.mults, strict=True)):
                if v > 0:
                    sl += [(t + a, g, o._place[g]) for a in range(c)]
                    t += c
                else:
                    sl += [(st + neg_start[v] + a, g, o._place[g]) for a in range(c)]
            slots.append(sl)
        self.dpad = _pow2(max(len(d) for d in dots))
        self.lpad = _pow2(max(1, max(len(d) for d in drops)))
        self.spad = _pow2(max(len(s) for s in slots))

        def pad(rows, width, fill, dtype):
            return torch.tensor([r + [fill] * (width - len(r)) for r in rows], dtype=dtype, device=device)

        self.dot_val = pad([[v for v, _ in d] for d in dots], self.dpad, 0.0, torch.float64)
        self.dot_src = pad([[c for _, c in d] for d in dots], self.dpad, 0, torch.int32)
        self.n_dot = torch.tensor([len(d) for d in dots], dtype=torch.int32, device=device)
        self.drop_val = pad([[v for v, _, _ in d] for d in drops], self.lpad, 0.0, torch.float64)
        self.drop_a = pad([[a for _, a, _ in d] for d in drops], self.lpad, 0, torch.int32)
        self.drop_b = pad([[b for _, _, b in d] for d in drops], self.lpad, 0, torch.int32)
        self.n_drop = torch.tensor([len(d) for d in drops], dtype=torch.int32, device=device)
        self.inv_norm = torch.tensor([o.inv_norm for o in orbs], dtype=torch.float64, device=device)
        self.offset = torch.tensor(sysm.offsets, dtype=torch.int64, device=device)
        self.slot_src = pad([[s for s, _, _ in sl] for sl in slots], self.spad, 0, torch.int32)
        self.slot_grp = pad([[g for _, g, _ in sl] for sl in slots], self.spad, _BIG_GROUP, torch.int32)
        self.slot_place = pad([[p for _, _, p in sl] for sl in slots], self.spad, 0, torch.int64)
        self.n_orb = len(orbs)
        p = cc.perm
        # an explicit (data-aware) assignment: the kernel maps the index to its label by binary search of the table
        self.explicit = getattr(p, "explicit", False)
        self.shuffle = hasattr(p, "keys") and not self.explicit
        self.sorted_idx, self.label_at = (p._on(device)[:2]) if self.explicit else (self.offset, self.offset)
        self.n_assigned = p.n_classes if self.explicit else 1
        self.log_c = self.n_assigned.bit_length() + 1
        self.keys = torch.tensor(p.keys if self.shuffle else [0], dtype=torch.int64, device=device)
        self.rounds = p.rounds if self.shuffle else 0
        self.pa, self.pb = (p.a, p.b) if self.shuffle else (1, 1)
        self.count = sysm.count
        self.n_classes = cc.n_classes
        self.second = cc.n_classes < sysm.count  # some vector is unlabeled: the second-best check can help


def triton_topk_covers(cc) -> bool:
    """True when `fast_labels_triton` runs the kernel for these centers (else it takes `fast_labels_torch`)."""
    sysm = cc.system
    return (
        HAVE_TRITON
        and hasattr(sysm, "orbits")
        and sysm.n_dim <= MAX_DIM
        and max(o.n_nonzero for o in sysm.orbits) <= MAX_SLOTS
    )


def _plan(cc, device: torch.device) -> _TopkPlan:
    plans = cc.__dict__.setdefault("_triton_plans", {})
    if device not in plans:
        plans[device] = _TopkPlan(cc, device)
    return plans[device]


_UPCAST = {torch.float16: 1, torch.bfloat16: 2}  # widened to float32 in registers (bfloat16 by its bits)


def fast_labels_triton(cc, z: torch.Tensor, block_rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`_kernels.fast_labels_torch` in one fused kernel: (labels [B] int64, -1 where slow; slow [B] bool).

    CUDA tensors run compiled, CPU tensors under the Triton interpreter (for tests). Only where `triton_topk_covers`
    (n_dim <= MAX_DIM, at most MAX_SLOTS nonzeros); `_kernels.fast_labels`, the one dispatcher, takes the torch path
    elsewhere (this module imports nothing from `_kernels`: the dependency runs one way).
    float32 / float64 / bfloat16 / float16 inputs (half types are widened to float32 in registers).
    """
    if not triton_topk_covers(cc):  # the dispatcher (`_kernels.fast_labels`) sends these to the torch path
        raise ValueError(f"the Triton top-k kernel does not cover {cc.system.display} (n_dim > {MAX_DIM} or more than "
                         f"{MAX_SLOTS} nonzeros); call lsc.centers._kernels.fast_labels")  # fmt: skip
    cc.system._check_int64()
    if z.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        z = z.float()
    if z.stride(-1) != 1:
        z = z.contiguous()
    B, n = z.shape
    dev = z.device
    labels = torch.empty(B, dtype=torch.int64, device=dev)
    slow8 = torch.empty(B, dtype=torch.int8, device=dev)
    if B:
        p = _plan(cc, dev)
        npad = _pow2(n)
        if block_rows is None:  # a [rows, npad] tile per program; the interpreter prefers few, large programs
            block_rows = max(1, min(64, 4096 // npad)) if dev.type != "cpu" else max(1, min(4096, (1 << 18) // npad))
        if block_rows != _pow2(block_rows):
            raise ValueError(f"block_rows must be a power of two, got {block_rows}")
        _check_device(dev)
        with _on(dev):
            _topk_kernel[(triton.cdiv(B, block_rows),)](
                z, z.stride(0), B, n, p.table, p.kc, p.n_orb, p.dot_val, p.dot_src, p.n_dot, p.drop_val, p.drop_a,
                p.drop_b, p.n_drop, p.inv_norm, p.offset, p.slot_src, p.slot_grp, p.slot_place, p.keys, p.pa, p.pb,
                p.count, p.n_classes, labels, slow8, p.sorted_idx, p.label_at, p.n_assigned,
                BLOCK_B=block_rows, NPAD=npad, ST=p.st, SB=p.sb, SELPAD=p.selpad, DPAD=p.dpad, LPAD=p.lpad,
                SPAD=p.spad, UPCAST=_UPCAST.get(z.dtype, 0), SHUFFLE=p.shuffle, ROUNDS=p.rounds,
                EXPLICIT=p.explicit, LOG_C=p.log_c, SECOND=p.second,
                enable_fp_fusion=False,  # the float64 scores must round like the torch path's (ties are exact)
                num_warps=4,
            )  # fmt: skip
    return labels, slow8.view(torch.bool)


# ---- orbit log-partition -----------------------------------------------------------------------------------

LOGZ_MAX_GROUPS = 2


def _logz_launch(z, scale):
    """(scale pointer, scale value, SCALE_PTR): a tensor scale is read on the device (no host sync)."""
    if isinstance(scale, torch.Tensor):
        return scale.detach().to(z.device, torch.float32).reshape(1), 0.0, True
    return z, float(scale), False


class OrbitLogZTriton(torch.autograd.Function):
    """log Z [B] of one orbit (at most two value groups), logits scale * inv_norm * <z / |z|, v>: float32 log-space
    DP on the device of z (the interpreter for CPU tensors). Differentiable in z and in a tensor scale."""

    @staticmethod
    def forward(ctx, z, scale, inv_norm, values, mults):
        if len(values) > LOGZ_MAX_GROUPS:
            raise ValueError(f"the Triton log Z kernel takes at most {LOGZ_MAX_GROUPS} value groups, got {values}")
        zf = z.detach().float().contiguous()
        B, n = zf.shape
        w = [float(v) for v in values] + [0.0] * (2 - len(values))
        c = [int(m) for m in mults] + [0] * (2 - len(mults))
        S = (c[0] + 1) * (c[1] + 1)
        store = any(ctx.needs_input_grad)
        dev = zf.device
        logz = torch.empty(B, dtype=torch.float32, device=dev)
        aux = torch.empty(4, B, dtype=torch.float32, device=dev)
        f = torch.empty((n, S, B) if store else (1,), dtype=torch.float32, device=dev)
        sp, sv, is_ptr = _logz_launch(zf, scale)
        meta = dict(W0=w[0], W1=w[1], C0=c[0], C1=c[1], S=S, SPAD=_pow2(S), BLOCK_B=_logz_rows(dev), SCALE_PTR=is_ptr)
        if B:
            _check_device(dev)
            with _on(dev):
                _logz_fwd_kernel[(triton.cdiv(B, meta["BLOCK_B"]),)](
                    zf, zf.stride(0), B, n, sp, sv, float(inv_norm), logz, aux, f, STORE=store,
                    BLOCK_N=min(64 if dev.type != "cpu" else 1024, _pow2(n)), num_warps=_LOGZ_WARPS, **meta,
                )  # fmt: skip
        if store:
            ctx.save_for_backward(zf, f, aux, sp if is_ptr else None)
            ctx.meta, ctx.scale_val, ctx.inv_norm = meta, sv, float(inv_norm)
            ctx.scale_like = scale.detach() if isinstance(scale, torch.Tensor) else None  # shape, dtype, device
            ctx.z_dtype = z.dtype
        return logz.to(z.dtype)

    @staticmethod
    def backward(ctx, grad):
        zf, f, aux, sp = ctx.saved_tensors
        B, n = zf.shape
        g = grad.detach().float().contiguous()
        dz = torch.empty_like(zf)
        dcoef = torch.empty(B, dtype=torch.float32, device=zf.device)
        proj = torch.empty(B, dtype=torch.float32, device=zf.device)
        if B:
            with _on(zf.device):
                _logz_bwd_kernel[(triton.cdiv(B, ctx.meta["BLOCK_B"]),)](
                    zf, zf.stride(0), B, n, sp if sp is not None else zf, ctx.scale_val, ctx.inv_norm, aux, f, g, dz,
                    dcoef, proj, num_warps=_LOGZ_WARPS, **ctx.meta,
                )  # fmt: skip
            dz.addcmul_(zf, proj[:, None])
        dscale = None
        if ctx.needs_input_grad[1] and ctx.scale_like is not None:
            dscale = ((dcoef * g).sum() * ctx.inv_norm).reshape(ctx.scale_like.shape).to(ctx.scale_like)
        return dz.to(ctx.z_dtype), dscale, None, None, None


_LOGZ_WARPS = 1


def _logz_rows(device: torch.device) -> int:
    # the DP is a sequential loop over coordinates: on a GPU few rows per program keep many programs in flight;
    # the interpreter runs programs one after another, so it takes many rows per program
    return 16 if device.type != "cpu" else 512


def orbit_log_z_triton(z: torch.Tensor, scale, orbit) -> torch.Tensor:
    """log Z [B] of one `Orbit` for embeddings z [B, n] (any scale: log space, no underflow)."""
    return OrbitLogZTriton.apply(z, scale, orbit.inv_norm, tuple(orbit.values), tuple(orbit.mults))


def logz_covers(system) -> bool:
    return HAVE_TRITON and all(len(o.values) <= LOGZ_MAX_GROUPS for o in system.orbits)


# ---- class-center lookup ------------------------------------------------------------------------------------


def center_lookup_triton(labels, params, binom, inv, vtable, sorted_idx, pos_of, n_dim, kind, order, log_steps):
    """`_lookup`'s op on the device of labels: (unit centers [B, n_dim] float32, flag [1] int32: 1 when a label was
    out of range). kind and order (`_lookup.Plan`) are the kernel's compile-time constants."""
    B, dev = labels.shape[0], labels.device
    out = torch.empty(B, n_dim, dtype=torch.float32, device=dev)
    flag = torch.zeros(1, dtype=torch.int32, device=dev)
    if B:
        npad = _pow2(n_dim)
        block = max(1, min(32, 2048 // npad)) if dev.type != "cpu" else max(1, min(4096, (1 << 18) // npad))
        _check_device(dev)
        dummy = params
        with _on(dev):
            _lookup_kernel[(triton.cdiv(B, block),)](
                labels, out, flag, B, n_dim, params, binom, inv, vtable if vtable is not None else inv,
                sorted_idx if sorted_idx is not None else dummy, pos_of if pos_of is not None else dummy,
                BLOCK_B=block, NPAD=npad, KIND=kind, ORDER=order, LOG=log_steps, num_warps=4,
            )  # fmt: skip
    return out, flag
