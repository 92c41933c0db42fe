"""CPU kernel of the orbit log-partition (`partition.orbit_log_z`): the coordinate DP and its adjoint, fused.

Per row, in float64 linear space: t_ig = exp(w_g u_i - M_g) with M_g = max_i w_g u_i, then
F_{i+1}[k] = F_i[k] + sum_g t_ig F_i[k - e_g] over the prod_g (c_g + 1) states k, Z = F_n[c] exp(sum_g c_g M_g).
The adjoint pass gives dZ/dt_ig, hence d log Z / du_i = sum_g w_g t_ig (dZ/dt_ig) / Z = E[v_i] under the softmax.
The shifts cancel from the gradient (every monomial of the coefficient c has c_g factors of group g). float64 is
enough: each t is at most 1, the best vector's monomial is at least exp(-2 scale max|w| sum_g c_g / |v|), which
`fits` checks against 1e-280, and no F exceeds the orbit's count. One pass costs n * S * G multiply-adds per row
(V^22 at n_dim 143: ~4k), against ~100 tensor ops for the log-space tree.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache

import numpy as np
import torch

try:
    import numba

    HAVE_NUMBA = os.environ.get("LSC_NO_NUMBA", "0") != "1"
except ImportError:  # pragma: no cover
    numba, HAVE_NUMBA = None, False

PARALLEL_ROWS = 4096
LOG_TINY = -640.0  # log of the smallest monomial the float64 DP may have to hold (1e-278)


def fits(u_max: float, values, mults) -> bool:
    """True when the float64 linear-space DP cannot underflow for queries with |u_i| <= u_max: the best
    monomial is at least exp(-sum_g c_g (max_i w_g u_i - min_i w_g u_i))."""
    return -2.0 * u_max * max(abs(v) for v in values) * sum(mults) > LOG_TINY


MAX_GROUPS = 2  # every system here has at most two nonzero values per orbit (+-1, or 2 and -1); more: torch


@lru_cache(maxsize=64)
def _tables(mults: tuple[int, ...]):
    """The DP's transitions s -> s + e_g, mixed radix with group 0 least significant, as (state count,
    inc [S, G, 2] = (source state, group) of each incoming transition, -1 padded, and out [S, G, 2] =
    (target state, group) of each outgoing one)."""
    radix = [c + 1 for c in mults]
    n_states = int(np.prod(radix))
    inc = np.full((n_states, MAX_GROUPS, 2), -1, dtype=np.int64)
    out = np.full((n_states, MAX_GROUPS, 2), -1, dtype=np.int64)
    n_in, n_out = [0] * n_states, [0] * n_states
    for s in range(n_states):
        k, r = [], s
        for c in radix:
            k.append(r % c)
            r //= c
        for g, c in enumerate(mults):
            if k[g] < c:
                d = s + int(np.prod(radix[:g]))
                out[s, n_out[s]] = (d, g)
                n_out[s] += 1
                inc[d, n_in[d]] = (s, g)
                n_in[d] += 1
    return n_states, inc, out


if HAVE_NUMBA:
    # Rows are the innermost loop everywhere (every array is [.., B]) and each step reads one [S, B] slice and
    # writes another, so LLVM vectorizes across rows. The DP only sees finite positive numbers (fastmath); the
    # max pass starts from -inf and is kept out of it.

    @numba.njit(cache=True)
    def _prepare(z, coef, w, a, b, zh, norm, T, shift, c):
        """Rows a..b: zh = z / |z|, u = coef zh, T[i, g, r] = exp(w_g u_ir - M_gr), shift = sum_g c_g M_gr."""
        n, G = z.shape[0], w.shape[0]
        for r in range(a, b):
            norm[r] = 0.0
        for i in range(n):
            zi = z[i]
            for r in range(a, b):
                norm[r] += zi[r] * zi[r]
        inv = np.empty(b - a)
        for r in range(a, b):
            norm[r] = math.sqrt(norm[r])
            inv[r - a] = 1.0 / norm[r]
        for i in range(n):
            zi, hi = z[i], zh[i]
            for r in range(a, b):
                hi[r] = zi[r] * inv[r - a]
        pm = G == 2 and w[0] == 1.0 and w[1] == -1.0  # V^{mk}: e^{-u - M-} = e^{-M+ - M-} / e^{u - M+}
        for r in range(a, b):
            shift[r] = 0.0
        for g in range(G):  # row n of T holds the shifts M_g
            tg, k = T[n, g], w[g] * coef
            for r in range(a, b):
                tg[r] = -np.inf
            for i in range(n):
                zi = zh[i]
                for r in range(a, b):
                    tg[r] = max(tg[r], k * zi[r])
            for r in range(a, b):
                shift[r] += c[g] * tg[r]
        both = np.empty(b - a)
        for r in range(a, b):
            both[r - a] = math.exp(-T[n, 0, r] - T[n, 1, r]) if pm else 0.0
        for i in range(n):
            for r in range(a, b):
                T[i, 0, r] = math.exp(w[0] * coef * zh[i, r] - T[n, 0, r])
            if pm:
                for r in range(a, b):
                    T[i, 1, r] = both[r - a] / T[i, 0, r]
            else:
                for g in range(1, G):
                    for r in range(a, b):
                        T[i, g, r] = math.exp(w[g] * coef * zh[i, r] - T[n, g, r])

    @numba.njit(cache=True, fastmath=True)
    def _dp(inc, a, b, F, T):
        """Rows a..b: F[i, s, r] = the DP after i coordinates; each state pulls its (at most 2) incoming
        transitions in one fused pass."""
        n, S = F.shape[0] - 1, F.shape[1]
        f0 = F[0, :, a:b]
        for s in range(S):
            for r in range(b - a):
                f0[s, r] = 0.0
        for r in range(b - a):
            f0[0, r] = 1.0
        for i in range(n):
            fi, fo, ti = F[i, :, a:b], F[i + 1, :, a:b], T[i, :, a:b]
            for s in range(S):
                s0, g0, s1, g1 = inc[s, 0, 0], inc[s, 0, 1], inc[s, 1, 0], inc[s, 1, 1]
                if s0 < 0:
                    for r in range(b - a):
                        fo[s, r] = fi[s, r]
                elif s1 < 0:
                    for r in range(b - a):
                        fo[s, r] = fi[s, r] + ti[g0, r] * fi[s0, r]
                else:
                    for r in range(b - a):
                        fo[s, r] = fi[s, r] + ti[g0, r] * fi[s0, r] + ti[g1, r] * fi[s1, r]

    @numba.njit(cache=True, fastmath=True)
    def _adjoint(w, out_t, a, b, F, T, grad):
        """grad[i, r] = E[v_i] = d log Z / du_ir: the adjoint of the DP, sum_g w_g t_ig sum_s F_i[s] adj[s + e_g]."""
        n, S = F.shape[0] - 1, F.shape[1]
        R = b - a
        adj, new, eg = np.zeros((S, R)), np.empty((S, R)), np.empty((2, R))
        adj[S - 1, :] = 1.0
        z = F[n, S - 1, a:b]
        for i in range(n - 1, -1, -1):
            fi, ti, gi = F[i, :, a:b], T[i, :, a:b], grad[i, a:b]
            for g in range(2):
                for r in range(R):
                    eg[g, r] = 0.0
            for s in range(S):
                d0, g0, d1, g1 = out_t[s, 0, 0], out_t[s, 0, 1], out_t[s, 1, 0], out_t[s, 1, 1]
                if d0 < 0:
                    for r in range(R):
                        new[s, r] = adj[s, r]
                elif d1 < 0:
                    for r in range(R):
                        x0 = adj[d0, r]
                        new[s, r] = adj[s, r] + ti[g0, r] * x0
                        eg[g0, r] += fi[s, r] * x0
                else:
                    for r in range(R):
                        x0, x1 = adj[d0, r], adj[d1, r]
                        new[s, r] = adj[s, r] + ti[g0, r] * x0 + ti[g1, r] * x1
                        eg[g0, r] += fi[s, r] * x0
                        eg[g1, r] += fi[s, r] * x1
            w1 = w[1] if w.shape[0] > 1 else 0.0
            if w.shape[0] > 1:
                for r in range(R):
                    gi[r] = (w[0] * ti[0, r] * eg[0, r] + w1 * ti[1, r] * eg[1, r]) / z[r]
            else:
                for r in range(R):
                    gi[r] = w[0] * ti[0, r] * eg[0, r] / z[r]
            adj, new = new, adj

    @numba.njit(cache=True)
    def _forward(z, coef, w, c, inc, a, b, zh, norm, T, shift, F, logz):
        _prepare(z, coef, w, a, b, zh, norm, T, shift, c)
        _dp(inc, a, b, F, T)
        S, n = F.shape[1], F.shape[0] - 1
        for r in range(a, b):
            logz[r] = math.log(F[n, S - 1, r]) + shift[r]

    @numba.njit(cache=True)
    def _backward(w, coef, out_t, a, b, zh, norm, T, F, gz, gcoef):
        """gz[i, r] = d log Z_r / dz_ir (through z / |z|), gcoef[r] = d log Z_r / d coef."""
        _adjoint(w, out_t, a, b, F, T, gz)
        n = zh.shape[0]
        for r in range(a, b):
            gcoef[r] = 0.0
        for i in range(n):
            gi, zi = gz[i], zh[i]
            for r in range(a, b):
                gcoef[r] += gi[r] * zi[r]
        k = np.empty(b - a)
        for r in range(a, b):
            k[r - a] = coef / norm[r]
        for i in range(n):
            gi, zi = gz[i], zh[i]
            for r in range(a, b):
                gi[r] = k[r - a] * (gi[r] - gcoef[r] * zi[r])

    @numba.njit(parallel=True, cache=True)
    def _forward_par(z, coef, w, c, inc, zh, norm, T, shift, F, logz, chunk):
        nb = (z.shape[1] + chunk - 1) // chunk
        for j in numba.prange(nb):
            _forward(z, coef, w, c, inc, j * chunk, min((j + 1) * chunk, z.shape[1]), zh, norm, T, shift, F, logz)

    @numba.njit(parallel=True, cache=True)
    def _backward_par(w, coef, out_t, zh, norm, T, F, gz, gcoef, chunk):
        nb = (zh.shape[1] + chunk - 1) // chunk
        for j in numba.prange(nb):
            _backward(w, coef, out_t, j * chunk, min((j + 1) * chunk, zh.shape[1]), zh, norm, T, F, gz, gcoef)


# ---- the torch op: forward and its adjoint as custom ops (torch.compile traces them without a graph break) ----


def _coef(scale_t: torch.Tensor | None, scale_f: float, inv_norm: float) -> float:
    return (float(scale_t) if scale_t is not None else scale_f) * inv_norm


@torch.library.custom_op("lsc::orbit_log_z", mutates_args=())
def _log_z_fwd(
    z: torch.Tensor,
    scale_t: torch.Tensor | None,
    scale_f: float,
    inv_norm: float,
    values: list[int],
    mults: list[int],
    save: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log Z [B] in z's dtype, then what the adjoint needs when `save`: z / |z| [n, B], |z| [B], the per-group
    factors T [n + 1, G, B] and the DP states F [n + 1, S, B], float64; empty tensors otherwise)."""
    zt = z.detach().double().T.contiguous().numpy()  # [n, B]: rows innermost
    n, B = zt.shape
    w, c = np.asarray(values, np.float64), np.asarray(mults, np.float64)
    S, inc, _ = _tables(tuple(mults))
    zh, norm, shift, logz = np.empty((n, B)), np.empty(B), np.empty(B), np.empty(B)
    T, F = np.empty((n + 1, len(values), B)), np.empty((n + 1, S, B))
    coef = _coef(scale_t, scale_f, inv_norm)
    if B >= PARALLEL_ROWS and torch.get_num_threads() > 1:
        _forward_par(zt, coef, w, c, inc, zh, norm, T, shift, F, logz, 1024)
    elif B:
        _forward(zt, coef, w, c, inc, 0, B, zh, norm, T, shift, F, logz)
    out = torch.from_numpy(logz).to(z.dtype)
    if not save:
        e = torch.empty(0, dtype=torch.float64)
        return out, e, e.clone(), e.clone(), e.clone()
    return out, *(torch.from_numpy(a) for a in (zh, norm, T, F))


