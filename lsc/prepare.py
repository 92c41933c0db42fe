"""Prepare a dataset once as litdata chunks, for `data=streaming`.

    python -m lsc.prepare data=imagefolder data.root=/data/imagenet out=/fast/imagenet-jpeg256 size=256
    python -m lsc.prepare data=imagefolder data.root=/data/imagenet out=/fast/imagenet-raw32 format=raw size=32
    python -m lsc.prepare data=cifar10 out=/fast/cifar10-raw format=raw
    python -m lsc.train data=streaming data.root=/fast/imagenet-jpeg256 ...      # or data.root=s3://bucket/prefix

Writes the source's training split (and its test split, when it has one) as <out>/train and <out>/test: litdata
datasets (optimize) of {id, label, ok, src, img} items, img = JPEG bytes (`format=jpeg`, short side resized down to
`size`, quality `quality`, 4:4:4 chroma unless `chroma=420`) or raw uint8 pixels (`format=raw`, resized and center-
cropped to size x size: the small-image regime). The images are written in a seeded random order (`seed`), so every
chunk mixes classes and litdata's chunk-wise shuffling shuffles well; <split>/ids.npy maps positions back to source
indices. The label views (limit, classes, instance labels, copies, validation hold-out) are not applied here:
data=streaming applies them when it reads. manifest.json records the source, format, size, counts, classes, the
images that failed to decode (skipped, listed) and the labels' checksums.

Resume: rerun the same command. Within a split, litdata's own checkpoints (optimize(use_checkpoint=True)) record
after every chunk a worker writes which inputs its chunks hold, so the rerun encodes only what is missing (with
the worker count of the first attempt, which litdata requires; kept in <split>/.lsc-prepare.json). A split whose
work is done is marked complete in manifest.json and never rewritten; one killed after litdata merged its
index.json but before that mark is only checked and marked. A dir that holds another source's (or format's)
manifest, or other files, is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import multiprocessing as mp
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from lsc.data.base import BadImageError
from lsc.data.streaming import (
    FORMAT_VERSION,
    FORMATS,
    MANIFEST,
    SUBSAMPLING,
    quiet_litdata,
    sha256_array,
    stored_chroma,
)
from lsc.utils import positive_int, save_json

log = logging.getLogger("lsc.prepare")
# data-config keys that select views or loaders, not content: streaming applies them; the source ignores them
VIEW_KEYS = {
    "batch_size", "num_workers", "pin_memory", "instance_labels", "copies", "limit", "classes", "transforms",
    "img_size", "val_size", "val_fraction", "val_limit", "train_eval_size", "keep_classes", "replay_per_class",
    "on_bad_image", "check_images", "download", "seed",
}  # fmt: skip
RESET = {"instance_labels": False, "copies": 1, "limit": None, "classes": None, "keep_classes": None,
         "replay_per_class": 0, "check_images": False}  # fmt: skip


def build_source(data_cfg: DictConfig):
    """(DataModule, description): the whole source (no views; every image decoded here, so no up-front check)."""
    cfg = OmegaConf.to_container(data_cfg, resolve=True)
    target = cfg["_target_"]
    content = {k: v for k, v in cfg.items() if k != "_target_" and k not in VIEW_KEYS}
    if target.endswith("SyntheticDataModule"):
        content["seed"] = cfg.get("seed")  # synthetic pixels are a function of the seed
    dm = hydra.utils.instantiate({**cfg, **{k: v for k, v in RESET.items() if k in cfg}})
    desc = f"{target}({', '.join(f'{k}={v}' for k, v in sorted(content.items()))})"
    return dm, desc


def to_pil(img, channels: int):
    from PIL import Image

    if isinstance(img, torch.Tensor):
        a = img.numpy() if img.dtype == torch.uint8 else (img.float().clamp(0, 1) * 255).round().byte().numpy()
        return Image.fromarray(a[0]) if a.shape[0] == 1 else Image.fromarray(a.transpose(1, 2, 0))
    return img.convert("L" if channels == 1 else "RGB")


def encode(img, fmt: str, size: int, quality: int, channels: int, chroma: int = 444) -> bytes:
    """raw: short side resized to `size`, center crop size x size, uint8 [C, size, size] bytes. jpeg: short side
    resized down to `size` (never up), JPEG at `quality` with 4:4:4 or 4:2:0 chroma (`chroma`). Resizes are
    torchvision's (bilinear, antialiased)."""
    from torchvision.transforms.v2 import functional as TF

    im = to_pil(img, channels)
    if fmt == "raw":
        if im.size != (size, size):
            im = TF.center_crop(TF.resize(im, [size], antialias=True), [size, size])
        a = np.asarray(im, dtype=np.uint8)
        return (a[None] if a.ndim == 2 else a.transpose(2, 0, 1)).tobytes()
    if min(im.size) > size:
        im = TF.resize(im, [size], antialias=True)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality, subsampling=SUBSAMPLING[chroma])
    return buf.getvalue()


