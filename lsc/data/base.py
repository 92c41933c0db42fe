"""Shared DataModule machinery: label views (instance labels, copies, limit, classes), splits, loaders.

Every DataModule yields (image float tensor [C, H, W], label int64). A subclass only says how to read its raw
splits (`_load`); the views that turn a dataset into a many-class one live here:
  classes: K          keep the first K classes (the A_n paper's i1kp)
  keep_classes: [..]  keep these classes only (labels unchanged: growing a label space), plus
  replay_per_class: N the first N training images of every other class (a replay buffer)
  limit: N            keep the first N training images (validation and test: `val_limit`)
  instance_labels     every image is its own class (the papers' 50k .. 1.28M-class sets)
  copies: k           repeat the set k times under distinct labels (the top-k paper's > 1.28M-class sets)
Splits. Plain labels: validation is a seeded `val_fraction` of the training images, held out (model selection
never sees the test split); the test split, when the dataset has one, is evaluated once at the end. Instance
labels have no held-out images: validation is a fixed sample (`val_size`) of the training set, as the papers
report training accuracy, and there is no test split.
"""

from __future__ import annotations

import io
import logging
import warnings

import lightning as L
import torch
from torch.multiprocessing import Value
from torch.utils.data import Dataset, default_collate
from torchdata.stateful_dataloader import StatefulDataLoader

from lsc.utils import positive_int

from .transforms import make_transform

log = logging.getLogger("lsc.data")
warnings.filterwarnings("ignore", message=r".*'set_vital' is deprecated.*")  # raised inside torchdata itself
BAD_IMAGE_POLICIES = ("error", "skip")
SIMPLEJPEG = True  # open_draft decodes JPEGs with simplejpeg where it can (False: PIL only, as a reference)


class BadImageError(ValueError):
    """An image file that cannot be decoded; the message names the file."""

    def __init__(self, path, cause: Exception):
        super().__init__(
            f"cannot read image {path}: {type(cause).__name__}: {cause} (remove or replace the file, or set "
            "data.on_bad_image=skip to skip unreadable images and count them)"
        )
        self.path = str(path)


