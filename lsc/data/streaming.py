"""data=streaming: train from a dataset prepared once by `python -m lsc.prepare` (litdata chunks, local or s3://).

Layout of a prepared dir (written by lsc.prepare):
  manifest.json        source, format (jpeg | raw), size, counts, classes, bad images, label checksums
  <split>/             one litdata dataset per split (train, and test when the source has one):
    index.json chunk-*.bin   items {id, label, ok, src, img}: img = JPEG bytes or raw uint8 [C, size, size]
    ids.npy                  prepared position -> source index (prepare shuffles once, so every chunk mixes classes)
    labels.npy               the source's labels in source order (their sha256 is in the manifest)

The DataModule presents each split in *source* order (minus the images prepare could not decode), so the base
class builds the same label views as on the source DataModule: limit, classes, keep_classes, the seeded held-out
validation split, instance labels and copies pick the very same images and labels. Validation, test and the
prototype/train-eval samples read those images by random access. Training streams them through litdata's
StreamingDataset + StreamingDataLoader, which shuffle per (seed, epoch), shard over DDP ranks and loader workers
and save their position in every checkpoint (mid-epoch resume). A view is told to litdata as one region of
interest per chunk and copy, [0, m) for the m selected images of the chunk, and `__getitem__` maps position q of
that region to the q-th selected image: selections cost nothing per image (no filtering, exact lengths), and copies
re-read the same bytes under new labels.
decode=gpu (JPEG only): loaders yield the encoded bytes; `on_after_batch_transfer` decodes the batch with
torchvision.io.decode_jpeg on the batch's device and applies the same transforms as tensor ops there.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from litdata import StreamingDataLoader, StreamingDataset
from litdata.streaming.sampler import ChunkedIndex
from torch.utils.data import default_collate
from torchdata.stateful_dataloader import StatefulDataLoader
from torchvision.transforms.v2 import functional as TF

from .base import BadImageError, LabeledView, LSCDataModule, Subset, open_draft, read_or_skip
from .transforms import make_transform

log = logging.getLogger("lsc.data")
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
FORMATS = ("jpeg", "raw")
# JPEG chroma subsampling -> PIL's `subsampling`. 4:4:4 by default: decode=gpu (nvJPEG through torchvision, default
# flags) upsamples 4:2:0 chroma by nearest neighbour where PIL and libjpeg-turbo interpolate, which moves textured
# images by ~12 levels of 255 on average (a mean |difference| of 0.13 after normalization, measured on an H200);
# full-resolution chroma needs no upsampling, so both decoders give the same pixels (up to IDCT rounding).
SUBSAMPLING = {444: 0, 420: 2}


def stored_chroma(manifest: dict) -> int | None:
    """The chroma subsampling of a prepared dir's JPEGs; dirs prepared before the setting existed hold 4:2:0."""
    if manifest.get("format") != "jpeg":
        return None
    return int(manifest.get("chroma") or 420)


DECODERS = ("cpu", "gpu")
# litdata deserializes a window of up to 256 neighbouring items per read ("auto" for small items) and keeps it for
# the next read; items read in a shuffled order (and views that skip items) rarely hit it, so every image paid for
# 256: 0 reads each item alone (raw 32 px, one loader process: 505 -> 13,000 images/s)
PER_ITEM = 0


# ---- the prepared dir: manifest, side files, chunk checks ---------------------------------------------------------


def quiet_litdata() -> None:
    logging.getLogger("litdata").setLevel(logging.WARNING)  # per-dataset INFO lines (cache size, mmap mode)


def is_remote(root: str) -> bool:
    return "://" in str(root)


def fetch(root: str, rel: str, cache: Path, storage_options: dict | None = None) -> Path:
    """Local path of root/rel: the file itself, or (s3://, gs://, ...) a copy in `cache` via litdata's providers."""
    if not is_remote(root):
        return Path(root) / rel
    from litdata.streaming.fs_provider import _get_fs_provider

    local = cache / rel
    if not local.exists():
        local.parent.mkdir(parents=True, exist_ok=True)
        url = f"{str(root).rstrip('/')}/{rel}"
        _get_fs_provider(url, storage_options or {}).download_file(url, str(local))
    return local


