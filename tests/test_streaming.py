"""Prepared data (lsc.prepare) and data=streaming (litdata): round trips against the source data, every label view,
refusals and bad inputs, order per (seed, epoch), exact mid-epoch resume, decode=gpu, the data-wait monitor.

References are independent of the code under test: scikit-learn's digits arrays, the CIFAR pickles written here,
PIL's decode of the stored bytes (read back through litdata, not through lsc), class-folder names, and the source
DataModule's own views (data=streaming must serve exactly what data=<source> serves).
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from helpers import (
    ROOT,
    compose_cfg,
    crash_and_resume,
    make_cfg,
    make_cifar,
    make_image_folder,
    recorded_batches,
    subprocess_env,
)
from PIL import Image
from sklearn.datasets import load_digits

import lsc.eval
import lsc.train
from lsc.callbacks import DataWaitMonitor
from lsc.data import DigitsDataModule, ImageFolderDataModule, StreamingDataModule
from lsc.data.streaming import JpegBatch, PreparedSplit
from lsc.prepare import prepare


def run_prepare(out, *overrides: str) -> dict:
    return prepare(compose_cfg([f"out={out}", *overrides], config_name="prepare"))


def litdata_items(split_dir: Path) -> list[dict]:
    """Every stored item in prepared order, read by litdata alone."""
    from litdata import StreamingDataset

    ds = StreamingDataset(str(split_dir))
    return [ds[i] for i in range(len(ds))]


def noise_folder(root: Path, n_classes=3, per_class=6, splits=("train", "val"), size=(40, 30), seed=0) -> Path:
    """make_image_folder's tree with smooth-noise photos instead of solid colours (JPEG has something to lose)."""
    make_image_folder(root, n_classes, per_class, splits)
    rng = np.random.default_rng(seed)
    w, h = size
    for f in sorted(f for s in splits for f in (root / s).rglob("*.png")):
        lo = Image.fromarray(rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)).resize((w, h))
        a = np.asarray(lo, dtype=np.int64) + rng.integers(-10, 11, (h, w, 3))
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(f)
    return root


def digits_reference():
    d = load_digits()
    return np.round(d.images * (255 / 16)).astype(np.uint8), d.target.astype(np.int64)


def epoch_items(loader) -> collections.Counter:
    return collections.Counter((int(y), x.numpy().tobytes()) for xb, yb in loader for x, y in zip(xb, yb, strict=True))


def view_items(ds) -> collections.Counter:
    return collections.Counter((int(y), x.numpy().tobytes()) for x, y in (ds[i] for i in range(len(ds))))


@pytest.fixture(scope="module")
def digits_raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prep") / "digits-raw"
    run_prepare(out, "data=digits", "format=raw", "size=8", "num_workers=2", "chunk_size=100")
    return out


@pytest.fixture(scope="module")
def folder_jpeg(tmp_path_factory):
    """(source folder, prepared dir): 3 classes x 6 train / 2 val noise photos, one train image truncated."""
    base = tmp_path_factory.mktemp("folder")
    src = noise_folder(base / "src", per_class=6, splits=("train",))
    noise_folder(src, per_class=2, splits=("val",), seed=1)
    bad = src / "train" / "class_01" / "img_2.png"
    bad.write_bytes(bad.read_bytes()[:40])
    out = base / "jpeg"
    run_prepare(out, "data=imagefolder", f"data.root={src}", "size=16", "num_workers=2", "chunk_size=4")
    return src, out, bad


# ---- prepare -> stream round trips --------------------------------------------------------------------------------


def test_raw_round_trip_digits(digits_raw):
    images, target = digits_reference()
    m = json.loads((digits_raw / "manifest.json").read_text())
    tr = m["splits"]["train"]
    assert (m["format"], m["size"], m["channels"], m["classes"], m["complete"]) == ("raw", 8, 1, 10, True)
    assert (tr["count"], tr["images"], tr["bad"], set(m["splits"])) == (1797, 1797, 0, {"train"})  # no test split
    assert tr["labels_sha256"] == hashlib.sha256(target.tobytes()).hexdigest()
    items = litdata_items(digits_raw / "train")  # prepared order, read by litdata alone
    ids = np.array([it["id"] for it in items])
    assert sorted(ids.tolist()) == list(range(1797)) and ids.tolist() != list(range(1797))  # shuffled once
    assert np.array_equal(ids, np.load(digits_raw / "train" / "ids.npy"))
    for it in items:
        assert it["label"] == target[it["id"]] and it["ok"] == 1
        assert np.frombuffer(it["img"], np.uint8).reshape(8, 8).tolist() == images[it["id"]].tolist()
    assert min(len({it["label"] for it in items[a : a + 100]}) for a in range(0, 1700, 100)) >= 8  # chunks mix
    split = PreparedSplit(str(digits_raw), "train", m, digits_raw)  # source order, random access
    assert split.targets.tolist() == target.tolist()
    for i in (0, 1, 500, 1796):
        assert torch.equal(split.image(i), torch.from_numpy(images[i])[None])