def open_draft(data: bytes, mode: str, draft: tuple[int, int]):
    """An encoded image at reduced size, as a PIL image in `mode` ("RGB" or "L"): what `Image.open` + `draft(mode,
    draft)` + `convert(mode)` give (JPEG: DCT scaling by the largest of 1/2, 1/4, 1/8 that keeps both sides >= draft;
    other formats: full size). A JPEG is decoded by simplejpeg (libjpeg-turbo without PIL's per-file overhead) at
    that same scale, which gives the same pixels; where simplejpeg is missing or declines (CMYK and other colour
    spaces, a recoverable error), PIL does it all. Raises what PIL raises for a broken file."""
    from PIL import Image

    if SIMPLEJPEG and data[:2] == b"\xff\xd8" and mode in ("RGB", "L"):
        try:
            import simplejpeg

            h, w, space = simplejpeg.decode_jpeg_header(data)[:3]
            if space not in ("YCbCr", "Gray"):  # CMYK, YCCK, RGB: PIL's own conversion
                raise ValueError(space)
            s = next((s for s in (8, 4, 2) if min(w // draft[0], h // draft[1]) >= s), 1)  # PIL's draft scale
            a = simplejpeg.decode_jpeg(
                data, colorspace="RGB" if mode == "RGB" else "GRAY", min_width=-(-w // s), min_height=-(-h // s)
            )
            if a.shape[:2] == (-(-h // s), -(-w // s)):  # read-only, over the array (PIL copies before a write)
                return Image.frombuffer(mode, (a.shape[1], a.shape[0]), a, "raw", mode, 0, 1)
        except (ImportError, ValueError):
            pass
    img = Image.open(io.BytesIO(data))
    img.draft(mode, draft)
    return img.convert(mode)


def read_or_skip(read, skip_bad: bool, bad=None):
    """read(); for an unreadable image (BadImageError) None when skipping (counted in `bad`, a multiprocessing
    Value, and warned), else the error."""
    try:
        return read()
    except BadImageError as e:
        if not skip_bad:
            raise
        if bad is not None:
            with bad.get_lock():
                bad.value += 1
        warnings.warn(f"skipped unreadable image {e.path}", stacklevel=1)
        return None


class LabeledView(Dataset):
    """base[index[i]] with label labels[i] and a transform; index/labels are int64 tensors (or ranges).

    skip_bad: an unreadable image yields None (dropped by `collate_skipping_bad`) and is counted in `bad`.
    """

    def __init__(self, base, index, labels, transform=None, copies=1, instance=False, skip_bad=False, bad=None):
        self.base, self.index, self.labels, self.transform = base, index, labels, transform
        self.copies, self.instance, self.n = copies, instance, len(index)
        self.skip_bad, self.bad = skip_bad, bad

    def __len__(self):
        return self.n * self.copies

    def label(self, i: int) -> int:
        k, j = divmod(i, self.n)
        return k * self.n + j if self.instance else int(self.labels[j])

    def __getitem__(self, i):
        j = i % self.n
        x = read_or_skip(lambda: self.base.image(int(self.index[j])), self.skip_bad, self.bad)
        if x is None:
            return None
        if self.transform is not None:
            x = self.transform(x)
        return x, self.label(i)


def collate_skipping_bad(batch):
    """default_collate without the None items of skipped images (None when the whole batch was unreadable)."""
    batch = [b for b in batch if b is not None]
    return default_collate(batch) if batch else None


class Subset(Dataset):
    """Items `idx` of a dataset (the fixed train-accuracy and instance-label validation samples)."""

    def __init__(self, ds, idx):
        self.ds, self.idx = ds, idx

    def __len__(self):
        return len(self.idx)

    def __getitem__(self, i):
        return self.ds[int(self.idx[i])]


class EpochShuffleSampler(torch.utils.data.Sampler[int]):
    """Shuffles with a generator seeded by (seed, epoch): every epoch's order is a function of (seed, epoch).

    Lightning calls `set_epoch` on samplers that have it (and swaps in a DistributedSampler under DDP). The sampler
    is stateful (epoch, samples yielded) and the train loader is torchdata's StatefulDataLoader, whose state
    Lightning saves in every checkpoint: a run resumed mid-epoch serves exactly the samples it had not served, in
    the same order. The order is drawn lazily, at the first sample, so it follows the epoch set last whether
    Lightning creates the iterator before or after `set_epoch`.
    """

    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed, self.epoch = n, seed, 0
        self.yielded, self._skip = 0, 0

    def set_epoch(self, epoch: int):
        if epoch != self.epoch:
            self._skip = 0  # a resumed position belongs to the epoch it was saved in
        self.epoch = epoch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "yielded": self.yielded}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self._skip = int(state["epoch"]), int(state["yielded"])

    def __iter__(self):
        start, self._skip = self._skip, 0
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        self.yielded = start
        for i in order[start:]:
            self.yielded += 1
            yield i

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


def _positive_int(name: str, value, allow_none: bool = True, hint: str = ""):
    return positive_int(f"data.{name}", value, allow_none, hint)


class LSCDataModule(L.LightningDataModule):
    """Base DataModule. Subclasses set `mean`, `std`, `channels`, `native_size` and implement `_load()`.

    Args:
        val_size: instance labels: size of the fixed training sample that validation scores.
        val_fraction: plain labels: share of the training images held out for validation (seeded).
        val_limit: score at most this many validation and test images (the first ones; null: all).
        on_bad_image: `error` (the error names the file) or `skip` (skipped images are counted and warned about).
    """

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
        val_fraction: float = 0.1,
        val_limit: int | None = None,
        train_eval_size: int = 0,
        seed: int = 0,
        pin_memory: bool = False,
        on_bad_image: str = "error",
        keep_classes: list[int] | None = None,
        replay_per_class: int = 0,
    ):
        super().__init__()
        _positive_int("batch_size", batch_size, allow_none=False)
        _positive_int("copies", copies, allow_none=False)
        _positive_int("limit", limit)
        _positive_int("classes", classes)
        _positive_int("val_size", val_size, allow_none=False)
        _positive_int("val_limit", val_limit)
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"data.num_workers must be an integer >= 0, got {num_workers!r}")
        if isinstance(train_eval_size, bool) or not isinstance(train_eval_size, int) or train_eval_size < 0:
            raise ValueError(f"data.train_eval_size must be an integer >= 0, got {train_eval_size!r}")
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
            raise ValueError(
                f"data.val_fraction must lie strictly between 0 and 1 (the share of training images held out for "
                f"validation), got {val_fraction!r}"
            )
        _positive_int("img_size", img_size, hint="pixels a side; null: the native size")
        if copies > 1 and not instance_labels:
            raise ValueError("data.copies > 1 needs data.instance_labels=true (copies get distinct labels)")
        if keep_classes is not None and (
            not len(keep_classes) or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in keep_classes)
        ):
            raise ValueError(f"data.keep_classes must be a non-empty list of class labels >= 0, got {keep_classes!r}")
        if isinstance(replay_per_class, bool) or not isinstance(replay_per_class, int) or replay_per_class < 0:
            raise ValueError(f"data.replay_per_class must be an integer >= 0, got {replay_per_class!r}")
        if replay_per_class and keep_classes is None:
            raise ValueError("data.replay_per_class needs data.keep_classes (replay the classes it leaves out)")
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise ValueError(f"data.on_bad_image must be one of {', '.join(BAD_IMAGE_POLICIES)}, got {on_bad_image!r}")
        self.batch_size, self.num_workers = batch_size, num_workers
        self.instance_labels, self.copies, self.limit, self.classes = instance_labels, copies, limit, classes
        self.transforms, self.img_size, self.seed = transforms, img_size, seed
        self.val_size, self.val_fraction, self.val_limit = val_size, float(val_fraction), val_limit
        self.train_eval_size, self.pin_memory, self.on_bad_image = train_eval_size, pin_memory, on_bad_image
        self.keep_classes = None if keep_classes is None else [int(c) for c in keep_classes]
        self.replay_per_class = replay_per_class
        self.bad_images = Value("i", 0)  # skipped unreadable images, counted across loader workers
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
        if self.keep_classes is not None:
            t = split.targets[idx]
            if split is self.raw()[0]:
                self._check_keep(t)
            keep = torch.isin(t, torch.tensor(self.keep_classes))
            if self.replay_per_class:  # the first N images of every class not kept
                for c in t[~keep].unique().tolist():
                    keep[(t == c).nonzero()[: self.replay_per_class, 0]] = True
            idx = idx[keep]
        if self.limit is not None:
            if self.limit > len(idx) and not getattr(self, "_warned_limit", False):
                self._warned_limit = True
                log.warning(f"data.limit={self.limit:,} exceeds the {len(idx):,} training images; using all of them")
            idx = idx[: self.limit]
        return idx

    def _check_keep(self, targets: torch.Tensor) -> None:
        have = set(targets.unique().tolist())
        gone = [c for c in self.keep_classes if c not in have]
        if gone:
            after = " after data.classes / data.limit" if self.classes or self.limit else ""
            raise ValueError(f"data.keep_classes names classes the training data does not have{after}: {gone} (its "
                             f"labels: {sorted(have)[:3]}...{sorted(have)[-1:]})")  # fmt: skip

    @property
    def num_classes(self) -> int:
        train, _ = self.raw()
        idx = self._select(train)
        if len(idx) == 0:
            raise ValueError("the data selection is empty (check data.limit / data.classes)")
        n = len(idx) * self.copies if self.instance_labels else int(train.targets[idx].max()) + 1
        if n < 2:
            raise ValueError(f"the data has {n} class: a classifier needs at least 2 (check data.limit / data.classes)")
        return n

    label_names: tuple[str, ...] | None = None  # a dataset's fixed class names, label order

    @property
    def class_names(self) -> list[str] | None:
        """Label -> class name (what `lsc.predict` writes as `class_name`), or None when classes have no names
        (instance labels, synthetic data)."""
        if self.instance_labels or self.label_names is None:
            return None
        return list(self.label_names[: self.num_classes])

    @property
    def out_size(self) -> int:
        return self.img_size or self.native_size

    def _view(self, split, idx, transform, **kw):
        return LabeledView(
            split, idx, split.targets[idx], transform, skip_bad=self.on_bad_image == "skip", bad=self.bad_images, **kw
        )

    def setup(self, stage: str | None = None):
        if self.train_set is not None:
            return
        train, test = self.raw()
        size = self.out_size
        t_train = make_transform(self.transforms, True, size, self.mean, self.std, self.native_size, self.large_images)
        t_eval = make_transform("none", False, size, self.mean, self.std, self.native_size, self.large_images)
        idx = self._select(train)
        g = torch.Generator().manual_seed(self.seed + 1)
        if self.instance_labels:
            # papers: training accuracy on a fixed sample (instance labels have no held-out images)
            self.train_set = self._view(train, idx, t_train, copies=self.copies, instance=True)
            eval_view = self._view(train, idx, t_eval, copies=self.copies, instance=True)
            n = len(self.train_set)
            self.val_set = Subset(eval_view, torch.randperm(n, generator=g)[: min(self.val_size, n)])
            self.test_set = None
        else:
            n = len(idx)
            k = max(1, int(round(self.val_fraction * n)))
            if k >= n:
                raise ValueError(
                    f"holding out data.val_fraction={self.val_fraction} of {n} training image(s) for validation "
                    "leaves none to train on; raise data.limit or lower data.val_fraction"
                )
            held = torch.zeros(n, dtype=torch.bool)
            held[torch.randperm(n, generator=g)[:k]] = True
            self.train_set = self._view(train, idx[~held], t_train)
            eval_view = self._view(train, idx[~held], t_eval)
            self.val_set = self._view(train, idx[held], t_eval)
            self.test_set = None
            if test is not None:
                tidx = torch.arange(len(test))
                if self.classes is not None:
                    tidx = tidx[test.targets < self.classes]
                self.test_set = self._view(test, tidx, t_eval)
        self._prototype_view = eval_view
        if self.val_limit is not None:
            self.val_set = _first(self.val_set, self.val_limit)
            self.test_set = None if self.test_set is None else _first(self.test_set, self.val_limit)
        if self.train_eval_size:
            m = len(eval_view)
            self.train_eval_set = Subset(eval_view, torch.randperm(m, generator=g)[: min(self.train_eval_size, m)])

    def prototype_set(self):
        """The training images (every one, no augmentation: the eval transform) with their labels."""
        self.setup("fit")
        return self._prototype_view

    def _per_device_batch(self) -> int:
        world = self.trainer.world_size if self.trainer is not None else 1
        if self.batch_size % world:
            raise ValueError(f"data.batch_size={self.batch_size} is not divisible by the {world} devices")
        return self.batch_size // world

    def _loader(self, ds, train=False):
        # StatefulDataLoader: a DataLoader whose position within the epoch is saved in every checkpoint (Lightning
        # calls its state_dict/load_state_dict), so a run resumed mid-epoch serves exactly the batches it had not.
        return StatefulDataLoader(
            ds,
            batch_size=self._per_device_batch(),
            sampler=EpochShuffleSampler(len(ds), self.seed) if train else None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
            drop_last=False,
            collate_fn=collate_skipping_bad if self.on_bad_image == "skip" else None,
        )

    def train_dataloader(self):
        return self._loader(self.train_set, train=True)

    def val_dataloader(self):
        return self._loader(self.val_set)

    def test_dataloader(self):
        return self._loader(self.test_set if self.test_set is not None else self.val_set)

    def train_eval_dataloader(self):
        return None if self.train_eval_set is None else self._loader(self.train_eval_set)


def _first(ds, n: int):
    return ds if len(ds) <= n else Subset(ds, torch.arange(n))