def sha256_array(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.int64).tobytes()).hexdigest()


def read_manifest(root: str, cache: Path, storage_options: dict | None = None) -> dict:
    if is_remote(root) and (cache / MANIFEST).exists():  # a re-prepared remote dir must not read stale copies
        fresh = fetch(root, MANIFEST, cache / "new", storage_options)
        if fresh.read_bytes() != (cache / MANIFEST).read_bytes():
            for f in cache.iterdir():
                if f.is_dir() and f.name != "new":
                    shutil.rmtree(f)
                elif f.is_file():
                    f.unlink()
        os.replace(fresh, cache / MANIFEST)
    path = fetch(root, MANIFEST, cache, storage_options)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: data.root={root} is not a prepared dir; write one with "
            "`python -m lsc.prepare data=<config> out=<dir>`"
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); prepare the data again into a new out=<dir>") from e
    if manifest.get("lsc_prepared") != FORMAT_VERSION:
        raise ValueError(f"{path} is not a manifest written by lsc.prepare (format {FORMAT_VERSION})")
    if not manifest.get("complete"):
        raise ValueError(f"{path}: prepare did not finish; rerun the same `python -m lsc.prepare` command to finish it")
    return manifest


def check_chunks(split_dir: Path, index: dict) -> None:
    """Every chunk of index.json is present with the byte size litdata recorded (local dirs; remote reads fail
    loudly at download instead)."""
    for c in index["chunks"]:
        f = split_dir / c["filename"]
        if not f.exists():
            raise FileNotFoundError(f"chunk {f} listed in {split_dir / 'index.json'} is missing")
        size, want = f.stat().st_size, c.get("chunk_bytes")
        if want is not None and size != want:
            raise ValueError(
                f"chunk {f} is truncated or altered: {size:,} bytes, index.json says {want:,}; copy it again "
                "or prepare the data again into a new out=<dir>"
            )


def decode_image(img: bytes, fmt: str, channels: int, size: int, where: str, draft: tuple[int, int] | None = None):
    """A stored image: raw -> uint8 tensor [C, size, size]; jpeg -> PIL image (what the image-folder loader gives),
    decoded at reduced size (>= draft, DCT scaling) when draft is given."""
    try:
        if fmt == "raw":
            return torch.from_numpy(np.frombuffer(img, np.uint8).reshape(channels, size, size).copy())
        mode = "RGB" if channels == 3 else "L"
        if draft is not None:
            return open_draft(img, mode, draft)
        from PIL import Image

        im = Image.open(io.BytesIO(img)).convert(mode)
        im.load()
        return im
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError ...; reshape ValueError
        raise BadImageError(where, e) from e


def encoded(img: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(img), dtype=torch.uint8)  # a copy: litdata's buffer may be read-only mmap


