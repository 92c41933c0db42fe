"""Vector systems: finite sets of class-center vectors given by a rule, never materialized unless asked.

Names (the config/CLI names):
  v{m}{k}       V_n^{mk}: m entries +1, k entries -1, the rest 0 (v11 = A_{n-1} roots, v21, v22; arXiv 2512.07509)
  v{m}{k}p      V_{n+1}^{mk} with the last coordinate dropped (arXiv 2604.00779, eq. 6)
  a_n           A_n roots e_i - e_j of R^{n+1}, last coordinate dropped: n(n+1) vectors (arXiv 2510.04090)
  a_np          the positive roots (i < j) only, n(n+1)/2 vectors
  a_n_interp    the roots plus one interpolation level +-(2e_i - e_j - e_k), projected the same way: n^2(n+1)
  table         explicit centers from a tensor or a file (e.g. class-mean embeddings, "CEmbs")
For m or k >= 10 write v{m}_{k} (and v{m}_{k}p).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from ._combinatorics import INT64_MAX
from .orbit import Orbit
from .search import best_first, scan_argmax

SYSTEM_NAMES = ("v{m}{k}", "v{m}{k}p", "a_n", "a_np", "a_n_interp", "table")
TIE_BUDGET = 4096  # best-first pops spent on enumerating exact ties before falling back to a scan


def check_embeddings(z: torch.Tensor, n_dim: int, sync: bool | None = True) -> torch.Tensor:
    """Validate a batch of embeddings [B, n_dim]; returns it as a floating tensor. The NaN/inf check: sync=True reads
    one flag on the host; sync=False (a training loss on CUDA) runs it on the device (torch._assert_async); None
    leaves it to the caller (a fused kernel that flags such rows: `nonfinite_error` reports them)."""
    if not isinstance(z, torch.Tensor):
        raise ValueError(f"embeddings must be a torch.Tensor of shape [batch, {n_dim}], got {type(z).__name__}")
    if z.dim() != 2 or z.shape[1] != n_dim:
        raise ValueError(
            f"embeddings have shape {tuple(z.shape)} but the centers live in n_dim={n_dim}; pass [batch, {n_dim}] "
            f"(the model's head must output n_dim values)"
        )
    if not z.is_floating_point():
        z = z.float()
    if sync is None:
        return z
    # one cheap reduction; locate the bad rows only when it fails. Not under torch.compile: reading the result on
    # the host is a graph break (a compiled loss gets NaN from NaN embeddings instead of this message)
    if not sync and z.is_cuda:
        torch._assert_async(torch.isfinite(z.sum()), "embeddings contain NaN/inf: check the model output")
        return z
    if not torch.compiler.is_compiling() and not torch.isfinite(z.sum()):
        bad = (~torch.isfinite(z)).any(1).nonzero()[:, 0]
        if bad.numel():
            raise nonfinite_error(bad)
    return z


def nonfinite_error(bad_rows: torch.Tensor) -> ValueError:
    """The error for embeddings with NaN/inf in rows `bad_rows` (sorted row indices, at least one)."""
    return ValueError(
        f"embeddings contain NaN/inf in {bad_rows.numel()} row(s), first row {bad_rows[0].item()}; "
        "check the model output (learning rate too high? mixed precision overflow?)"
    )


class VectorSystem:
    """A finite set of vectors in R^n_dim with ranking (vector -> index) and unranking (index -> vector)."""

    name: str
    n_dim: int
    count: int

    @property
    def display(self) -> str:
        return f"{self.name}(n_dim={self.n_dim})"

    def __len__(self) -> int:
        if self.count > INT64_MAX:
            raise OverflowError(f"{self.display} has {self.count:,} vectors; use .count")
        return self.count

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.display}, count={self.count:,})"

    @property
    def spec(self) -> dict:
        return {"name": self.name, "n_dim": self.n_dim}

    def _check_idx(self, idx: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(idx)
        if idx.dtype != torch.int64:
            if idx.is_floating_point():
                raise ValueError("vector indices must be integers (a LongTensor)")
            idx = idx.long()
        if idx.numel() and (idx.min() < 0 or idx.max() >= self.count):
            raise ValueError(f"vector indices must lie in [0, {self.count:,}) for {self.display}")
        return idx

    def vectors(self, idx: torch.Tensor, normalize: bool = False, dtype: torch.dtype = torch.float32):
        """Vectors for indices idx [B] (unranking); raw +-1/0 (or small integer) entries unless normalize."""
        idx = self._check_idx(idx)
        v = self._vectors(idx.reshape(-1), dtype)
        if normalize:
            v = v * self.inv_norms(idx.reshape(-1), dtype)[:, None]
        return v.reshape(*idx.shape, self.n_dim)

    def index(self, v: torch.Tensor) -> torch.Tensor:
        """Indices of the rows of v [B, n_dim] (ranking); ValueError for a row that is not in the system."""
        v = torch.as_tensor(v)
        if v.dim() != 2 or v.shape[1] != self.n_dim:
            raise ValueError(f"expected vectors of shape [batch, {self.n_dim}], got {tuple(v.shape)}")
        return self._index(v)

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Index of the vector with the largest cosine similarity to each row of z; exact ties -> lowest index."""
        z = check_embeddings(z, self.n_dim)
        return self.scan(z)

    def scan(self, z: torch.Tensor, chunk_size: int = 65536) -> torch.Tensor:
        """Exact nearest by scanning every vector in chunks (O(count); what the fast searches are tested against)."""

        def fetch(a, b, dtype):
            idx = torch.arange(a, b, device=z.device)
            return self._vectors(idx, dtype), self.inv_norms(idx, dtype), None

        return scan_argmax(z, self.count, fetch, coef_bound=self.coef_bound, chunk_size=chunk_size)

    # subclasses implement
    def _vectors(self, idx: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        raise NotImplementedError

    def _index(self, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def inv_norms(self, idx: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        raise NotImplementedError

    @property
    def coef_bound(self) -> float:
        """max |v_i| / |v| over the system: bounds the float32 rounding of a cosine score."""
        raise NotImplementedError

    @property
    def raw_bounds(self) -> tuple[float, float]:
        """(max |v_i|, max |v|^2) over the raw vectors: bounds the float32 rounding of a distance score."""
        raise NotImplementedError

    @property
    def max_cos(self) -> float:
        raise NotImplementedError


class OrbitSystem(VectorSystem):
    """A disjoint union of permutation orbits; index = orbit offset + index within the orbit."""

    fast = True

    def __init__(self, name: str, n_dim: int, orbits: list[Orbit], display: str):
        sigs = [o.signature for o in orbits]
        if len(set(sigs)) != len(sigs):
            raise AssertionError(f"orbits of {display} overlap: {sigs}")
        self.name, self.n_dim, self.orbits, self._display = name, n_dim, orbits, display
        self.offsets, total = [], 0
        for o in orbits:
            self.offsets.append(total)
            total += o.count
        self.count = total
        self.n_top = min(n_dim, max(o.n_pos for o in orbits) + 1)
        self.n_bottom = min(n_dim, max(o.n_neg for o in orbits) + 1)

    @property
    def display(self) -> str:
        return self._display

    @property
    def coef_bound(self) -> float:
        return max(o.vmax * o.inv_norm for o in self.orbits)

    @property
    def raw_bounds(self) -> tuple[float, float]:
        return float(max(o.vmax for o in self.orbits)), float(max(o.sq_norm for o in self.orbits))

    def _check_int64(self):
        if self.count > INT64_MAX:
            raise ValueError(
                f"{self.display} has {self.count:,} vectors, past int64 indexing (9.2e18); use a smaller n_dim"
            )

    def _orbit_masks(self, idx: torch.Tensor):
        for o, off in zip(self.orbits, self.offsets, strict=True):
            m = (idx >= off) & (idx < off + o.count)
            yield o, off, m

    def _vectors(self, idx, dtype):
        self._check_int64()
        out = torch.zeros(idx.shape[0], self.n_dim, dtype=dtype, device=idx.device)
        for o, off, m in self._orbit_masks(idx):
            if len(self.orbits) == 1:
                return o.vectors(idx, dtype)
            if m.any():
                out[m] = o.vectors(idx[m] - off, dtype)
        return out

    def inv_norms(self, idx, dtype=torch.float32):
        if len(self.orbits) == 1:
            return torch.full(idx.shape, self.orbits[0].inv_norm, dtype=dtype, device=idx.device)
        out = torch.empty(idx.shape, dtype=dtype, device=idx.device)
        for o, _, m in self._orbit_masks(idx):
            out[m] = o.inv_norm
        return out

    def _index(self, v):
        self._check_int64()
        out = torch.full((v.shape[0],), -1, dtype=torch.int64, device=v.device)
        for o, off in zip(self.orbits, self.offsets, strict=True):
            m = o.member(v)
            if m.any():
                out[m] = o.index(v[m]) + off
        bad = (out < 0).nonzero()
        if bad.numel():
            i = bad[0, 0].item()
            raise ValueError(f"row {i} ({v[i].tolist()}) is not a vector of {self.display}")
        return out

    def fast_nearest(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Nearest vector by the rearrangement inequality, per orbit, best orbit by cosine.

        Returns (index [B], best score [B], runner-up score [B]) with scores = cosine * |z| in float64. The index
        is exact where runner-up < best; rows with runner-up >= best (exact ties) hold index 0.
        """
        self._check_int64()
        top_v, top_i = z.topk(self.n_top, 1)
        bot_v, bot_i = z.topk(self.n_bottom, 1, largest=False)
        scores, runners, idxs = [], [], []
        for o, off in zip(self.orbits, self.offsets, strict=True):
            best, drop = o.best_and_drop(top_v, bot_v)
            scores.append(best * o.inv_norm)
            runners.append((best - drop) * o.inv_norm)
            idxs.append(o.rank_groups(o.split_selection(top_i, bot_i)) + off)
        if len(self.orbits) == 1:
            best, runner, idx = scores[0], runners[0], idxs[0]
        else:
            s = torch.stack(scores, 1)
            best, w = s.max(1)
            runner = torch.stack(runners, 1).gather(1, w[:, None])[:, 0]
            other = s.scatter(1, w[:, None], -math.inf).amax(1)
            runner = torch.maximum(runner, other)
            idx = torch.stack(idxs, 1).gather(1, w[:, None])[:, 0]
        idx = torch.where(runner >= best, 0, idx)  # ties may select overlapping positions: never rank them
        return idx, best, runner

    def nearest(self, z):
        z = check_embeddings(z, self.n_dim)
        idx, best, runner = self.fast_nearest(z)
        tied = (runner >= best).nonzero()[:, 0]
        for r in tied.tolist():
            idx[r] = self._lowest_tied(z[r])
        return idx

    def _lowest_tied(self, z_row: torch.Tensor) -> int:
        top, low = None, None
        for pops, (score, i) in enumerate(self.best_first(z_row)):
            if top is None:
                top = score
            if score < top:
                return low
            low = i if low is None else min(low, i)
            if pops >= TIE_BUDGET:
                break
        return int(self.scan(z_row[None])[0]) if pops >= TIE_BUDGET else low

    def best_first(self, z_row: torch.Tensor | list[float]):
        """Yield (cosine * |z|, index) over all vectors in non-increasing order (2604.00779, Algorithm 2)."""
        row = z_row.double().tolist() if isinstance(z_row, torch.Tensor) else z_row
        return best_first(self.orbits, self.offsets, row)

    @property
    def max_cos(self) -> float:
        """Largest cosine between two distinct vectors, found exactly by best-first search from each orbit."""
        best = -math.inf
        for a in self.orbits:
            u = [float(x) for x in a.vector_py(0)]
            un = math.sqrt(a.sq_norm)
            for b in self.orbits:
                gen = best_first([b], [0], u)
                first = next(gen)
                if b is a:
                    first = next(gen, None)  # the first is u itself
                    if first is None:
                        continue
                best = max(best, first[0] / un)
        return best if best > -math.inf else math.nan


class PositiveRootSystem(VectorSystem):
    """A_n positive roots e_i - e_j (i < j) of R^{n+1}, last coordinate dropped: e_i - e_j (i < j <= n) then e_i."""

    fast = False

    def __init__(self, n_dim: int):
        self.name, self.n_dim = "a_np", n_dim
        self.n_pairs = n_dim * (n_dim - 1) // 2
        self.count = self.n_pairs + n_dim

    @property
    def display(self) -> str:
        return f"A_{self.n_dim}p"

    @property
    def coef_bound(self) -> float:
        return 1.0

    @property
    def raw_bounds(self) -> tuple[float, float]:
        return 1.0, 2.0

    def _vectors(self, idx, dtype):
        out = torch.zeros(idx.shape[0], self.n_dim, dtype=dtype, device=idx.device)
        pair = idx < self.n_pairs
        # pair rank r = C(j, 2) + i with i < j
        r = idx[pair]
        j = ((torch.sqrt(8 * r.double() + 1) + 1) / 2).floor().long()
        j = j - (j * (j - 1) // 2 > r).long()  # guard float rounding
        j = j + ((j + 1) * j // 2 <= r).long()
        i = r - j * (j - 1) // 2
        rows = pair.nonzero()[:, 0]
        out[rows, i] = 1
        out[rows, j] = -1
        single = (~pair).nonzero()[:, 0]
        out[single, idx[single] - self.n_pairs] = 1
        return out

    def inv_norms(self, idx, dtype=torch.float32):
        one = torch.ones((), dtype=dtype, device=idx.device)
        return torch.where(idx < self.n_pairs, one * math.sqrt(0.5), one)

    def _index(self, v):
        pos, neg = (v == 1).sum(1), (v == -1).sum(1)
        nz = (v != 0).sum(1)
        is_pair = (pos == 1) & (neg == 1) & (nz == 2)
        is_single = (pos == 1) & (nz == 1)
        i, j = (v == 1).float().argmax(1), (v == -1).float().argmax(1)
        is_pair &= i < j
        bad = (~(is_pair | is_single)).nonzero()
        if bad.numel():
            r = bad[0, 0].item()
            raise ValueError(f"row {r} ({v[r].tolist()}) is not a vector of {self.display}")
        return torch.where(is_pair, j * (j - 1) // 2 + i, self.n_pairs + i)

    @property
    def max_cos(self) -> float:
        # the pair e_1, e_1 - e_2 attains A_n's largest cosine 1/sqrt(2) and lies in A_np (n >= 2)
        return make_system("a_n", self.n_dim).max_cos if self.n_dim >= 2 else math.nan


class TableSystem(VectorSystem):
    """Explicit centers: a [count, n_dim] tensor (or a .pt/.npy file holding one).

    Cosines are compared in float64 after a certified float32 pass, so predictions are exact except between rows
    whose cosines tie exactly while their norms differ by an irrational factor (e.g. |v|^2 = 8 and 18): such a tie
    cannot be represented in floating point, and the lowest-label rule may not hold there.
    """

    fast = False

    def __init__(self, vectors: torch.Tensor | str | Path, n_dim: int | None = None):
        self.source = None
        if isinstance(vectors, (str, Path)):
            self.source = str(vectors)
            vectors = load_table(vectors)
        t = torch.as_tensor(vectors, dtype=torch.float32)
        if t.dim() != 2 or t.shape[0] < 1:
            raise ValueError(f"table centers must be a [count, n_dim] tensor, got shape {tuple(t.shape)}")
        if n_dim is not None and t.shape[1] != n_dim:
            raise ValueError(f"table centers have width {t.shape[1]} but n_dim={n_dim}; leave n_dim unset or match")
        if not torch.isfinite(t).all():
            raise ValueError("table centers contain NaN/inf")
        norms = t.double().norm(dim=1)  # float64: the exact rescoring pass uses these
        if (norms == 0).any():
            raise ValueError(f"table row {(norms == 0).nonzero()[0, 0].item()} is the zero vector; it has no direction")
        uniq, inverse = torch.unique(t, dim=0, return_inverse=True)
        if uniq.shape[0] < t.shape[0]:
            first = torch.full((uniq.shape[0],), -1, dtype=torch.int64)
            for r, u in enumerate(inverse.tolist()):  # the first pair of equal rows, for the message
                if first[u] >= 0:
                    raise ValueError(
                        f"table rows {first[u].item()} and {r} are identical: two classes would share one center; "
                        "give every class its own row"
                    )
                first[u] = r
        self.name, self.n_dim, self.count, self.table = "table", t.shape[1], t.shape[0], t
        self._inv = 1.0 / norms.double()

    @property
    def display(self) -> str:
        return f"table[{self.count:,} x {self.n_dim}]"

    @property
    def spec(self) -> dict:
        if self.source is not None:
            return {"name": "table", "n_dim": self.n_dim, "path": self.source}
        return {"name": "table", "n_dim": self.n_dim, "vectors": self.table.tolist()}

    @property
    def coef_bound(self) -> float:
        return float((self.table.abs().amax(1).double() * self._inv).max())

    @property
    def raw_bounds(self) -> tuple[float, float]:
        return float(self.table.abs().max()), float((self.table.double() ** 2).sum(1).max())

    def _vectors(self, idx, dtype):
        return self.table.to(idx.device, dtype)[idx]

    def inv_norms(self, idx, dtype=torch.float32):
        return self._inv.to(idx.device)[idx].to(dtype)

    def _index(self, v):
        t = self.table.to(v.device)
        out = torch.full((v.shape[0],), -1, dtype=torch.int64, device=v.device)
        for a in range(0, self.count, 4096):
            eq = (v[:, None, :].float() == t[None, a : a + 4096]).all(-1)  # [B, C]
            hit = eq.any(1) & (out < 0)
            out[hit] = eq[hit].float().argmax(1) + a
        bad = (out < 0).nonzero()
        if bad.numel():
            raise ValueError(f"row {bad[0, 0].item()} is not a row of the table")
        return out

    @property
    def max_cos(self) -> float:
        if self.count < 2:
            return math.nan
        u = self.table.double() * self._inv[:, None]
        best = -math.inf
        for a in range(0, self.count, 2048):
            g = u[a : a + 2048] @ u.T
            rows = torch.arange(a, min(a + 2048, self.count))
            g[rows - a, rows] = -math.inf
            best = max(best, g.max().item())
        return best


def load_table(path: str | Path) -> torch.Tensor:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"table centers file {path} does not exist (set centers.table=<path to .pt/.npy>)")
    if path.is_dir():
        raise IsADirectoryError(f"centers.table={path} is a folder; point it at a .pt/.npy file")
    try:
        if path.suffix == ".npy":
            import numpy as np

            return torch.from_numpy(np.load(path))
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle/zip/format errors: torch's advice (weights_only=False) would be wrong here
        raise ValueError(
            f"centers.table={path} is not a centers file (a [count, n_dim] tensor saved with torch.save or "
            f"numpy.save; loading failed with {type(e).__name__})"
        ) from None
    if isinstance(obj, dict):
        obj = obj.get("centers", obj.get("vectors"))
    try:
        return torch.as_tensor(obj)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(
            f"centers.table={path} holds no tensor (save a [count, n_dim] tensor, or a dict with 'centers')"
        ) from None


# ---- construction ---------------------------------------------------------------------------------------


def project(n: int, parents: list[list[tuple[int, int]]], what: str) -> list[Orbit]:
    """Orbits of R^n obtained by dropping the last coordinate of the orbits of R^{n+1} given by `parents`."""
    out = []
    for sig in parents:
        nz = sum(c for _, c in sig)
        last_values = ([0] if n + 1 - nz >= 1 else []) + sorted((v for v, _ in sig), reverse=True)
        for x in last_values:
            child = [(v, c - (v == x)) for v, c in sig]
            child = [(v, c) for v, c in child if c > 0]
            if not child:
                raise ValueError(f"{what} would contain the zero vector (a lone nonzero dropped); use more nonzeros")
            if sum(c for _, c in child) <= n:
                out.append(Orbit(n, child))
    return out


def _vmk(m: int, k: int) -> list[tuple[int, int]]:
    return [(v, c) for v, c in ((1, m), (-1, k)) if c > 0]


_V_RE = re.compile(r"^v(?:(\d)(\d)|(\d+)_(\d+))(p?)$")


def make_system(name: str, n_dim: int, *, vectors: torch.Tensor | str | Path | None = None) -> VectorSystem:
    """Build a vector system by name (see the module docstring); `vectors` feeds `table`."""
    if isinstance(n_dim, bool) or not isinstance(n_dim, int):
        if isinstance(n_dim, float) and n_dim.is_integer():
            n_dim = int(n_dim)
        else:
            raise ValueError(f"n_dim must be a positive integer, got {n_dim!r}")
    if n_dim < 1:
        raise ValueError(f"n_dim must be >= 1, got {n_dim}")
    if name == "table":
        if vectors is None:
            raise ValueError("the 'table' system needs vectors=<tensor or path> (config: centers.table=<path>)")
        return TableSystem(vectors, n_dim)
    if vectors is not None:
        raise ValueError(f"vectors= is only for the 'table' system, not {name!r}")
    mt = _V_RE.match(name)
    if mt:
        m, k = (int(mt.group(1)), int(mt.group(2))) if mt.group(1) is not None else (int(mt.group(3)), int(mt.group(4)))
        sup = f"{m}{k}" if m < 10 and k < 10 else f"{{{m},{k}}}"
        if m + k < 1:
            raise ValueError(f"{name}: a system needs m + k >= 1 nonzero entries")
        if mt.group(5):
            if m + k > n_dim + 1:
                raise ValueError(f"{name}: m + k = {m + k} nonzeros do not fit in n_dim + 1 = {n_dim + 1}")
            orbits = project(n_dim, [_vmk(m, k)], name)
            return OrbitSystem(name, n_dim, orbits, f"pV_{n_dim}^{sup}")
        if m + k > n_dim:
            raise ValueError(f"{name}: m + k = {m + k} nonzeros do not fit in n_dim = {n_dim}; use n_dim >= {m + k}")
        return OrbitSystem(name, n_dim, [Orbit(n_dim, _vmk(m, k))], f"V_{n_dim}^{sup}")
    if name == "a_n":
        return OrbitSystem(name, n_dim, project(n_dim, [_vmk(1, 1)], name), f"A_{n_dim}")
    if name == "a_np":
        return PositiveRootSystem(n_dim)
    if name == "a_n_interp":
        parents = [_vmk(1, 1)]
        if n_dim + 1 >= 3:  # midpoints +-(2e_i - e_j - e_k) of 60-degree neighbours need three coordinates
            parents += [[(2, 1), (-1, 2)], [(-2, 1), (1, 2)]]
        return OrbitSystem(name, n_dim, project(n_dim, parents, name), f"A_{n_dim}+interp")
    raise ValueError(
        f"unknown vector system {name!r}; valid names: {', '.join(SYSTEM_NAMES)} "
        "(e.g. v11, v21, v22, v22p, a_n, a_np, a_n_interp, table)"
    )


def system_from_spec(spec: dict) -> VectorSystem:
    if spec["name"] == "table":
        return make_system("table", spec["n_dim"], vectors=spec.get("path") or torch.tensor(spec["vectors"]))
    return make_system(spec["name"], spec["n_dim"])
