"""The prototype pass at scale (lsc.centers.prototypes): reduced-size JPEG decoding against the full decode, the cache
(hit, keyed by the data, refused for other data), resume after kill -9 (the same sums as an uninterrupted pass) and
DDP (rank 0 computes, the others read its entry)."""

import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import make_cfg

from lsc.centers.prototypes import _reduced_view, class_prototypes
from lsc.data import ImageFolderDataModule, SyntheticDataModule

N_CLASSES, PER_CLASS = 4, 5


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """400x300 JPEGs (the benchmark's generated photos), N_CLASSES folders."""
    from lsc.bench.data import photo

    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(N_CLASSES * PER_CLASS):
        d = root / "train" / f"c{i % N_CLASSES}"
        d.mkdir(parents=True, exist_ok=True)
        photo(rng).save(d / f"{i:03d}.jpg", quality=90)
    return root


def folder_dm(root, **kw):
    return ImageFolderDataModule(
        root=str(root), val_dir=None, check_images=False, img_size=224, transforms="none", num_workers=0,
        batch_size=8, val_fraction=0.05, seed=0, **kw,
    )  # fmt: skip


def test_draft_decoding_reads_small_images_and_gives_the_full_decodes_prototypes(photos):
    """decode=draft: each JPEG is decoded at 1/4 (100x75 for the eval crop at 32 px), never at full size, and the
    prototypes match decode=full's (eval transform at 224 px + average pooling to 32) to cosine >= 0.95 per class;
    per image >= 0.95 too (centred, as the pass uses them)."""
    dm = folder_dm(photos)
    dm.setup("fit")
    full = class_prototypes(dm, 24, decode="full", size=32)
    draft = class_prototypes(dm, 24, decode="draft", size=32)
    assert F.cosine_similarity(full, draft, dim=1).min() > 0.95
    assert not torch.equal(full, draft)  # the draft path really ran
    ds = dm.prototype_set()
    small, tf = _reduced_view(ds, dm, 32)
    img = small.base.image(0)
    assert max(img.size) <= 400 // 4 and min(img.size) >= round(2 * 32 / 0.875)  # DCT-scaled, >= 2x the crop
    a = torch.stack([F.adaptive_avg_pool2d(ds[i][0][None], 32)[0] for i in range(len(ds))]).flatten(1).double()
    b = tf.normalize(torch.stack([small[i][0] for i in range(len(ds))])).flatten(1)
    assert F.cosine_similarity(a - a.mean(0), b - b.mean(0), dim=1).min() > 0.95


