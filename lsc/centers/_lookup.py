"""The class-center lookup in one pass: label -> class order (Feistel with cycle-walking, or the data-aware table)
-> vector index -> unranked vector -> unit center, for `ClassCenters.__call__` (the losses' targets, the label maps).

The torch path (`system.vectors(perm.forward(labels), normalize=True)`) launches ~300 elementwise ops for a batch of
V^22 labels (Feistel rounds, a cycle-walk check, one `searchsorted` per nonzero, scatters): microseconds of
arithmetic behind a launch each, which bounds a GPU training step. Here the whole chain is one kernel:

* CPU tensors: one numba loop per row (`_rows`), when numba is installed.
* CUDA tensors: one Triton kernel (`_triton._lookup_kernel`), the interpreter for CPU tensors in tests.

Both sit behind one torch custom op, `lsc::center_lookup`, so torch.compile traces the loss without a graph break;
centers are constants, so the op has no backward. Every system is covered: orbit systems (v{m}{k}, v{m}{k}p, a_n,
a_n_interp), a_np and table, under identity, keyed (Feistel) and explicit (data-aware) orders. The values are the
torch path's bit for bit (float32 value times the float32-rounded inverse norm), which the tests check.

Labels are range-checked inside the kernel: on the CPU an out-of-range label raises the usual ValueError; on CUDA
the kernel raises a flag that `torch._assert_async` turns into an error without a host synchronization.

Every parameter travels in one int64 vector (`Plan.params`), laid out as:
  [0] system kind (ORBIT, POSITIVE_ROOTS, TABLE)  [1] order (IDENTITY, KEYED, EXPLICIT)
  [2] Feistel a  [3] b  [4] system count  [5] n_classes  [6:12] the six round keys
  [12] orbits  [13] a_np's pair count  [14] binomial-table row width  [15] start of the group rows
  [16 + 4 o]: orbit o's offset, count, first group, groups; [group start + 4 g]: value, multiplicity, place, radix
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from . import _kernels
from ._combinatorics import binom_rows

ORBIT, POSITIVE_ROOTS, TABLE = 0, 1, 2
IDENTITY, KEYED, EXPLICIT = 0, 1, 2
_HEAD = 16

numba = _kernels.numba


def _bad_labels_error(n_classes: int, lo, hi) -> ValueError:
    return ValueError(
        f"labels must lie in [0, {n_classes}), got values in [{lo}, {hi}]; "
        "check data.num_classes / the dataset's label range"
    )


class Plan:
    """Flat description of a ClassCenters' system and order for the fused lookup, on one device."""

    def __init__(self, cc, device: torch.device):
        sysm, perm = cc.system, cc.perm
        p = [0] * _HEAD
        kind = TABLE if sysm.name == "table" else POSITIVE_ROOTS if sysm.name == "a_np" else ORBIT
        explicit = getattr(perm, "explicit", False)
        keyed = hasattr(perm, "keys") and not explicit
        p[0], p[1] = kind, EXPLICIT if explicit else KEYED if keyed else IDENTITY
        if keyed:
            p[2], p[3] = perm.a, perm.b
            p[6:12] = perm.keys
        p[4], p[5] = sysm.count, cc.n_classes
        self.n_dim, self.kind, self.order = sysm.n_dim, kind, p[1]
        binom, inv = [[0]], [0.0]
        if kind == ORBIT:
            sysm._check_int64()
            orbs = sysm.orbits
            p[12] = len(orbs)
            kmax = max(max(o.mults) for o in orbs)
            binom = binom_rows(sysm.n_dim, kmax)
            p[14] = kmax + 1
            groups, rows = [], []
            for o, off in zip(orbs, sysm.offsets, strict=True):
                rows += [off, o.count, len(groups), len(o.values)]
                groups += list(zip(o.values, o.mults, o._place, o.radix, strict=True))
            p[15] = _HEAD + len(rows)
            p += rows + [x for g in groups for x in g]
            inv = [o.inv_norm for o in orbs]
        elif kind == POSITIVE_ROOTS:
            p[13] = sysm.n_pairs
            inv = [math.sqrt(0.5), 1.0]
        self.params = torch.tensor(p, dtype=torch.int64, device=device)
        self.binom = torch.tensor(binom, dtype=torch.int64, device=device)
        # float64 inverse norms, rounded to float32 in the kernel as the torch path rounds them
        self.inv = sysm._inv.to(device) if kind == TABLE else torch.tensor(inv, dtype=torch.float64, device=device)
        self.vtable = sysm.table.to(device) if kind == TABLE else None
        self.sorted_idx, self.pos_of = perm._on(device)[0::2] if explicit else (None, None)
        self.max_nnz = max(o.n_nonzero for o in sysm.orbits) if kind == ORBIT else 2
        self.log_steps = sysm.n_dim.bit_length() + 1  # binary-search steps over a column of the binomial table


