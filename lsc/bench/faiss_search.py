"""FAISS baselines for label search over the unit class centers: exact IndexFlatIP, IVF-Flat and HNSW.

The approximate-search library users already have (Johnson et al., arXiv 1702.08734; HNSW: Malkov & Yashunin,
arXiv 1603.09320). Every index uses the inner-product metric on unit centers (= cosine) and keeps row ids, so a
search result is a label. faiss is optional (the `faiss` extra): importing this module never fails, and
`available()` says whether the functions below can run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

import numpy as np

try:
    import faiss
except ImportError:  # the benchmarks then report "not installed"
    faiss = None

HNSW_M = 32
RECALL_TARGET = 0.99
TUNE_QUERIES = 1 << 14  # queries nprobe / efSearch are chosen on: resolves recall to ~0.1% at 0.99
TRAIN_PER_LIST = 64  # k-means points per IVF list; faiss asks for 39..256
EF_MAX = 4096
GPU_MAX_K = 2048  # faiss GPU k-selection limit, which bounds nprobe on a GPU IVF
_GPU = {}


def available() -> bool:
    return faiss is not None


def setup(n_threads: int) -> None:
    """Time FAISS at its best: as many OpenMP threads as torch (neither side gets more cores); the BLAS path for
    every batch (faiss 1.15 uses a per-query loop while nq * d < distance_compute_blas_threshold = 128,000, which
    measured 4-8x slower per query here at 1k-100k classes and any batch from 16 to 4,096); its one-time BLAS
    start-up (~0.2 s) paid here, not in the first timed search."""
    faiss.omp_set_num_threads(n_threads)
    faiss.cvar.distance_compute_blas_threshold = 20  # faiss's former default, then counted in queries
    index = faiss.IndexFlatIP(16)
    index.add(np.zeros((64, 16), np.float32))
    index.search(np.zeros((256, 16), np.float32), 1)


def _gpu_resources():
    if "res" not in _GPU:  # one StandardGpuResources per process: it must outlive every GPU index
        _GPU["res"] = faiss.StandardGpuResources()
    return _GPU["res"]


def n_lists(n: int) -> int:
    """IVF list count ~ 4 sqrt(n), the FAISS wiki's rule of thumb for flat lists."""
    return max(1, round(4 * math.sqrt(n)))


def _add(index, xb) -> float:
    """Add an [n, d] array or an iterable of row chunks; seconds spent in faiss (not in producing the chunks)."""
    t = 0.0
    for x in [xb] if isinstance(xb, np.ndarray) else xb:
        x = np.ascontiguousarray(x, dtype=np.float32)
        t0 = time.perf_counter()
        index.add(x)
        t += time.perf_counter() - t0
    return t


def build_flat(xb: np.ndarray | Iterable[np.ndarray], d: int, *, gpu: bool = False):
    """Exact inner-product index. Returns (index, build seconds)."""
    index = faiss.GpuIndexFlatIP(_gpu_resources(), d) if gpu else faiss.IndexFlatIP(d)
    return index, _add(index, xb)