class PreparedSplit:
    """One prepared split in source order, minus the images prepare could not decode (a RawSplit: `targets`,
    `image(i)`). `image` reads by random access; `encoded_twin()` is the same split yielding JPEG bytes."""

    def __init__(self, root: str, name: str, manifest: dict, cache: Path, storage_options: dict | None = None):
        info = manifest["splits"][name]
        self.root, self.name, self.uri = str(root), name, f"{str(root).rstrip('/')}/{name}"
        self.fmt, self.size, self.channels = manifest["format"], int(manifest["size"]), int(manifest["channels"])
        self.src_key, self.cache, self.storage_options = int(manifest["src_key"]), cache, storage_options
        self.encoded, self.source_fingerprint = False, str(manifest.get("fingerprint", ""))
        files = {k: fetch(root, f"{name}/{k}", cache, storage_options) for k in ("index.json", "labels.npy", "ids.npy")}
        for f in files.values():
            if not f.exists():
                raise FileNotFoundError(f"{f} is missing: the prepared dir {root} is incomplete")
        labels, ids = np.load(files["labels.npy"]), np.load(files["ids.npy"])
        for key, arr in (("labels", labels), ("ids", ids)):
            if sha256_array(arr) != info[f"{key}_sha256"]:
                raise ValueError(
                    f"{files[f'{key}.npy']} does not match {root}/{MANIFEST} (checksum): the split comes from "
                    f"another source ({manifest['description']} expected); prepare the data again into a new dir"
                )
        index = json.loads(files["index.json"].read_text())
        self.files = [c["filename"] for c in index["chunks"]]
        self.sizes = np.array([c["chunk_size"] for c in index["chunks"]], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        n = len(ids)
        if int(self.sizes.sum()) != n or n != info["count"] or len(labels) != n:
            raise ValueError(
                f"{files['index.json']} lists {int(self.sizes.sum()):,} samples but {root}/{MANIFEST} says "
                f"{info['count']:,}: the split comes from another prepare run; prepare the data again"
            )
        if not is_remote(root):
            check_chunks(Path(root) / name, index)
        inv = np.empty(n, dtype=np.int64)
        inv[ids] = np.arange(n)
        bad = np.array(sorted(b["id"] for b in info.get("bad_images", [])), dtype=np.int64)
        self.src_ids = np.setdiff1d(np.arange(n), bad)  # the source indices presented, ascending
        self.ppos = inv[self.src_ids]  # their prepared positions
        self.targets = torch.from_numpy(labels[self.src_ids].astype(np.int64))
        self._ds = None

    def __len__(self):
        return len(self.src_ids)

    def __getstate__(self):
        return {**self.__dict__, "_ds": None}  # every process opens the chunks itself

    def chunk_path(self, k: int) -> str:
        return f"{self.uri}/{self.files[k]}"

    def encoded_twin(self) -> PreparedSplit:
        twin = object.__new__(PreparedSplit)
        twin.__dict__.update(self.__getstate__(), encoded=True)
        return twin

    def check(self, item: dict, src: int, k: int) -> None:
        """The item stored at a position is the source image expected there (else the chunk is another run's)."""
        if item["src"] != self.src_key or item["id"] != src or not item["ok"]:
            raise ValueError(
                f"chunk {self.chunk_path(k)} holds sample {item['id']} of source key {item['src']} where sample "
                f"{src} of source key {self.src_key} belongs: it was written by another prepare run; prepare the "
                "data again into a new out=<dir>"
            )

    def decode(self, item: dict, k: int, draft: tuple[int, int] | None = None):
        if self.encoded:
            return encoded(item["img"])
        return decode_image(
            item["img"], self.fmt, self.channels, self.size, f"{self.chunk_path(k)} (sample {item['id']})", draft
        )

    supports_draft = True  # image(i, draft=(w, h)): JPEG chunks decoded at reduced size (the prototype pass)

    def fingerprint(self) -> str:
        """The prepared source's fingerprint (lsc.prepare), this split's name, chunks and the images presented."""
        h = hashlib.sha256(f"{self.source_fingerprint}\0{self.name}\0{self.fmt}\0{self.size}".encode())
        h.update(repr(self.files).encode())
        h.update(self.sizes.tobytes())
        h.update(np.asarray(self.src_ids, dtype=np.int64).tobytes())
        return h.hexdigest()

    def image(self, i: int, draft: tuple[int, int] | None = None):
        p = int(self.ppos[i])
        k = int(np.searchsorted(self.starts, p, side="right") - 1)
        if self._ds is None:
            self._ds = StreamingDataset(
                self.uri, cache_dir=_cache_arg(self), storage_options=self.storage_options, batch_decode=PER_ITEM
            )
        item = _read(self._ds, ChunkedIndex(index=p, chunk_index=k), self, k)
        self.check(item, int(self.src_ids[i]), k)
        return self.decode(item, k, draft)


def _cache_arg(split: PreparedSplit) -> str | None:
    return str(split.cache / "chunks" / split.name) if is_remote(split.root) else None


def _read(ds: StreamingDataset, index: ChunkedIndex, split: PreparedSplit, k: int) -> dict:
    try:
        return StreamingDataset.__getitem__(ds, index)
    except Exception as e:  # litdata's own errors do not say which file
        raise ValueError(f"cannot read chunk {split.chunk_path(k)}: {type(e).__name__}: {e}") from e


# ---- training: one litdata region of interest per (chunk, copy) -------------------------------------------------


class ViewStream(StreamingDataset):
    """Every sample of a LabeledView over a PreparedSplit (copies included), streamed by litdata.

    Entry e = (chunk k, copy c) with region [0, m_k): position q is the q-th selected image of chunk k, whose
    label is c * n + j (instance labels; j = its position in the view) or its class.
    """

    def __init__(self, view: LabeledView, seed: int, shuffle: bool = True, skip_bad: bool = False, bad=None):
        split: PreparedSplit = view.base
        super().__init__(
            split.uri, cache_dir=_cache_arg(split), shuffle=shuffle, seed=seed, storage_options=split.storage_options,
            batch_decode=PER_ITEM,
        )  # fmt: skip
        self.split, self.skip_bad, self.bad = split, skip_bad, bad
        self.transform_fn, self.instance, self.n = view.transform, view.instance, view.n
        self.view_labels = np.asarray(view.labels, dtype=np.int64)
        self.view_src = split.src_ids[np.asarray(view.index)]
        pos = split.ppos[np.asarray(view.index)]  # prepared positions, in view order j
        k = np.searchsorted(split.starts, pos, side="right") - 1
        order = np.lexsort((pos, k))
        counts = np.bincount(k, minlength=len(split.files))
        self._loc = (pos[order] - split.starts[k[order]]).astype(np.int64)  # in-chunk position of each selected
        self._j = order.astype(np.int64)
        self._off = np.concatenate([[0], np.cumsum(counts)])
        used = np.flatnonzero(counts)
        self._chunk = np.tile(used, view.copies)
        self._copy = np.repeat(np.arange(view.copies), len(used))
        self.subsampled_files = [split.files[i] for i in self._chunk]
        self.region_of_interest = [(0, int(counts[i])) for i in self._chunk]  # python ints: weights_only checkpoints
        sizes = split.sizes[self._chunk]
        self._begin = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)  # litdata's entry offsets

    def __getitem__(self, index):
        if not isinstance(index, ChunkedIndex):
            raise TypeError("ViewStream is iterated by litdata; read single images through the DataModule's views")
        e = index.chunk_index
        k, begin = int(self._chunk[e]), int(self._begin[e])
        t = int(self._off[k]) + index.index - begin
        real = ChunkedIndex(
            index=begin + int(self._loc[t]),
            chunk_index=e,
            chunk_size=index.chunk_size,
            chunk_indexes=index.chunk_indexes,
            is_last_index=index.is_last_index,
        )
        j = int(self._j[t])
        item = _read(self, real, self.split, k)
        self.split.check(item, int(self.view_src[j]), k)
        label = int(self._copy[e]) * self.n + j if self.instance else int(self.view_labels[j])
        x = read_or_skip(lambda: self.split.decode(item, k), self.skip_bad, self.bad)
        if x is None:
            return None
        if self.transform_fn is not None:
            x = self.transform_fn(x)
        return x, label