def test_raw_round_trip_cifar_train_and_test(tmp_path):
    raw = make_cifar(tmp_path / "data", 10, n_train=20, n_test=8)
    m = run_prepare(tmp_path / "out", "data=cifar10", f"data.root={tmp_path / 'data'}", "format=raw", "num_workers=1")
    assert {k: v["count"] for k, v in m["splits"].items()} == {"train": 20, "test": 8} and m["size"] == 32
    for name in ("train", "test"):
        split = PreparedSplit(str(tmp_path / "out"), name, m, tmp_path)
        x, y = raw[name]
        assert split.targets.tolist() == y.tolist()
        assert all(torch.equal(split.image(i), torch.from_numpy(x[i].reshape(3, 32, 32))) for i in range(len(y)))
    dm = StreamingDataModule(root=str(tmp_path / "out"), val_fraction=0.2, batch_size=4)
    dm.setup("fit")
    assert [dm.test_set[i][1] for i in range(8)] == raw["test"][1].tolist()


def test_jpeg_round_trip_and_unreadable_image(folder_jpeg):
    src, out, bad = folder_jpeg
    m = json.loads((out / "manifest.json").read_text())
    tr = m["splits"]["train"]
    assert (tr["count"], tr["images"], tr["bad"]) == (18, 17, 1) and m["splits"]["test"]["images"] == 6
    assert [b["path"] for b in tr["bad_images"]] == [str(bad)]  # skipped, counted, listed
    assert m["class_names"] == ["class_00", "class_01", "class_02"] and m["size"] == 16
    split = PreparedSplit(str(out), "train", m, out)
    files = sorted(str(p) for p in (src / "train").rglob("*.png"))  # the image-folder order: sorted paths
    by_id = {it["id"]: it for it in litdata_items(out / "train")}
    assert by_id[files.index(str(bad))]["ok"] == 0 and len(split) == 17
    for i, sid in enumerate(split.src_ids):
        path, stored = files[sid], by_id[int(sid)]
        assert split.targets[i] == int(Path(path).parent.name[-2:])  # label = class folder
        ours = np.asarray(split.image(i))
        assert np.array_equal(ours, np.asarray(Image.open(io.BytesIO(stored["img"])).convert("RGB")))
        from torchvision.transforms.v2.functional import resize

        ref = resize(Image.open(path).convert("RGB"), [16])
        luma = [np.asarray(Image.fromarray(x).convert("L"), dtype=np.int64) for x in (ours, np.asarray(ref))]
        assert ours.shape == (16, 21, 3) and np.abs(luma[0] - luma[1]).mean() < 4  # JPEG q90 (4:4:4) of the source
    dm = StreamingDataModule(root=str(out), batch_size=4, img_size=8, val_fraction=0.25)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (13, 4, 6)  # 17 readable = 13 + 4


# ---- label views: data=streaming serves exactly what the source DataModule serves ---------------------------------

VIEWS = {
    "plain": {},
    "instance_copies": dict(instance_labels=True, copies=3, limit=50, val_size=10),
    "classes": dict(classes=4),
    "keep_classes": dict(keep_classes=[2, 5], replay_per_class=3),
    "limit": dict(limit=100),
}


@pytest.mark.parametrize(("view", "workers"), [(v, 0) for v in VIEWS] + [("instance_copies", 2)])
def test_label_views_match_the_source(digits_raw, view, workers):
    kw = dict(val_fraction=0.2, batch_size=64, seed=1, **VIEWS[view])
    stream, source = StreamingDataModule(root=str(digits_raw), num_workers=workers, **kw), DigitsDataModule(**kw)
    stream.setup("fit")
    source.setup("fit")
    assert stream.num_classes == source.num_classes
    loader = stream.train_dataloader()
    assert epoch_items(loader) == view_items(source.train_set)  # the same (label, pixels) multiset, one epoch
    assert [stream.val_set[i][1] for i in range(len(stream.val_set))] == [
        source.val_set[i][1] for i in range(len(source.val_set))
    ]
    assert all(torch.equal(stream.val_set[i][0], source.val_set[i][0]) for i in range(0, len(source.val_set), 7))
    index = json.loads((digits_raw / "train" / "index.json").read_text())
    files = loader.dataset.subsampled_files
    assert set(files) <= {c["filename"] for c in index["chunks"]}  # copies re-read the same chunk files
    assert len(files) == len(set(files)) * kw.get("copies", 1)


def test_order_is_a_function_of_seed_and_epoch(digits_raw):
    def orders(seed, epochs=2):
        dm = StreamingDataModule(root=str(digits_raw), instance_labels=True, limit=200, batch_size=50, seed=seed)
        dm.setup("fit")
        loader = dm.train_dataloader()
        out = []
        for e in range(epochs):
            loader.sampler.set_epoch(e)  # what Lightning does at every epoch start
            out.append([int(y) for _, yb in loader for y in yb])
        return out

    a, b, c = orders(5), orders(5), orders(6)
    assert a == b and a[0] != a[1] and a[0] != c[0]
    assert sorted(a[0]) == sorted(a[1]) == list(range(200))


