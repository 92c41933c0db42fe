"""ClassCenters: class labels <-> center vectors of a system, and the label predictors.

Class c gets vector pi(c) of the system, pi a seeded bijection of [0, count) (`label_map`); nothing of size
n_classes or count is allocated. Predictors (all exact, ties -> lowest label):
  cossim     argmax cosine over the labeled centers, chunk by chunk (arXiv 2510.04090, eq. 12)
  topk       nearest vector by the rearrangement inequality in O(n_dim), then pi^-1; when that vector is
             unlabeled or tied, the closest labeled center by best-first search (arXiv 2604.00779, Alg. 1 and 2)
  euclidean  argmin Euclidean distance to the raw center positions (arXiv 2510.04090, eq. 8)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lsc.utils import positive_int

from . import _kernels, _lookup
from .assignment import Assignment
from .label_map import FeistelPermutation, IdentityPermutation
from .partition import log_partition
from .search import scan_argmax
from .sizes import n_min
from .systems import VectorSystem, check_embeddings, make_system, nonfinite_error, system_from_spec

METHODS = ("cossim", "topk", "euclidean")
SCAN_FALLBACK_CLASSES = 50_000  # below this, unlabeled/tied topk rows are resolved by a scan, not a search
SEARCH_BUDGET = 2048  # best-first pops per row before the exact scan takes over
SMALL_BANK = 1 << 21  # n_classes * n_dim up to which the labeled centers are cached (<= 24 MB; ~1 ms saved a call)


def _fmt(x: int) -> str:
    return f"{x:,}"


def check_scale(scale, name: str = "scale") -> None:
    """A softmax scale: finite and > 0 (a learned scale arrives as a tensor)."""
    v = float(scale.detach().reshape(-1)[0]) if isinstance(scale, torch.Tensor) else scale
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {scale!r}")


class ClassCenters:
    """Fixed class centers from a vector system.

    Args:
        system: system name (`make_system` names, plus `a_nr` = shuffled a_n) or a VectorSystem.
        n_classes: number of classes; labels are 0 .. n_classes - 1.
        n_dim: embedding width; None = n_min (the smallest that holds n_classes).
        seed: seed of the class -> vector order.
        shuffle: random order (the A_n paper's A_nr); False = identity. None = True, except for `a_n`/`a_np`
            (the paper's ordered systems) and `table` (row c is class c).
        table: tensor or path of explicit centers, for system="table".
        assignment: an explicit class -> vector table (`Assignment`, e.g. from `assign_nearest_free`: the
            data-aware assignment) instead of the keyed order; `shuffle` and `seed` then play no part in it.
    """

    def __init__(
        self,
        system: str | VectorSystem,
        n_classes: int,
        n_dim: int | None = None,
        seed: int = 0,
        shuffle: bool | None = None,
        table=None,
        assignment: Assignment | None = None,
    ):
        if isinstance(n_classes, float) and n_classes.is_integer():
            n_classes = int(n_classes)
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1:
            raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}")
        if shuffle is not None and not isinstance(shuffle, bool):
            raise ValueError(f"shuffle must be true, false or null (system default), got {shuffle!r}")
        if isinstance(system, str):
            name = system
            if name == "a_nr":
                name, shuffle = "a_n", True if shuffle is None else shuffle
            if name == "table":
                system = make_system("table", n_dim or 0, vectors=table) if n_dim else _table(table)
            else:
                n_dim = n_min(name, n_classes) if n_dim is None else n_dim
                system = make_system(name, n_dim)
        elif n_dim is not None and n_dim != system.n_dim:
            raise ValueError(f"n_dim={n_dim} does not match the system's n_dim={system.n_dim}")
        self.system, self.n_dim, self.n_classes, self.seed = system, system.n_dim, n_classes, int(seed)
        if n_classes > system.count:
            hint = (
                f"use n_dim >= {n_min(system.name, n_classes)} (n_min)"
                if system.name != "table"
                else "give one table row per class"
            )
            raise ValueError(
                f"n_classes={_fmt(n_classes)} exceeds {system.display}'s {_fmt(system.count)} vectors; {hint}"
            )
        if shuffle is None:
            shuffle = system.name not in ("a_n", "a_np", "table")
        self.shuffle = bool(shuffle)
        self.assignment = assignment
        if assignment is not None:
            if assignment.count != system.count or assignment.n_classes != n_classes:
                raise ValueError(
                    f"the assignment maps {assignment.n_classes:,} classes into {assignment.count:,} vectors, but the "
                    f"centers have {n_classes:,} classes and {system.display} has {system.count:,} vectors"
                )
            self.perm = assignment
        elif self.shuffle:
            self.perm = FeistelPermutation(system.count, self.seed)
        else:
            self.perm = IdentityPermutation(system.count)

    def __repr__(self) -> str:
        order = (
            f"assign=data {self.assignment.digest}" if self.assignment else f"seed={self.seed}, shuffle={self.shuffle}"
        )
        return f"ClassCenters({self.system.display}, n_classes={_fmt(self.n_classes)}, {order})"

    # ---- mapping ----------------------------------------------------------------------------------------

    def _label_tensor(self, labels) -> torch.Tensor:
        labels = torch.as_tensor(labels)
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"labels must be integers (a LongTensor), got {labels.dtype}")
        return labels.long()

    def _check_labels(self, labels) -> torch.Tensor:
        labels = self._label_tensor(labels)
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.n_classes):
            lo, hi = labels.min().item(), labels.max().item()
            raise ValueError(
                f"labels must lie in [0, {self.n_classes}), got values in [{lo}, {hi}]; "
                "check data.num_classes / the dataset's label range"
            )
        return labels

    def index_of(self, labels) -> torch.Tensor:
        """Vector index pi(c) of each class label."""
        labels = self._check_labels(labels)
        return self.perm.forward(labels.reshape(-1)).reshape(labels.shape)

    def label_of(self, idx) -> torch.Tensor:
        """Class label pi^-1(idx) of each vector index; -1 for an unlabeled vector (pi^-1(idx) >= n_classes)."""
        idx = self.system._check_idx(idx)
        lab = self.perm.inverse(idx.reshape(-1)).reshape(idx.shape)
        return torch.where(lab < self.n_classes, lab, -1)

    def __call__(self, labels) -> torch.Tensor:
        """Unit center vectors [B, n_dim] float32 of the labels (the gather of arXiv 2510.04090's Algorithm 1).

        One fused kernel (`_lookup`: numba on CPU, Triton on CUDA) where available; the torch path otherwise."""
        labels = self._label_tensor(labels)
        if _lookup.backend(labels.device) is not None:
            return _lookup.lookup(self, labels)
        return self.system.vectors(self.index_of(labels), normalize=True)

    def positions(self, labels) -> torch.Tensor:
        """Raw (unnormalized) center vectors: the targets of the distance loss (arXiv 2510.04090, eq. 6)."""
        return self.system.vectors(self.index_of(labels))

    def grow(self, n_new: int, prototypes: torch.Tensor | None = None) -> ClassCenters:
        """The same centers with `n_new` more classes (labels n_classes .. n_classes + n_new - 1); every old class
        keeps its vector bit for bit. Keyed orders need nothing (the bijection does not depend on n_classes);
        a data-aware table needs the new classes' prototypes [n_new, n_dim]: they take free vectors only."""
        if isinstance(n_new, bool) or not isinstance(n_new, int) or n_new < 1:
            raise ValueError(f"n_new must be a positive integer (how many classes to add), got {n_new!r}")
        total = self.n_classes + n_new
        if total > self.system.count:
            raise ValueError(
                f"growing to {total:,} classes exceeds {self.system.display}'s {self.system.count:,} vectors; "
                "a larger label space needs a larger n_dim (a new run)"
            )
        if self.assignment is None:
            return ClassCenters(self.system, total, seed=self.seed, shuffle=self.shuffle)
        if prototypes is None:
            raise ValueError(f"data-assigned centers grow from the new classes' prototypes ([{n_new}, {self.n_dim}])")
        from .assignment import assign_nearest_free

        p = torch.as_tensor(prototypes)
        if p.shape != (n_new, self.n_dim):
            raise ValueError(f"prototypes must be [{n_new}, {self.n_dim}], got {tuple(p.shape)}")
        old = self.assignment.index_of_label
        new, _ = assign_nearest_free(self.system, p, taken_already=old)
        table = Assignment(torch.cat([old, new]), self.system.count)
        return ClassCenters(self.system, total, seed=self.seed, shuffle=self.shuffle, assignment=table)

    def grows_from(self, spec: dict, assignment: torch.Tensor | None = None) -> bool:
        """True when these centers are `spec`'s with more classes (or the same): every old class's vector kept."""
        mine = self.spec
        if spec.get("n_classes", 0) > self.n_classes:
            return False
        if any(spec.get(k) != mine.get(k) for k in ("system", "seed", "shuffle")):
            return False
        if (spec.get("assignment") is None) != (self.assignment is None):
            return False
        if self.assignment is None:
            return True
        if assignment is None:
            return False
        old = torch.as_tensor(assignment)
        return torch.equal(self.assignment.index_of_label[: old.numel()], old)

    @property
    def spec(self) -> dict:
        """JSON-serializable description; with a data assignment it names the table by its digest (the table
        itself travels beside it: `checkpoint['lsc_assignment']`, see `from_spec`)."""
        spec = {
            "system": self.system.spec,
            "n_classes": self.n_classes,
            "seed": self.seed,
            "shuffle": self.shuffle,
        }
        if self.assignment is not None:
            spec["assignment"] = self.assignment.digest
        return spec

    @classmethod
    def from_spec(cls, spec: dict, assignment: torch.Tensor | None = None) -> ClassCenters:
        """Rebuild from `spec`; a data-assigned spec needs its table (index_of_label), verified by digest."""
        missing = [k for k in ("system", "n_classes", "seed", "shuffle") if not isinstance(spec, dict) or k not in spec]
        if missing:
            raise ValueError(f"a centers spec needs {', '.join(missing)} (ClassCenters.spec and a checkpoint's "
                             f"lsc_centers have them), got {spec!r}")  # fmt: skip
        system = system_from_spec(spec["system"])
        table = None
        if spec.get("assignment") is not None:
            if assignment is None:
                raise ValueError(
                    "these centers were assigned from data: pass their table (checkpoint['lsc_assignment'])"
                )
            table = Assignment(assignment, system.count)
            if table.digest != spec["assignment"]:
                raise ValueError(
                    f"the assignment table's digest {table.digest} does not match the spec's {spec['assignment']} "
                    "(a table from another run, or a corrupted file)"
                )
        return cls(system, spec["n_classes"], seed=spec["seed"], shuffle=spec["shuffle"], assignment=table)

    # ---- full-system softmax -----------------------------------------------------------------------------

    def log_partition(self, z: torch.Tensor, scale: float | torch.Tensor, sync: bool = True) -> torch.Tensor:
        """log sum over every vector of the system of exp(scale * cos(z, v)) [B], exact, O(n_dim) per row.

        Unlabeled vectors (no class owns them) are part of the sum: the full-system softmax treats them as
        negatives. See `lsc.centers.partition`."""
        return log_partition(self.system, z, scale, sync=sync)

    def log_prob(self, z: torch.Tensor, labels, scale: float | torch.Tensor) -> torch.Tensor:
        """log p(label | z) [B] under the softmax over the whole system: scale * cos(z, C_y) - log Z(z)."""
        check_scale(scale)
        z = check_embeddings(z, self.n_dim)
        z = z if z.dtype == torch.float64 else z.float()
        c = self(labels).to(z.device, z.dtype)
        return scale * F.cosine_similarity(z, c, dim=1) - self.log_partition(z, scale)

    # ---- prediction -------------------------------------------------------------------------------------

    def nearest(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(index of the nearest system vector, its label or -1 when unlabeled): Algorithm 1, with the predictors'
        tie rule. Ties go to a labeled vector, the lowest label first, so a row whose nearest vector ties with a
        center gets that center's label, the one `predict` gives (a zero embedding ties with every vector: label
        0); among unlabeled vectors only, the lowest index. `system.nearest` is the raw algorithm."""
        z = check_embeddings(z, self.n_dim)
        idx = self.system.nearest(z)
        lab = self.label_of(idx)
        top = self.predict(z, "topk")  # exact, lowest label on ties
        z64 = z.detach().double()
        v_near = self.system.vectors(idx, normalize=True, dtype=torch.float64).to(z.device)
        v_top = self.system.vectors(self.index_of(top), normalize=True, dtype=torch.float64).to(z.device)
        # the labeled center is as near (to float64 rounding of centers with other norms): it wins the tie
        tie = (z64 * v_top).sum(1) >= (z64 * v_near).sum(1) - 1e-12 * z64.norm(dim=1)
        return torch.where(tie, self.index_of(top), idx), torch.where(tie, top, lab)

    def predict(self, z: torch.Tensor, method: str = "topk", *, chunk_size: int = 65536, bank=None) -> torch.Tensor:
        """Predicted labels [B] for embeddings z [B, n_dim]. `bank`: optional materialized centers (`bank()`)."""
        positive_int("chunk_size", chunk_size, hint="centers scored per chunk")
        if method == "topk" and isinstance(z, torch.Tensor) and self._fused_topk(z.device):
            # the CUDA kernel flags non-finite rows as slow and `_topk` reports them: one host read per batch
            return self._topk(check_embeddings(z, self.n_dim, sync=None), chunk_size, check_rows=True)
        z = check_embeddings(z, self.n_dim)
        if method == "cossim":
            return self._scan(z, chunk_size, bank)
        if method == "topk":
            return self._topk(z, chunk_size)
        if method == "euclidean":
            return self._euclidean(z, chunk_size)
        raise ValueError(f"unknown predictor {method!r}; choose one of {', '.join(METHODS)}")

    def top_labels(self, z: torch.Tensor, k: int = 5, chunk_size: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
        """The k closest labeled centers of each row: (labels [B, k] int64, cosines [B, k] float64), by decreasing
        cosine, exact ties by lowest label. Large label spaces walk the system best-first (arXiv 2604.00779,
        Algorithm 2), skipping unlabeled vectors, so nothing n_classes-sized is built; few or sparse labels scan."""
        positive_int("chunk_size", chunk_size, hint="centers scored per chunk")
        z = check_embeddings(z, self.n_dim)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if k > self.n_classes:
            raise ValueError(f"k={k} exceeds the {self.n_classes:,} classes; use k <= n_classes")
        if k == 1:  # the topk predictor is exact (lowest label on ties): the fused kernel, then one cosine
            lab = self.predict(z, "topk")
            c = torch.nn.functional.cosine_similarity(
                z.double(), self.system.vectors(self.index_of(lab), dtype=torch.float64).to(z.device), dim=1
            )
            return lab[:, None], c[:, None]
        few = self.n_classes <= SCAN_FALLBACK_CLASSES or 8 * self.n_classes < self.system.count
        if not getattr(self.system, "fast", False) or few:
            return self._top_scan(z, k, chunk_size)
        labels = torch.empty(z.shape[0], k, dtype=torch.int64)
        cos = torch.empty(z.shape[0], k, dtype=torch.float64)
        norms = z.double().norm(dim=1).tolist()
        left = []
        for r, row in enumerate(z.detach().double().cpu().tolist()):
            got = self._top_search(row, k)
            if got is None:
                left.append(r)
                continue
            labels[r] = torch.tensor([g[1] for g in got])
            cos[r] = torch.tensor([g[0] / norms[r] for g in got], dtype=torch.float64)
        if left:
            labels[left], cos[left] = self._top_scan(z[left].cpu(), k, chunk_size)
        return labels.to(z.device), cos.to(z.device)

    def _top_search(self, z_row: list[float], k: int):
        """[(score, label)] of the k best labeled vectors, or None past the search budget."""
        out, level, level_score = [], [], None
        for pops, (score, idx) in enumerate(self.system.best_first(z_row)):
            if level_score is not None and score < level_score:
                out += sorted(level, key=lambda t: t[1])  # a level of exact ties: lowest label first
                level = []
                if len(out) >= k:
                    return out[:k]
            if pops >= SEARCH_BUDGET * k:
                return None
            level_score = score
            lab = self.perm.inverse_py(idx)
            if lab < self.n_classes:
                level.append((score, lab))
        out += sorted(level, key=lambda t: t[1])
        return out[:k]

    def _top_scan(self, z: torch.Tensor, k: int, chunk_size: int):
        """Exact top-k by float64 cosine over every labeled center, chunk by chunk (ties: lowest label)."""
        zh = torch.nn.functional.normalize(z.double(), dim=1)
        best_s = torch.empty(z.shape[0], 0, dtype=torch.float64, device=z.device)
        best_l = torch.empty(z.shape[0], 0, dtype=torch.int64, device=z.device)
        fetch = self._fetch(z.device)
        for a in range(0, self.n_classes, chunk_size):
            b = min(a + chunk_size, self.n_classes)
            v, inv, _ = fetch(a, b, torch.float64)
            inv = (
                self.system.inv_norms(self.perm.forward(torch.arange(a, b, device=z.device)), torch.float64)
                if inv is None
                else inv
            )
            s = (zh @ v.T) * inv
            lab = torch.arange(a, b, device=z.device).expand(z.shape[0], -1)
            s, lab = torch.cat([best_s, s], 1), torch.cat([best_l, lab], 1)
            order = torch.sort(-s, dim=1, stable=True).indices[:, :k]  # stable: earlier (lower) labels win ties
            best_s, best_l = s.gather(1, order), lab.gather(1, order)
        return best_l, best_s

    def bank(self, labels: torch.Tensor | None = None, device="cpu", dtype=torch.float32) -> torch.Tensor:
        """Materialize unit centers of all (or the given) labels: the n_classes x n_dim matrix cossim needs."""
        labels = torch.arange(self.n_classes, device=device) if labels is None else labels
        return self(labels).to(dtype)

    def _fetch(self, device, bank=None):
        small = self._small_bank(device)

        def fetch(a, b, dtype):
            if bank is not None and dtype == torch.float32:
                return bank[a:b], None, None
            if small is not None:
                v, inv = small[dtype]
                return v[a:b], inv[a:b], None
            idx = self.perm.forward(torch.arange(a, b, device=device))
            return self.system._vectors(idx, dtype), self.system.inv_norms(idx, dtype), None

        return fetch

    def _small_bank(self, device):
        """Raw labeled centers and inverse norms (float32 and float64), cached when small: with few classes the
        scans (cossim, and topk's fallback, where most nearest vectors are unlabeled) are dominated by regenerating
        them on every call. Never built past SMALL_BANK elements, so 1M+ class setups keep O(1) state."""
        if self.n_classes * self.n_dim > SMALL_BANK:
            return None
        cache = self.__dict__.setdefault("_bank_cache", {})
        device = torch.device(device)
        if device not in cache:
            idx = self.perm.forward(torch.arange(self.n_classes, device=device))
            cache[device] = {
                dt: (self.system._vectors(idx, dt), self.system.inv_norms(idx, dt))
                for dt in (torch.float32, torch.float64)
            }
        return cache[device]

    def _scan(self, z, chunk_size=65536, bank=None):
        return scan_argmax(
            z, self.n_classes, self._fetch(z.device, bank), coef_bound=self.system.coef_bound, chunk_size=chunk_size
        )

    def _euclidean(self, z, chunk_size):
        # argmin |z - v|^2 = argmax <z, v> - |v|^2 / 2 over the raw center positions
        def fetch(a, b, dtype):
            idx = self.perm.forward(torch.arange(a, b, device=z.device))
            v = self.system._vectors(idx, dtype)
            return v, None, -(v * v).sum(1) / 2

        vmax, sq = self.system.raw_bounds
        return scan_argmax(z, self.n_classes, fetch, coef_bound=vmax, bias_bound=sq / 2, chunk_size=chunk_size)

    def _fused_topk(self, device) -> bool:
        """The Triton top-k kernel serves these centers on `device` (CUDA): nearest vector, second-best check and
        class map in one launch (`_triton`)."""
        if not (getattr(self.system, "fast", False) and _kernels.use_triton(device)):
            return False
        from ._triton import triton_topk_covers

        return triton_topk_covers(self)

    def _topk(self, z, chunk_size, check_rows: bool = False):
        """The topk predictor: the fused fast path, then the rows it leaves (nearest vector unlabeled with no unique
        labeled second-best, or tied) resolved exactly. The common case reads one number on the host (how many rows
        are left). check_rows: z was not checked for NaN/inf; the CUDA kernel leaves such rows slow, reported here."""
        if not getattr(self.system, "fast", False):
            return self._scan(z, chunk_size)  # a_np, table: exact chunked search
        labels, slow = _kernels.fast_labels(self, z)
        rows = slow.nonzero()[:, 0]
        if not rows.numel():
            return labels
        if check_rows:
            bad = rows[~torch.isfinite(z[rows]).all(1)]
            if bad.numel():
                raise nonfinite_error(bad)
        if z.device.type != "cpu" and _kernels.HAVE_NUMBA and not self._fused_topk(z.device):
            # the torch path on a GPU: the fused CPU kernel resolves most unlabeled-nearest rows (its second-best
            # check, which the Triton kernel runs itself)
            lab2, slow2 = _kernels.fast_labels_numba(self, z[rows].cpu())
            labels[rows] = lab2.to(z.device)
            rows = rows[slow2.to(z.device)]
        if rows.numel():
            labels[rows] = self._resolve(z[rows], chunk_size)
        return labels

    def _resolve(self, z: torch.Tensor, chunk_size: int) -> torch.Tensor:
        """Closest labeled center (lowest label on exact ties) for rows whose nearest vector is unlabeled/tied."""
        if self.n_classes <= SCAN_FALLBACK_CLASSES or 8 * self.n_classes < self.system.count:
            return self._scan(z, chunk_size)  # few labels (or sparse ones): a scan is cheaper than searching
        out = torch.empty(z.shape[0], dtype=torch.int64)
        left = []
        for r, row in enumerate(z.detach().double().cpu().tolist()):  # one device->host copy for all rows
            lab = self._search(row)
            if lab is None:
                left.append(r)
            else:
                out[r] = lab
        out = out.to(z.device)
        if left:
            out[left] = self._scan(z[left], chunk_size)
        return out

    def _search(self, z_row: list[float]) -> int | None:
        top, best = None, None
        for pops, (score, idx) in enumerate(self.system.best_first(z_row)):
            if top is not None and score < top:
                return best
            if pops >= SEARCH_BUDGET:
                return None
            lab = self.perm.inverse_py(idx)
            if lab < self.n_classes:
                if top is None:
                    top, best = score, lab
                else:
                    best = min(best, lab)
        return best


def _table(table):
    from .systems import TableSystem

    if table is None:
        raise ValueError("system='table' needs table=<tensor or path> (config: centers.table=<path>)")
    return TableSystem(table)