def _jpeg(w, h, subsampling, progressive, mode, seed=0):
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    im = Image.fromarray(a).resize((w, h), Image.BICUBIC).convert(mode)
    b = io.BytesIO()
    im.save(b, "JPEG", quality=90, subsampling=subsampling, progressive=progressive)
    return b.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_open_draft_gives_pils_draft_pixels(mode, monkeypatch):
    """open_draft decodes a JPEG with simplejpeg at PIL's draft scale: the same size and the same pixels as PIL's
    Image.open + draft + convert (the reference), for colour and grey JPEGs, 4:4:4 / 4:2:2 / 4:2:0, baseline and
    progressive, sizes that are and are not multiples of the scale, and images smaller than the draft; CMYK JPEGs
    and other formats go to PIL (where they decode as PIL decodes them)."""
    import io

    import simplejpeg
    from PIL import Image

    import lsc.data.base as base

    calls = []
    real = simplejpeg.decode_jpeg
    monkeypatch.setattr(simplejpeg, "decode_jpeg", lambda *a, **k: calls.append(1) or real(*a, **k))

    def reference(data, want):
        im = Image.open(io.BytesIO(data))
        im.draft(mode, want)
        return im.convert(mode)

    n = 0
    for w, h in [(400, 300), (590, 300), (641, 479), (200, 150), (73, 90)]:
        for sub in (0, 1, 2):
            for prog in (False, True):
                for src in ("RGB", "L"):
                    data = _jpeg(w, h, sub, prog, src, seed=n)
                    for want in [(74, 74), (37, 37), (100, 100)]:
                        got, ref = base.open_draft(data, mode, want), reference(data, want)
                        assert (got.size, got.mode) == (ref.size, ref.mode), (w, h, sub, prog, src, want)
                        assert np.array_equal(np.asarray(got), np.asarray(ref)), (w, h, sub, prog, src, want)
                        n += 1
    assert len(calls) == n  # every one of them was simplejpeg's decode
    rng = np.random.default_rng(0)
    for fmt, img in (("JPEG", Image.fromarray(rng.integers(0, 256, (300, 400, 4), dtype=np.uint8), "CMYK")),
                     ("PNG", Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))),):  # fmt: skip
        b = io.BytesIO()
        img.save(b, fmt)
        got, ref = base.open_draft(b.getvalue(), mode, (74, 74)), reference(b.getvalue(), (74, 74))
        assert got.size == ref.size and np.array_equal(np.asarray(got), np.asarray(ref)), fmt
    assert len(calls) == n
    with pytest.raises(OSError):  # a truncated JPEG: simplejpeg declines, PIL raises (the loaders' BadImageError)
        base.open_draft(data[: len(data) // 2], mode, (74, 74))
    assert len(calls) == n + 1
    monkeypatch.setattr(base, "SIMPLEJPEG", False)
    base.open_draft(data, mode, (74, 74))
    assert len(calls) == n + 1  # the reference path: PIL alone


def test_the_pass_is_the_same_with_pils_decoder(photos, monkeypatch):
    """The prototypes of a draft pass with simplejpeg equal those of the same pass decoded by PIL alone."""
    import lsc.data.base as base

    dm = folder_dm(photos)
    fast = class_prototypes(dm, 24, decode="draft", size=32)
    monkeypatch.setattr(base, "SIMPLEJPEG", False)
    assert torch.equal(fast, class_prototypes(dm, 24, decode="draft", size=32))


def test_small_images_take_the_eval_transform_either_way():
    """Datasets of small images (not large_images) have nothing to draft: both settings give the same sums."""
    dm = SyntheticDataModule(num_samples=40, num_classes=4, image_size=8, batch_size=8, val_fraction=0.1)
    assert torch.equal(class_prototypes(dm, 6, decode="draft"), class_prototypes(dm, 6, decode="full"))


def test_the_cache_is_read_back_and_keyed_by_the_data(photos, tmp_path, caplog):
    cache = tmp_path / "cache"
    dm = folder_dm(photos)
    first = class_prototypes(dm, 8, cache_dir=cache)
    entries = list(cache.glob("*.pt"))
    assert len(entries) == 1 and not list(cache.glob("*.partial.pt"))
    # a second pass on the same data reads the entry: it decodes only the few images its fingerprint samples
    dm2 = folder_dm(photos)
    dm2.setup("fit")
    split, calls = dm2.prototype_set().base, []
    read = split.image
    split.image = lambda i, **k: calls.append(i) or read(i, **k)
    with caplog.at_level(logging.INFO, logger="lsc.data"):
        again = class_prototypes(dm2, 8, cache_dir=cache)
    assert torch.equal(first, again) and "read from the cache" in caplog.text
    assert len(calls) <= 8 < len(dm2.prototype_set())
    # another n_dim, seed or decode is another entry
    assert class_prototypes(folder_dm(photos), 8, seed=1, cache_dir=cache).shape == first.shape
    assert len(list(cache.glob("*.pt"))) == 2
    # changed data (one file rewritten: other pixels) never reads the old entry
    victim = sorted((photos / "train" / "c1").glob("*.jpg"))[-1]
    keep = victim.read_bytes()
    try:
        from lsc.bench.data import photo

        photo(np.random.default_rng(99)).save(victim, quality=90)
        changed = class_prototypes(folder_dm(photos), 8, cache_dir=cache)
        assert not torch.allclose(changed, first)
        assert torch.allclose(changed, class_prototypes(folder_dm(photos), 8))  # = an uncached pass
    finally:
        victim.write_bytes(keep)


def test_a_cache_entry_of_other_data_is_refused(tmp_path, caplog):
    """An entry whose recorded key is not the data's (copied in, renamed) or a truncated file is ignored, recomputed
    and replaced."""
    dm = SyntheticDataModule(num_samples=40, num_classes=4, image_size=8, batch_size=8, val_fraction=0.1)
    ref = class_prototypes(dm, 6)
    class_prototypes(dm, 6, cache_dir=tmp_path)
    (entry,) = tmp_path.glob("*.pt")
    torch.save({"prototypes": torch.zeros_like(ref), "key": "another dataset"}, entry)
    with caplog.at_level(logging.WARNING, logger="lsc.data"):
        assert torch.equal(class_prototypes(dm, 6, cache_dir=tmp_path), ref)
    assert "another dataset's prototypes" in caplog.text
    entry.write_bytes(entry.read_bytes()[:50])  # truncated
    assert torch.equal(class_prototypes(dm, 6, cache_dir=tmp_path), ref)


KILLED = """
import os, signal, sys, torch
torch.set_num_threads(1)
import lsc.centers.prototypes as P
from lsc.data import SyntheticDataModule
real, calls = P._pixel_embedder, [0]
def embedder(*a, **k):
    f = real(*a, **k)
    def g(x):
        calls[0] += 1
        if calls[0] == 4:  # mid-pass, after three batches were saved
            os.kill(os.getpid(), signal.SIGKILL)
        return f(x)
    return g
P._pixel_embedder = embedder
dm = SyntheticDataModule(num_samples=80, num_classes=5, image_size=8, batch_size=8, val_fraction=0.1)
P.class_prototypes(dm, 6, batch_size=8, cache_dir=sys.argv[1], save_every=0, memory_bytes=float(sys.argv[2]))
"""


@pytest.mark.parametrize("memory_bytes", [2**31, 0], ids=["in_memory", "on_disk"])
def test_a_pass_killed_with_sigkill_resumes_where_it_stopped(tmp_path, caplog, memory_bytes):
    """kill -9 during the pass: the partial sums saved so far survive (atomic writes), the next pass continues at the
    first unsaved batch and gives exactly the prototypes of an uninterrupted pass (sums in memory or on disk)."""
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-c", textwrap.dedent(KILLED), str(cache), str(memory_bytes)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == -9, p.stderr[-2000:]
    (partial,) = cache.glob("*.partial.pt")
    assert torch.load(partial, weights_only=True)["done"] == 24  # three batches of 8
    assert not [f for f in cache.iterdir() if f.suffix in (".pt", ".npy") and ".partial" not in f.name]
    dm = SyntheticDataModule(num_samples=80, num_classes=5, image_size=8, batch_size=8, val_fraction=0.1)
    kw = dict(batch_size=8, save_every=0, memory_bytes=memory_bytes)
    with caplog.at_level(logging.INFO, logger="lsc.data"):
        resumed = class_prototypes(dm, 6, cache_dir=cache, **kw)
    assert "resuming at image 24 of 72" in caplog.text
    uninterrupted = class_prototypes(dm, 6, cache_dir=tmp_path / "other", **kw)
    assert np.array_equal(np.asarray(resumed), np.asarray(uninterrupted))  # bit for bit: the same additions in order
    assert not list(cache.glob("*.partial.pt"))


def test_under_ddp_rank_0_computes_and_the_other_ranks_read_its_entry(tmp_path):
    dm = SyntheticDataModule(num_samples=40, num_classes=4, image_size=8, batch_size=8, val_fraction=0.1)
    ref = class_prototypes(dm, 6)
    got = {}

    def rank1():
        other = SyntheticDataModule(num_samples=40, num_classes=4, image_size=8, batch_size=8, val_fraction=0.1)
        other.setup("fit")
        split, calls = other.prototype_set().base, []  # rank 1 reads only its fingerprint's few images
        read = split.image
        split.image = lambda i: calls.append(i) or read(i)
        got["p"] = class_prototypes(other, 6, cache_dir=tmp_path, rank=1)
        got["calls"] = len(calls)

    t = threading.Thread(target=rank1)
    t.start()
    time.sleep(1.0)
    assert t.is_alive() and not list(tmp_path.glob("*.pt"))  # waiting
    class_prototypes(dm, 6, cache_dir=tmp_path, rank=0)
    t.join(30)
    assert not t.is_alive() and torch.equal(got["p"], ref) and got["calls"] <= 8
    with pytest.raises(TimeoutError, match="rank 0 did not write the prototype cache"):
        class_prototypes(dm, 7, cache_dir=tmp_path, rank=1, wait_s=0.6)


def test_prepared_jpeg_chunks_are_drafted_too(photos, tmp_path):
    """data=streaming on JPEG chunks: the prepared split decodes at reduced size, and its prototypes match its own
    full decode (cosine >= 0.95) and the folder's."""
    from helpers import compose_cfg

    from lsc.data import StreamingDataModule
    from lsc.prepare import prepare

    out = tmp_path / "prep"
    ov = [f"out={out}", "data=imagefolder", f"data.root={photos}", "data.val_dir=null", "format=jpeg", "size=256"]
    prepare(compose_cfg([*ov, "num_workers=1"], config_name="prepare"))
    dm = StreamingDataModule(
        root=str(out), img_size=224, transforms="none", batch_size=8, val_fraction=0.05, seed=0, num_workers=1
    )
    dm.setup("fit")
    split = dm.prototype_set().base
    assert split.image(0).size != split.image(0, draft=(73, 73)).size
    assert min(split.image(0, draft=(73, 73)).size) >= 73
    full = class_prototypes(dm, 12, decode="full", size=32)
    draft = class_prototypes(dm, 12, decode="draft", size=32)
    assert F.cosine_similarity(full, draft, dim=1).min() > 0.95
    folder = class_prototypes(folder_dm(photos), 12, decode="draft", size=32)
    assert F.cosine_similarity(folder, draft, dim=1).min() > 0.9


def test_train_uses_the_cache_dir_from_the_config(tmp_path):
    from lsc.train import build

    def centers(*ov):
        return build(make_cfg(tmp_path, "centers.assign=data", "data=synthetic", "data.num_samples=32", *ov))[2]

    a = centers(f"centers.prototype_cache={tmp_path / 'c'}")
    assert len(list((tmp_path / "c").glob("*.pt"))) == 1
    b = centers("centers.prototype_cache=null")
    assert torch.equal(a.assignment.index_of_label, b.assignment.index_of_label)
    assert len(list((tmp_path / "c").glob("*.pt"))) == 1
    auto = centers()  # auto: $LSC_CACHE/prototypes (conftest points it at a temp dir)
    assert torch.equal(auto.assignment.index_of_label, a.assignment.index_of_label)
    assert list((Path(os.environ["LSC_CACHE"]) / "prototypes").glob("*.pt"))
    with pytest.raises(ValueError, match="prototype_cache must be auto, null or a directory"):
        centers("centers.prototype_cache=3")


# ---- on disk: class counts whose float64 sums would not fit in memory -----------------------------------------


def grid_dm(**kw):
    """200 classes, ~3 training images each."""
    return SyntheticDataModule(num_samples=600, num_classes=200, image_size=8, batch_size=32, val_fraction=0.1, **kw)


def test_on_disk_the_pass_gives_the_in_memory_prototypes_as_a_float32_memmap(tmp_path):
    """memory_bytes below the sums' size: the sums live in the cache dir and the result is <key>.npy, memory-mapped;
    it equals the in-memory pass's float64 prototypes to float32 rounding, a second call reads it back, and the
    assignment takes it as it is (the same table as from the in-memory prototypes)."""
    from lsc.centers import make_system
    from lsc.centers.assignment import assign_nearest_free

    dm = grid_dm()
    ref = class_prototypes(dm, 12, batch_size=32)
    disk = class_prototypes(dm, 12, batch_size=32, cache_dir=tmp_path, memory_bytes=0, save_every=0)
    assert isinstance(disk, np.memmap) and disk.dtype == np.float32 and disk.shape == tuple(ref.shape)
    assert np.allclose(disk, ref.numpy(), rtol=1e-5, atol=1e-5)
    assert sorted(f.suffix for f in tmp_path.iterdir()) == [".npy"]  # the spill files and partial.pt removed
    again = class_prototypes(dm, 12, batch_size=32, cache_dir=tmp_path, memory_bytes=0)
    assert isinstance(again, np.memmap) and np.array_equal(again, disk)
    back = class_prototypes(dm, 12, batch_size=32, cache_dir=tmp_path)  # in memory now: the entry as float64
    assert isinstance(back, torch.Tensor) and back.dtype == torch.float64 and np.array_equal(back.numpy(), disk)
    system = make_system("v22", 12)  # 264 vectors for 200 classes: many walk past taken ones
    a, _ = assign_nearest_free(system, ref)
    b, _ = assign_nearest_free(system, disk)
    assert torch.equal(a, b)


def test_on_disk_without_a_cache_dir_is_refused_early():
    with pytest.raises(ValueError, match=r"set centers\.prototype_cache=auto or a directory"):
        class_prototypes(grid_dm(), 12, memory_bytes=0)


def test_on_disk_a_save_killed_after_appending_resumes_exactly(tmp_path):
    """A save killed after appending its records but before recording the files' lengths: the next pass cuts the
    files back to the lengths of the save before, appends the same records again and gives the uninterrupted pass's
    prototypes, bit for bit."""
    from lsc.centers import prototypes as P

    dm = grid_dm()
    kw = dict(batch_size=32, memory_bytes=0, save_every=0)
    ref = class_prototypes(dm, 12, cache_dir=tmp_path / "ref", **kw)
    real, calls = P._DiskSums._append, [0]

    def killed(self):
        real(self)
        calls[0] += 1
        if calls[0] == 3:  # the third batch's save: its records are in the files, partial.pt still says two batches
            raise KeyboardInterrupt

    P._DiskSums._append = killed
    try:
        with pytest.raises(KeyboardInterrupt):
            class_prototypes(dm, 12, cache_dir=tmp_path / "c", **kw)
    finally:
        P._DiskSums._append = real
    c = tmp_path / "c"
    state = torch.load(next(c.glob("*.partial.pt")), weights_only=True)
    on_disk = sum(f.stat().st_size for f in next(c.glob("*.spill")).iterdir())
    assert state["done"] == 64 and on_disk == 96 * (4 + 12 * 4) > int(state["sizes"].sum())
    resumed = class_prototypes(dm, 12, cache_dir=c, **kw)
    assert np.array_equal(resumed, ref)
    assert sorted(f.suffix for f in c.iterdir()) == [".npy"]


def test_train_keeps_the_prototypes_on_disk_above_prototype_ram_gb(tmp_path):
    # the app's path: centers.prototype_ram_gb=0 puts the sums on disk; the assignment is the in-memory pass's
    from lsc.train import build

    def centers(*ov):
        cfg = make_cfg(tmp_path, "centers.assign=data", "data=synthetic", "data.num_samples=64", *ov)
        return build(cfg)[2]

    mem = centers("centers.prototype_cache=null")
    disk = centers(f"centers.prototype_cache={tmp_path / 'c'}", "centers.prototype_ram_gb=0")
    assert len(list((tmp_path / "c").glob("*.npy"))) == 1
    assert torch.equal(mem.assignment.index_of_label, disk.assignment.index_of_label)
    with pytest.raises(ValueError, match=r"more than centers\.prototype_ram_gb=0"):
        centers("centers.prototype_cache=null", "centers.prototype_ram_gb=0")


def test_on_disk_the_buffer_is_written_once_it_holds_max_rows(tmp_path):
    # memory stays bounded at any image rate: a save every max_rows images, not only every save_every seconds; the
    # records go to the file of their class range and finish sums them per class (against a brute-force index_add)
    from lsc.centers.prototypes import _Cache, _DiskSums

    acc = _DiskSums(_Cache(tmp_path, "k", 7, 3), 7, 3, max_rows=25, per_file=3)  # classes 0-2, 3-5, 6
    total, g = torch.zeros(3, dtype=torch.float64), torch.Generator().manual_seed(0)
    ys, es = [], []
    for b in range(4):
        y, e = torch.randint(0, 7, (10,), generator=g), torch.randn(10, 3, generator=g, dtype=torch.float64)
        y[:7] = torch.arange(7) if b == 0 else y[:7]  # every class has an image
        total += e.sum(0)
        acc.add(y, e, 10 * (b + 1), total)
        ys.append(y), es.append(e)
    saved = torch.load(tmp_path / "k.partial.pt", weights_only=True)
    assert acc.buffered == 10 and saved["done"] == 30 and int(saved["sizes"].sum()) == 30 * 16
    assert sorted(f.name for f in (tmp_path / "k.spill").iterdir()) == ["000000.bin", "000001.bin", "000002.bin"]
    acc.save(40, total)
    proto, seen = acc.finish(total, centred=False)
    y, e = torch.cat(ys), torch.cat(es)
    want = torch.zeros(7, 3, dtype=torch.float64).index_add_(0, y, e) / torch.bincount(y, minlength=7)[:, None]
    assert seen == 40 and np.allclose(proto, want.numpy(), atol=1e-6)
    lonely = _DiskSums(_Cache(tmp_path / "x", "k", 7, 3), 7, 3, per_file=3)
    lonely.add(torch.arange(6), torch.ones(6, 3, dtype=torch.float64), 6, total)
    lonely.save(6, total)
    with pytest.raises(ValueError, match=r"^1 class\(es\) have no training image \(first: 6\)"):
        lonely.finish(total, centred=False)
    assert not list((tmp_path / "x").glob("*.npy"))  # no half-written result left behind