class EpochStreamingDataLoader(StreamingDataLoader):
    """litdata's loader with its epoch tied to Lightning's: litdata counts the epochs it iterated (a run resumed
    from an end-of-epoch checkpoint, whose loader state Lightning does not restore, would replay epoch 1's order).
    Lightning calls `sampler.set_epoch` at every epoch start, so the sampler gets one; a state restored mid-epoch
    keeps its own epoch. A state saved after the last batch resumes at the next epoch (not an empty replay)."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.sampler.set_epoch = self.set_epoch  # an _InfiniteConstantSampler: IterableDatasets take no sampler

    def set_epoch(self, epoch: int) -> None:
        if not self.restore:
            self.current_epoch = epoch  # __iter__ adds 1: litdata's epochs count from 1

    def load_state_dict(self, obj: dict) -> None:
        if obj.get("num_samples_yielded", 0) >= self.dataset.get_len(self.num_workers, self.batch_size or 1):
            self.current_epoch, self.restore = obj["current_epoch"], False
            return
        super().load_state_dict(obj)


# ---- decode=gpu: encoded JPEG batches, decoded and transformed on the device --------------------------------------


class JpegBatch:
    """The encoded JPEGs of a batch. A plain object (not a tensor, list or dataclass): Lightning's transfer leaves
    it on the host, as decode_jpeg wants; `on_after_batch_transfer` decodes it on the labels' device."""

    __slots__ = ("data", "train")

    def __init__(self, data: list[torch.Tensor], train: bool):
        self.data, self.train = data, train

    def __len__(self):
        return len(self.data)


