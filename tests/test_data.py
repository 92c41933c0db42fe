"""DataModules: batch shapes and dtypes, label views (instance labels, copies, limit, classes), on-disk formats,
the epoch-seeded sampler and per-device batch size. References come from the raw files / sklearn arrays."""

from __future__ import annotations

import gzip
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import FMNIST_ROOT, HAS_FMNIST, folder_colour, make_cifar, make_image_folder
from sklearn.datasets import load_digits

from lsc.data import (
    CIFARDataModule,
    DigitsDataModule,
    EpochShuffleSampler,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    SyntheticDataModule,
)

needs_fmnist = pytest.mark.skipif(not HAS_FMNIST, reason="Fashion-MNIST IDX files not installed (make data)")


@pytest.fixture(scope="module")
def digits():
    """(uint8 images [N, 8, 8] as the module scales them, targets [N]) straight from scikit-learn."""
    d = load_digits()
    return np.round(d.images * (255 / 16)).astype(np.uint8), d.target.astype(np.int64)


def normalized(img_u8: np.ndarray, mean, std) -> torch.Tensor:
    """uint8 [C, H, W] (or [H, W]) -> float32 (x / 255 - mean) / std, the `none` transform at native size."""
    x = torch.from_numpy(np.asarray(img_u8, dtype=np.float32) / 255)
    if x.dim() == 2:
        x = x[None]
    m, s = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)
    return (x - m) / s


def check_batch(batch, shape_chw, batch_size):
    x, y = batch
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.shape == (batch_size, *shape_chw) and y.shape == (batch_size,)
    assert torch.isfinite(x).all()


def check_loaders(dm, shape_chw, batch_size):
    dm.setup("fit")
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        check_batch(next(iter(loader)), shape_chw, min(batch_size, len(loader.dataset)))


# ---- every DataModule: (B, C, H, W) float32 and (B,) int64 --------------------------------------------


def test_digits_batches_and_pixels(digits):
    images, targets = digits
    dm = DigitsDataModule(batch_size=16)
    assert dm.num_classes == 10
    check_loaders(dm, (1, 8, 8), 16)
    # no test split: val_fraction = 0.2 held out, disjoint from train, together all 1797 images
    assert len(dm.val_set) == round(0.2 * len(targets)) and len(dm.train_set) + len(dm.val_set) == len(targets)
    assert set(dm.train_set.index.tolist()).isdisjoint(dm.val_set.index.tolist())
    for ds in (dm.train_set, dm.val_set):
        for i in (0, 7, len(ds) - 1):
            j = int(ds.index[i])
            x, y = ds[i]
            assert y == targets[j]
            torch.testing.assert_close(x, normalized(images[j], (0.2,), (0.3,)))


def test_synthetic_batches():
    dm = SyntheticDataModule(num_samples=24, num_classes=5, image_size=16, channels=2, batch_size=8)
    assert dm.num_classes == 5
    check_loaders(dm, (2, 16, 16), 8)
    # 20% held out for validation; every image keeps its label i % 5 in either split
    assert (len(dm.train_set), len(dm.val_set)) == (19, 5)
    for ds in (dm.train_set, dm.val_set):
        assert [ds[i][1] for i in range(len(ds))] == [int(j) % 5 for j in ds.index]
    assert sorted(dm.train_set.index.tolist() + dm.val_set.index.tolist()) == list(range(24))
    # deterministic per index: the same image twice, different images at different indices
    torch.testing.assert_close(dm.train_set[3][0], dm.train_set[3][0])
    assert not torch.equal(dm.train_set[3][0], dm.train_set[4][0])
    assert SyntheticDataModule(num_classes=10, classes=4).num_classes == 4


@needs_fmnist
def test_fashion_mnist_batches_and_pixels():
    dm = FashionMNISTDataModule(root=str(FMNIST_ROOT), batch_size=32)
    assert dm.num_classes == 10
    check_loaders(dm, (1, 28, 28), 32)
    with gzip.open(FMNIST_ROOT / "t10k-images-idx3-ubyte.gz") as f:
        imgs = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FMNIST_ROOT / "t10k-labels-idx1-ubyte.gz") as f:
        labs = np.frombuffer(f.read(), np.uint8, offset=8)
    # validation: 10% of the training split, held out (seeded); the test split is only the test set
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (54_000, 6_000, len(labs))
    assert set(dm.train_set.index.tolist()).isdisjoint(dm.val_set.index.tolist())
    assert dm.val_set.base is dm.train_set.base and dm.test_set.base is not dm.train_set.base
    for i in (0, 9_999):
        x, y = dm.test_set[i]
        assert y == labs[i]
        torch.testing.assert_close(x, normalized(imgs[i], (0.286,), (0.353,)))


