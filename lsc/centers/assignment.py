"""Data-aware class -> vector assignment: every class takes the free system vector nearest to its prototype.

The keyed Feistel order (`label_map`) gives every class a random vector, so classes whose images look alike get
centers far apart and the network has to pull similar images to distant points. Giving each class instead the
vector nearest to a prototype of its data (by default a fixed random projection of its mean image:
`lsc.centers.prototypes`) starts every class where the data already is. DL2PA (CVPR 2024) learns such an assignment
with the Hungarian algorithm (O(K^3)); here it is a greedy matching that scales to 10^8 classes, because the
vectors of a system can be enumerated in order of cosine to a query in O(n_dim) each (arXiv 2604.00779, Alg. 2).

The rule (`assign_nearest_free`), exact and deterministic:
  1. order the classes by the cosine between their prototype and its nearest system vector, descending (classes
     that fit a vector best choose first), exact ties by lower label;
  2. in that order, each class takes the vector with the largest cosine to its prototype among those no earlier
     class took; exact ties go to the lowest vector index.
Step 2 reads the precomputed nearest vector (one batched O(n_dim) pass) and walks the class's vectors best-first
only when that one is taken. No class x count matrix is ever built; state: the prototypes and a bitmap of taken
vectors (count bits, as bytes). When a walk has popped `walk_budget` vectors without finding a free one (a system
nearly full: n_classes close to its count, as at n_min), the class scans the free vectors instead: float64 scores
in blocks, the near-best re-scored exactly as the walk scores them (math.fsum), so the result is the walk's.

`Assignment` is the resulting bijection onto the taken vectors: label -> vector by a table, vector -> label by
binary search in the sorted vector indices; 16 bytes per class (int64 sorted indices, int32 positions both ways;
24 past 2^31 classes). It has FeistelPermutation's interface, with `inverse` returning n_classes for a vector no
class owns, so every predictor works unchanged.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import mmap

import numpy as np
import torch


class Assignment:
    """Explicit class -> vector-index table (a bijection onto distinct vectors of a system of `count` vectors)."""

    explicit = True

    def __init__(self, index_of_label: torch.Tensor, count: int):
        idx = torch.as_tensor(index_of_label).to("cpu", torch.int64).reshape(-1)
        n = idx.numel()
        if n < 1:
            raise ValueError("an assignment needs at least one class")
        if idx.min() < 0 or idx.max() >= count:
            raise ValueError(f"assigned vector indices must lie in [0, {count:,})")
        order = torch.argsort(idx)
        sorted_idx = idx[order]
        if n > 1 and (sorted_idx[1:] == sorted_idx[:-1]).any():
            dup = sorted_idx[1:][sorted_idx[1:] == sorted_idx[:-1]][0].item()
            raise ValueError(f"two classes are assigned the same vector {dup}: an assignment must be a bijection")
        small = n < (1 << 31)
        pos_dtype = torch.int32 if small else torch.int64
        self.count, self.n_classes = int(count), n
        self.sorted_idx = sorted_idx.contiguous()  # [C] int64, ascending
        self.label_at = order.to(pos_dtype).contiguous()  # [C] label of sorted_idx[p]
        self.pos_of = torch.empty(n, dtype=pos_dtype)
        self.pos_of[order] = torch.arange(n, dtype=pos_dtype)  # [C] position of label c in sorted_idx
        self._np_sorted = self.sorted_idx.numpy()
        self._dev: dict[torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    @property
    def index_of_label(self) -> torch.Tensor:
        return self.sorted_idx[self.pos_of.long()]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.sorted_idx, self.label_at, self.pos_of))

    @property
    def digest(self) -> str:
        h = hashlib.sha256(self.index_of_label.numpy().tobytes())
        h.update(str(self.count).encode())
        return h.hexdigest()[:16]

    def _on(self, device):
        device = torch.device(device)
        if device not in self._dev:
            self._dev[device] = tuple(t.to(device) for t in (self.sorted_idx, self.label_at, self.pos_of))
        return self._dev[device]

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        """Vector index of each label (labels already checked to lie in [0, n_classes))."""
        s, _, pos = self._on(labels.device)
        return s[pos[labels].long()]

    def inverse(self, idx: torch.Tensor) -> torch.Tensor:
        """Label of each vector index; n_classes where no class owns the vector."""
        s, lab, _ = self._on(idx.device)
        p = torch.searchsorted(s, idx).clamp_(max=self.n_classes - 1)
        return torch.where(s[p] == idx, lab[p].long(), self.n_classes)

    def forward_py(self, label: int) -> int:
        return int(self._np_sorted[int(self.pos_of[label])])

    def inverse_py(self, idx: int) -> int:
        p = bisect.bisect_left(self._np_sorted, idx)
        if p < self.n_classes and self._np_sorted[p] == idx:
            return int(self.label_at[p])
        return self.n_classes


def check_assignable(system) -> None:
    if not hasattr(system, "best_first"):
        raise ValueError(
            f"centers.assign=data needs a system of permutation orbits (v{{m}}{{k}}, v{{m}}{{k}}p, a_n, a_nr, "
            f"a_n_interp); {system.display} has no best-first enumeration"
        )


WALK_BUDGET = 2048  # pops of a best-first walk before the class scans the free vectors instead (same answer)


def compiled_walk_budget(count: int) -> int:
    """The compiled walk's default budget: about as many pops as one scan of the free vectors costs (a pop ~0.5 us,
    a scan ~35 ms per million vectors), so a long walk spends at most twice what the better of the two would; at
    1M clustered classes (V_47^22) it replaces 111 scans by 41k more pops, 77 s -> 67 s."""
    return max(WALK_BUDGET, count // 16)


def assign_nearest_free(
    system,
    prototypes: torch.Tensor,
    log_every: int = 0,
    taken_already: torch.Tensor | None = None,
    walk_budget: int | None | str = "auto",
    compiled: bool | None = None,
    progress: bool | None = None,
) -> tuple[torch.Tensor, dict]:
    """The greedy rule of the module docstring. prototypes: [C, n_dim] (float64 recommended; a numpy array,
    e.g. an np.memmap of a prototype file, float16 included, is read in blocks and single rows and never copied
    whole; the pages of a memmap are unmapped after each block, so they do not add up in the process's RSS).

    taken_already: vector indices owned by existing classes (growing a label space: `ClassCenters.grow`); the
    new classes take free vectors only.
    walk_budget: pops before scanning the free vectors (None: walk only; 0: scan whenever the nearest is taken;
    "auto": WALK_BUDGET for the Python walk, `compiled_walk_budget` for the compiled one: the same table).
    compiled: the numba walk (`_assign_numba`; None: when numba is there); False: this module's Python walk, the
    reference (same table). progress: a progress bar with ETA on stderr (None: when the walk runs past 5 s).
    Returns (index_of_label [C] int64, stats: walks = classes whose nearest vector was taken, pops = vectors
    enumerated by those walks, scans = walks that ended in a scan of the free vectors, seconds).
    """
    from lsc.centers import _assign_numba

    if compiled is None:
        compiled = _assign_numba.HAVE_NUMBA
    if walk_budget == "auto":
        walk_budget = compiled_walk_budget(system.count) if compiled else WALK_BUDGET
    if compiled:
        return _assign_compiled(system, prototypes, taken_already, walk_budget, progress)
    import time

    check_assignable(system)
    t0 = time.perf_counter()
    p = torch.as_tensor(prototypes).detach().cpu()  # kept in its dtype (1e7 x 82 float32: 3.3 GB); float64 per block
    if not p.is_floating_point():
        p = p.double()
    if p.dim() != 2 or p.shape[1] != system.n_dim:
        raise ValueError(f"prototypes must be [n_classes, {system.n_dim}], got {tuple(p.shape)}")
    n = p.shape[0]
    old = torch.as_tensor(taken_already if taken_already is not None else [], dtype=torch.int64)
    if n + old.numel() > system.count:
        raise ValueError(f"{n + old.numel():,} classes do not fit in {system.display}'s {system.count:,} vectors")
    nearest, cos = _nearest_with_scores(system, p)  # [C] int64, [C] float64 cosine
    order = np.lexsort((np.arange(n), -cos.numpy()))  # descending cosine, then lower label
    # taken vectors: a byte per vector while that is at most 1 GiB, else a set of the (n_classes) taken indices
    taken = np.zeros(system.count, dtype=np.bool_) if system.count <= (1 << 30) else None
    taken_set: set[int] = set()
    if taken is not None:
        taken[old.numpy()] = True
    else:
        taken_set.update(old.tolist())
    out = np.empty(n, dtype=np.int64)
    near = nearest.numpy()
    walks = pops = scans = 0
    budget = walk_budget if taken is not None else None  # a scan needs the bitmap (count <= 2^30)
    for i, c in enumerate(order):
        v = int(near[c])
        if taken[v] if taken is not None else v in taken_set:
            walks += 1
            row = p[c].double().tolist()
            v, k = _walk(system, row, taken, taken_set, budget)
            pops += k
            if v < 0:
                v = _scan_free(system, row, taken)
                scans += 1
        out[c] = v
        if taken is not None:
            taken[v] = True
        else:
            taken_set.add(v)
        if log_every and (i + 1) % log_every == 0:
            print(f"assign: {i + 1:,}/{n:,} classes, {walks:,} walks, {time.perf_counter() - t0:.1f} s", flush=True)
    state = system.count if taken is not None else 8 * n
    stats = {"walks": walks, "pops": pops, "scans": scans, "seconds": time.perf_counter() - t0,
             "taken_state_bytes": state}  # fmt: skip
    return torch.from_numpy(out), stats


def _check_prototypes(system, prototypes, n_old: int):
    p = prototypes if isinstance(prototypes, np.ndarray) else torch.as_tensor(prototypes).detach().cpu().numpy()
    if not np.issubdtype(p.dtype, np.floating):
        p = p.astype(np.float64)
    if p.ndim != 2 or p.shape[1] != system.n_dim:
        raise ValueError(f"prototypes must be [n_classes, {system.n_dim}], got {tuple(p.shape)}")
    if p.shape[0] + n_old > system.count:
        raise ValueError(f"{p.shape[0] + n_old:,} classes do not fit in {system.display}'s {system.count:,} vectors")
    return p


def _assign_compiled(
    system, prototypes, taken_already, walk_budget, progress, batch: int = 1 << 14, bounded=False, spill=None
):  # fmt: skip
    """assign_nearest_free with the compiled walk: the same rule and table; a bitmap of taken vectors (count / 8
    bytes), 8 bytes per class for the table plus 16 while ordering (the nearest vector and its cosine), a progress
    bar with ETA past 5 s. bounded: a walk past the budget defers its class to `assign_bounded`'s group walks
    instead of scanning. Prototypes in memory are read per row; an np.memmap larger than SPILL_BYTES (spill=None;
    True / False: always / never) is first copied in the rule's order, in buckets of ~SPILL_BUCKET_BYTES, next to
    its file (`_spill`), so the walks read it sequentially instead of one random read per walk (a file larger
    than the page cache: ~4,600 random 4 KiB reads/s on this machine's disk, against ~600 MB/s in order)."""
    import time

    from tqdm import tqdm

    from lsc.centers import _assign_numba as nb

    check_assignable(system)
    t0 = time.perf_counter()
    old = np.asarray(torch.as_tensor(taken_already if taken_already is not None else [], dtype=torch.int64))
    p = _check_prototypes(system, prototypes, old.size)
    n = p.shape[0]
    nearest, cos = _nearest_with_scores(system, p)
    order = np.argsort(-cos.numpy(), kind="stable")  # descending cosine, then lower label
    del cos
    bits = np.zeros((system.count + 7) // 8, dtype=np.uint8)
    nb.set_taken(bits, old)
    out = nearest.numpy().copy()
    del nearest
    mapped = isinstance(p, np.memmap)
    if spill is None:
        spill = mapped and p.nbytes > SPILL_BYTES
    segments = _spill(p, order, out) if spill else iter([(p, order, out, None)])
    if mapped and not spill:  # the walks read single rows in the rule's order: no read-ahead around them, and a
        _advise(p, "MADV_RANDOM")  # fault maps the cached pages around the row (a large folio: up to 2 MiB)
        batch = min(batch, 1 << 8)
    arrays = nb.system_arrays(system)
    budget = -1 if walk_budget is None else int(walk_budget)
    stats = np.zeros(3, np.int64)
    deferred = np.empty(n if bounded else 0, np.int64)
    scans, done, bar = 0, 0, None
    for protos, seg_order, near, cls in segments:  # cls: the segment's classes (its rows and near are local)
        i, m = 0, seg_order.shape[0]
        while i < m:
            stop = min(m, i + batch)
            d0 = int(stats[2])
            j = nb.assign_range(protos, seg_order, near, bits, near, i, stop, budget, stats, arrays, deferred)
            if cls is not None and stats[2] > d0:
                deferred[d0 : stats[2]] = cls[deferred[d0 : stats[2]]]
            if j < stop:  # a walk past the budget: scan the free vectors for that class (the same answer)
                c = int(seg_order[j])
                v = _scan_free(system, protos[c].astype(np.float64).tolist(), nb.taken_mask(bits, system.count))
                near[c] = v
                nb.set_taken(bits, [v])
                scans += 1
                stop = j + 1
            done += stop - i
            i = stop
            if not spill:
                drop_pages(p)  # the rows this batch walked from (spilled: the walks read the buckets, not p)
            if bar is None and (progress or (progress is None and time.perf_counter() - t0 > 5)):
                bar = tqdm(total=n, initial=done, desc="assign", unit="class", unit_scale=True, mininterval=1)
            elif bar is not None:
                bar.update(done - bar.n)
        if cls is not None:
            out[cls] = near
    if bar is not None:
        bar.close()
    _advise(p, "MADV_NORMAL")
    stats_out = {"walks": int(stats[0]), "pops": int(stats[1]), "scans": scans, "spilled": bool(spill)}
    if bounded:
        deferred = deferred[: int(stats[2])]
        members, starts = _groups(p, deferred)
        group_pops = _assign_groups(system, p, members, starts, bits, out, arrays)
        stats_out.update(deferred=int(deferred.size), groups=int(starts.size - 1), group_pops=group_pops)
    stats_out.update(seconds=time.perf_counter() - t0, taken_state_bytes=bits.nbytes)
    return torch.from_numpy(out), stats_out


SPILL_BYTES = 1 << 31  # a prototype memmap larger than this is copied in the rule's order before the walks
SPILL_BUCKET_BYTES = 1 << 29  # rows per bucket of that copy: about this many bytes


def _spill(p, order: np.ndarray, out: np.ndarray, block: int = 1 << 16):
    """The rows of the memmap p in the rule's order, as segments (rows, local order, nearest, classes): p read once
    in file order, each row appended with its rank to the file of its bucket (ranks [kS, (k + 1)S)), then each
    bucket read back whole, put in rank order, handed out and deleted. The bucket files go to a temporary
    directory beside p's file (the same disk the user chose for it; as much space again), removed at the end."""
    import shutil
    import tempfile
    from pathlib import Path

    n, d = p.shape
    size = max(1, SPILL_BUCKET_BYTES // (d * p.dtype.itemsize))
    tmp = Path(tempfile.mkdtemp(prefix="lsc-assign-spill-", dir=Path(p.filename).parent))
    try:
        rank = np.empty(n, np.int64)
        rank[order] = np.arange(n)
        k_max = (n + size - 1) // size
        files = [(open(tmp / f"{k}.rank", "wb"), open(tmp / f"{k}.rows", "wb")) for k in range(k_max)]
        for a in range(0, n, block):
            rows, r = np.asarray(p[a : a + block]), rank[a : a + block]
            srt = np.argsort(r // size, kind="stable")
            cuts = np.searchsorted(r[srt] // size, np.arange(k_max + 1))
            for k in np.flatnonzero(np.diff(cuts)):
                sel = srt[cuts[k] : cuts[k + 1]]
                files[k][0].write(r[sel].tobytes())
                files[k][1].write(rows[sel].tobytes())
            drop_pages(p)
        for f in (f for pair in files for f in pair):
            f.close()
        del rank
        for k in range(k_max):
            pos = np.fromfile(tmp / f"{k}.rank", np.int64) - k * size
            rows = np.empty((pos.size, d), p.dtype)
            rows[pos] = np.fromfile(tmp / f"{k}.rows", p.dtype).reshape(-1, d)
            (tmp / f"{k}.rank").unlink()
            (tmp / f"{k}.rows").unlink()
            cls = order[k * size : k * size + pos.size]
            yield rows, np.arange(pos.size), out[cls], cls
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _rows(p, idx: np.ndarray) -> np.ndarray:
    """p[idx] read in sorted order (p may be an np.memmap), returned in idx's order."""
    rows = np.asarray(p[np.sort(idx)])[np.argsort(np.argsort(idx, kind="stable"), kind="stable")]
    drop_pages(p)
    return rows


def drop_pages(p) -> None:
    """Unmap the pages of an np.memmap this process has read so far. They stay in the page cache (a re-read is a
    minor fault), but no longer count in the process's RSS, which otherwise grows to the file's size (57 GB of
    float32 prototypes at 10^8 classes) or to what the machine's memory holds of it. Shared mappings only (a
    copy-on-write memmap, mode "c", would lose its writes)."""
    _advise(p, "MADV_DONTNEED", shared_only=True)


def _advise(p, flag: str, shared_only: bool = False) -> None:
    """madvise(flag) on an np.memmap's mapping (nothing for other arrays, or where the OS lacks the flag)."""
    m = getattr(p, "_mmap", None)
    if m is not None and hasattr(mmap, flag) and not (shared_only and getattr(p, "mode", "c") == "c"):
        m.madvise(getattr(mmap, flag))


def _groups(p, deferred: np.ndarray, block: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """The deferred classes (in the rule's order) grouped by their prototype's (largest, smallest) coordinate:
    (members, starts), groups in the order of their first member, members of a group in the rule's order."""
    if deferred.size == 0:
        return deferred, np.zeros(1, np.int64)
    n = p.shape[1]
    key = np.empty(deferred.size, np.int64)
    for a in range(0, deferred.size, block):
        rows = _rows(p, deferred[a : a + block])
        key[a : a + block] = rows.argmax(1).astype(np.int64) * n + rows.argmin(1)
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    rank = first[inverse.reshape(-1)]  # group rank = position of its first member
    perm = np.argsort(rank, kind="stable")
    members = deferred[perm]
    starts = np.flatnonzero(np.r_[True, rank[perm][1:] != rank[perm][:-1], True])
    return members, starts.astype(np.int64)


BOUNDED_WALK = 64  # the bounded rule's pops per class before its class is deferred to a group walk
BOUNDED_POOL = 2  # a group walk finds this many free vectors per member
BOUNDED_CHUNK = 256  # members that choose among one pool


def _assign_groups(system, p, members, starts, bits, out, arrays) -> int:
    """The bounded rule's second pass (`assign_bounded`); returns the vectors its walks enumerated."""
    from lsc.centers import _assign_numba as nb

    pops = 0
    for g in range(starts.size - 1):
        mem = members[starts[g] : starts[g + 1]]
        rows = _rows(p, mem).astype(np.float64)
        unit = rows / np.sqrt((rows * rows).sum(1, keepdims=True))
        row = unit.sum(0)
        if float(row @ row) < 1e-24:  # members that cancel out: the first member's own row
            row = rows[0]
        found, k = nb.walk_free(row, bits, BOUNDED_POOL * mem.size, arrays)
        pops += k
        left = np.empty(0, np.int64)  # candidates of the last chunk no member took
        q = 0
        for a in range(0, mem.size, BOUNDED_CHUNK):
            c = min(BOUNDED_CHUNK, mem.size - a)
            take = max(0, BOUNDED_POOL * c - left.size)
            cand = np.concatenate([left, found[q : q + take]])
            q += take
            idx = torch.from_numpy(cand)
            v = system.vectors(idx, dtype=torch.float64).numpy() * system.inv_norms(idx, torch.float64).numpy()[:, None]
            picks = nb.pick_greedy(unit[a : a + c] @ v.T)
            out[mem[a : a + c]] = cand[picks]
            nb.set_taken(bits, cand[picks])
            keep = np.ones(cand.size, bool)
            keep[picks] = False
            left = cand[keep]
    return pops


def assign_bounded(
    system, prototypes, walk_max: int = BOUNDED_WALK, taken_already=None, progress: bool | None = None
) -> tuple[torch.Tensor, dict]:
    """The ordered rule with every walk bounded: the cost grows with the classes, not with the classes per cluster.

    Pass 1 is `assign_nearest_free` (the same order, the same walks) except that a class whose walk has popped
    `walk_max` vectors without a free one takes nothing yet (deferred) instead of scanning. Pass 2 groups the
    deferred classes by their prototype's largest and smallest coordinate (for V^21 that is the nearest vector);
    each group, in the order of its first member, walks once from the mean of its members' unit prototypes to
    BOUNDED_POOL free vectors per member, and its members, in the rule's order and in chunks of BOUNDED_CHUNK, each
    take the candidate of highest cosine no earlier member took (the pool: the chunk's share of the walk's vectors
    plus what the chunk before left; ties to the candidate found first). A class that walks within the bound gets
    what the ordered rule would give it given the vectors taken before it; K near-identical classes cost ~K x
    walk_max pops plus one shared walk and K x 2 x BOUNDED_CHUNK scores, instead of ~K^2 / 10 pops. Compiled walk
    only (numba).
    Returns (index_of_label [C] int64, stats as assign_nearest_free's plus deferred, groups, group_pops)."""
    from lsc.centers import _assign_numba

    if not _assign_numba.HAVE_NUMBA:
        raise RuntimeError("centers.assign_rule=bounded needs numba (pip install numba)")
    if int(walk_max) < 0:
        raise ValueError(f"centers.assign_walk_max must be >= 0 pops, got {walk_max}")
    return _assign_compiled(system, prototypes, taken_already, int(walk_max), progress, bounded=True)


def _nearest_with_scores(system, p, block: int = 1 << 16):
    """Exact nearest vector (ties -> lowest index) and its cosine, in float64 blocks."""
    idx = torch.empty(p.shape[0], dtype=torch.int64)
    cos = torch.empty(p.shape[0], dtype=torch.float64)
    for a in range(0, p.shape[0], block):
        z = (
            torch.from_numpy(np.array(p[a : a + block], dtype=np.float64))  # a copy: p may be a read-only memmap
            if isinstance(p, np.ndarray)
            else p[a : a + block].double()
        )
        norm = z.norm(dim=1)
        if not torch.isfinite(z).all() or (norm == 0).any():
            raise ValueError("prototypes must be finite and nonzero (a class with no images? an all-constant image?)")
        i = system.nearest(z)
        v = system.vectors(i, dtype=torch.float64)
        idx[a : a + block] = i
        cos[a : a + block] = (z * v).sum(1) * system.inv_norms(i, torch.float64) / norm
        drop_pages(p)
    return idx, cos


def _walk(system, row: list[float], taken, taken_set, budget: int | None = None) -> tuple[int, int]:
    """Best free vector of one prototype: best-first over the system, level by level (equal scores form a level;
    the lowest free index of the first level with a free vector wins). (-1, pops) once `budget` pops are spent."""
    it = system.best_first(row)
    pops = 0
    level, level_score = [], None
    for score, i in it:
        pops += 1
        if level_score is not None and score < level_score:
            free = [j for j in level if not (taken[j] if taken is not None else j in taken_set)]
            if free:
                return min(free), pops
            level = []
            if budget is not None and pops > budget:
                return -1, pops
        level_score = score
        level.append(i)
    free = [j for j in level if not (taken[j] if taken is not None else j in taken_set)]
    if free:
        return min(free), pops
    raise RuntimeError("no free vector left (more classes than vectors?)")  # guarded by the count check


def _exact_score(system, j: int, row: list[float]) -> float:
    """best_first's score of vector j: the exact (fsum) inner product times the orbit's 1/|v|."""
    v = system.vectors(torch.tensor([j]), dtype=torch.float64)[0].tolist()
    inv = float(system.inv_norms(torch.tensor([j]), torch.float64)[0])
    return math.fsum(a * b for a, b in zip(v, row, strict=True) if a) * inv


def _scan_free(system, row: list[float], taken: np.ndarray, block: int = 1 << 16) -> int:
    """The walk's answer by a scan of every free vector: float64 scores in blocks, then every vector within the
    float64 rounding bound of the best re-scored exactly; the highest exact score wins, ties to the lowest index."""
    free = np.flatnonzero(~taken)
    z = torch.tensor(row, dtype=torch.float64)
    scores = torch.empty(len(free), dtype=torch.float64)
    for a in range(0, len(free), block):
        idx = torch.from_numpy(free[a : a + block])
        scores[a : a + block] = (system.vectors(idx, dtype=torch.float64) @ z) * system.inv_norms(idx, torch.float64)
    tol = 1e-9 * (float(z.abs().sum()) + 1e-300)  # >> float64 rounding of a sum of n_dim small-integer products
    near = free[(scores >= scores.max() - tol).numpy()]
    exact = [(-_exact_score(system, int(j), row), int(j)) for j in near]
    return min(exact)[1]


GLOBAL_MAX_PAIRS = 1 << 27  # the global rule scores every (class, vector) pair: a C x count float32 matrix


def assign_global_greedy(system, prototypes: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The prototype's rule: all (class, vector) pairs in descending cosine, a pair taken when both are free.

    Needs the C x count cosine matrix, so it is for comparison at small scale (C x count <= 2^27). Run in rounds:
    every pair that is the best of its class among free vectors and the best of its vector among unassigned
    classes is one global greedy takes (every pair above it involves neither), so each round takes all of those.
    Ties: lower vector index for a class, lower label for a vector.
    """
    import time

    t0 = time.perf_counter()
    n, count = prototypes.shape[0], system.count
    if n * count > GLOBAL_MAX_PAIRS:
        raise ValueError(
            f"centers.assign_rule=global scores all {n:,} x {count:,} class-vector pairs (limit {GLOBAL_MAX_PAIRS:,});"
            " use assign_rule=ordered"
        )
    v = system.vectors(torch.arange(count), normalize=True, dtype=torch.float64)
    p = torch.nn.functional.normalize(torch.as_tensor(prototypes).double(), dim=1)
    cos = p @ v.T  # [C, count]
    out = torch.full((n,), -1, dtype=torch.int64)
    free_c, free_v = torch.ones(n, dtype=torch.bool), torch.ones(count, dtype=torch.bool)
    rounds = 0
    while free_c.any():
        rounds += 1
        m = cos.masked_fill(~free_v[None, :], -math.inf).masked_fill(~free_c[:, None], -math.inf)
        best_v = _argmax_first(m, 1)  # [C] best free vector of each class (lowest index on ties)
        best_c = _argmax_first(m, 0)  # [count] best free class of each vector (lowest label on ties)
        c = free_c.nonzero()[:, 0]
        mutual = c[best_c[best_v[c]] == c]
        out[mutual] = best_v[mutual]
        free_c[mutual] = False
        free_v[best_v[mutual]] = False
    return out, {"rounds": rounds, "seconds": time.perf_counter() - t0}


def _argmax_first(m: torch.Tensor, dim: int) -> torch.Tensor:
    top = m.max(dim, keepdim=True).values
    hit = (m == top) & torch.isfinite(top)
    idx = torch.arange(m.shape[dim]).view([-1 if d == dim else 1 for d in range(2)])
    return torch.where(hit, idx, m.shape[dim]).min(dim).values


def brute_force_global(vectors: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Global greedy by sorting every pair (tests): descending cosine, then lower label, then lower index."""
    cos = (
        torch.nn.functional.normalize(prototypes.double(), dim=1)
        @ torch.nn.functional.normalize(vectors.double(), dim=1).T
    )
    pairs = sorted(
        ((-cos[c, j].item(), c, j) for c in range(cos.shape[0]) for j in range(cos.shape[1])),
    )
    out, used = {}, set()
    for _, c, j in pairs:
        if c not in out and j not in used:
            out[c] = j
            used.add(j)
    return torch.tensor([out[c] for c in range(cos.shape[0])])


def brute_force_assignment(vectors: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """The same rule on a materialized system (tests): float64 cosine matrix, classes in the stated order."""
    v = vectors.double()
    p = prototypes.double()
    cos = (p @ v.T) / (p.norm(dim=1, keepdim=True) * v.norm(dim=1)[None])
    best = cos.max(1).values
    order = sorted(range(p.shape[0]), key=lambda c: (-best[c].item(), c))
    free = torch.ones(v.shape[0], dtype=torch.bool)
    out = torch.empty(p.shape[0], dtype=torch.int64)
    for c in order:
        s = torch.where(free, cos[c], -math.inf)
        top = s.max()
        out[c] = int((s == top).nonzero()[0, 0])  # lowest index among exact ties
        free[out[c]] = False
    return out
