"""lsc: latent space configuration -- classifiers with no classification layer, at any number of classes."""

from .centers import ClassCenters, make_system, n_min

__version__ = "0.1.0"
__all__ = ["ClassCenters", "make_system", "n_min", "__version__"]
