"""Image transforms (torchvision v2): none / standard / light (the papers' "aug_light1").

  none       to float, resize when the model wants another size, normalize
  standard   random crop (padding 1/8, or random-resized crop for large images) + horizontal flip
  light      aug_light1 of AugReg (arXiv 2106.10270; big_vision vit_i1k.py): inception (random-resized) crop,
             flip, RandAugment(2 ops, magnitude 0) -- "actually not nothing" -- and no mixup
Eval for large (ImageNet-style) images: resize to size/0.875, center crop, normalize.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

TRANSFORMS = ("none", "standard", "light")


def make_transform(kind: str, train: bool, size: int, mean, std, native: int, large: bool = False):
    if kind not in TRANSFORMS:
        raise ValueError(f"unknown data.transforms={kind!r}; choose one of {', '.join(TRANSFORMS)}")
    ops: list = [v2.ToImage()]
    if large:
        if train and kind != "none":
            ops.append(v2.RandomResizedCrop(size, antialias=True))
        else:
            ops += [v2.Resize(int(round(size / 0.875)), antialias=True), v2.CenterCrop(size)]
    elif size != native:
        ops.append(v2.Resize(size, antialias=True))
    if train and kind == "standard" and not large:
        ops.append(v2.RandomCrop(size, padding=max(1, size // 8)))
    if train and kind == "light" and not large:
        ops.append(v2.RandomResizedCrop(size, scale=(0.35, 1.0), antialias=True))
    if train and kind in ("standard", "light"):
        ops.append(v2.RandomHorizontalFlip())
    if train and kind == "light":
        ops.append(v2.RandAugment(num_ops=2, magnitude=0))
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    return v2.Compose(ops)
