"""Per-class prototype embeddings in R^n_dim, the input of the data-aware assignment (`lsc.centers.assignment`).

  pixels      a fixed seeded Gaussian projection of the class's mean image minus the dataset's mean image
              (images at the eval transform, average-pooled to at most `size` x `size`): no backbone, one pass
  checkpoint  the class-mean embedding of a trained LSC checkpoint (its backbone; `ckpt=` path), e.g. to re-assign
              after a first run, or from a self-supervised backbone saved as an LSC checkpoint (A_n paper, 6.6)
The projection is linear, so the mean of the projected images is the projection of the mean image: the pass keeps
an [n_classes, n_dim] float64 sum, never a [n_classes, pixels] one (1M classes at n_dim 47: 376 MB).

At scale (ImageNet's 1.28M JPEGs, 10^6..10^8 classes) the pass is the slow part of a data-aware start, so:
  decode=draft  large images (ImageNet-style eval: resize + center crop) are decoded at reduced size (PIL's JPEG
                draft mode: DCT scaling to 1/2..1/8) straight to the eval crop's field of view at `size` pixels,
                instead of decoding at full size, resizing to 256 and pooling 224 px down to 32 (decode=full). Small
                images (digits, Fashion-MNIST, glyphs, CIFAR) take the eval transform either way.
  cache         the result is kept under `cache_dir`, keyed by the data's fingerprint (its class, selection, labels,
                files' sizes and times or pixels), the kind, n_dim, seed, size and decode (and the checkpoint's file):
                a second run on the same data reads it; other data never matches another's entry.
  resume        the running sums are saved atomically every `save_every` seconds (`<key>.partial.pt`), and a pass
                killed at any point (kill -9 included) continues from the last save, adding the same batches in
                the same order: the same prototypes as an uninterrupted pass.
  DDP           rank 0 computes; the other ranks wait for its cache entry and read it.
  on disk       when the float64 sums would pass `memory_bytes` (2 GiB: ~2.7M classes at n_dim 95; 10^8 classes at
                n_dim 143 would need 114 GB), the images' projections are appended to files in the cache dir, one
                per range of classes, and reduced one file at a time into a float32 `<key>.npy` that the assignment
                reads as an np.memmap, in blocks (see _DiskSums). A kill -9 at any point resumes exactly; the
                process's RSS stays at a buffer and one file's sums, whatever the class count.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

log = logging.getLogger("lsc.data")
PROTOTYPES = ("pixels", "checkpoint")
IN_MEMORY_BYTES = 2 * 2**30  # float64 sums above this are kept on disk (centers.prototype_ram_gb)
DECODES = ("draft", "full")
CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """$LSC_CACHE/prototypes, else ~/.cache/lsc/prototypes."""
    return Path(os.environ.get("LSC_CACHE") or Path.home() / ".cache" / "lsc") / "prototypes"


def class_prototypes(
    dm,
    n_dim: int,
    kind: str = "pixels",
    seed: int = 0,
    size: int = 32,
    ckpt: str | None = None,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    decode: str = "draft",
    cache_dir: str | Path | None = None,
    save_every: float = 60.0,
    progress: bool | None = None,
    rank: int | None = None,
    wait_s: float = 24 * 3600.0,
    memory_bytes: float = IN_MEMORY_BYTES,
) -> torch.Tensor | np.memmap:
    """[num_classes, n_dim] float64 prototypes from the DataModule's training images (eval transform); a float32
    np.memmap of the cache's `<key>.npy` when the sums (num_classes x n_dim x 8 bytes) would pass `memory_bytes`.

    cache_dir: where results (and partial sums, for resume) are kept; None: no cache, no resume (and no pass larger
    than `memory_bytes`). rank: this process's global rank (default: Lightning's, from the launcher's environment); a
    rank other than 0 waits up to `wait_s` for rank 0's cache entry. progress: a progress bar with ETA (None: when the
    pass runs past 5 s)."""
    if kind not in PROTOTYPES:
        raise ValueError(f"centers.prototype must be one of {', '.join(PROTOTYPES)}, got {kind!r}")
    if decode not in DECODES:
        raise ValueError(f"centers.prototype_decode must be one of {', '.join(DECODES)}, got {decode!r}")
    dm.setup("fit")
    ds = dm.prototype_set()
    n_classes = dm.num_classes
    on_disk = n_classes * n_dim * 8 > memory_bytes
    if on_disk and cache_dir is None:
        raise ValueError(
            f"the prototypes of {n_classes:,} classes at n_dim={n_dim} need {n_classes * n_dim * 8 / 2**30:.1f} GiB of "
            f"float64 sums, more than centers.prototype_ram_gb={memory_bytes / 2**30:g}: they are kept on disk in the "
            "prototype cache, so set centers.prototype_cache=auto or a directory (or raise centers.prototype_ram_gb)"
        )
    embed = _pixel_embedder(n_dim, seed, size, dm.channels) if kind == "pixels" else _ckpt_embedder(ckpt, n_dim, dm)
    reduced = kind == "pixels" and decode == "draft" and bool(getattr(dm, "large_images", False))
    if reduced:
        ds, small = _reduced_view(ds, dm, min(size, dm.out_size))
        if small is not None:
            embed = _then(small.normalize, embed)
    if rank is None:
        from lightning.pytorch.utilities.rank_zero import rank_zero_only

        rank = int(getattr(rank_zero_only, "rank", 0) or 0)
    cache = None
    if cache_dir is not None:
        key = _key(dm, ds, kind, n_dim, seed, size, "draft" if reduced else "full", ckpt)
        cache = _Cache(Path(cache_dir).expanduser(), key, n_classes, n_dim)
        hit = cache.load()
        if hit is None and rank != 0:
            hit = cache.wait(wait_s)
        if hit is not None:
            log.info(f"prototypes ({kind}): {n_classes:,} classes read from the cache {cache.root / cache.key}.*")
            if isinstance(hit, np.ndarray) and not on_disk:  # written on disk under a lower centers.prototype_ram_gb
                hit = torch.from_numpy(np.asarray(hit, dtype=np.float64))
            return hit
    elif rank != 0:
        log.info(f"prototypes: rank {rank} computes its own (no centers.prototype_cache to share rank 0's)")
    if on_disk:
        acc = _DiskSums(cache, n_classes, n_dim)  # resumes (files cut back to the last save) or starts anew
        state = acc.state
    else:
        state = (cache.resume() if cache is not None else None) or {
            "sums": torch.zeros(n_classes, n_dim, dtype=torch.float64),
            "counts": torch.zeros(n_classes, dtype=torch.float64),
            "total": torch.zeros(n_dim, dtype=torch.float64),
            "done": 0,
        }
        sums, counts = state["sums"], state["counts"]
    total, start = state["total"], int(state["done"])
    n = len(ds)
    if start:
        log.info(f"prototypes ({kind}): resuming at image {start:,} of {n:,} ({cache.partial})")
    from lsc.data.base import Subset, collate_skipping_bad

    rest = Subset(ds, np.arange(start, n)) if start else ds
    loader = DataLoader(
        rest, batch_size=batch_size, num_workers=dm.num_workers, shuffle=False, collate_fn=collate_skipping_bad
    )
    t0 = last = time.perf_counter()
    done, bar = start, None
    with torch.no_grad():
        for batch in loader:
            done = min(n, done + batch_size)  # sequential batches: the first `done` images are counted
            if batch is not None:  # None: every image of the batch unreadable (skipped, counted by the data)
                x, y = batch
                e = embed(x.to(device)).double().cpu()  # [B, n_dim]
                total += e.sum(0)
                if on_disk:
                    acc.add(y, e, done, total)
                else:
                    sums.index_add_(0, y, e)
                    counts.index_add_(0, y, torch.ones_like(y, dtype=torch.float64))
            now = time.perf_counter()
            if bar is None and (progress or (progress is None and now - t0 > 5)):
                from tqdm import tqdm

                bar = tqdm(total=n, initial=done, desc="prototypes", unit="img", unit_scale=True, mininterval=1)
            elif bar is not None:
                bar.update(done - bar.n)
            if cache is not None and done < n and now - last >= save_every:
                if on_disk:
                    acc.save(done, total)
                else:
                    cache.save_partial({"sums": sums, "counts": counts, "total": total, "done": done})
                last = now
    if bar is not None:
        bar.close()
    if on_disk:
        acc.save(done, total)
        proto, seen = acc.finish(total, kind == "pixels")
        _log_pass(kind, reduced, n_classes, seen, time.perf_counter() - t0, done - start)
        return proto
    missing = (counts == 0).nonzero()[:, 0]
    if missing.numel():
        _no_images(missing.numel(), missing[0].item())
    proto = sums / counts[:, None]
    if kind == "pixels":
        proto -= total / counts.sum()  # centred: the shared mean image carries no class information
    _log_pass(kind, reduced, n_classes, int(counts.sum()), time.perf_counter() - t0, done - start)
    if cache is not None:
        cache.save(proto)
    return proto


def _no_images(n_missing: int, first: int):
    raise ValueError(
        f"{n_missing:,} class(es) have no training image (first: {first}); a data-aware assignment needs images of "
        "every class"
    )


def _log_pass(kind: str, reduced: bool, n_classes: int, images: int, dt: float, passed: int) -> None:
    log.info(
        f"prototypes ({kind}{', draft decode' if reduced else ''}): {n_classes:,} classes from {images:,} images in "
        f"{dt:.1f} s ({passed / max(dt, 1e-9):,.0f} images/s)"
    )


# ---- reduced-size decoding ---------------------------------------------------------------------------------------


class _Reduced:
    """A split whose images are decoded at reduced size: `split.image(i, draft=(w, h))` where the split supports it
    (JPEG files and prepared JPEG chunks), else its full-size image."""

    def __init__(self, split, px: int):
        self.split, self.px, self.targets = split, px, split.targets
        self.want = int(np.ceil(2 * px / 0.875))  # the eval crop at >= 2x px: box-averaged, not resampled 1:1
        self.draft = bool(getattr(split, "supports_draft", False))

    def __len__(self):
        return len(self.split)

    def image(self, i):
        return self.split.image(i, draft=(self.want, self.want)) if self.draft else self.split.image(i)


class _SmallEval:
    """The eval transform of large images (resize the short side to size/0.875, center crop) followed by average
    pooling to `px` pixels, computed in one step: the crop's region of the (draft-decoded) image, box-averaged to
    px x px (PIL's BOX filter over a float box), what decode=full gives up to resampling. An image comes out in pixel
    units (uint8, or float from raw prepared images); `normalize` scales a whole batch as the eval transform does,
    once per batch instead of once per image."""

    def __init__(self, px: int, mean, std, channels: int):
        self.px = px
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]
        self.mode = "RGB" if channels == 3 else "L"

    def __call__(self, img):
        from PIL import Image

        if isinstance(img, torch.Tensor):  # raw prepared images: crop, then average-pool
            h, w = img.shape[-2:]
            c = 0.875 * min(h, w)
            top, left = int(round((h - c) / 2)), int(round((w - c) / 2))
            x = img[..., top : top + int(round(c)), left : left + int(round(c))].float()
            return F.adaptive_avg_pool2d(x[None], (self.px, self.px))[0]
        if img.mode != self.mode:
            img = img.convert(self.mode)
        w, h = img.size
        half = 0.875 * min(w, h) / 2
        box = (w / 2 - half, h / 2 - half, w / 2 + half, h / 2 + half)
        a = bytearray(img.resize((self.px, self.px), Image.BOX, box=box).tobytes())
        return torch.frombuffer(a, dtype=torch.uint8).view(self.px, self.px, -1).permute(2, 0, 1)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """A batch [B, C, px, px] in pixel units -> float32, normalized by the data's mean and std."""
        x = x.float().div_(255)
        return x.sub_(self.mean.to(x.device)).div_(self.std.to(x.device))


def _reduced_view(ds, dm, px: int):
    """(the split decoded at reduced size, its _SmallEval: `normalize` each batch of it); (ds, None) where the split
    is not a LabeledView."""
    from lsc.data.base import LabeledView

    if not isinstance(ds, LabeledView):
        return ds, None
    small = _SmallEval(px, dm.mean, dm.std, dm.channels)
    view = LabeledView(
        _Reduced(ds.base, px),
        ds.index,
        ds.labels,
        small,
        copies=ds.copies,
        instance=ds.instance,
        skip_bad=ds.skip_bad,
        bad=ds.bad,
    )
    return view, small


# ---- the cache ---------------------------------------------------------------------------------------------------


def data_fingerprint(dm, ds, samples: int = 8) -> str:
    """The identity of the images a prototype pass reads: the DataModule's class and geometry, the selection (every
    index and label), the split's own fingerprint (files' names, sizes and times; in-memory pixels; a prepared
    dir's manifest) and the pixels of a few items."""
    h = hashlib.sha256(type(dm).__qualname__.encode())
    geo = (len(ds), dm.num_classes, dm.out_size, dm.channels, tuple(dm.mean), tuple(dm.std))
    h.update(repr((geo, bool(getattr(dm, "large_images", False)))).encode())
    base = getattr(ds, "base", None)
    if base is not None:
        base = getattr(base, "split", base)  # _Reduced
        for arr in (ds.index, ds.labels):
            h.update(np.asarray(arr, dtype=np.int64).tobytes())
        h.update(repr((ds.copies, ds.instance)).encode())
        h.update(_split_fingerprint(base).encode())
    n = len(ds)
    for i in sorted({int(j) for j in np.linspace(0, n - 1, min(samples, n))}) if n else ():
        item = ds[i]
        if item is not None:
            h.update(np.ascontiguousarray(torch.as_tensor(item[0]).float().numpy()).tobytes())
            h.update(str(int(item[1])).encode())
    return h.hexdigest()


def _split_fingerprint(split) -> str:
    if hasattr(split, "fingerprint"):
        return split.fingerprint()
    images = getattr(split, "images", None)
    if isinstance(images, torch.Tensor | np.ndarray):
        return hashlib.sha256(np.ascontiguousarray(np.asarray(images)).tobytes()).hexdigest()
    return type(split).__qualname__  # generated splits: their pixels are sampled above


def _key(dm, ds, kind, n_dim, seed, size, decode, ckpt) -> str:
    h = hashlib.sha256(data_fingerprint(dm, ds).encode())
    h.update(repr((CACHE_VERSION, kind, int(n_dim), int(seed), int(size), decode)).encode())
    if kind == "checkpoint":
        st = Path(ckpt).stat()
        h.update(repr((str(Path(ckpt).resolve()), st.st_size, st.st_mtime_ns)).encode())
    return h.hexdigest()[:32]


class _Cache:
    """<dir>/<key>.pt (the prototypes) and <dir>/<key>.partial.pt (running sums), written atomically; on disk (see
    _DiskSums) <dir>/<key>.npy (float32 prototypes), and <key>.spill/ while the pass runs."""

    def __init__(self, root: Path, key: str, n_classes: int, n_dim: int):
        self.root, self.key, self.shape = root, key, (n_classes, n_dim)
        self.final, self.partial = root / f"{key}.pt", root / f"{key}.partial.pt"
        self.big = root / f"{key}.npy"

    def _read(self, path: Path):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            return None
        except Exception as e:  # a truncated or foreign file: recompute, never trust it
            log.warning(f"prototypes: ignoring unreadable cache file {path} ({type(e).__name__}: {e})")
            return None
        if not isinstance(obj, dict) or obj.get("key") != self.key:
            log.warning(f"prototypes: {path} holds another dataset's prototypes; ignored")
            return None
        return obj

    def load(self):
        if self.big.is_file():  # written by os.replace once complete: the key in its name is the data's
            try:
                p = np.load(self.big, mmap_mode="r")
            except Exception as e:
                log.warning(f"prototypes: ignoring unreadable cache file {self.big} ({type(e).__name__}: {e})")
                return None
            if p.shape == self.shape:
                return p
            log.warning(f"prototypes: {self.big} has shape {p.shape}, not {self.shape}; ignored")
            return None
        obj = self._read(self.final)
        if obj is None:
            return None
        p = obj.get("prototypes")
        if not isinstance(p, torch.Tensor) or tuple(p.shape) != self.shape:
            log.warning(f"prototypes: {self.final} has shape {getattr(p, 'shape', None)}, not {self.shape}; ignored")
            return None
        return p

    def wait(self, timeout: float):
        t0 = time.perf_counter()
        log.info(f"prototypes: waiting for rank 0 to write {self.final}")
        while time.perf_counter() - t0 < timeout:
            time.sleep(0.5)
            p = self.load()
            if p is not None:
                return p
        raise TimeoutError(
            f"rank 0 did not write the prototype cache {self.final} within {timeout:.0f} s; is centers."
            "prototype_cache on a filesystem every rank sees?"
        )

    def resume(self):
        obj = self._read(self.partial)
        if obj is None or "sums" not in obj or tuple(obj["sums"].shape) != self.shape:
            return None  # none, or another size's, or the on-disk pass's (its records are in <key>.spill/)
        return obj

    def _write(self, path: Path, obj: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save({**obj, "key": self.key}, tmp)
        os.replace(tmp, path)

    def save_partial(self, state: dict) -> None:
        self._write(self.partial, state)

    def save(self, proto: torch.Tensor) -> None:
        self._write(self.final, {"prototypes": proto})
        self.partial.unlink(missing_ok=True)


class _DiskSums:
    """The pass's images on disk, for class counts whose float64 sums would not fit in memory: each image's
    (class, projected embedding) record is appended to the file of its class range (<key>.spill/<b>.bin, `per_file`
    classes each), and `finish` reduces one file at a time to its classes' prototypes (float64 sums) into <key>.npy.

    Appends are sequential whatever the order of the labels (updating rows of one [n_classes, n_dim] file in place
    would rewrite a 4 KiB page per image: ~1 GB/s of writes for ~20 MB of sums here). Memory: a buffer of at most
    `max_rows` records and one file's sums. Resume: partial.pt records every file's length at each save; a pass
    killed anywhere truncates the files to those lengths and appends the same records again, so its prototypes are
    the uninterrupted pass's, bit for bit. Disk: n_images x (n_dim + 1) x 4 bytes of records, plus the result.
    """

    def __init__(self, cache: _Cache, n_classes: int, n_dim: int, max_rows: int = 1 << 16, per_file: int = 0):
        self.cache, self.n_classes, self.n_dim, self.max_rows = cache, n_classes, n_dim, max_rows
        self.per_file = per_file or max(1, (1 << 27) // (8 * n_dim))  # one file's float64 sums: <= 128 MiB
        self.n_files = -(-n_classes // self.per_file)
        self.dir = cache.root / f"{cache.key}.spill"
        self.record = np.dtype([("y", "<i4"), ("e", "<f4", (n_dim,))])  # y: the class within its file
        self.ys, self.es, self.buffered = [], [], 0
        state = cache._read(cache.partial)
        spill = [n_classes, n_dim, self.per_file]
        if state is None or state.get("spill") != spill or not self._truncate(state["sizes"]):
            shutil.rmtree(self.dir, ignore_errors=True)
            state = {"done": 0, "seen": 0, "total": torch.zeros(n_dim, dtype=torch.float64)}
            state["sizes"] = torch.zeros(self.n_files, dtype=torch.int64)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state = {k: state[k] for k in ("done", "seen", "total", "sizes")}

    def _file(self, b: int) -> Path:
        return self.dir / f"{b:06d}.bin"

    def _truncate(self, sizes: torch.Tensor) -> bool:
        """Cut every file back to its recorded length (what a killed pass appended after its last save); False when a
        file is shorter than recorded (not this pass's files: start again)."""
        for b, size in enumerate(sizes.tolist()):
            f = self._file(b)
            have = f.stat().st_size if f.is_file() else 0
            if have < size:
                return False
            if have > size:
                os.truncate(f, size)
        return True

    def add(self, y: torch.Tensor, e: torch.Tensor, done: int, total: torch.Tensor) -> None:
        """Buffer a batch (`done`, `total`: the pass's counters with it); saves once `max_rows` are buffered."""
        self.ys.append(y)
        self.es.append(e)
        self.buffered += len(y)
        if self.buffered >= self.max_rows:
            self.save(done, total)

    def _append(self) -> None:
        if not self.ys:
            return
        y = torch.cat(self.ys).numpy()
        e = torch.cat(self.es).numpy()
        order = np.argsort(y // self.per_file, kind="stable")  # by file, each file's records in the pass's order
        y, e = y[order], e[order]
        rec = np.empty(len(y), self.record)
        rec["y"], rec["e"] = y % self.per_file, e
        files, starts = np.unique(y // self.per_file, return_index=True)
        sizes = self.state["sizes"].clone()
        for b, a, z in zip(files.tolist(), starts.tolist(), [*starts[1:].tolist(), len(y)], strict=True):
            with open(self._file(b), "ab") as f:
                f.write(rec[a:z].tobytes())
            sizes[b] += (z - a) * self.record.itemsize
        self.state["sizes"] = sizes
        self.ys, self.es, self.buffered = [], [], 0

    def save(self, done: int, total: torch.Tensor) -> None:
        """Append the buffer, then record the files' lengths with the pass's counters (atomically)."""
        seen = int(self.state["seen"]) + self.buffered
        self._append()
        self.state.update(done=int(done), seen=seen, total=total.clone())
        spill = [self.n_classes, self.n_dim, self.per_file]
        self.cache._write(self.cache.partial, {**self.state, "spill": spill})

    def finish(self, total: torch.Tensor, centred: bool, chunk: int = 1 << 16) -> tuple[np.memmap, int]:
        """Each file's records summed per class (float64), divided by the counts (minus the mean image's projection
        when centred), into <key>.npy; returns it memory-mapped, and the number of images."""
        from lsc.centers.assignment import drop_pages

        seen = int(self.state["seen"])
        mean = (total / max(seen, 1)).numpy() if centred else 0.0
        tmp = self.cache.big.with_name(f".{self.cache.big.name}.{os.getpid()}.tmp")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(self.n_classes, self.n_dim))
        try:
            missing = []
            for b in range(self.n_files):
                a = b * self.per_file
                k = min(self.per_file, self.n_classes - a)
                sums, counts = torch.zeros(k, self.n_dim, dtype=torch.float64), np.zeros(k)
                size = self._file(b).stat().st_size if self._file(b).is_file() else 0
                if size:
                    rec = np.memmap(self._file(b), dtype=self.record, mode="r")
                    for r in range(0, len(rec), chunk):  # records in chunks: memory is the sums and one chunk
                        part = rec[r : r + chunk]
                        y = torch.from_numpy(part["y"].astype(np.int64))
                        sums.index_add_(0, y, torch.from_numpy(part["e"].astype(np.float64)))
                        counts += np.bincount(part["y"], minlength=k)
                        drop_pages(rec)
                    del rec
                sums = sums.numpy()
                empty = np.flatnonzero(counts == 0)
                if empty.size:
                    missing.append((empty.size, a + int(empty[0])))
                    continue
                sums /= counts[:, None]  # in place: one file's float64 sums are the only large array
                sums -= mean
                out[a : a + k] = sums
                drop_pages(out)
            if missing:
                _no_images(sum(m for m, _ in missing), missing[0][1])
            out.flush()
        except BaseException:
            del out
            tmp.unlink(missing_ok=True)
            raise
        del out
        os.replace(tmp, self.cache.big)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.cache.partial.unlink(missing_ok=True)
        return np.load(self.cache.big, mmap_mode="r"), seen


def _then(first, fn):
    return lambda x: fn(first(x))


def _pixel_embedder(n_dim: int, seed: int, size: int, channels: int):
    g = torch.Generator().manual_seed(1_000_003 * seed + 7)
    cache: dict = {}

    def embed(x: torch.Tensor) -> torch.Tensor:  # float32 (half the time of float64); the pass sums in float64
        x = x.float()
        if x.shape[-1] > size or x.shape[-2] > size:
            x = F.adaptive_avg_pool2d(x, (min(size, x.shape[-2]), min(size, x.shape[-1])))
        x = x.flatten(1)  # [B, d]
        d = x.shape[1]
        if d not in cache:  # a fixed projection per input width, scaled so coordinates are O(1)
            cache[d] = (torch.randn(d, n_dim, generator=g, dtype=torch.float64) / d**0.5).float().to(x.device)
        return x @ cache[d]

    return embed


def _ckpt_embedder(path: str | None, n_dim: int, dm):
    if not path:
        raise ValueError("centers.prototype=checkpoint needs centers.prototype_ckpt=<an LSC checkpoint>")
    import hydra
    from omegaconf import OmegaConf

    from lsc.models.backbones import build_backbone
    from lsc.runconfig import CENTERS_KEY, CONFIG_KEY, INPUT_KEY, load_checkpoint

    ckpt = load_checkpoint(path, "centers.prototype_ckpt")
    stored, spec = ckpt.get(CONFIG_KEY), ckpt.get(CENTERS_KEY)
    if not stored or not spec:
        raise ValueError(f"centers.prototype_ckpt={path} is not an LSC checkpoint (no run config or centers)")
    if spec["system"]["n_dim"] != n_dim:
        raise ValueError(
            f"centers.prototype_ckpt={path} embeds in {spec['system']['n_dim']} dims but these centers live in "
            f"n_dim={n_dim}; use a checkpoint trained at the same n_dim"
        )
    cfg = OmegaConf.create(stored)
    seen = ckpt.get(INPUT_KEY)  # the images its backbone was trained on (older checkpoints: its data config)
    if seen:
        trained = SimpleNamespace(channels=seen["channels"], out_size=seen["size"])
    else:
        trained = hydra.utils.instantiate(cfg.data)
    if (trained.channels, trained.out_size) != (dm.channels, dm.out_size):
        raise ValueError(
            f"centers.prototype_ckpt={path} was trained on {trained.out_size} px images with {trained.channels} "
            f"channel(s), but this data gives {dm.out_size} px with {dm.channels}; use a checkpoint trained on "
            "images like these (same channels and size), or centers.prototype=pixels"
        )
    backbone = build_backbone(cfg, trained, n_dim)
    backbone.load_state_dict(
        {k[len("backbone.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("backbone.")}
    )
    backbone.eval()
    return backbone