def test_ddp_ranks_shard_the_epoch(digits_raw):
    from litdata.utilities.env import _DistributedEnv

    seen = []
    for rank in range(2):  # what litdata detects under a 2-process DDP run (torch.distributed initialized)
        dm = StreamingDataModule(root=str(digits_raw), instance_labels=True, limit=203, batch_size=10, seed=3)
        dm.setup("fit")
        loader = dm.train_dataloader()
        loader.dataset.distributed_env = _DistributedEnv(world_size=2, global_rank=rank, num_nodes=1)
        loader.dataset.set_drop_last(True)  # litdata's default under DDP: every rank the same number of batches
        seen.append([int(y) for _, yb in loader for y in yb])
    assert len(seen[0]) == len(seen[1]) == 100 and not set(seen[0]) & set(seen[1])  # 203 -> 2 x 100, disjoint


# ---- mid-epoch and end-of-epoch resume through lsc.train -----------------------------------------------------------

INSTANCE = [
    "data=streaming",
    "data.instance_labels=true",  # label = index: the recorded labels are the samples served
    "data.limit=48",
    "data.batch_size=4",  # 12 steps per epoch
    "data.val_size=8",
    "data.transforms=none",
    "data.num_workers=0",
    "trainer.max_epochs=2",
    "centers.n_dim=12",
]
REC = "+callbacks.recorder._target_=helpers.BatchRecorder"