def collate_encoded(train: bool, skip_bad: bool = False):
    def collate(batch):
        batch = [b for b in batch if b is not None] if skip_bad else batch
        if not batch:
            return None
        return JpegBatch([b[0] for b in batch], train), torch.tensor([b[1] for b in batch], dtype=torch.int64)

    return collate


class DeviceDecoder:
    """Batched decode_jpeg on a device, then the CPU path's own transforms as tensor ops there: geometric ops per
    image where they are random (training) or per group of equal-shape images (evaluation), dtype + normalize
    batched. The ops are taken from make_transform's pipeline, so both paths apply the same transforms."""

    def __init__(self, t_train, t_eval, mean, std, channels: int):
        self.geo_train, self.geo_eval = _geometric(t_train), _geometric(t_eval)
        self.mean, self.std, self.channels = list(mean), list(std), channels

    def __call__(self, batch: JpegBatch, device) -> torch.Tensor:
        from torchvision.io import ImageReadMode, decode_jpeg

        mode = ImageReadMode.RGB if self.channels == 3 else ImageReadMode.GRAY
        with warnings.catch_warnings():  # torchvision 0.29 deprecates its codecs for TorchCodec's (open point)
            warnings.simplefilter("ignore", DeprecationWarning)
            imgs = decode_jpeg(batch.data, mode=mode, device=device)  # list of uint8 [C, H, W] on device
        geo = self.geo_train if batch.train else self.geo_eval
        if batch.train:
            out = [geo(im) for im in imgs]
        else:
            out = [None] * len(imgs)
            groups: dict[tuple, list[int]] = {}
            for i, im in enumerate(imgs):
                groups.setdefault(tuple(im.shape), []).append(i)
            for idx in groups.values():
                y = geo(torch.stack([imgs[i] for i in idx]))  # [G, C, h, w]: one resize/crop per shape
                for i, yi in zip(idx, y, strict=True):
                    out[i] = yi
        x = TF.to_dtype(torch.stack(out), torch.float32, scale=True)  # [B, C, h, w]
        return TF.normalize(x, self.mean, self.std)


def _geometric(t):
    from torchvision.transforms import v2

    ops = list(t.transforms)
    assert isinstance(ops[0], v2.ToImage) and isinstance(ops[-1], v2.Normalize), ops
    return v2.Compose(ops[1:-2])  # between ToImage and ToDtype + Normalize


def _uint8_part(t):
    """A make_transform pipeline without its last two ops (ToDtype + Normalize): loaders apply those per batch."""
    from torchvision.transforms import v2

    ops = list(t.transforms)
    assert isinstance(ops[-2], v2.ToDtype) and isinstance(ops[-1], v2.Normalize), ops
    return v2.Compose(ops[:-2])