CIFAR_STATS = {
    10: ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    100: ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


@pytest.mark.parametrize("variant", [10, 100])
def test_cifar_reads_pickle_batches(tmp_path, variant):
    raw = make_cifar(tmp_path, variant, n_train=20, n_test=8)
    dm = CIFARDataModule(root=str(tmp_path), variant=variant, batch_size=4)
    assert dm.num_classes == variant
    check_loaders(dm, (3, 32, 32), 4)
    mean, std = CIFAR_STATS[variant]
    assert (len(dm.train_set), len(dm.val_set)) == (18, 2)  # 10% of the training batches held out
    for ds, split in ((dm.train_set, "train"), (dm.val_set, "train"), (dm.test_set, "test")):
        x_raw, y_raw = raw[split]
        idx = ds.index.tolist()  # batches concatenated in order
        assert [ds[i][1] for i in range(len(ds))] == y_raw[idx].tolist()
        for i in (0, len(ds) - 1):
            torch.testing.assert_close(ds[i][0], normalized(x_raw[idx[i]].reshape(3, 32, 32), mean, std))
    assert len(dm.test_set) == len(raw["test"][1])


def test_cifar_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data\.root=.*download=true"):
        CIFARDataModule(root=str(tmp_path / "nope")).num_classes  # noqa: B018


def test_image_folder_reads_tree(tmp_path):
    make_image_folder(tmp_path, n_classes=3, per_class=4, size=40)
    dm = ImageFolderDataModule(root=str(tmp_path), img_size=32, batch_size=4)
    assert dm.num_classes == 3
    check_loaders(dm, (3, 32, 32), 4)
    # val/ is the test split; validation is held out from train/ (data.val_fraction, here 1 of 12)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (11, 1, 12)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    for ds in (dm.train_set, dm.val_set, dm.test_set):
        for i in range(0, len(ds), 5):
            x, y = ds[i]
            assert y == int(ds.index[i]) // 4  # class folders sorted: class_00, class_01, class_02
            colour = np.array(folder_colour(y), dtype=np.uint8)[:, None, None].repeat(32, 1).repeat(32, 2)
            torch.testing.assert_close(x, normalized(colour, mean, std), atol=1e-5, rtol=0)


def test_image_folder_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data\.root="):
        ImageFolderDataModule(root=str(tmp_path / "nope")).num_classes  # noqa: B018


# ---- label views ----------------------------------------------------------------------------------------


def test_instance_labels_one_class_per_image(digits):
    images, _ = digits
    n = len(images)
    dm = DigitsDataModule(instance_labels=True, batch_size=64)
    assert dm.num_classes == n
    dm.setup("fit")
    assert len(dm.train_set) == n
    assert [dm.train_set[i][1] for i in range(n)] == list(range(n))
    for j in (0, 1, n - 1):
        torch.testing.assert_close(dm.train_set[j][0], normalized(images[j], (0.2,), (0.3,)))
    assert dm.test_set is None  # no held-out images per class


def test_instance_labels_eval_sets_are_transformed(digits):
    """Validation (and the train-accuracy sample) of an instance-label run: float images, label = image index."""
    images, _ = digits
    dm = DigitsDataModule(instance_labels=True, val_size=50, train_eval_size=20, batch_size=10)
    dm.setup("fit")
    assert len(dm.val_set) == 50 and len(dm.train_eval_set) == 20
    for ds in (dm.val_set, dm.train_eval_set):
        labels = [ds[i][1] for i in range(len(ds))]
        assert len(set(labels)) == len(ds) and all(0 <= y < len(images) for y in labels)
        for i in (0, len(ds) - 1):
            x, y = ds[i]
            assert x.dtype == torch.float32, "eval images must go through the eval transform"
            torch.testing.assert_close(x, normalized(images[y], (0.2,), (0.3,)))
        check_batch(next(iter(dm._loader(ds))), (1, 8, 8), 10)


def test_copies_double_the_classes(digits):
    images, _ = digits
    n = len(images)
    dm = DigitsDataModule(instance_labels=True, copies=2, batch_size=64)
    assert dm.num_classes == 2 * n
    dm.setup("fit")
    assert len(dm.train_set) == 2 * n
    for j in (0, 5, n - 1):
        for k in (0, 1):
            x, y = dm.train_set[k * n + j]
            assert y == k * n + j
            torch.testing.assert_close(x, normalized(images[j], (0.2,), (0.3,)))
    with pytest.raises(ValueError, match="instance_labels"):
        DigitsDataModule(copies=2)


def test_limit_takes_the_first_images(digits):
    images, targets = digits
    dm = DigitsDataModule(instance_labels=True, limit=100)
    assert dm.num_classes == 100
    dm.setup("fit")
    assert [dm.train_set[i][1] for i in range(100)] == list(range(100))
    for j in (0, 99):
        torch.testing.assert_close(dm.train_set[j][0], normalized(images[j], (0.2,), (0.3,)))
    # plain labels: the first 5 digits are 0..4, split into train/val
    dm = DigitsDataModule(limit=5)
    assert dm.num_classes == int(targets[:5].max()) + 1 == 5
    dm.setup("fit")
    assert sorted(dm.train_set.index.tolist() + dm.val_set.index.tolist()) == [0, 1, 2, 3, 4]


def test_classes_keeps_the_first_classes(digits):
    _, targets = digits
    dm = DigitsDataModule(classes=3)
    assert dm.num_classes == 3
    dm.setup("fit")
    picked = sorted(dm.train_set.index.tolist() + dm.val_set.index.tolist())
    assert picked == np.flatnonzero(targets < 3).tolist()
    assert {dm.train_set[i][1] for i in range(len(dm.train_set))} == {0, 1, 2}


def test_classes_applies_to_test_split(tmp_path):
    raw = make_cifar(tmp_path, 10, n_train=30, n_test=20)
    dm = CIFARDataModule(root=str(tmp_path), classes=4)
    assert dm.num_classes == 4
    dm.setup("fit")
    y_raw = raw["test"][1]
    assert [dm.test_set[i][1] for i in range(len(dm.test_set))] == y_raw[y_raw < 4].tolist()
    y_raw = raw["train"][1]
    picked = sorted(dm.train_set.index.tolist() + dm.val_set.index.tolist())
    assert picked == np.flatnonzero(y_raw < 4).tolist()


@pytest.mark.parametrize("limit", [0, -5])
def test_non_positive_limit_is_an_error(limit):
    with pytest.raises(ValueError, match=r"data\.limit must be a positive integer or null, got"):
        DigitsDataModule(limit=limit)


# ---- sampler and batch size ---------------------------------------------------------------------------------


def test_epoch_shuffle_sampler():
    a, b = EpochShuffleSampler(100, seed=3), EpochShuffleSampler(100, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    order = list(a)
    assert order == list(b) and sorted(order) == list(range(100)) and len(a) == 100
    assert order == list(a)  # re-iterating the same epoch replays it
    b.set_epoch(3)
    assert list(b) != order
    assert list(EpochShuffleSampler(100, seed=4)) != list(EpochShuffleSampler(100, seed=3))


def test_train_loader_order_depends_on_epoch_only():
    dm = SyntheticDataModule(num_samples=40, num_classes=40, batch_size=40, seed=1, instance_labels=True)
    dm.setup("fit")
    ys = []
    for epoch in (0, 1, 0):
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        ys.append(next(iter(loader))[1].tolist())
    assert ys[0] == ys[2] != ys[1]
    assert sorted(ys[0]) == list(range(40))


@pytest.mark.parametrize("world", [1, 2, 4])
def test_batch_size_split_across_devices(world):
    dm = SyntheticDataModule(num_samples=32, batch_size=16)
    dm.trainer = SimpleNamespace(world_size=world)
    dm.setup("fit")
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        assert loader.batch_size == 16 // world
    dm.batch_size = 6
    if world == 4:
        with pytest.raises(ValueError, match="not divisible"):
            dm.train_dataloader()