@pytest.mark.parametrize("workers", [0, 2])
def test_mid_epoch_resume_serves_exactly_the_rest_of_the_epoch(digits_raw, tmp_path, workers):
    args = [*INSTANCE, f"data.root={digits_raw}", f"data.num_workers={workers}"]
    (full, before, after), (wa, wc) = crash_and_resume(tmp_path, args)  # step 17: epoch 2, batch 5 of 12
    assert len(full) == 24 and len(before) == 17 and before + after == full
    seen = sum(before[12:] + after, [])  # epoch 2: the killed run's part + the resumed run's part
    assert sorted(seen) == list(range(48))  # the same multiset as one epoch: none twice, none missed
    assert all(torch.equal(wa[k], wc[k]) for k in wa)


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_serves_exactly_one_epoch(digits_raw, tmp_path):
    """`python -m lsc.train data=streaming` killed with SIGKILL in epoch 2 right after a step checkpoint, then resumed
    from it: the samples of epoch 2 served before the checkpoint plus those served after the resume are one epoch."""
    args = [*INSTANCE, f"data.root={digits_raw}", "data.num_workers=2",
            "callbacks.last_checkpoint.every_n_train_steps=17", "~callbacks.rich_progress_bar",
            "++trainer.enable_progress_bar=false", "~logger",
            f"paths.log_dir={tmp_path / 'logs'}"]  # fmt: skip
    env = {**subprocess_env(), "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    b, c = tmp_path / "b", tmp_path / "c"

    def train(*extra):
        return subprocess.run([sys.executable, "-m", "lsc.train", *args, *extra], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)  # fmt: skip

    p = train("+callbacks.kill._target_=helpers.KillAt", "+callbacks.kill.step=17", REC,  # kill before recording
              f"+callbacks.recorder.path={tmp_path / 'b.txt'}", f"hydra.run.dir={b}")  # fmt: skip
    assert p.returncode == -signal.SIGKILL, p.stderr[-3000:]
    last = b / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 17  # epoch 2, batch 5 of 12
    p = train(REC, f"+callbacks.recorder.path={tmp_path / 'c.txt'}", f"ckpt_path={last}", f"hydra.run.dir={c}")
    assert p.returncode == 0, p.stderr[-3000:]
    before, after = recorded_batches(tmp_path / "b.txt"), recorded_batches(tmp_path / "c.txt")
    assert len(before) == 17 and len(after) == 7
    seen = sum(before[12:] + after, [])
    assert sorted(seen) == list(range(48))  # one epoch: none twice, none missed


def test_end_of_epoch_resume_continues_with_the_next_epoch(digits_raw, tmp_path):
    args = [*INSTANCE, f"data.root={digits_raw}"]
    lsc.train.train(make_cfg(tmp_path / "a", *args, REC, f"+callbacks.recorder.path={tmp_path / 'a.txt'}"))
    one = [x for x in args if not x.startswith("trainer.max_epochs")] + ["trainer.max_epochs=1"]
    lsc.train.train(make_cfg(tmp_path / "b", *one, REC, f"+callbacks.recorder.path={tmp_path / 'b.txt'}"))
    last = tmp_path / "b" / "checkpoints" / "last.ckpt"
    lsc.train.train(
        make_cfg(tmp_path / "c", *args, f"ckpt_path={last}", REC, f"+callbacks.recorder.path={tmp_path / 'c.txt'}")
    )
    full, first, second = (recorded_batches(tmp_path / f"{x}.txt") for x in "abc")
    assert first == full[:12] and second == full[12:]  # epoch 2's own order, not epoch 1 replayed


# ---- refusals and bad inputs ------------------------------------------------------------------------------------


def test_prepare_refuses_another_source_or_format(digits_raw, tmp_path):
    before = (digits_raw / "manifest.json").read_text()
    both = r"manifest\.json was written for lsc\.data\.DigitsDataModule.*this run prepares lsc\.data\.Synthetic"
    with pytest.raises(ValueError, match=both):
        run_prepare(digits_raw, "data=synthetic", "format=raw", "size=8")
    with pytest.raises(ValueError, match=r"format=raw, size=8.*format=jpeg, size=8"):
        run_prepare(digits_raw, "data=digits", "format=jpeg", "size=8")
    assert (digits_raw / "manifest.json").read_text() == before
    (tmp_path / "x.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"holds files but no manifest\.json: refusing"):
        run_prepare(tmp_path, "data=digits")


def test_prepare_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match=r"lsc\.prepare needs out=<dir"):
        prepare(compose_cfg(["data=digits"], config_name="prepare"))
    with pytest.raises(ValueError, match=r"format must be auto or one of jpeg, raw"):
        run_prepare(tmp_path / "o", "data=digits", "format=png")
    for bad, msg in (("num_workers=-2", "num_workers must be a positive integer"), ("chunk_size=0", "chunk_size must"),
                     ("chunk_bytes=lots", "chunk_bytes must be a size like 64MB")):  # fmt: skip
        with pytest.raises(ValueError, match=msg):
            run_prepare(tmp_path / "o", "data=digits", bad)
    with pytest.raises(ValueError, match=r"has no training images"):
        run_prepare(tmp_path / "o", "data=synthetic", "data.num_samples=0")
    (tmp_path / "empty" / "train" / "class_00").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no images .* under .*empty/train"):
        run_prepare(tmp_path / "o", "data=imagefolder", f"data.root={tmp_path / 'empty'}")
    assert not (tmp_path / "o").exists()  # nothing written for a refused source


def test_prepare_rerun_of_a_finished_or_merged_split_encodes_nothing(digits_raw, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(digits_raw, out)
    mtimes = {f: f.stat().st_mtime_ns for f in (out / "train").glob("chunk-*.bin")}
    run_prepare(out, "data=digits", "format=raw", "size=8")
    assert "train already complete (1,797 images), skipped" in capsys.readouterr().out
    m = json.loads((out / "manifest.json").read_text())  # killed after litdata merged index.json, before the mark
    m["complete"] = m["splits"]["train"]["complete"] = False
    (out / "manifest.json").write_text(json.dumps(m))
    m2 = run_prepare(out, "data=digits", "format=raw", "size=8")
    assert m2["complete"] and m2["splits"]["train"]["count"] == 1797
    assert {f: f.stat().st_mtime_ns for f in mtimes} == mtimes  # checked and marked, not encoded again


def _damage(name):
    def truncate(out):
        f = out / "train" / "chunk-0-1.bin"
        f.write_bytes(f.read_bytes()[:-100])
        return ValueError, r"chunk .*train/chunk-0-1\.bin is truncated or altered"

    def missing(out):
        (out / "train" / "chunk-1-0.bin").unlink()
        return FileNotFoundError, r"chunk .*train/chunk-1-0\.bin listed in .*index\.json is missing"

    def labels(out):
        np.save(out / "train" / "labels.npy", np.zeros(1797, dtype=np.int64))
        return ValueError, r"train/labels\.npy does not match .*manifest\.json \(checksum\)"

    def unfinished(out):
        m = json.loads((out / "manifest.json").read_text())
        (out / "manifest.json").write_text(json.dumps({**m, "complete": False}))
        return ValueError, r"manifest\.json: prepare did not finish; rerun"

    def no_manifest(out):
        (out / "manifest.json").unlink()
        return FileNotFoundError, r"manifest\.json not found: data\.root=.* is not a prepared dir"

    return locals()[name]


@pytest.mark.parametrize("damage", ["truncate", "missing", "labels", "unfinished", "no_manifest"])
def test_a_damaged_prepared_dir_names_the_file(digits_raw, tmp_path, damage):
    out = tmp_path / "copy"
    shutil.copytree(digits_raw, out)
    exc, match = _damage(damage)(out)
    with pytest.raises(exc, match=match):
        StreamingDataModule(root=str(out)).setup("fit")


def test_a_chunk_from_another_prepare_run_names_the_file(digits_raw, tmp_path):
    other = tmp_path / "other"
    run_prepare(other, "data=digits", "format=raw", "size=8", "num_workers=2", "chunk_size=100", "seed=1")
    out = tmp_path / "copy"
    shutil.copytree(digits_raw, out)
    shutil.copy(other / "train" / "chunk-0-0.bin", out / "train" / "chunk-0-0.bin")  # same size, other images
    dm = StreamingDataModule(root=str(out), batch_size=100)
    dm.setup("fit")
    with pytest.raises(ValueError, match=r"chunk .*train/chunk-0-0\.bin holds sample \d+ .*another prepare run"):
        list(dm.train_dataloader())


def test_streaming_bad_settings(digits_raw, tmp_path):
    with pytest.raises(ValueError, match=r"data=streaming needs data\.root="):
        StreamingDataModule()
    with pytest.raises(ValueError, match=r"data\.decode must be one of cpu, gpu"):
        StreamingDataModule(root=str(digits_raw), decode="tpu")
    with pytest.raises(ValueError, match=r"data\.decode=gpu decodes JPEG chunks; .* holds format=raw"):
        StreamingDataModule(root=str(digits_raw), decode="gpu").setup("fit")
    with pytest.raises(FileNotFoundError, match=r"prepared data not found at data\.root="):
        StreamingDataModule(root=str(tmp_path / "nowhere")).num_classes  # noqa: B018
    with pytest.raises(ValueError, match=r"data\.img_size must be a positive integer or null"):
        StreamingDataModule(root=str(digits_raw), img_size=0)
    with pytest.raises(ValueError, match=r"data\.keep_classes names classes the training data does not have: \[42\]"):
        StreamingDataModule(root=str(digits_raw), keep_classes=[3, 42]).setup("fit")


def test_remote_side_files_are_fetched_and_refreshed(digits_raw, tmp_path, monkeypatch):
    import litdata.streaming.fs_provider as fsp

    from lsc.data.streaming import fetch, read_manifest

    bucket = tmp_path / "bucket"
    shutil.copytree(digits_raw, bucket / "prep")
    got = []

    class Provider:  # s3://bucket/... served from a local folder
        def download_file(self, remote, local):
            got.append(remote)
            shutil.copy(bucket / remote.removeprefix("s3://bucket/"), local)

    monkeypatch.setattr(fsp, "_get_fs_provider", lambda url, opts: Provider())
    cache = tmp_path / "cache"
    m = read_manifest("s3://bucket/prep", cache)
    assert m["splits"]["train"]["count"] == 1797 and (cache / "manifest.json").exists()
    labels = fetch("s3://bucket/prep", "train/labels.npy", cache)
    assert got == ["s3://bucket/prep/manifest.json", "s3://bucket/prep/train/labels.npy"]
    fetch("s3://bucket/prep", "train/labels.npy", cache)
    assert len(got) == 2  # cached
    m2 = {**m, "created": "later"}  # the remote dir was prepared again: the cached side files are dropped
    (bucket / "prep" / "manifest.json").write_text(json.dumps(m2))
    assert read_manifest("s3://bucket/prep", cache)["created"] == "later" and not labels.exists()


def test_defaults_come_from_the_source_config(digits_raw):
    dm = StreamingDataModule(root=str(digits_raw))
    assert dm.num_classes == 10 and dm.val_fraction == 0.2 and dm.transforms == "none"  # conf/data/digits.yaml's
    assert (dm.channels, dm.out_size, dm.mean, dm.std) == (1, 8, (0.2,), (0.3,))


# ---- decode=gpu: the batched device path, run on the CPU here -----------------------------------------------------


def _gpu_vs_cpu(out, device):
    kw = dict(root=str(out), batch_size=4, img_size=12, val_fraction=0.25, transforms="standard")
    cpu, gpu = StreamingDataModule(decode="cpu", **kw), StreamingDataModule(decode="gpu", **kw)
    cpu.setup("fit")
    gpu.setup("fit")
    from lightning.fabric.utilities.apply_func import move_data_to_device

    for loader_c, loader_g in (
        (cpu.val_dataloader(), gpu.val_dataloader()),
        (cpu.test_dataloader(), gpu.test_dataloader()),
    ):
        for (xc, yc), raw in zip(loader_c, loader_g, strict=True):
            assert isinstance(raw[0], JpegBatch)
            moved = move_data_to_device(raw, device)
            assert moved[0] is raw[0]  # Lightning's transfer leaves the encoded bytes on the host
            xg, yg = gpu.on_after_batch_transfer(moved)
            assert xg.device.type == torch.device(device).type and xg.shape == xc.shape == (len(yc), 3, 12, 12)
            assert torch.equal(yg.cpu(), yc)
            # the same eval transform (resize 14, center crop 12) on the same pixels: 4:4:4 JPEGs need no chroma
            # upsampling, where nvJPEG and PIL differ (test_the_gpu_decode_gap_is_chroma_upsampling); what remains
            # is IDCT rounding, within one of 255 levels on average (0 on the CPU: the same libjpeg-turbo)
            levels = ((xg.cpu() - xc) * torch.tensor(gpu.std)[:, None, None] * 255).abs()
            assert levels.mean() <= 1.0, f"mean |GPU - CPU| = {levels.mean():.2f} of 255 levels"
    train_c = [(x.shape, y.tolist()) for x, y in cpu.train_dataloader()]
    train_g = [
        (x.shape, y.tolist())
        for x, y in (gpu.on_after_batch_transfer(move_data_to_device(b, device)) for b in gpu.train_dataloader())
    ]
    assert train_g == train_c  # random crops differ; shapes and labels (same litdata order) do not


def _noise_jpeg(chroma: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    lo = Image.fromarray(rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)).resize((40, 30))
    a = np.clip(np.asarray(lo, dtype=np.int64) + rng.integers(-10, 11, (30, 40, 3)), 0, 255).astype(np.uint8)
    from lsc.prepare import encode

    return encode(Image.fromarray(a), "jpeg", 64, 90, 3, chroma)


def test_the_gpu_decode_gap_is_chroma_upsampling():
    """The cause of decode=gpu's gap on CUDA (mean |difference| 0.134 after normalization on an H200): torchvision's
    nvJPEG decoder runs with default flags, which upsample 4:2:0 chroma by nearest neighbour, where PIL (the CPU
    path) interpolates ("fancy upsampling"). libjpeg-turbo's fast upsampling is the same nearest-neighbour rule:
    on 4:2:0 photos it moves pixels by ~10 of 255 levels, on prepare's 4:4:4 JPEGs (no upsampling) by none."""
    import simplejpeg
    from PIL import JpegImagePlugin

    for seed in range(3):
        for chroma, lo, hi in ((420, 5.0, 30.0), (444, 0.0, 0.0)):
            data = _noise_jpeg(chroma, seed)
            assert JpegImagePlugin.get_sampling(Image.open(io.BytesIO(data))) == {420: 2, 444: 0}[chroma]
            pil = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int64)
            assert np.array_equal(pil, simplejpeg.decode_jpeg(data, fastupsample=False))  # the same decoder
            nearest = simplejpeg.decode_jpeg(data, fastupsample=True).astype(np.int64)
            assert lo <= np.abs(nearest - pil).mean() <= hi, (chroma, np.abs(nearest - pil).mean())


def test_prepare_writes_444_and_gpu_decode_warns_on_420(tmp_path, folder_jpeg):
    from PIL import JpegImagePlugin

    _, out, _ = folder_jpeg
    m = json.loads((out / "manifest.json").read_text())
    assert m["chroma"] == 444
    items = litdata_items(out / "train")
    assert all(JpegImagePlugin.get_sampling(Image.open(io.BytesIO(it["img"]))) == 0 for it in items if it["ok"])
    src = noise_folder(tmp_path / "src", per_class=2, splits=("train",))
    old = tmp_path / "p420"
    run_prepare(old, "data=imagefolder", f"data.root={src}", "size=16", "num_workers=1", "chroma=420")
    items = litdata_items(old / "train")
    assert all(JpegImagePlugin.get_sampling(Image.open(io.BytesIO(it["img"]))) == 2 for it in items)
    with pytest.warns(UserWarning, match="4:2:0 JPEGs: data.decode=gpu"):
        StreamingDataModule(root=str(old), decode="gpu", batch_size=2, img_size=12).setup("fit")
    # a dir from before the setting (no "chroma" in its manifest) holds 4:2:0: resuming it at 444 is refused
    mf = old / "manifest.json"
    mf.write_text(json.dumps({k: v for k, v in json.loads(mf.read_text()).items() if k != "chroma"}))
    with pytest.raises(ValueError, match="chroma=420"):
        run_prepare(old, "data=imagefolder", f"data.root={src}", "size=16", "num_workers=1")
    with pytest.raises(ValueError, match="chroma must be 444"):
        run_prepare(tmp_path / "bad", "data=imagefolder", f"data.root={src}", "chroma=422")


def test_gpu_decode_path_on_cpu_matches_the_cpu_path(folder_jpeg):
    _gpu_vs_cpu(folder_jpeg[1], "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_decode_on_cuda(folder_jpeg):
    _gpu_vs_cpu(folder_jpeg[1], "cuda")


# ---- the data-wait monitor --------------------------------------------------------------------------------------


class _Sleepy(torch.utils.data.Dataset):
    def __init__(self, delay):
        self.delay = delay

    def __len__(self):
        return 64

    def __getitem__(self, i):
        time.sleep(self.delay)
        return torch.randn(4), i % 2


class _Model(L.LightningModule):
    def __init__(self, delay):
        super().__init__()
        self.net, self.delay = torch.nn.Linear(4, 2), delay

    def training_step(self, batch, _):
        time.sleep(self.delay)
        return torch.nn.functional.cross_entropy(self.net(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize(("data_s", "step_s", "warns"), [(0.01, 0.0, True), (0.0, 0.02, False)])
def test_data_wait_monitor(data_s, step_s, warns, recwarn):
    mon = DataWaitMonitor(threshold=0.3, warmup_steps=5)
    loader = torch.utils.data.DataLoader(_Sleepy(data_s), batch_size=2)  # 32 steps; a slow batch takes 20 ms
    trainer = L.Trainer(
        max_epochs=1, callbacks=[mon], logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(_Model(step_s), loader)
    share = float(trainer.callback_metrics["train/data_wait"])
    bound = [w for w in recwarn if "data-bound" in str(w.message)]
    assert mon.measured == 31  # every step but the epoch's first
    if warns:
        assert share > 0.7 and len(bound) == 1  # 20 ms waits vs sub-ms steps; warned once
        assert "data.num_workers (now None)" in str(bound[0].message) and "python -m lsc.prepare" in str(
            bound[0].message
        )
    else:
        assert share < 0.25 and not bound  # 20 ms steps, in-memory batches (a loaded CI machine adds a few ms)


# ---- slow: a prepare killed with SIGKILL, then resumed --------------------------------------------------------------


class KillingFolder(ImageFolderDataModule):
    """An image folder whose prepare kills its whole process group (SIGKILL, like `kill -9` of the job) when it
    encodes source image `kill_at`: a kill at a known point, with chunks and litdata checkpoints on disk."""

    def __init__(self, kill_at: int = -1, **kw):
        super().__init__(**kw)
        self.kill_at = kill_at

    def _load(self):
        train, val = super()._load()
        if self.kill_at >= 0:
            image, kill_at = train.image, self.kill_at

            def killing(i):
                if i == kill_at:
                    os.killpg(os.getpgrp(), signal.SIGKILL)
                return image(i)

            train.image = killing
        return train, val


@pytest.mark.slow
def test_prepare_killed_mid_split_resumes_exactly(tmp_path):
    src = noise_folder(tmp_path / "src", n_classes=3, per_class=40, splits=("train",))
    out = tmp_path / "out"
    n = 120
    ids = np.random.default_rng([0, 0]).permutation(n)  # lsc.prepare's write order (seed 0, train)
    kill_at = int(ids[100])  # worker 1 (positions 60..119) at its 41st image: 4 chunks of 8 are on disk
    assert kill_at not in (0, n // 2, n - 1)  # not an image the parent reads for the source fingerprint

    def run(kill):
        args = ["data=imagefolder", f"data.root={src}", "data._target_=test_streaming.KillingFolder",
                f"+data.kill_at={kill}", f"out={out}", "format=raw", "size=16", "num_workers=2", "chunk_size=8",
                f"hydra.run.dir={tmp_path / 'hydra'}"]  # fmt: skip
        env = {**subprocess_env(), "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        return subprocess.run(
            [sys.executable, "-m", "lsc.prepare", *args], env=env, cwd=tmp_path, capture_output=True, text=True,
            timeout=240, start_new_session=True,
        )  # fmt: skip

    p = run(kill_at)
    assert p.returncode == -signal.SIGKILL, p.stderr[-3000:]
    assert not (out / "train" / "index.json").exists()
    ckpts = [json.loads(f.read_text()) for f in (out / "train" / ".checkpoints").glob("checkpoint-*.json")]
    kept = {c["filename"] for ck in ckpts for c in ck["chunks"]}
    assert len(kept) >= 3  # litdata's record of what survives the kill (worker 1: 4 chunks of 8)
    mtimes = {f: (out / "train" / f).stat().st_mtime_ns for f in kept}
    p = run(-1)
    assert p.returncode == 0, p.stderr[-3000:]
    assert {f: (out / "train" / f).stat().st_mtime_ns for f in kept} == mtimes  # resumed, not redone
    items = litdata_items(out / "train")
    assert [it["id"] for it in items] == ids.tolist()  # every image once, in the write order
    files = sorted(str(q) for q in (src / "train").rglob("*.png"))
    from torchvision.transforms.v2.functional import center_crop, resize

    for it in items:
        assert it["label"] == int(Path(files[it["id"]]).parent.name[-2:])
        ref = np.asarray(center_crop(resize(Image.open(files[it["id"]]).convert("RGB"), [16]), [16, 16]))
        assert np.frombuffer(it["img"], np.uint8).tolist() == ref.transpose(2, 0, 1).ravel().tolist()


@pytest.mark.slow
def test_bench_data_smoke(tmp_path):
    from lsc.bench import data as bench

    bench.main(["--smoke", "--out", str(tmp_path), "--cache", str(tmp_path / "cache")])
    rows = json.loads((tmp_path / "bench_data_smoke.json").read_text())["rows"]
    paths = {r["path"] for r in rows}
    assert {
        "imagefolder (PIL)",
        "imagefolder (torchvision decode_jpeg)",
        "prepared jpeg",
        "prepared raw 32 px",
    } <= paths
    assert all(r["images_per_s"] > 0 and r["images"] > 0 for r in rows)
    assert (tmp_path / "bench_data_smoke.md").read_text().count("|") > 20


# ---- streamed vs in-memory: the same data learns the same ----------------------------------------------------------


def test_defaults_take_the_source_runs_batch_size_and_workers(digits_raw):
    dm = StreamingDataModule(root=str(digits_raw))
    assert (dm.batch_size, dm.num_workers) == (64, 0)  # conf/data/digits.yaml's, not a streaming default
    dm = StreamingDataModule(root=str(digits_raw), batch_size=32, num_workers=1)
    assert (dm.batch_size, dm.num_workers) == (32, 1)  # given values win


def test_prepare_format_auto_is_lossless_for_small_images(digits_raw, folder_jpeg, tmp_path):
    run_prepare(tmp_path / "auto", "data=digits", "num_workers=1")
    m = json.loads((tmp_path / "auto" / "manifest.json").read_text())
    assert (m["format"], m["size"]) == ("raw", 8)  # 8x8 digits stored as they are, not as 8 px JPEGs
    stream, source = StreamingDataModule(root=str(tmp_path / "auto")), DigitsDataModule()
    stream.setup("fit")
    source.setup("fit")
    assert epoch_items(stream.train_dataloader()) == view_items(source.train_set)  # bit-identical pixels
    _, out, _ = folder_jpeg  # image folders (photos) default to JPEG
    assert json.loads((out / "manifest.json").read_text())["format"] == "jpeg"


def _label_spread(batches: list[list[int]], n_classes: int) -> float:
    """Mean total-variation distance between each batch's label histogram and the uniform one (0 = perfectly mixed;
    a batch of one class scores 1 - 1/n_classes)."""
    tv = [0.5 * sum(abs(b.count(c) / len(b) - 1 / n_classes) for c in range(n_classes)) for b in batches]
    return sum(tv) / len(tv)


def test_streamed_epoch_is_as_mixed_as_the_in_memory_sampler(digits_raw):
    stream, memory = StreamingDataModule(root=str(digits_raw), seed=3), DigitsDataModule(seed=3)
    for dm in (stream, memory):
        dm.setup("fit")
    first = {}
    for name, dm in (("stream", stream), ("memory", memory)):
        it = iter(dm.train_dataloader())
        first[name] = [[int(y) for y in next(it)[1]] for _ in range(8)]
    s, m = _label_spread(first["stream"], 10), _label_spread(first["memory"], 10)
    # 64 labels drawn uniformly from 10 classes: TV ~0.15; chunk-ordered or window-shuffled streams score 0.5-0.9
    assert s < m + 0.08 and s < 0.25, (s, m)
    assert all(len(set(b)) >= 8 for b in first["stream"])


@pytest.mark.slow
def test_streamed_and_in_memory_runs_learn_alike(digits_raw, tmp_path):
    """`lsc.train` with every default vs `data=streaming data.root=<prepared digits>`: 3 epochs each (issue: the
    streamed run scored 12% vs 84%, 4x fewer steps at streaming's old batch size). Tolerance: 5 points of
    validation accuracy, both above 70% (seed-to-seed spread here is ~2 points)."""
    args = ["trainer=cpu", "~logger", "trainer.max_epochs=3", "seed=0"]
    mem = lsc.train.train(make_cfg(tmp_path / "m", *args, tiny=False))
    st = lsc.train.train(make_cfg(tmp_path / "s", *args, "data=streaming", f"data.root={digits_raw}", tiny=False))
    a, b = mem["val/acc"], st["val/acc"]
    assert a > 0.7 and b > 0.7 and abs(a - b) < 0.05, (a, b)


def test_a_checkpoint_needs_images_of_its_size_and_predicts_without_its_folder(digits_raw, tmp_path):
    from lsc.predict import Predictor

    data = Path(shutil.copytree(digits_raw, tmp_path / "digits-8"))
    lsc.train.train(make_cfg(tmp_path / "run", "data=streaming", f"data.root={data}", "trainer.max_epochs=1"))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    other = tmp_path / "digits-16"
    run_prepare(other, "data=digits", "format=raw", "size=16")
    msg = rf"trained on 8 px images with 1 channel\(s\), but this data \(data\.root={other}\) .* size 8 -> 16"
    with pytest.raises(ValueError, match=msg):  # eval: it would score 16 px images with an 8 px model
        cfg = make_cfg(tmp_path / "e", "data=streaming", f"data.root={other}", config_name="eval")
        lsc.eval.evaluate(cfg, str(ckpt), [f"data.root={other}"], set())
    with pytest.raises(ValueError, match=msg):  # resume: it would keep training on them and replace last.ckpt
        lsc.train.train(make_cfg(tmp_path / "r", "data=streaming", f"data.root={other}", f"ckpt_path={ckpt}"))
    images, _ = digits_reference()
    for i in range(4):
        Image.fromarray(images[i]).save(tmp_path / f"{i}.png")
    paths = [str(tmp_path / f"{i}.png") for i in range(4)]
    moved = data.rename(tmp_path / "moved")  # the documented data.root= override, from the command line
    for mod, extra in (("lsc.eval", []), ("lsc.train", ["trainer.max_epochs=2"])):
        run = [sys.executable, "-m", mod, f"ckpt_path={ckpt}", f"data.root={moved}", *extra,
               f"hydra.run.dir={tmp_path / mod}"]  # fmt: skip
        p = subprocess.run(run, env=subprocess_env(), capture_output=True, text=True, timeout=300)
        assert p.returncode == 0 and "val/acc" in p.stdout, (mod, p.stderr[-1500:])
    before = Predictor.from_checkpoint(ckpt).predict(paths, k=3)  # (last.ckpt now holds epoch 2)
    shutil.rmtree(moved)  # the prepared folder is gone: the checkpoint records the transform
    after = Predictor.from_checkpoint(ckpt).predict(paths, k=3)
    assert torch.equal(before["labels"], after["labels"]) and torch.allclose(before["cos"], after["cos"])