def collate_normalized(mean, std, skip_bad: bool = False):
    """default_collate of uint8 images, then ToDtype + Normalize on the whole batch: the same element-wise ops as
    per image (bit-identical), one call per batch instead of one per image, and 4x fewer bytes from the workers."""
    mean, std = list(mean), list(std)

    def collate(batch):
        batch = [b for b in batch if b is not None] if skip_bad else batch
        if not batch:
            return None
        x, y = default_collate(batch)
        return TF.normalize(TF.to_dtype(x, torch.float32, scale=True), mean, std), y

    return collate


def _loader_view(ds, gpu: bool):
    """The same view for a loader: JPEG bytes and no transform (decode=gpu), or uint8 images (normalized per batch)."""
    if isinstance(ds, Subset):
        return Subset(_loader_view(ds.ds, gpu), ds.idx)
    twin = object.__new__(LabeledView)
    if gpu:
        twin.__dict__.update(ds.__dict__, base=ds.base.encoded_twin(), transform=None)
    else:
        t = _uint8_part(ds.transform)
        if len(t.transforms) == 1 and ds.base.fmt == "raw":
            t = None  # only ToImage left, and raw images already are uint8 tensors
        twin.__dict__.update(ds.__dict__, transform=t)
    return twin


# ---- the DataModule ---------------------------------------------------------------------------------------------