def build_ivf(xb: np.ndarray | Iterable[np.ndarray], d: int, nlist: int, train: np.ndarray, *, gpu: bool = False):
    """IVF-Flat (inner product), k-means trained on `train`. Returns (index, train + add seconds)."""
    if gpu:
        index = faiss.GpuIndexIVFFlat(_gpu_resources(), d, nlist, faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    if hasattr(index, "cp"):  # few classes give few points per list: that is the data, not a mistake to warn of
        index.cp.min_points_per_centroid = 1
    t0 = time.perf_counter()
    index.train(np.ascontiguousarray(train, dtype=np.float32))
    return index, time.perf_counter() - t0 + _add(index, xb)


def build_hnsw(xb: np.ndarray | Iterable[np.ndarray], d: int, m: int = HNSW_M):
    """HNSW over flat storage (inner product; faiss has no GPU HNSW). Returns (index, build seconds)."""
    index = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
    return index, _add(index, xb)


def search_labels(index, xq: np.ndarray, batch_size: int = 1 << 16) -> np.ndarray:
    """Top-1 ids (= labels) [n] int64 for queries [n, d]; -1 where the probed lists hold nothing."""
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    out = [index.search(xq[a : a + batch_size], 1)[1][:, 0] for a in range(0, len(xq), batch_size)]
    return np.concatenate(out) if out else np.empty(0, np.int64)


def recall_at_1(pred: np.ndarray, ref: np.ndarray) -> float:
    """Fraction of queries whose returned label is the exact nearest center's."""
    pred, ref = np.asarray(pred).reshape(-1), np.asarray(ref).reshape(-1)
    if pred.shape != ref.shape:
        raise ValueError(f"{pred.shape[0]} predictions for {ref.shape[0]} reference labels")
    return float((pred == ref).mean()) if len(ref) else float("nan")


def _choose(index, set_param, values, xq, ref, target, batch_size):
    """Smallest value reaching recall@1 >= target, else the last; returns (value, recall, seconds of its search)."""
    for v in values:
        set_param(index, v)
        t0 = time.perf_counter()
        recall = recall_at_1(search_labels(index, xq, batch_size), ref)
        seconds = time.perf_counter() - t0
        if recall >= target:
            break
    return v, recall, seconds


def _doubling(start: int, stop: int) -> list[int]:
    vals = [start]
    while vals[-1] < stop:
        vals.append(min(2 * vals[-1], stop))  # the last value is `stop` itself: exhaustive for IVF
    return vals


def choose_nprobe(index, xq, ref, target: float = RECALL_TARGET, batch_size: int = 1 << 16):
    """nprobe in 1, 2, 4, ... (up to nlist) for the target recall; leaves it set on the index."""
    stop = min(index.nlist, GPU_MAX_K) if type(index).__name__.startswith("Gpu") else index.nlist

    def set_nprobe(ix, v):
        ix.nprobe = v

    return _choose(index, set_nprobe, _doubling(1, stop), xq, ref, target, batch_size)


def choose_ef(index, xq, ref, target: float = RECALL_TARGET, batch_size: int = 1 << 16, start: int = 16):
    """efSearch in 16, 32, 64, ... (up to EF_MAX) for the target recall; leaves it set on the index."""

    def set_ef(ix, v):
        ix.hnsw.efSearch = v

    return _choose(index, set_ef, _doubling(start, EF_MAX), xq, ref, target, batch_size)


def estimate_bytes(kind: str, n: int, d: int, nlist: int = 0, m: int = HNSW_M) -> int:
    """Index memory before building it: float32 rows, plus int64 ids and centroids (IVF) or int32 links (HNSW:
    2m neighbors on level 0, m on each upper level, a node reaching level l with probability m^-l)."""
    rows = n * d * 4
    if kind == "flat":
        return rows
    if kind == "ivf":
        return rows + n * 8 + nlist * d * 4
    if kind == "hnsw":
        return rows + round(n * (4 * (2 * m + m / (m - 1)) + 4 + 8))
    raise ValueError(f"unknown index kind {kind!r}")


def index_bytes(index) -> int:
    """Bytes of an index's arrays (CPU indexes read from their structures; GPU ones estimated)."""
    if isinstance(index, faiss.IndexHNSW):
        h = index.hnsw
        return (
            index_bytes(faiss.downcast_index(index.storage))
            + 4 * h.neighbors.size()
            + 4 * h.levels.size()
            + 8 * h.offsets.size()
        )
    if isinstance(index, faiss.IndexIVF):
        il = index.invlists
        lists = sum(il.list_size(i) for i in range(index.nlist)) * (il.code_size + 8)
        return lists + index_bytes(faiss.downcast_index(index.quantizer))
    if isinstance(index, faiss.IndexFlatCodes):
        return index.codes.size()
    kind = "ivf" if hasattr(index, "nlist") else "flat"
    return estimate_bytes(kind, index.ntotal, index.d, getattr(index, "nlist", 0))