def plan(cc, device: torch.device) -> Plan:
    """The centers' plan on `device`, built once. torch.compile traces only the cached lookup: a first call inside a
    compiled region builds the plan outside the graph (one graph break, gone at the recompile that follows)."""
    plans = cc.__dict__.get("_lookup_plans")
    if plans is not None and device in plans:
        return plans[device]
    return _build_plan(cc, device)


@torch.compiler.disable
def _build_plan(cc, device: torch.device) -> Plan:
    plans = cc.__dict__.setdefault("_lookup_plans", {})
    plans[device] = Plan(cc, device)
    return plans[device]


def backend(device: torch.device) -> str | None:
    """`triton` (CUDA), `numba` (CPU) or None (the torch path) for tensors on `device`."""
    if device.type == "cpu":
        return "numba" if _kernels.HAVE_NUMBA else None
    return "triton" if _kernels.use_triton(device) else None


def lookup(cc, labels: torch.Tensor) -> torch.Tensor:
    """Unit centers [*labels.shape, n_dim] float32 of int64 labels (range-checked), in one kernel."""
    p = plan(cc, labels.device)
    flat = labels.reshape(-1)
    out = torch.ops.lsc.center_lookup(
        flat,
        p.params,
        p.binom,
        p.inv,
        p.vtable,
        p.sorted_idx,
        p.pos_of,
        p.n_dim,
        p.kind,
        p.order,
        p.max_nnz,
        p.log_steps,
    )
    return out.reshape(*labels.shape, p.n_dim)


@torch.library.custom_op("lsc::center_lookup", mutates_args=())
def center_lookup(
    labels: torch.Tensor,
    params: torch.Tensor,
    binom: torch.Tensor,
    inv: torch.Tensor,
    vtable: torch.Tensor | None,
    sorted_idx: torch.Tensor | None,
    pos_of: torch.Tensor | None,
    n_dim: int,
    kind: int,
    order: int,
    max_nnz: int,
    log_steps: int,
) -> torch.Tensor:
    """Unit centers [B, n_dim] float32 of labels [B] int64 (see the module docstring for `params`)."""
    if labels.device.type == "cpu" and not _interpreting():
        out = torch.zeros(labels.shape[0], n_dim, dtype=torch.float32)
        p = params.numpy()
        bad = _kernel(
            labels.numpy(), out.numpy(), p, binom.numpy(), inv.numpy(),
            vtable.numpy() if vtable is not None else np.zeros((1, 1), np.float32),
            sorted_idx.numpy() if sorted_idx is not None else np.zeros(1, np.int64),
            pos_of.numpy() if pos_of is not None else np.zeros(1, np.int64), max_nnz,
        )  # fmt: skip
        if bad >= 0:
            raise _bad_labels_error(int(p[5]), labels.min().item(), labels.max().item())
        return out
    from ._triton import center_lookup_triton

    out, flag = center_lookup_triton(
        labels, params, binom, inv, vtable, sorted_idx, pos_of, n_dim, kind, order, log_steps
    )
    if labels.device.type == "cpu":  # the interpreter: raise as the numba path does
        if flag.item():
            raise _bad_labels_error(int(params[5]), labels.min().item(), labels.max().item())
    else:
        torch._assert_async(flag == 0, "labels must lie in [0, n_classes): check data.num_classes")
    return out


@center_lookup.register_fake
def _(labels, params, binom, inv, vtable, sorted_idx, pos_of, n_dim, kind, order, max_nnz, log_steps):
    return labels.new_empty(labels.shape[0], n_dim, dtype=torch.float32)