@_log_z_fwd.register_fake
def _(z, scale_t, scale_f, inv_norm, values, mults, save):
    B, n = z.shape
    out = z.new_empty(B)
    if not save:
        e = z.new_empty(0, dtype=torch.float64)
        return out, e, e.clone(), e.clone(), e.clone()
    S = _tables(tuple(mults))[0]
    f64 = dict(dtype=torch.float64)
    return out, z.new_empty(n, B, **f64), z.new_empty(B, **f64), z.new_empty(n + 1, len(values), B, **f64), \
        z.new_empty(n + 1, S, B, **f64)  # fmt: skip


@torch.library.custom_op("lsc::orbit_log_z_backward", mutates_args=())
def _log_z_bwd(
    zh: torch.Tensor,
    norm: torch.Tensor,
    T: torch.Tensor,
    F: torch.Tensor,
    scale_t: torch.Tensor | None,
    scale_f: float,
    inv_norm: float,
    values: list[int],
    mults: list[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """(d log Z / dz [n, B], d log Z / d coef [B]), float64."""
    n, B = zh.shape
    _, _, out_t = _tables(tuple(mults))
    w = np.asarray(values, np.float64)
    gz, gcoef = np.empty((n, B)), np.empty(B)
    coef = _coef(scale_t, scale_f, inv_norm)
    a = [x.numpy() for x in (zh, norm, T, F)]
    if B >= PARALLEL_ROWS and torch.get_num_threads() > 1:
        _backward_par(w, coef, out_t, *a, gz, gcoef, 1024)
    elif B:
        _backward(w, coef, out_t, 0, B, *a, gz, gcoef)
    return torch.from_numpy(gz), torch.from_numpy(gcoef)


@_log_z_bwd.register_fake
def _(zh, norm, T, F, scale_t, scale_f, inv_norm, values, mults):
    return torch.empty_like(zh), torch.empty_like(norm)


def _autograd_setup(ctx, inputs, output):
    z, scale_t, scale_f, inv_norm, values, mults, _ = inputs
    ctx.save_for_backward(*output[1:], scale_t)
    ctx.mark_non_differentiable(*output[1:])  # the adjoint's inputs: no zero gradients materialized for them
    ctx.set_materialize_grads(False)
    ctx.args, ctx.z_dtype = (scale_f, inv_norm, values, mults), z.dtype


def _autograd_backward(ctx, grad, *_):
    if grad is None:  # grads are not materialized: nothing flows back through log Z
        return None, None, None, None, None, None, None
    zh, norm, T, F, scale_t = ctx.saved_tensors
    scale_f, inv_norm, values, mults = ctx.args
    gz, gcoef = torch.ops.lsc.orbit_log_z_backward(zh, norm, T, F, scale_t, scale_f, inv_norm, values, mults)
    g = grad.double()
    dz = (gz.T * g[:, None]).to(ctx.z_dtype) if ctx.needs_input_grad[0] else None
    dscale = None
    if scale_t is not None and ctx.needs_input_grad[1]:
        dscale = ((gcoef * g).sum() * inv_norm).reshape(scale_t.shape).to(scale_t.dtype)
    return dz, dscale, None, None, None, None, None


_log_z_fwd.register_autograd(_autograd_backward, setup_context=_autograd_setup)


def orbit_log_z(z: torch.Tensor, scale, inv_norm: float, values, mults) -> torch.Tensor:
    """log Z [B] of one orbit: logits scale * inv_norm * <z/|z|, v>; CPU, float64 inside. Differentiable in z and
    in a tensor scale (a learned scale)."""
    is_t = isinstance(scale, torch.Tensor)
    scale_t = scale.reshape(()) if is_t else None
    save = torch.is_grad_enabled() and (z.requires_grad or (is_t and scale.requires_grad))
    out = torch.ops.lsc.orbit_log_z(z, scale_t, 0.0 if is_t else float(scale), float(inv_norm), list(values),
                                    list(mults), save)  # fmt: skip
    return out[0]
