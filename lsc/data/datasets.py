"""The DataModules: digits (default, zero setup), Fashion-MNIST (IDX files), CIFAR-10/100, image folders, synthetic.

Nothing downloads unless `download: true`; a missing root raises FileNotFoundError naming the config key.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from .base import BadImageError, LSCDataModule, RawSplit, open_draft

FMNIST_DEBIAN = "/usr/share/datasets/fashion-mnist"
log = logging.getLogger("lsc.data")


def _missing(what: str, root, hint: str) -> FileNotFoundError:
    return FileNotFoundError(f"{what} not found at data.root={root!s}; {hint}")


class DigitsDataModule(LSCDataModule):
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes): no files, no network."""

    mean, std, channels, native_size = (0.2,), (0.3,), 1, 8
    label_names = tuple(str(i) for i in range(10))

    def __init__(self, val_fraction: float = 0.2, **kw):  # no test split: a larger hold-out
        super().__init__(val_fraction=val_fraction, **kw)

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
    label_names = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")  # fmt: skip

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
    """Images of a class-per-folder tree, read lazily (PIL). Labels come from `class_to_idx` (class folder name ->
    label), indexed once from train/ so that every split labels a class by its name, never by its position."""

    def __init__(self, folder: Path, class_to_idx: dict[str, int] | None = None):
        from torchvision.datasets.folder import IMG_EXTENSIONS, default_loader, find_classes, make_dataset

        names, own = find_classes(str(folder))  # FileNotFoundError when folder has no class folders
        if class_to_idx is None:
            class_to_idx = own
        else:
            extra = sorted(set(names) - set(class_to_idx))
            if extra:
                more = f" (+{len(extra) - 5} more)" if len(extra) > 5 else ""
                raise ValueError(
                    f"{folder} has class folder(s) that the training folder lacks: {', '.join(extra[:5])}{more}; "
                    "every evaluated class needs training images (labels come from the training folder's classes)"
                )
        self.folder, self.class_to_idx, self.loader = Path(folder), class_to_idx, default_loader
        present = {n: class_to_idx[n] for n in names}
        self.samples = make_dataset(str(folder), present, extensions=IMG_EXTENSIONS, allow_empty=True)
        if not self.samples:
            raise FileNotFoundError(f"no images ({', '.join(IMG_EXTENSIONS)}) under {folder}")
        self.targets = torch.as_tensor([t for _, t in self.samples], dtype=torch.int64)

    supports_draft = True  # image(i, draft=(w, h)): JPEGs decoded at reduced size (the prototype pass)

    def image(self, i, draft: tuple[int, int] | None = None):
        path = self.samples[i][0]
        try:
            if draft is None:
                img = self.loader(path)
                img.load()
            else:
                with open(path, "rb") as f:  # one read: PIL's own reads of a file come in small blocks
                    img = open_draft(f.read(), "RGB", draft)  # JPEG: DCT scaling to >= draft (1/2 .. 1/8)
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... for broken files
            raise BadImageError(path, e) from e
        return img

    def fingerprint(self) -> str:
        """Every file's path (relative to the split), label, size and modification time."""
        h = hashlib.sha256()
        for path, label in self.samples:
            st = os.stat(path)
            h.update(f"{os.path.relpath(path, self.folder)}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    def bad_images(self) -> list[str]:
        """Paths of the files that fail to decode (full decode of every image)."""
        bad = []
        for i in range(len(self.samples)):
            try:
                self.image(i)
            except BadImageError as e:
                bad.append(e.path)
        return bad

    def drop(self, paths: set[str]) -> None:
        keep = [i for i, (p, _) in enumerate(self.samples) if p not in paths]
        self.samples = [self.samples[i] for i in keep]
        self.targets = self.targets[keep]


class ImageFolderDataModule(LSCDataModule):
    """Class-per-folder trees (ImageNet-1k, CINIC-10, ...): root/train/<class>/*.jpg and optional root/val|test.

    Class labels are indexed once from train/ (sorted folder names) and the other split maps its folders by name;
    a class folder there that train/ lacks is an error. The val/ (or test/) folder is the test split; validation
    is held out from train/ (`val_fraction`). check_images: decode every image at start and fail (or, with
    on_bad_image=skip, drop them) before training: `auto` does it when there are at most 2,000 images.
    """

    mean, std, native_size, large_images = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 224, True
    CHECK_AUTO_MAX = 2_000

    def __init__(
        self,
        root: str | None = None,
        train_dir: str = "train",
        val_dir: str | None = "val",
        large_images: bool = True,
        native_size: int = 224,
        check_images: bool | str = "auto",
        **kw,
    ):
        super().__init__(**kw)
        self.large_images, self.native_size = large_images, native_size
        if root is None:
            raise ValueError("data=imagefolder needs data.root=<folder with train/<class>/ images>")
        if check_images not in (True, False, "auto"):
            raise ValueError(f"data.check_images must be true, false or auto, got {check_images!r}")
        self.root, self.train_dir, self.val_dir, self.check_images = Path(root), train_dir, val_dir, check_images

    @property
    def class_names(self) -> list[str] | None:
        if self.instance_labels:
            return None
        train, _ = self.raw()
        names = sorted(train.class_to_idx, key=train.class_to_idx.get)
        return names[: self.num_classes]

    def _load(self):
        train_path = self.root / self.train_dir
        if not train_path.is_dir():
            raise _missing(f"image folder {self.train_dir}/", self.root, "point data.root at the dataset's top folder")
        train, val = _FolderSplit(train_path), None
        for name in [self.val_dir, "val", "test", "valid"]:
            if name and (self.root / name).is_dir() and not self.instance_labels:
                val = _FolderSplit(self.root / name, train.class_to_idx)
                break
        splits = [s for s in (train, val) if s is not None]
        n = sum(len(s) for s in splits)
        if self.check_images is True or (self.check_images == "auto" and n <= self.CHECK_AUTO_MAX):
            for s in splits:
                bad = s.bad_images()
                if bad and self.on_bad_image == "error":
                    more = f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""
                    raise BadImageError(", ".join(bad[:5]) + more, OSError(f"{len(bad)} unreadable image(s)"))
                if bad:
                    log.warning(f"data.on_bad_image=skip: dropped {len(bad)} unreadable image(s), e.g. {bad[0]}")
                    with self.bad_images.get_lock():
                        self.bad_images.value += len(bad)
                    s.drop(set(bad))
        return train, val


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

    def __init__(
        self,
        num_samples: int = 64,
        num_classes: int = 10,
        image_size: int = 32,
        channels: int = 3,
        val_fraction: float = 0.2,
        **kw,
    ):
        super().__init__(val_fraction=val_fraction, **kw)
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
