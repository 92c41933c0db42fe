"""Shared DataModule machinery: label views (instance labels, copies, limit, classes), splits, loaders.

Every DataModule yields (image float tensor [C, H, W], label int64). A subclass only says how to read its raw
splits (`_load`); the views that turn a dataset into a many-class one live here:
  classes: K          keep the first K classes (the A_n paper's i1kp)
  limit: N            keep the first N images
  instance_labels     every image is its own class (the papers' 50k .. 1.28M-class sets)
  copies: k           repeat the set k times under distinct labels (the top-k paper's > 1.28M-class sets)
With instance labels there is no held-out split: validation is a fixed sample (val_size) of the training set,
as the papers report training accuracy. Datasets with no test split (digits) hold out val_fraction.
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .transforms import make_transform


class LabeledView(Dataset):
    """base[index[i]] with label labels[i] and a transform; index/labels are int64 tensors (or ranges)."""

    def __init__(self, base, index, labels, transform=None, copies: int = 1, instance: bool = False):
        self.base, self.index, self.labels, self.transform = base, index, labels, transform
        self.copies, self.instance, self.n = copies, instance, len(index)

    def __len__(self):
        return self.n * self.copies

    def label(self, i: int) -> int:
        k, j = divmod(i, self.n)
        return k * self.n + j if self.instance else int(self.labels[j])

    def __getitem__(self, i):
        j = i % self.n
        x = self.base.image(int(self.index[j]))
        if self.transform is not None:
            x = self.transform(x)
        return x, self.label(i)


class Subset(Dataset):
    """Items `idx` of a dataset (the fixed train-accuracy and instance-label validation samples)."""

    def __init__(self, ds, idx):
        self.ds, self.idx = ds, idx

    def __len__(self):
        return len(self.idx)

    def __getitem__(self, i):
        return self.ds[int(self.idx[i])]


class EpochShuffleSampler(Sampler[int]):
    """Shuffles with a generator seeded by (seed, epoch): resuming a run replays the same order.

    Lightning calls `set_epoch` on samplers that have it (and swaps in a DistributedSampler under DDP).
    """

    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self):
        return self.n


class RawSplit:
    """A raw split: `image(i)` -> uint8/float tensor [C, H, W] (or PIL), `targets` int64 tensor [N]."""

    def __init__(self, images, targets):
        self.images, self.targets = images, torch.as_tensor(targets, dtype=torch.int64)

    def __len__(self):
        return len(self.targets)

    def image(self, i):
        return self.images[i]


class LSCDataModule(L.LightningDataModule):
    """Base DataModule. Subclasses set `mean`, `std`, `channels`, `native_size` and implement `_load()`."""

    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    channels = 3
    native_size = 32
    large_images = False  # ImageNet-style eval: resize to 1.14x then center-crop

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        instance_labels: bool = False,
        copies: int = 1,
        limit: int | None = None,
        classes: int | None = None,
        transforms: str = "none",
        img_size: int | None = None,
        val_size: int = 10_000,
        val_fraction: float = 0.2,
        train_eval_size: int = 0,
        seed: int = 0,
        pin_memory: bool = False,
    ):
        super().__init__()
        if copies < 1:
            raise ValueError(f"data.copies must be >= 1, got {copies}")
        if copies > 1 and not instance_labels:
            raise ValueError("data.copies > 1 needs data.instance_labels=true (copies get distinct labels)")
        self.batch_size, self.num_workers = batch_size, num_workers
        self.instance_labels, self.copies, self.limit, self.classes = instance_labels, copies, limit, classes
        self.transforms, self.img_size, self.seed = transforms, img_size, seed
        self.val_size, self.val_fraction = val_size, val_fraction
        self.train_eval_size, self.pin_memory = train_eval_size, pin_memory
        self._raw = None
        self.train_set = self.val_set = self.test_set = self.train_eval_set = None

    # ---- what subclasses provide --------------------------------------------------------------------

    def _load(self) -> tuple[RawSplit, RawSplit | None]:
        """(train split, test split or None)."""
        raise NotImplementedError

    # ---- views ----------------------------------------------------------------------------------------

    def raw(self):
        if self._raw is None:
            self._raw = self._load()
        return self._raw

    def _select(self, split: RawSplit) -> torch.Tensor:
        idx = torch.arange(len(split))
        if self.classes is not None:
            idx = idx[split.targets[idx] < self.classes]
        if self.limit is not None:
            idx = idx[: self.limit]
        return idx

    @property
    def num_classes(self) -> int:
        train, _ = self.raw()
        idx = self._select(train)
        if len(idx) == 0:
            raise ValueError("the data selection is empty (check data.limit / data.classes)")
        if self.instance_labels:
            return len(idx) * self.copies
        return int(train.targets[idx].max()) + 1

    @property
    def out_size(self) -> int:
        return self.img_size or self.native_size

    def setup(self, stage: str | None = None):
        if self.train_set is not None:
            return
        train, test = self.raw()
        size = self.out_size
        t_train = make_transform(self.transforms, True, size, self.mean, self.std, self.native_size, self.large_images)
        t_eval = make_transform("none", False, size, self.mean, self.std, self.native_size, self.large_images)
        idx = self._select(train)
        self.train_set = LabeledView(train, idx, train.targets[idx], t_train, self.copies, self.instance_labels)
        eval_view = LabeledView(train, idx, train.targets[idx], t_eval, self.copies, self.instance_labels)
        g = torch.Generator().manual_seed(self.seed + 1)
        n = len(self.train_set)
        if self.instance_labels or test is None:
            # papers: training accuracy on a fixed sample (instance labels have no held-out images)
            k = min(self.val_size, n) if self.instance_labels else max(1, int(round(self.val_fraction * n)))
            sample = torch.randperm(n, generator=g)[:k]
            if not self.instance_labels:  # plain datasets with no test split: hold out val_fraction
                keep = torch.ones(n, dtype=torch.bool)
                keep[sample] = False
                kept = idx[keep]
                self.train_set = LabeledView(train, kept, train.targets[kept], t_train)
                eval_view = LabeledView(train, kept, train.targets[kept], t_eval)
                self.val_set = LabeledView(train, idx[sample], train.targets[idx[sample]], t_eval)
            else:
                self.val_set = Subset(eval_view, sample)
            self.test_set = None
        else:
            tidx = torch.arange(len(test))
            if self.classes is not None:
                tidx = tidx[test.targets < self.classes]
            self.val_set = LabeledView(test, tidx, test.targets[tidx], t_eval)
            self.test_set = self.val_set
        if self.train_eval_size:
            m = len(eval_view)
            self.train_eval_set = Subset(eval_view, torch.randperm(m, generator=g)[: min(self.train_eval_size, m)])

    def _per_device_batch(self) -> int:
        world = self.trainer.world_size if self.trainer is not None else 1
        if self.batch_size % world:
            raise ValueError(f"data.batch_size={self.batch_size} is not divisible by the {world} devices")
        return self.batch_size // world

    def _loader(self, ds, train=False):
        return DataLoader(
            ds,
            batch_size=self._per_device_batch(),
            sampler=EpochShuffleSampler(len(ds), self.seed) if train else None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            drop_last=False,
        )

    def train_dataloader(self):
        return self._loader(self.train_set, train=True)

    def val_dataloader(self):
        return self._loader(self.val_set)

    def test_dataloader(self):
        return self._loader(self.test_set if self.test_set is not None else self.val_set)

    def train_eval_dataloader(self):
        return None if self.train_eval_set is None else self._loader(self.train_eval_set)
