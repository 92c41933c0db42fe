"""The DataModules: digits (default, zero setup), Fashion-MNIST (IDX files), CIFAR-10/100, image folders, synthetic.

Nothing downloads unless `download: true`; a missing root raises FileNotFoundError naming the config key.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import torch

from .base import LSCDataModule, RawSplit

FMNIST_DEBIAN = "/usr/share/datasets/fashion-mnist"


def _missing(what: str, root, hint: str) -> FileNotFoundError:
    return FileNotFoundError(f"{what} not found at data.root={root!s}; {hint}")


class DigitsDataModule(LSCDataModule):
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes): no files, no network."""

    mean, std, channels, native_size = (0.2,), (0.3,), 1, 8

    def _load(self):
        from sklearn.datasets import load_digits

        d = load_digits()
        images = torch.from_numpy((d.images * (255 / 16)).round().astype(np.uint8))[:, None]  # (N, 1, 8, 8)
        return RawSplit(images, d.target), None


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally .gz): the MNIST family's format."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find(root: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        for p in (root / name, root / "raw" / name, root / "FashionMNIST" / "raw" / name):
            if p.exists():
                return p
    return None


class FashionMNISTDataModule(LSCDataModule):
    """Fashion-MNIST from IDX files (Debian's dataset-fashion-mnist puts them in /usr/share/datasets/fashion-mnist)."""

    mean, std, channels, native_size = (0.286,), (0.353,), 1, 28

    def __init__(self, root: str = FMNIST_DEBIAN, download: bool = False, **kw):
        super().__init__(**kw)
        self.root, self.download = Path(root), download

    def prepare_data(self):
        if self.download and _find(self.root, "train-images-idx3-ubyte") is None:
            from torchvision.datasets import FashionMNIST

            FashionMNIST(str(self.root), train=True, download=True)
            FashionMNIST(str(self.root), train=False, download=True)

    def _load(self):
        if self.download:
            self.prepare_data()
        splits = []
        for prefix in ("train", "t10k"):
            img, lab = _find(self.root, f"{prefix}-images-idx3-ubyte"), _find(self.root, f"{prefix}-labels-idx1-ubyte")
            if img is None or lab is None:
                raise _missing(
                    "Fashion-MNIST IDX files",
                    self.root,
                    "run `make data` (apt-get install dataset-fashion-mnist) or set data.download=true",
                )
            splits.append(RawSplit(torch.from_numpy(read_idx(img).copy())[:, None], read_idx(lab).astype(np.int64)))
        return splits[0], splits[1]


class CIFARDataModule(LSCDataModule):
    """CIFAR-10/100 from the standard python pickle batches (cifar-10-batches-py / cifar-100-python)."""

    native_size = 32

    def __init__(self, root: str = "data", variant: int = 10, download: bool = False, **kw):
        super().__init__(**kw)
        if variant not in (10, 100):
            raise ValueError(f"CIFAR variant must be 10 or 100, got {variant}")
        self.root, self.variant, self.download = Path(root), variant, download
        self.mean = (0.4914, 0.4822, 0.4465) if variant == 10 else (0.5071, 0.4865, 0.4409)
        self.std = (0.2470, 0.2435, 0.2616) if variant == 10 else (0.2673, 0.2564, 0.2762)

    @property
    def folder(self) -> Path:
        return self.root / ("cifar-10-batches-py" if self.variant == 10 else "cifar-100-python")

    def prepare_data(self):
        if self.download and not self.folder.exists():
            from torchvision.datasets import CIFAR10, CIFAR100

            (CIFAR10 if self.variant == 10 else CIFAR100)(str(self.root), train=True, download=True)

    def _load(self):
        if self.download:
            self.prepare_data()
        if not self.folder.exists():
            raise _missing(
                f"CIFAR-{self.variant} ({self.folder.name}/)", self.root, "set data.download=true to fetch it"
            )
        names = (
            ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]) if self.variant == 10 else (["train"], ["test"])
        )
        key = "labels" if self.variant == 10 else "fine_labels"
        out = []
        for files in names:
            xs, ys = [], []
            for f in files:
                with open(self.folder / f, "rb") as fh:
                    d = pickle.load(fh, encoding="latin1")
                xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                ys += list(d[key])
            out.append(RawSplit(torch.from_numpy(np.concatenate(xs)), np.asarray(ys)))
        return out[0], out[1]


class _FolderSplit(RawSplit):
    """torchvision ImageFolder, read lazily (PIL images)."""

    def __init__(self, folder):
        from torchvision.datasets import ImageFolder

        self.ds = ImageFolder(str(folder))
        self.targets = torch.as_tensor(self.ds.targets, dtype=torch.int64)

    def image(self, i):
        return self.ds.loader(self.ds.samples[i][0])


class ImageFolderDataModule(LSCDataModule):
    """Class-per-folder trees (ImageNet-1k, CINIC-10, ...): root/train/<class>/*.jpg and optional root/val|test."""

    mean, std, native_size, large_images = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 224, True

    def __init__(
        self,
        root: str | None = None,
        train_dir: str = "train",
        val_dir: str | None = "val",
        large_images: bool = True,
        native_size: int = 224,
        **kw,
    ):
        super().__init__(**kw)
        self.large_images, self.native_size = large_images, native_size
        if root is None:
            raise ValueError("data=imagefolder needs data.root=<folder with train/<class>/ images>")
        self.root, self.train_dir, self.val_dir = Path(root), train_dir, val_dir

    def _load(self):
        train = self.root / self.train_dir
        if not train.is_dir():
            raise _missing(f"image folder {self.train_dir}/", self.root, "point data.root at the dataset's top folder")
        val = None
        for name in [self.val_dir, "val", "test", "valid"]:
            if name and (self.root / name).is_dir() and not self.instance_labels:
                val = _FolderSplit(self.root / name)
                break
        return _FolderSplit(train), val


class SyntheticSplit(RawSplit):
    """Deterministic random images, generated per index: any number of images at O(1) memory."""

    def __init__(self, n: int, n_classes: int, channels: int, size: int, seed: int):
        self.n, self.c, self.size, self.seed = n, channels, size, seed
        self.targets = torch.arange(n) % n_classes

    def image(self, i):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        return torch.randint(0, 256, (self.c, self.size, self.size), generator=g, dtype=torch.uint8)


class SyntheticDataModule(LSCDataModule):
    """Random images at any size and class count, for throughput/memory benchmarks and tests."""

    mean, std = (0.5, 0.5, 0.5), (0.29, 0.29, 0.29)

    def __init__(self, num_samples: int = 64, num_classes: int = 10, image_size: int = 32, channels: int = 3, **kw):
        super().__init__(**kw)
        self.num_samples, self._n_classes, self.native_size, self.channels = (
            num_samples,
            num_classes,
            image_size,
            channels,
        )
        self.mean, self.std = (0.5,) * channels, (0.29,) * channels

    def _load(self):
        n = self.num_samples
        return SyntheticSplit(n, self._n_classes, self.channels, self.native_size, self.seed), SyntheticSplit(
            max(1, n // 4), self._n_classes, self.channels, self.native_size, self.seed + 1
        )

    @property
    def num_classes(self) -> int:
        if self.instance_labels:
            return super().num_classes
        return self._n_classes if self.classes is None else min(self._n_classes, self.classes)