def _interpreting() -> bool:
    """CPU tensors take the Triton kernel under the interpreter (tests); triton is never imported otherwise."""
    if os.environ.get("TRITON_INTERPRET", "0") != "1":
        return False
    from . import _triton

    return _triton.interpreting()


# ---- numba ------------------------------------------------------------------------------------------------

if _kernels.HAVE_NUMBA:
    _f = _kernels._f

    @numba.njit(inline="always", cache=True)
    def _forward(x, k0, k1, k2, k3, k4, k5, a, b, count):
        """FeistelPermutation.forward for one value: the six rounds, cycle-walking (0 <= l, F < a: one subtract)."""
        while True:
            lft = x // b
            rgt = x - lft * b
            lft += _f(rgt, k0, a)
            lft -= a if lft >= a else 0
            rgt += _f(lft, k1, b)
            rgt -= b if rgt >= b else 0
            lft += _f(rgt, k2, a)
            lft -= a if lft >= a else 0
            rgt += _f(lft, k3, b)
            rgt -= b if rgt >= b else 0
            lft += _f(rgt, k4, a)
            lft -= a if lft >= a else 0
            rgt += _f(lft, k5, b)
            rgt -= b if rgt >= b else 0
            x = lft * b + rgt
            if x < count:
                return x

    @numba.njit(cache=True)
    def _kernel(labels, out, p, binom, inv, vtable, sorted_idx, pos_of, max_nnz):
        """Fill out[r] with the unit center of labels[r]; returns the first out-of-range row, or -1."""
        n = out.shape[1]
        kind, order, n_classes = p[0], p[1], p[5]
        taken = np.empty(max_nnz, dtype=np.int64)
        mine = np.empty(max_nnz, dtype=np.int64)
        for r in range(labels.shape[0]):
            lab = labels[r]
            if lab < 0 or lab >= n_classes:
                return r
            if order == 1:
                idx = _forward(lab, p[6], p[7], p[8], p[9], p[10], p[11], p[2], p[3], p[4])
            elif order == 2:
                idx = sorted_idx[pos_of[lab]]
            else:
                idx = lab
            if kind == 2:  # table
                s = np.float32(inv[idx])
                for c in range(n):
                    out[r, c] = vtable[idx, c] * s
            elif kind == 1:  # a_np: e_i - e_j (pair rank C(j, 2) + i), then e_i
                if idx < p[13]:
                    j = np.int64((math.sqrt(8.0 * idx + 1.0) + 1.0) / 2.0)
                    while j * (j - 1) // 2 > idx:
                        j -= 1
                    while (j + 1) * j // 2 <= idx:
                        j += 1
                    s = np.float32(inv[0])
                    out[r, idx - j * (j - 1) // 2] = s
                    out[r, j] = -s
                else:
                    out[r, idx - p[13]] = np.float32(inv[1])
            else:
                o = 0
                while o + 1 < p[12] and idx >= p[_HEAD + 4 * (o + 1)]:
                    o += 1
                q = _HEAD + 4 * o
                loc, g0, ng = idx - p[q], p[q + 2], p[q + 3]
                s = np.float32(inv[o])
                free, nt = n, 0
                for g in range(g0, g0 + ng):
                    gq = p[15] + 4 * g
                    val, c, place, radix = p[gq], p[gq + 1], p[gq + 2], p[gq + 3]
                    rr = (loc // place) % radix
                    hi = free  # colex unranking: positions strictly below hi, largest first
                    for jj in range(c):
                        j = c - jj
                        lo, top = j - 1, hi - 1
                        while lo < top:  # largest x in [j - 1, hi) with C(x, j) <= rr
                            mid = (lo + top + 1) >> 1
                            if binom[mid, j] <= rr:
                                lo = mid
                            else:
                                top = mid - 1
                        rr -= binom[lo, j]
                        hi = lo
                        a = lo  # the lo-th position not taken by an earlier group (taken[:nt] ascending)
                        for t in range(nt):
                            if taken[t] <= a:
                                a += 1
                        out[r, a] = np.float32(val) * s
                        mine[jj] = a
                    for jj in range(c):  # this group's positions join the taken ones, kept ascending
                        ins = nt
                        while ins > 0 and taken[ins - 1] > mine[jj]:
                            taken[ins] = taken[ins - 1]
                            ins -= 1
                        taken[ins] = mine[jj]
                        nt += 1
                    free -= c
        return -1