RAW_MAX = 64  # format=auto stores images up to this size raw (uint8, lossless), larger ones as JPEG


def resolve_size(size, fmt: str, dm) -> int:
    """Default: what the eval transform reads (raw: the model's input size, so nothing is resampled; jpeg:
    out_size / 0.875 for ImageNet-style images)."""
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive integer or null, got {size!r}")
        return size
    if fmt == "raw":
        return dm.out_size
    return int(round(dm.out_size / 0.875)) if dm.large_images else dm.out_size


def native_size(fmt: str, size: int, dm) -> int:
    """The output size data=streaming defaults to: what the stored images give without upsampling."""
    if fmt == "raw":
        return size
    return min(dm.out_size, int(round(size * 0.875)) if dm.large_images else size)


def fingerprint(dm, splits: dict) -> str:
    """The source's identity: its class, sizes, labels and the pixels of a few images (not its config's spelling,
    so a moved folder is the same source and a synthetic set of another seed is not)."""
    h = hashlib.sha256(type(dm).__name__.encode())
    for name, s in splits.items():
        h.update(f"{name}:{len(s)}".encode())
        h.update(np.asarray(s.targets, dtype=np.int64).tobytes())
        for i in sorted({0, len(s) // 2, len(s) - 1}):
            try:
                h.update(np.asarray(to_pil(s.image(i), dm.channels)).tobytes())
            except BadImageError:
                h.update(b"bad")
    return h.hexdigest()


class Encoder:
    """optimize's fn: source index -> item. An image that fails to decode becomes an `ok=0` placeholder (so every
    input still yields one item and litdata's resume offsets stay exact), listed in <split>/.bad/."""

    def __init__(self, split, fmt, size, quality, channels, src_key, bad_dir: Path, counter, chroma=444):
        self.split, self.fmt, self.size, self.quality, self.channels = split, fmt, size, quality, channels
        self.chroma = chroma
        self.src_key, self.bad_dir, self.counter = src_key, bad_dir, counter
        self.labels = np.asarray(split.targets, dtype=np.int64)

    def __call__(self, i: int) -> dict:
        ok, img = 1, b""
        try:
            img = encode(self.split.image(i), self.fmt, self.size, self.quality, self.channels, self.chroma)
        except BadImageError as e:
            ok = 0
            with open(self.bad_dir / f"{os.getpid()}.jsonl", "a") as f:
                f.write(json.dumps({"id": int(i), "path": e.path, "error": str(e.__cause__ or e)}) + "\n")
        with self.counter.get_lock():
            self.counter.value += 1
        return {"id": int(i), "label": int(self.labels[i]), "ok": ok, "src": self.src_key, "img": img}


def _save_npy(path: Path, a: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, a)
    os.replace(tmp, path)


def _done_before(d: Path) -> int:
    """Inputs litdata's checkpoints say are written (for the progress bar only)."""
    n = 0
    for f in (d / ".checkpoints").glob("checkpoint-*.json"):
        try:
            n += int(json.loads(f.read_text()).get("inputs_done", 0))
        except (OSError, ValueError):
            pass
    return n


def _progress(total: int, initial: int, counter, desc: str, stop: threading.Event):
    from tqdm import tqdm

    with tqdm(total=total, initial=initial, desc=desc, unit="img", mininterval=1, dynamic_ncols=True) as bar:
        while not stop.wait(0.5):
            bar.update(initial + counter.value - bar.n)
        bar.update(initial + counter.value - bar.n)


def _verify(d: Path, ids: np.ndarray, src_key: int) -> dict:
    """index.json holds every input once, in the order given (first and last item of every chunk checked)."""
    from litdata import StreamingDataset
    from litdata.streaming.sampler import ChunkedIndex

    index = json.loads((d / "index.json").read_text())
    sizes = [c["chunk_size"] for c in index["chunks"]]
    if sum(sizes) != len(ids):
        raise RuntimeError(f"{d / 'index.json'} lists {sum(sizes):,} of {len(ids):,} images; rerun to finish")
    ds, start = StreamingDataset(str(d)), 0
    for k, n in enumerate(sizes):
        for p in (start, start + n - 1):
            item = ds[ChunkedIndex(index=p, chunk_index=k)]
            if item["id"] != ids[p] or item["src"] != src_key:
                raise RuntimeError(f"{d / index['chunks'][k]['filename']}: sample {item['id']} at position {p}, "
                                   f"expected {ids[p]}; delete {d} and rerun")  # fmt: skip
        start += n
    return index


def prepare_split(split, name: str, out: Path, manifest: dict, opts: dict) -> dict:
    d = out / name
    entry = manifest["splits"].get(name) or {}
    if entry.get("complete"):
        print(f"lsc.prepare: {name} already complete ({entry['count']:,} images), skipped", flush=True)
        return entry
    n = len(split)
    labels = np.asarray(split.targets, dtype=np.int64)
    ids = np.random.default_rng([opts["seed"], 0 if name == "train" else 1]).permutation(n)
    d.mkdir(parents=True, exist_ok=True)
    for fname, arr in (("labels.npy", labels), ("ids.npy", ids)):
        if not (d / fname).exists():
            _save_npy(d / fname, arr)
        elif not np.array_equal(np.load(d / fname), arr):
            raise ValueError(f"{d / fname} belongs to another source or seed; delete {d} or choose another out=")
    state = d / ".lsc-prepare.json"
    workers = json.loads(state.read_text())["num_workers"] if state.exists() else None
    if workers is None:
        workers = max(1, min(opts["num_workers"] or min(os.cpu_count() or 1, 8), n))
        state.write_text(json.dumps({"num_workers": workers}))
    index = d / "index.json"
    if index.exists() and sum(c["chunk_size"] for c in json.loads(index.read_text())["chunks"]) != n:
        index.unlink()  # litdata merged the chunks of a run whose worker was killed: encode what is missing
    bad_dir = d / ".bad"
    bad_dir.mkdir(exist_ok=True)
    if not index.exists():
        from litdata import optimize

        ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        counter = ctx.Value("q", 0)
        fn = Encoder(split, opts["format"], opts["size"], opts["quality"], opts["channels"], opts["src_key"],
                     bad_dir, counter, opts.get("chroma", 444))  # fmt: skip
        stop = threading.Event()
        bar = threading.Thread(target=_progress, args=(n, _done_before(d), counter, f"prepare {name}", stop))
        bar.start()
        try:
            optimize(
                fn,
                ids.tolist(),  # shuffled once: every chunk mixes classes
                str(d),
                chunk_size=opts["chunk_size"],
                chunk_bytes=None if opts["chunk_size"] else opts["chunk_bytes"],
                num_workers=workers,
                use_checkpoint=True,  # litdata's resume: a rerun skips the inputs of every chunk written
                reorder_files=False,
                start_method=ctx.get_start_method(),
                verbose=False,
            )
        finally:
            stop.set()
            bar.join()
    idx = _verify(d, ids, opts["src_key"])
    bad = {}
    for f in bad_dir.glob("*.jsonl"):  # a chunk encoded twice (killed before its checkpoint) lists its images twice
        for line in f.read_text().splitlines():
            if line.strip():
                b = json.loads(line)
                bad[b["id"]] = b
    entry = {
        "count": n,
        "images": n - len(bad),
        "bad": len(bad),
        "bad_images": [bad[k] for k in sorted(bad)],
        "classes": int(labels.max()) + 1 if n else 0,
        "labels_sha256": sha256_array(labels),
        "ids_sha256": sha256_array(ids),
        "chunks": len(idx["chunks"]),
        "bytes": int(sum(c["chunk_bytes"] for c in idx["chunks"])),
        "num_workers": workers,
        "complete": True,
    }
    shutil.rmtree(bad_dir, ignore_errors=True)
    state.unlink(missing_ok=True)
    if bad:
        log.warning(f"{name}: skipped {len(bad):,} image(s) that fail to decode, e.g. {entry['bad_images'][0]['path']}")
    return entry


def open_manifest(out: Path, new: dict) -> dict:
    """The manifest to continue: this source's (resume), a fresh one, or a refusal."""
    path = out / MANIFEST
    if path.exists():
        old = json.loads(path.read_text())
        keys = ("src_key", "format", "size", "quality", "chroma", "seed")
        old = {**old, "chroma": stored_chroma(old)}
        diff = [k for k in keys if old.get(k) != new[k]]
        if diff:
            settings = lambda m: ", ".join(f"{k}={m.get(k)}" for k in keys[1:])  # noqa: E731
            raise ValueError(
                f"{path} was written for {old.get('description')} ({settings(old)}); this run prepares "
                f"{new['description']} ({settings(new)}): choose another out= (or delete {out})"
            )
        return {**new, "splits": old.get("splits", {}), "created": old.get("created", new["created"])}
    if out.exists() and any(out.iterdir()):
        raise ValueError(
            f"out={out} holds files but no {MANIFEST}: refusing to write into it; choose a new or empty dir"
        )
    out.mkdir(parents=True, exist_ok=True)
    return new


BYTES = re.compile(r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$", re.I)


def check_chunking(cfg: DictConfig) -> None:
    """num_workers, chunk_size and chunk_bytes refused before anything is written."""
    w, n, b = cfg.get("num_workers"), cfg.get("chunk_size"), cfg.get("chunk_bytes", "64MB")
    positive_int("num_workers", w, allow_none=True, hint="null: min(cores, 8)")
    positive_int("chunk_size", n, allow_none=True, hint="images per chunk")
    if n is None and not (
        isinstance(b, int) and not isinstance(b, bool) and b > 0 or isinstance(b, str) and BYTES.match(b)
    ):
        raise ValueError(f"chunk_bytes must be a size like 64MB (or a positive number of bytes), got {b!r}")


def prepare(cfg: DictConfig) -> dict:
    """Write (or finish) the prepared dir; returns its manifest."""
    if not cfg.get("out"):
        raise ValueError("lsc.prepare needs out=<dir for the prepared chunks>, e.g. out=/fast/imagenet-jpeg")
    fmt = cfg.get("format", "auto")
    if fmt not in (*FORMATS, "auto"):
        raise ValueError(f"format must be auto or one of {', '.join(FORMATS)}, got {fmt!r}")
    quality = int(cfg.get("quality", 90))
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must lie in 1..100, got {quality}")
    chroma = cfg.get("chroma", 444)
    if chroma not in SUBSAMPLING:
        raise ValueError(f"chroma must be 444 (full-resolution colour) or 420 (halved), got {chroma!r}")
    check_chunking(cfg)
    out = Path(cfg.out).expanduser()
    t0 = time.time()
    quiet_litdata()
    dm, desc = build_source(cfg.data)
    if fmt == "auto":  # small images lossless (JPEG at 8-64 px blurs what tells them apart), photos as JPEG
        fmt = "raw" if not dm.large_images and dm.out_size <= RAW_MAX else "jpeg"
    train, test = dm.raw()
    if len(train) == 0:
        raise ValueError(f"the source {desc} has no training images")
    splits = {"train": train, **({"test": test} if test is not None else {})}
    size = resolve_size(cfg.get("size"), fmt, dm)
    key = fingerprint(dm, splits)
    class_names = sorted(train.class_to_idx, key=train.class_to_idx.get) if hasattr(train, "class_to_idx") else None
    if class_names is None and getattr(dm, "label_names", None):
        class_names = list(dm.label_names)
    manifest = open_manifest(
        out,
        {
            "lsc_prepared": FORMAT_VERSION,
            "complete": False,
            "description": desc,
            "source": OmegaConf.to_container(cfg.data, resolve=True),
            "src_key": int(key[:15], 16),
            "fingerprint": key,
            "format": fmt,
            "size": size,
            "quality": quality if fmt == "jpeg" else None,
            "chroma": chroma if fmt == "jpeg" else None,
            "seed": int(cfg.get("seed", 0)),
            "channels": dm.channels,
            "mean": list(dm.mean),
            "std": list(dm.std),
            # raw images are stored square (small-image transforms); JPEGs keep the source's (ImageNet-style) eval
            "native_size": native_size(fmt, size, dm),
            "large_images": bool(dm.large_images) and fmt == "jpeg",
            "classes": int(train.targets.max()) + 1,
            "class_names": class_names,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "splits": {},
        },
    )
    save_json(out / MANIFEST, manifest)
    opts = {
        "format": fmt, "size": size, "quality": quality, "chroma": chroma, "channels": dm.channels,
        "src_key": manifest["src_key"],
        "seed": manifest["seed"], "num_workers": cfg.get("num_workers"), "chunk_size": cfg.get("chunk_size"),
        "chunk_bytes": cfg.get("chunk_bytes", "64MB"),
    }  # fmt: skip
    for name, split in splits.items():
        manifest["splits"][name] = prepare_split(split, name, out, manifest, opts)
        save_json(out / MANIFEST, manifest)
    manifest["complete"] = True
    save_json(out / MANIFEST, manifest)
    parts = [
        f"{k} {v['images']:,} images ({v['bad']} unreadable, {v['chunks']} chunks)"
        for k, v in manifest["splits"].items()
    ]
    print(f"lsc.prepare: {out} ({fmt} {size} px): {'; '.join(parts)} in {time.time() - t0:.0f} s", flush=True)
    return manifest


@hydra.main(version_base="1.3", config_path="../conf", config_name="prepare")
def main(cfg: DictConfig) -> None:
    prepare(cfg)


if __name__ == "__main__":
    main()
