"""data=fmnist_grid: 10^k classes whose validation and test images are new (tiles from held-out splits)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import HAS_FMNIST, make_cfg

import lsc.train
from lsc.data import FashionMNISTGridDataModule

pytestmark = pytest.mark.skipif(not HAS_FMNIST, reason="needs Fashion-MNIST (make install installs it)")


def tiles_of(ds, index, t):
    """The k tiles of grid `index` cut back out of the image, unnormalized to 0..255."""
    x, y = ds[index]
    img = (x[0] * ds.std + ds.mean) * 255
    return [img[r * t : (r + 1) * t, c * t : (c + 1) * t] for r in range(ds.side) for c in range(ds.side)][: ds.k], y


def test_grids_are_their_class_and_eval_tiles_come_from_held_out_images():
    dm = FashionMNISTGridDataModule(k=3, per_class=2, eval_size=50, seed=1)
    dm.setup("fit")
    (xtr, ytr), (xte, yte) = dm.raw()
    _, (_, val_groups), _ = dm._pools()
    held = set(np.concatenate(val_groups).tolist())
    assert dm.num_classes == 1000 and dm.native_size == 28 and len(dm.train_set) == 2000  # 2 x 2 board, 14 px tiles
    assert sorted(dm.train_set.classes.tolist()) == sorted(list(range(1000)) * 2)  # every class, per_class times
    for ds, pool, labels, split in ((dm.train_set, xtr, ytr, "train"), (dm.val_set, xtr, ytr, "val"),
                                    (dm.test_set, xte, yte, "test")):  # fmt: skip
        for index in range(0, len(ds), 97):
            cut, y = tiles_of(ds, index, 14)
            for j, (tile, p) in enumerate(zip(cut, ds.tiles(index % len(ds)), strict=True)):
                assert torch.allclose(tile, torch.from_numpy(pool[p]).float(), atol=1e-3)  # the pool's tile ...
                assert labels[p] == (y // 10**j) % 10  # ... of the label's j-th digit
                assert (p in held) == (split == "val") or split == "test"  # validation tiles are held out


def test_fresh_draws_differ_per_epoch_fixed_ones_do_not_and_both_are_seeded():
    a = FashionMNISTGridDataModule(k=2, fresh=True, seed=3)
    b = FashionMNISTGridDataModule(k=2, fresh=False, seed=3)
    for dm in (a, b):
        dm.setup("fit")
    n = len(a.train_set)
    assert torch.equal(a.train_set[7][0], FashionMNISTGridDataModule(k=2, seed=3).setup("fit") or a.train_set[7][0])
    assert not torch.equal(a.train_set[7][0], a.train_set[n + 7][0])  # epoch 1 draws item 7 anew
    assert torch.equal(b.train_set[7][0], b.train_set[n + 7][0])  # fixed: the same image every epoch
    loader = a.train_dataloader()
    loader.sampler.set_epoch(2)
    assert all(i // n == 2 for i in loader.sampler)  # the sampler hands the epoch to the draws


def test_prototype_draws_average_each_class_over_its_first_epochs_of_training_grids():
    # centers.assign=data on fresh grids: a class's prototype is the projected mean of its training grids of the
    # first `prototype_draws` epochs (the grids training serves); reference: mean images by brute force, projected
    from lsc.centers.prototypes import class_prototypes

    dm = FashionMNISTGridDataModule(k=1, seed=2, prototype_draws=3)
    dm.setup("fit")
    n, view = dm.num_classes, dm.prototype_set()
    assert len(view) == 3 * n
    assert all(torch.equal(view[e * n + i][0], dm.train_set[e * n + i][0]) for e in range(3) for i in range(n))
    x = torch.stack([dm.train_set[j][0] for j in range(3 * n)]).double().flatten(1)  # epochs 0, 1, 2
    y = torch.tensor([dm.train_set[j][1] for j in range(3 * n)])
    means = torch.stack([x[y == c].mean(0) for c in range(n)]) - x.mean(0)
    g = torch.Generator().manual_seed(1_000_003 * 5 + 7)  # the pixel projection of seed 5
    want = means @ (torch.randn(x.shape[1], 12, generator=g, dtype=torch.float64) / x.shape[1] ** 0.5)
    got = class_prototypes(dm, 12, seed=5)
    assert torch.allclose(got, want, atol=1e-9)
    one = FashionMNISTGridDataModule(k=1, seed=2)  # the default: the first epoch's grid of each class only
    one.setup("fit")
    assert len(one.prototype_set()) == n and not torch.allclose(class_prototypes(one, 12, seed=5), want, atol=1e-3)
    with pytest.raises(ValueError, match=r"data\.prototype_draws must be a positive integer"):
        FashionMNISTGridDataModule(prototype_draws=0)


def test_bad_settings():
    for kw, msg in ((dict(k=0), r"data\.k must be a positive integer"), (dict(tile=5), r"data\.tile must divide 28"),
                    (dict(instance_labels=True), r"fmnist_grid has no data\.instance_labels"),
                    (dict(transforms="standard"), r"takes data\.transforms=none")):  # fmt: skip
        with pytest.raises(ValueError, match=msg):
            FashionMNISTGridDataModule(**kw)


def test_trains_and_scores_held_out_grids(tmp_path):
    cfg = make_cfg(tmp_path, "data=fmnist_grid", "data.k=2", "data.per_class=50", "data.eval_size=500",
                   "trainer.max_epochs=3", "data.batch_size=64", "model.optimizer.lr=1e-3")  # fmt: skip
    metrics = lsc.train.train(cfg)
    assert 0.05 < metrics["test/acc_topk"] <= 1  # 100 classes, new images: chance is 1% (measured: 10%)
