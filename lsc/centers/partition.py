"""Exact full-system softmax: log Z(z) = log sum_{v in system} exp(scale * cos(z, v)) in O(n_dim) per row.

For a permutation orbit whose nonzero values w_g occur c_g times, with u = scale * z/|z| / |v| (|v| is one number
for the whole orbit),

    Z = sum_{v in orbit} exp(<u, v>) = [x_1^{c_1} ... x_G^{c_G}] prod_{i=1..n} (1 + sum_g x_g e^{w_g u_i}):

choosing which coordinates carry which value is choosing, per coordinate, one term of its factor. The product of
polynomials truncated at degrees (c_1 .. c_G) is associative, so it is computed as a balanced tree over the
coordinates (log2 n levels of batched truncated products, prod_g (c_g + 1) states: 9 for V^22), in log space: no
Python loop over coordinates, no overflow at scale 64 and n_dim 600, and autograd gives the gradient (the expected
center under the softmax). Unions of orbits (a_n, a_n_interp, v{m}{k}p) take the logsumexp of their orbits; a_np
(e_i - e_j, i < j, and e_i) is a prefix logsumexp; a table a plain logsumexp over its rows.

Every vector counts, labeled or not: vectors no class owns act as negatives (the softmax is over the system).
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import torch
import torch.nn.functional as F

from . import _partition_numba as _pn
from ._kernels import use_triton
from .systems import OrbitSystem, PositiveRootSystem, TableSystem, check_embeddings


@lru_cache(maxsize=64)
def _plan(mults: tuple[int, ...]):
    """States (mixed radix over groups) and every pair (a, b) of states with a + b <= c, as index tensors."""
    ranges = [range(c + 1) for c in mults]
    states = list(itertools.product(*ranges))
    index = {s: i for i, s in enumerate(states)}
    ia, ib, ic = [], [], []
    for a in states:
        for b in states:
            c = tuple(x + y for x, y in zip(a, b, strict=True))
            if all(x <= m for x, m in zip(c, mults, strict=True)):
                ia.append(index[a])
                ib.append(index[b])
                ic.append(index[c])
    unit = [index[tuple(int(h == g) for h in range(len(mults)))] for g in range(len(mults))]
    return len(states), torch.tensor(ia), torch.tensor(ib), torch.tensor(ic), unit


def _product(a: torch.Tensor, b: torch.Tensor, plan) -> torch.Tensor:
    """Truncated product of log-coefficient polynomials a, b [..., S] -> [..., S] (logsumexp over state pairs)."""
    s, ia, ib, ic, _ = plan
    ia, ib, ic = ia.to(a.device), ib.to(a.device), ic.to(a.device)
    t = a[..., ia] + b[..., ib]  # [..., P] log terms
    idx = ic.expand_as(t)
    mx = torch.full(t.shape[:-1] + (s,), -math.inf, dtype=t.dtype, device=t.device)
    mx = mx.scatter_reduce(-1, idx, t.detach(), "amax", include_self=True)  # a stabilizer: no gradient needed
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    tot = torch.zeros_like(mx).scatter_add(-1, idx, torch.exp(t - mx.gather(-1, idx)))
    pos = tot > 0
    return torch.where(pos, torch.log(torch.where(pos, tot, torch.ones_like(tot))) + mx, -math.inf)


def orbit_log_z(u: torch.Tensor, values: list[int], mults: list[int]) -> torch.Tensor:
    """log sum over the orbit of exp(<u, v>) for u [B, n]: the coefficient of prod_g x_g^{c_g} (see module doc).
    The log-space tree in torch ops: any device, and the reference for the CPU kernel."""
    plan = _plan(tuple(mults))
    s, unit = plan[0], plan[4]
    B, n = u.shape
    leaves = torch.full((B, n, s), -math.inf, dtype=u.dtype, device=u.device)
    leaves[..., 0] = 0.0  # the "1": the coordinate holds a zero
    for g, w in enumerate(values):
        leaves[..., unit[g]] = w * u
    level = leaves
    while level.shape[1] > 1:
        if level.shape[1] % 2:  # pad with the polynomial 1
            one = torch.full((B, 1, s), -math.inf, dtype=u.dtype, device=u.device)
            one[..., 0] = 0.0
            level = torch.cat([level, one], 1)
        level = _product(level[:, 0::2], level[:, 1::2], plan)
    return level[:, 0, s - 1]  # the state (c_1, .., c_G) is the last in mixed radix


def log_partition(
    system, z: torch.Tensor, scale: float | torch.Tensor, backend: str = "auto", sync: bool = True
) -> torch.Tensor:
    """log Z [B] of the softmax over every vector of `system`, logits scale * cos(z, v). Differentiable.

    z [B, n_dim] on any device; float32 in and out (float64 stays float64). backend (orbit systems): `numba`
    (CPU: normalization, DP and adjoint fused, float64 inside: `_partition_numba`), `triton` (CUDA: the same DP
    fused in float32 log space, `_triton`; CPU tensors need the Triton interpreter), `torch` (the log-space tree:
    any device, the reference), `auto` = triton for float32 on CUDA when importable (orbits of <= 2 value
    groups), numba on CPU when installed and float64 holds the scale, else torch. sync=False: a CUDA batch's NaN
    check stays on the device (`check_embeddings`), for the training loss.
    """
    z = check_embeddings(z, system.n_dim, sync)
    z = z if z.dtype == torch.float64 else z.float()
    if isinstance(system, OrbitSystem):
        if backend == "auto" and z.dtype == torch.float32 and len(z) and use_triton(z.device):
            from . import _triton  # CUDA: the fused float32 log-space kernel, forward and backward

            backend = "triton" if _triton.logz_covers(system) else backend
        if backend == "auto":  # the fused CPU kernel (normalization, DP, adjoint) when float64 holds the scale
            fits = all(
                _pn.fits(float(scale) * o.inv_norm, o.values, o.mults) and len(o.values) <= _pn.MAX_GROUPS
                for o in system.orbits
            )
            backend = "numba" if z.device.type == "cpu" and _pn.HAVE_NUMBA and fits and len(z) else "torch"
        if backend == "numba":
            parts = [_pn.orbit_log_z(z, scale, o.inv_norm, o.values, o.mults) for o in system.orbits]
        elif backend == "triton":
            from ._triton import orbit_log_z_triton

            parts = [orbit_log_z_triton(z, scale, o) for o in system.orbits]
        else:
            zh = F.normalize(z, dim=1)
            parts = [orbit_log_z(scale * o.inv_norm * zh, o.values, o.mults) for o in system.orbits]
        return parts[0] if len(parts) == 1 else torch.logsumexp(torch.stack(parts, 1), 1)
    zh = F.normalize(z, dim=1)
    if isinstance(system, PositiveRootSystem):
        # pairs e_i - e_j (i < j): log sum_j exp(-u_j) sum_{i<j} exp(u_i); singles e_i: |v| = 1
        u = scale * math.sqrt(0.5) * zh
        prefix = torch.logcumsumexp(u, 1)[:, :-1]  # log sum_{i<j} exp(u_i), j = 1 .. n-1
        pairs = torch.logsumexp(prefix - u[:, 1:], 1)
        singles = torch.logsumexp(scale * zh, 1)
        return torch.logaddexp(pairs, singles) if system.n_dim > 1 else singles
    if isinstance(system, TableSystem):
        t = F.normalize(system.table.to(zh.device, zh.dtype), dim=1)
        return torch.logsumexp(scale * zh @ t.T, 1)
    raise TypeError(f"no log partition for {type(system).__name__}")
