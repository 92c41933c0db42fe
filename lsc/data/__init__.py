"""DataModules yielding (image, label); see `base` for the many-class views (instance labels, copies, ...)."""

from .base import EpochShuffleSampler, LSCDataModule
from .datasets import (
    CIFARDataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    SyntheticDataModule,
)
from .fmnist_grid import FashionMNISTGridDataModule
from .han_glyphs import HanGlyphsDataModule

__all__ = [
    "CIFARDataModule",
    "DigitsDataModule",
    "EpochShuffleSampler",
    "FashionMNISTDataModule",
    "FashionMNISTGridDataModule",
    "HanGlyphsDataModule",
    "ImageFolderDataModule",
    "LSCDataModule",
    "StreamingDataModule",
    "SyntheticDataModule",
]


def __getattr__(name: str):
    if name == "StreamingDataModule":  # imported on first use: litdata costs every other run 0.3 s at start
        from .streaming import StreamingDataModule

        return StreamingDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
