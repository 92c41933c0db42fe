"""n_min: the smallest n_dim whose system holds at least n_classes vectors (arXiv 2512.07509)."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=4096)
def system_count(name: str, n_dim: int) -> int:
    from .systems import make_system

    return make_system(name, n_dim).count


def _valid(name: str, n: int) -> bool:
    try:
        system_count(name, n)
        return True
    except ValueError:
        return False


def n_min(name: str, n_classes: int) -> int:
    """Smallest n_dim with count >= n_classes (counts grow with n_dim for every named system)."""
    if name == "table":
        raise ValueError("n_min is not defined for 'table' centers: their n_dim is the table's width")
    if isinstance(n_classes, float) and n_classes.is_integer():
        n_classes = int(n_classes)
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1:
        raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}")
    lo = 1
    while not _valid(name, lo):  # e.g. v22 needs n_dim >= 4; also surfaces unknown names
        if lo > 64:
            system_count(name, lo)  # raises the system's own error
        lo += 1
    if system_count(name, lo) >= n_classes:
        return lo
    hi = lo * 2
    while system_count(name, hi) < n_classes:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # count(lo) < n_classes <= count(hi)
        mid = (lo + hi) // 2
        if system_count(name, mid) >= n_classes:
            hi = mid
        else:
            lo = mid
    return hi
