"""`data=fmnist_grid`: 10^k classes with held-out images on a CPU. An image is a grid of k Fashion-MNIST tiles;
its class is the tuple of the tiles' labels (label = sum_i label_i 10^i, tile i in row-major order).

Training grids draw their tiles from the training split, validation grids from a seeded held-out share of it
(`val_fraction`), test grids from the test split: every validation and test image is new, and only its class was
seen. Tiles are downsampled 2x (28 -> `tile` px, 14 by default) and laid out on a ceil(sqrt(k)) x ceil(sqrt(k))
board (empty cells are background). A training image is drawn fresh every epoch (`fresh: true`: the sample for
position i of epoch e is a function of (seed, e, i), so no image is seen twice) or fixed (`per_class` images per
class, the same every epoch). Every epoch covers every class `per_class` times, in a seeded shuffled order.

The ceiling any model can reach: a per-tile classifier's accuracy to the power k (the tiles are independent).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Dataset

from lsc.data.base import EpochShuffleSampler, LSCDataModule
from lsc.data.datasets import FMNIST_DEBIAN, FashionMNISTDataModule
from lsc.utils import positive_int


def _splitmix(x: np.ndarray) -> np.ndarray:
    """A counter-based 64-bit hash (splitmix64): the draws of (seed, epoch, index) without any state."""
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    return x ^ (x >> np.uint64(31))


class GridSet(Dataset):
    """Grids of k tiles: item i is a grid of class `classes[i]`, its tiles drawn from `pool` by hash(key, i).

    pool: uint8 tiles [N, t, t]; by_label[l]: the pool indices of label l. With `fresh`, index e * len + i is item
    i drawn for epoch e (`FreshSampler` yields those): the draw is a function of (key, e, i), in any worker.
    """

    def __init__(self, pool, by_label, classes: np.ndarray, k: int, side: int, key: int, mean, std, fresh=False):
        self.pool, self.by_label, self.classes = pool, by_label, classes
        self.k, self.side, self.key, self.fresh = k, side, int(key), fresh
        self.mean, self.std = float(mean), float(std)
        self.targets = torch.from_numpy(classes.astype(np.int64))

    def __len__(self) -> int:
        return len(self.classes)

    def tiles(self, i: int, epoch: int = 0) -> np.ndarray:
        """The pool indices of item i's k tiles (drawn for `epoch` when fresh)."""
        c = int(self.classes[i])
        labels = [(c // 10**j) % 10 for j in range(self.k)]
        key = self.key * 1_000_003 + (epoch if self.fresh else 0)
        h = _splitmix(np.uint64(key) * np.uint64(0x100000001B3) + np.arange(self.k, dtype=np.uint64)
                      + np.uint64(i) * np.uint64(self.k))  # fmt: skip
        return np.array([self.by_label[lab][int(x % np.uint64(len(self.by_label[lab])))]
                         for lab, x in zip(labels, h, strict=True)])  # fmt: skip

    def __getitem__(self, index: int):
        epoch, i = divmod(int(index), len(self.classes))
        t = self.pool.shape[1]
        img = np.zeros((self.side * t, self.side * t), np.float32)
        for j, p in enumerate(self.tiles(i, epoch)):
            r, c = divmod(j, self.side)
            img[r * t : (r + 1) * t, c * t : (c + 1) * t] = self.pool[p]
        x = (torch.from_numpy(img)[None] / 255.0 - self.mean) / self.std
        return x, int(self.classes[i])


class Draws(Dataset):
    """`draws` fresh draws of every item of a fresh GridSet: index e * n + i is item i drawn for epoch e. The
    data-aware prototype pass averages each class over `draws` grids of the training pool: with `fresh` and
    `per_class` 1 (the default), exactly the class's training grids of the first `draws` epochs; otherwise grids
    drawn the same way that training may not serve (still training-split tiles only)."""

    def __init__(self, grids: GridSet, draws: int):
        self.grids, self.draws = grids, draws

    def __len__(self) -> int:
        return len(self.grids) * self.draws

    def __getitem__(self, index: int):
        return self.grids[index]


class FashionMNISTGridDataModule(LSCDataModule):
    """Grids of k Fashion-MNIST tiles, 10^k classes (module docstring)."""

    channels = 1

    def __init__(
        self,
        k: int = 4,
        tile: int = 14,
        per_class: int = 1,
        fresh: bool = True,
        eval_size: int = 10_000,
        root: str = FMNIST_DEBIAN,
        prototype_draws: int = 1,
        **kw,
    ):
        for name in ("instance_labels", "copies", "classes", "keep_classes", "replay_per_class"):
            if kw.get(name):
                raise ValueError(f"data=fmnist_grid has no data.{name}: its classes are the 10^k tile tuples")
        if kw.get("transforms", "none") != "none":
            raise ValueError("data=fmnist_grid takes data.transforms=none (fresh draws are its augmentation)")
        super().__init__(**kw)
        sizes = (("k", k), ("tile", tile), ("per_class", per_class), ("eval_size", eval_size))
        for name, value in (*sizes, ("prototype_draws", prototype_draws)):
            positive_int(f"data.{name}", value)
        if k > 9:
            raise ValueError(f"data.k={k}: 10^k classes past 10^9 do not fit this dataset; use k <= 9")
        if 28 % tile:
            raise ValueError(f"data.tile must divide 28 (the Fashion-MNIST image side), got {tile}")
        self.k, self.tile, self.per_class, self.fresh, self.eval_size = k, tile, per_class, bool(fresh), eval_size
        self.root, self.prototype_draws = root, prototype_draws
        self.side = math.ceil(math.sqrt(k))
        self.native_size = self.side * tile
        self.mean, self.std = (0.286 * k / self.side**2,), (0.353,)

    @property
    def num_classes(self) -> int:
        return 10**self.k

    @property
    def class_names(self):
        return None  # 10^k tuples: the label's digits are the tiles' Fashion-MNIST classes

    def raw(self):
        if self._raw is None:
            fm = FashionMNISTDataModule(root=self.root)
            train, test = fm.raw()
            f = 28 // self.tile

            def pool(split):
                x = split.images[:, 0].float()  # [N, 28, 28] uint8 -> float
                x = x.reshape(len(x), self.tile, f, self.tile, f).mean((2, 4))
                return x.round().to(torch.uint8).numpy(), np.asarray(split.targets)

            self._raw = (pool(train), pool(test))
        return self._raw

    def _pools(self):
        (xtr, ytr), (xte, yte) = self.raw()
        g = torch.Generator().manual_seed(self.seed + 1)
        held = np.zeros(len(ytr), bool)
        held[torch.randperm(len(ytr), generator=g)[: int(round(self.val_fraction * len(ytr)))].numpy()] = True

        def groups(y, mask):
            return [np.flatnonzero(mask & (y == lab)) for lab in range(10)]

        return (xtr, groups(ytr, ~held)), (xtr, groups(ytr, held)), (xte, groups(yte, np.ones(len(yte), bool)))

    def setup(self, stage: str | None = None):
        if self.train_set is not None:
            return
        (ptr, gtr), (pva, gva), (pte, gte) = self._pools()
        n = self.num_classes
        rng = np.random.default_rng(self.seed)
        classes = np.tile(np.arange(n, dtype=np.int64), self.per_class)
        if self.limit is not None:
            classes = classes[: self.limit]
        kw = dict(k=self.k, side=self.side, mean=self.mean[0], std=self.std[0])
        self.train_set = GridSet(ptr, gtr, classes, key=self.seed * 3 + 0, fresh=self.fresh, **kw)
        m = min(self.eval_size, self.val_limit or self.eval_size)
        self.val_set = GridSet(pva, gva, rng.integers(0, n, m), key=self.seed * 3 + 1, **kw)
        self.test_set = GridSet(pte, gte, rng.integers(0, n, m), key=self.seed * 3 + 2, **kw)
        # the prototype pass: `prototype_draws` grids per class from the training pool (see Draws)
        proto = GridSet(ptr, gtr, np.arange(n, dtype=np.int64), key=self.seed * 3 + 0, fresh=True, **kw)
        self._prototype_view = Draws(proto, self.prototype_draws)
        if self.train_eval_size:
            self.train_eval_set = GridSet(ptr, gtr, rng.integers(0, n, self.train_eval_size), key=self.seed * 3, **kw)

    def _loader(self, ds, train=False):
        loader = super()._loader(ds, train)
        if train and self.fresh:  # the sampler's epoch drives the draws
            loader.sampler.__class__ = FreshSampler
        return loader


class FreshSampler(EpochShuffleSampler):
    """EpochShuffleSampler that yields epoch * n + i for item i: a `GridSet` draws item i fresh for that epoch."""

    def __iter__(self):
        base = self.epoch * self.n
        for i in super().__iter__():
            yield base + i
