"""DataModules yielding (image, label); see `base` for the many-class views (instance labels, copies, ...)."""

from .base import EpochShuffleSampler, LSCDataModule
from .datasets import (
    CIFARDataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    SyntheticDataModule,
)

__all__ = [
    "CIFARDataModule",
    "DigitsDataModule",
    "EpochShuffleSampler",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
    "LSCDataModule",
    "SyntheticDataModule",
]