class StreamingDataModule(LSCDataModule):
    """A prepared dir (`python -m lsc.prepare`), local or s3://: every label view of the source DataModule, its
    transforms, its held-out validation split; training streams through litdata (see the module docstring).

    Args:
        root: the prepared dir or URI (s3://bucket/prefix: litdata fetches chunks into cache_dir).
        decode: cpu (loader workers decode) or gpu (JPEG only: decode_jpeg + transforms on the training device).
        cache_dir: where remote chunks and side files are cached (default ~/.cache/lsc/streaming/<hash of root>).
        storage_options: passed to litdata for remote roots (credentials, endpoint).
        transforms, val_fraction: null = the source config's (recorded in the manifest).
    """

    def __init__(
        self,
        root: str | None = None,
        decode: str = "cpu",
        cache_dir: str | None = None,
        storage_options: dict | None = None,
        transforms: str | None = None,
        val_fraction: float | None = None,
        batch_size: int | None = None,
        num_workers: int | None = None,
        **kw,
    ):
        if root is None:
            raise ValueError("data=streaming needs data.root=<dir written by `python -m lsc.prepare`> (or s3://...)")
        if decode not in DECODERS:
            raise ValueError(f"data.decode must be one of {', '.join(DECODERS)}, got {decode!r}")
        quiet_litdata()
        self.root, self.decode = str(root), decode
        self.storage_options = dict(storage_options) if storage_options else None
        digest = hashlib.sha1(self.root.encode()).hexdigest()[:12]
        self.cache = Path(cache_dir or Path.home() / ".cache" / "lsc" / "streaming" / digest)
        self._manifest, self._decoder = None, None
        # null: as the source's own config trained (read with the manifest, at first use: nothing is read here)
        given = (("transforms", transforms), ("val_fraction", val_fraction), ("batch_size", batch_size),
                 ("num_workers", num_workers))  # fmt: skip
        self._inherit = {k for k, v in given if v is None}
        transforms, val_fraction = transforms or "none", 0.1 if val_fraction is None else val_fraction
        super().__init__(transforms=transforms, val_fraction=val_fraction, batch_size=batch_size or 64,
                         num_workers=num_workers or 0, **kw)  # fmt: skip

    @property
    def manifest(self) -> dict:
        if self._manifest is None:
            if not is_remote(self.root) and not Path(self.root).is_dir():
                raise FileNotFoundError(
                    f"prepared data not found at data.root={self.root}; run `python -m lsc.prepare`"
                )
            m = read_manifest(self.root, self.cache, self.storage_options)
            src = m.get("source") or {}
            if "transforms" in self._inherit:
                self.transforms = src.get("transforms", "none")
            if "val_fraction" in self._inherit:
                self.val_fraction = float(src.get("val_fraction", 0.1))
            if "batch_size" in self._inherit:  # the in-memory run's steps per epoch (256 vs 64: 4x fewer steps)
                self.batch_size = int(src.get("batch_size") or 64)
            if "num_workers" in self._inherit:
                self.num_workers = int(src.get("num_workers") or 0)
            if self.decode == "gpu" and m["format"] != "jpeg":
                raise ValueError(
                    f"data.decode=gpu decodes JPEG chunks; {self.root} holds format={m['format']} (use decode=cpu)"
                )
            if self.decode == "gpu" and int(m["channels"]) == 3 and stored_chroma(m) == 420:
                warnings.warn(
                    f"{self.root} holds 4:2:0 JPEGs: data.decode=gpu (nvJPEG) upsamples their chroma by nearest "
                    "neighbour where the CPU path (PIL) interpolates, so training and evaluation see other colours "
                    "(~12 of 255 levels on textured images); prepare again with chroma=444 (the default), or use "
                    "data.decode=cpu",
                    stacklevel=2,
                )
            self._manifest = m
        return self._manifest

    mean = property(lambda self: tuple(self.manifest["mean"]))
    std = property(lambda self: tuple(self.manifest["std"]))
    channels = property(lambda self: int(self.manifest["channels"]))
    native_size = property(lambda self: int(self.manifest["native_size"]))
    large_images = property(lambda self: bool(self.manifest["large_images"]))

    @property
    def class_names(self) -> list[str] | None:
        names = self.manifest.get("class_names")
        return None if self.instance_labels or not names else list(names[: self.num_classes])

    def _load(self):
        m = self.manifest
        splits = [
            PreparedSplit(self.root, s, m, self.cache, self.storage_options) if s in m["splits"] else None
            for s in ("train", "test")
        ]
        return splits[0], (None if self.instance_labels else splits[1])

    def setup(self, stage: str | None = None):
        super().setup(stage)
        if self.decode == "gpu" and self._decoder is None:
            args = (self.out_size, self.mean, self.std, self.native_size, self.large_images)
            t_train = make_transform(self.transforms, True, *args)
            self._decoder = DeviceDecoder(
                t_train, make_transform("none", False, *args), self.mean, self.std, self.channels
            )

    def _loader(self, ds, train=False):
        skip = self.on_bad_image == "skip"
        gpu = self.decode == "gpu" and not getattr(self, "_cpu_loader", False)
        common = dict(
            batch_size=self._per_device_batch(),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
        )
        view = _loader_view(ds, gpu)
        collate = collate_encoded(train, skip) if gpu else collate_normalized(self.mean, self.std, skip)
        if train:
            # Lightning's caution for sized IterableDatasets: litdata shards per rank and worker, the length is exact
            warnings.filterwarnings("ignore", message=r".*Your `IterableDataset` has `__len__` defined.*")
            stream = ViewStream(view, self.seed, shuffle=True, skip_bad=skip, bad=self.bad_images)
            return EpochStreamingDataLoader(stream, collate_fn=collate, **common)
        return StatefulDataLoader(view, persistent_workers=self.num_workers > 0, collate_fn=collate, **common)

    def train_eval_dataloader(self):
        # PredictorAccuracy iterates it by hand (no Lightning transfer hooks): always decoded on the CPU
        self._cpu_loader = True
        try:
            return super().train_eval_dataloader()
        finally:
            self._cpu_loader = False

    def on_after_batch_transfer(self, batch, dataloader_idx: int = 0):
        if batch is not None and isinstance(batch[0], JpegBatch):
            if self._decoder is None:
                self.setup("fit")
            return self._decoder(batch[0], batch[1].device), batch[1]
        return batch
